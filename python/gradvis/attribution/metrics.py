"""How good is an attribution: infidelity and max-sensitivity (Captum's),
deletion and insertion curves (RISE) and the model-randomization sanity check.
"""
from __future__ import annotations

import numpy as np

from .. import _checks
from . import _common as C
from .gradients import pixel_method

__all__ = ["infidelity", "sensitivity_max", "deletion_curve", "insertion_curve", "sanity_check",
           "edge_detector", "spearman", "gaussian_noise_perturbation"]


# ---------------------------------------------------------------- infidelity
def gaussian_noise_perturbation(stdevs):
    """A perturbation function for :func:`infidelity`: I ~ N(0, stdevs^2) per
    value, the perturbed input X - I (Yeh et al.'s noisy baseline)."""
    stdevs = _checks.nonneg_float(stdevs, "stdevs", positive=True)

    def perturb(X, rng):
        noise = (rng.standard_normal(X.shape) * stdevs).astype(X.dtype)
        return noise, X - noise
    return perturb


def infidelity(X, attributions, target, model, perturb_func=None, n_perturb_samples=10, stdevs=0.003,
               normalize=False, seed=0, internal_batch_size=None):
    """Infidelity (Yeh et al. 2019, Captum's ``infidelity``): the expected squared
    difference between ``sum(attr * I)`` and the score drop ``f(X) - f(X - I)``
    over perturbations I; lower is better.

    Args:
        X: (N, C, H, W) images; attributions: their (N, C, H, W) attributions.
        target, model: as :func:`gradvis.attribution.saliency`.
        perturb_func: ``f(X_rows, rng) -> (I, X_rows - I)`` for (R, C, H, W) rows
            (image i's samples are rows i * n_perturb_samples ...); default
            Gaussian noise of standard deviation ``stdevs`` (input units).
        n_perturb_samples: perturbations per image.
        normalize: scale the attributions by the least-squares factor beta first
            (Captum's ``normalize``).
        seed: int or numpy Generator, passed to ``perturb_func``.

    Returns:
        (N,) float64.

    Reference: Yeh et al., "On the (In)fidelity and Sensitivity of
    Explanations", NeurIPS 2019.
    """
    C.check_model(model, "infidelity")
    X = C.check_images(X, model)
    attr = np.asarray(attributions)
    if attr.shape != X.shape:
        raise ValueError(f"attributions must have X's shape {X.shape}, got {attr.shape}")
    n_perturb_samples = _checks.positive_int(n_perturb_samples, "n_perturb_samples")
    if perturb_func is None:
        perturb_func = gaussian_noise_perturbation(stdevs)
    elif not callable(perturb_func):
        raise TypeError(f"perturb_func must be callable f(X, rng) -> (perturbation, perturbed X), "
                        f"got {type(perturb_func).__name__}")
    rng = _checks.rng_from(seed)
    b = C.batch_size_arg(internal_batch_size, model, X)
    # with target None, the pass that finds the predicted class also gives f(X)
    scores = C.predict(model, X, b) if target is None else None
    t = C.resolve_target(target, X, model, scores=scores)
    n, s = len(X), n_perturb_samples
    if scores is None:
        f_x = C.target_scores(model, X, t, b)
    else:
        f_x = scores[np.arange(n), t].astype(np.float64)
    a = np.empty((n, s))
    d = np.empty((n, s))
    total = n * s
    for k0 in range(0, total, b):
        rows = np.arange(k0, min(total, k0 + b))
        img = rows // s
        pert, xp = perturb_func(X[img], rng)
        pert, xp = np.asarray(pert), np.asarray(xp, X.dtype)
        if pert.shape != xp.shape or xp.shape != (len(rows),) + X.shape[1:]:
            raise ValueError(f"perturb_func must return two arrays of shape {(len(rows),) + X.shape[1:]}, "
                             f"got {pert.shape} and {xp.shape}")
        a.flat[rows] = (pert.astype(np.float64) * attr[img]).reshape(len(rows), -1).sum(axis=1)
        d.flat[rows] = f_x[img] - C.target_scores(model, xp, t[img], b)
    if normalize:
        num = (a * d).mean(axis=1)
        den = (a * a).mean(axis=1)
        beta = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
        a = a * beta[:, None]
    return ((a - d) ** 2).mean(axis=1)


# ---------------------------------------------------------------- sensitivity
def sensitivity_max(explanation_func, X, target, model, perturb_radius=0.02, n_perturb_samples=10, seed=0,
                    **kwargs):
    """Max-sensitivity (Yeh et al. 2019, Captum's ``sensitivity_max`` with its
    default perturbation): the largest ``||expl(X + u) - expl(X)|| / ||expl(X)||``
    (Frobenius norms) over ``n_perturb_samples`` draws of u ~ U(-r, r) per value.

    Args:
        explanation_func: an attribution function ``f(X, target, model, **kwargs)``
            (e.g. :func:`gradvis.attribution.saliency`) or its name.
        perturb_radius: r, input units.
        seed: int or numpy Generator; image i's draws are rows
            ``i * n_perturb_samples ...`` of ``uniform(-r, r, (N * n, C, H, W))``.

    Returns:
        (N,) float64.
    """
    fn = pixel_method(explanation_func)
    C.check_model(model, "sensitivity_max")
    X = C.check_images(X, model)
    r = _checks.nonneg_float(perturb_radius, "perturb_radius")
    s = _checks.positive_int(n_perturb_samples, "n_perturb_samples")
    rng = _checks.rng_from(seed)
    t = C.resolve_target(target, X, model)
    base = np.asarray(fn(X, t, model, **kwargs), np.float64)
    norms = np.sqrt((base.reshape(len(X), -1) ** 2).sum(axis=1))
    norms[norms == 0] = 1.0
    b = max(1, C.default_batch_size(model, X.shape[1:], X.dtype))
    out = np.zeros(len(X))
    total = len(X) * s
    for k0 in range(0, total, b):
        rows = np.arange(k0, min(total, k0 + b))
        img = rows // s
        xp = X[img] + rng.uniform(-r, r, (len(rows),) + X.shape[1:]).astype(X.dtype)
        e = np.asarray(fn(xp, t[img], model, **kwargs), np.float64)
        diff = np.sqrt(((e - base[img]).reshape(len(rows), -1) ** 2).sum(axis=1)) / norms[img]
        np.maximum.at(out, img, diff)
    return out


# ---------------------------------------------------------------- deletion / insertion
def _importance(attributions, X):
    a = np.asarray(attributions, np.float64)
    if a.ndim == 4 and a.shape == X.shape:
        return a.sum(axis=1)
    if a.ndim == 3 and a.shape[0] == X.shape[0]:
        if a.shape[1:] != X.shape[2:]:
            a = C.resize_bilinear(a, X.shape[2:])
        return a
    raise ValueError(f"attributions must be (N, C, H, W) like X {X.shape} or (N, h, w) maps, got {a.shape}")


def _gaussian_blur(X, sigma=5.0, radius=5):
    """Separable Gaussian blur of (N, C, H, W) (RISE's insertion start: an 11-tap
    kernel of sigma 5), edge values repeated."""
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(X, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="edge")
    Y = sum(k[i] * p[:, :, i:i + X.shape[2]] for i in range(len(k)))
    p = np.pad(Y, ((0, 0), (0, 0), (0, 0), (radius, radius)), mode="edge")
    return sum(k[i] * p[:, :, :, i:i + X.shape[3]] for i in range(len(k))).astype(X.dtype)


def _curve(X, attributions, target, model, start, end, pixels_per_step, what):
    C.check_model(model, what)
    X = C.check_images(X, model)
    imp = _importance(attributions, X)
    t = C.resolve_target(target, X, model)
    n, _, H, W = X.shape
    hw = H * W
    step = W if pixels_per_step is None else _checks.positive_int(pixels_per_step, "pixels_per_step")
    n_steps = -(-hw // step)
    curves = np.empty((n, n_steps + 1))
    b = C.default_batch_size(model, X.shape[1:], X.dtype)
    for i in range(n):
        order = np.argsort(-imp[i].reshape(-1), kind="stable")
        src = end[i].reshape(X.shape[1], -1)
        cur = start[i].reshape(X.shape[1], -1).copy()
        # frame k has the k * step most important pixels from `end`; the frames are
        # built one forward pass at a time, so memory stays at one batch
        frames = np.empty((min(b, n_steps + 1), X.shape[1], hw), X.dtype)
        for f0 in range(0, n_steps + 1, b):
            rows = min(b, n_steps + 1 - f0)
            for j in range(rows):
                k = f0 + j
                if k > 0:
                    idx = order[(k - 1) * step:k * step]
                    cur[:, idx] = src[:, idx]
                frames[j] = cur
            s = model.forward(frames[:rows].reshape((rows,) + X.shape[1:]), cache=False)[0].astype(np.float64)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            curves[i, f0:f0 + rows] = s[:, t[i]] / s.sum(axis=1)
    auc = (curves.sum(axis=1) - 0.5 * (curves[:, 0] + curves[:, -1])) / n_steps
    return curves, auc


def deletion_curve(X, attributions, target, model, pixels_per_step=None, substrate=0.0):
    """Deletion curve and its AUC (Petsiuk et al. 2018, RISE): the target's softmax
    probability as the most important pixels (by attribution, summed over
    channels) are replaced by ``substrate``, ``pixels_per_step`` at a time
    (default one image row). Lower AUC is better.

    Args:
        X: (N, C, H, W); attributions: (N, C, H, W) or (N, h, w) maps (resized).
        substrate: a number or array broadcastable to X (default 0).

    Returns:
        (curves (N, steps + 1), auc (N,)), float64; the AUC is the trapezoid
        area over [0, 1].

    Reference: Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
    Explanation of Black-box Models", BMVC 2018.
    """
    X = C.check_images(X, model)
    return _curve(X, attributions, target, model, X, C.baselines_arg(substrate, X, "substrate"),
                  pixels_per_step, "deletion_curve")


def insertion_curve(X, attributions, target, model, pixels_per_step=None, substrate=None):
    """Insertion curve and its AUC (RISE): the target's probability as the most
    important pixels are copied from X into ``substrate`` (default: X blurred
    by RISE's Gaussian, sigma 5). Higher AUC is better. Returns (curves, auc)
    as :func:`deletion_curve`.
    """
    X = C.check_images(X, model)
    start = _gaussian_blur(X) if substrate is None else C.baselines_arg(substrate, X, "substrate")
    return _curve(X, attributions, target, model, start, X, pixels_per_step, "insertion_curve")


# ---------------------------------------------------------------- sanity check
def _ranks(a):
    """Ranks (0-based, ties averaged) of a 1-D array."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(a)]
    avg = (starts + ends - 1) / 2.0
    r = np.empty(len(a))
    r[order] = avg[group]
    return r


def spearman(a, b):
    """Spearman rank correlation of two arrays (flattened); 0 when one is constant."""
    ra, rb = _ranks(np.ravel(a).astype(np.float64)), _ranks(np.ravel(b).astype(np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _as_map(a, absolute):
    a = np.asarray(a, np.float64)
    if a.ndim == 4:
        return np.abs(a).sum(axis=1) if absolute else a.sum(axis=1)
    return np.abs(a) if absolute else a


def edge_detector(X, target, model):
    """Sobel gradient magnitude of each channel of X, (N, C, H, W): a map that
    ignores the model (``target`` and ``model`` are only checked), the control
    of :func:`sanity_check`."""
    C.check_model(model, "edge_detector")
    X = C.check_images(X, model)
    C.resolve_target(target, X, model)
    p = np.pad(X.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = X.shape[2:]

    def sh(dy, dx):
        return p[:, :, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
    gx = (sh(-1, 1) + 2 * sh(0, 1) + sh(1, 1)) - (sh(-1, -1) + 2 * sh(0, -1) + sh(1, -1))
    gy = (sh(1, -1) + 2 * sh(1, 0) + sh(1, 1)) - (sh(-1, -1) + 2 * sh(-1, 0) + sh(-1, 1))
    return np.sqrt(gx * gx + gy * gy).astype(X.dtype)


def sanity_check(method, X, target, model, seed=0, absolute=True, **kwargs):
    """Cascading model-parameter randomization (Adebayo et al. 2018).

    The parameters of the layers are re-initialized from the top (output) layer
    down, cumulatively, on a copy of the model; after each layer the method's map
    is recomputed and compared with the original by Spearman rank correlation.
    A method that depends on the learned weights decorrelates quickly; one that
    ignores the model (e.g. :func:`edge_detector`) stays at 1.

    Args:
        method: an attribution function ``f(X, target, model, **kwargs)`` (pixel
            or CAM method; CAMs are compared at their own resolution) or the
            name of a pixel method.
        X, target, model: as :func:`gradvis.attribution.saliency`; the target is
            resolved on the original model and kept.
        seed: int or numpy Generator for the new parameters (each layer's own
            initializer: He-normal convolutions, uniform linears, batch norm 1/0).
        absolute: compare absolute values summed over channels (the paper's main
            figures); False compares the signed channel sums.

    Returns:
        dict with 'layers' (names randomized, top first), 'correlations' (L, N)
        float64 (row k: after randomizing layers[0..k]), 'maps' (L + 1 arrays,
        the original first, as returned by ``method``).

    Reference: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    if isinstance(method, str):
            method = pixel_method(method)
    if not callable(method):
        raise TypeError(f"method must be an attribution function or a pixel method's name, got {method!r}")
    C.check_model(model, "sanity_check")
    X = C.check_images(X, model)
    rng = _checks.rng_from(seed)
    t = C.resolve_target(target, X, model)
    layers = [n for n in reversed(model.nodes) if n.layer.param_shapes]
    if not layers:
        raise ValueError("sanity_check needs a model with parameters")
    m = model.copy()
    original = method(X, t, model, **kwargs)
    ref = _as_map(original, absolute)
    maps = [original]
    corr = np.empty((len(layers), len(X)))
    for k, node in enumerate(layers):
        dtypes = {key: m.params[f"{node.name}.{key}"].dtype for key in node.layer.param_shapes}
        for key, v in node.layer.init_params(rng, np.float32).items():
            m.params[f"{node.name}.{key}"] = v.astype(dtypes[key])
        cur = method(X, t, m, **kwargs)
        maps.append(cur)
        cm = _as_map(cur, absolute)
        corr[k] = [spearman(ref[i], cm[i]) for i in range(len(X))]
    return {"layers": [n.name for n in layers], "correlations": corr, "maps": maps}
