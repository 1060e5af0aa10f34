"""Integrated gradients (Captum ``IntegratedGradients``)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from . import _common as C

__all__ = ["integrated_gradients", "approximation_parameters", "IG_METHODS"]

IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def approximation_parameters(method, n_steps):
    """(step_sizes, alphas), float64 arrays of n_steps, of an integral over [0, 1].

    'riemann_left/right/middle/trapezoid' (n_steps >= 2, as in Captum) or
    'gausslegendre' (n_steps >= 1): Gauss-Legendre nodes and weights mapped to [0, 1].
    """
    if method not in IG_METHODS:
        raise ValueError(f"method must be one of {', '.join(IG_METHODS)}, got {method!r}")
    n = _checks.positive_int(n_steps, "n_steps")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * w, 0.5 * (1 + x)
    if n < 2:
        raise ValueError(f"n_steps must be >= 2 for {method}, got {n}")
    steps = np.full(n, 1.0 / n)
    kind = method.split("_")[1]
    if kind == "trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        alphas = np.linspace(0, 1, n)
    elif kind == "left":
        alphas = np.linspace(0, 1 - 1 / n, n)
    elif kind == "middle":
        alphas = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = np.linspace(1 / n, 1, n)
    return steps, alphas


def integrated_gradients(X, target, model, baselines=None, n_steps=50, method="gausslegendre",
                         internal_batch_size=None, return_convergence_delta=False):
    """Integrated gradients: (X - baseline) times the path integral of the gradient.

    ``attr = (X - b) * sum_k w_k * grad(b + a_k (X - b))`` with the quadrature
    (w_k, a_k) of ``method``, as Captum computes it.

    Args:
        X: (N, C, H, W) images in the model's input space.
        target: an int, an (N,) array, a class name, or None (predicted class).
        model: a :class:`gradvis.Model`.
        baselines: None (zeros), a number, or an array broadcastable to X.
        n_steps: quadrature points (>= 1; >= 2 for the Riemann rules).
        method: 'gausslegendre', 'riemann_left', 'riemann_right',
            'riemann_middle' or 'riemann_trapezoid'.
        internal_batch_size: rows (image, step) per pass; default from the
            model's activation size, which bounds memory for any n_steps.
        return_convergence_delta: also return, per image,
            ``sum(attr) - (score(X) - score(baseline))`` (completeness: it goes
            to 0 as n_steps grows).

    Returns:
        attr (N, C, H, W) in X's dtype, and delta (N,) float64 when asked.

    Example:
        >>> attr, delta = integrated_gradients(X, None, model, n_steps=100,
        ...                                    return_convergence_delta=True)

    Reference: Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep
    Networks", ICML 2017.
    """
    C.check_model(model, "integrated_gradients")
    X = C.check_images(X, model)
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise TypeError(f"n_steps must be an int >= 1, got {n_steps!r}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    steps, alphas = approximation_parameters(method, n_steps)
    base = C.baselines_arg(baselines, X)
    b = C.batch_size_arg(internal_batch_size, model, X)
    t = C.resolve_target(target, X, model)
    n = X.shape[0]
    diff = X - base
    total = np.zeros(X.shape, np.float64)
    rows_total = n * n_steps
    for k0 in range(0, rows_total, b):
        rows = np.arange(k0, min(rows_total, k0 + b))
        img, step = rows // n_steps, rows % n_steps
        a = alphas[step].astype(X.dtype).reshape(-1, 1, 1, 1)
        pts = base[img] + a * diff[img]
        g = C.gradient(model, pts, t[img])[1]
        C.add_rows(total, img, g * steps[step].reshape(-1, 1, 1, 1))
    attr = (total * diff).astype(X.dtype)
    if not return_convergence_delta:
        return attr
    end = C.target_scores(model, X, t, b)
    start = C.target_scores(model, base, t, b)
    delta = attr.reshape(n, -1).sum(axis=1, dtype=np.float64) - (end - start)
    return attr, delta
