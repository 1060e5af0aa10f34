"""The Carlini & Wagner L2 attack, with a binary search over its constant c."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .common import Problem, check_eps, check_steps, make_report, norm_of

__all__ = ["cw_l2"]

# keeps atanh finite for pixels on the box's edge (as the paper's code)
_EDGE = 1.0 - 1e-6


def cw_l2(X, y, model, eps=None, targeted=False, target=None, seed=0, c=1.0, kappa=0.0, steps=100,
          binary_steps=5, lr=0.01, abort_early=True, callback=None):
    """Carlini & Wagner's L2 attack (2017, "Towards evaluating the robustness of
    neural networks", section V.A): Adam on ``w``, where the adversarial image is
    ``lo + (hi - lo) * (tanh(w) + 1) / 2`` in pixel units (so it stays in the valid
    box), minimizing

        ||delta / 255||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)

    (targeted: ``max(max_{j != t} z_j - z_t, -kappa)``), with ``delta`` the change
    in grey levels: the distance is measured in 0-1 pixel units, as in the paper
    and torchattacks, so values of ``c`` carry over. After each of
    ``binary_steps`` runs, c is halved towards the last failure for images that
    were fooled and raised (x10 while no success was seen, else bisected) for the
    others. Each image keeps its smallest-L2 successful point.

    Args:
        X, y, model: images (N, C, H, W), true classes, a classifier.
        eps: optional L2 budget in grey levels (a number or (N,)): a point counts
            as a success only within it. None: no budget (a minimum-norm attack).
        targeted, target, seed: see :func:`gradvis.attacks.pgd`.
        c: the starting constant (a number > 0).
        kappa: confidence: the margin the objective asks for, in score units.
        steps: Adam steps per binary-search step.
        binary_steps: runs with different c, >= 1.
        lr: Adam's step size on w.
        abort_early: end a run when its objective has not fallen by 0.01% over
            a tenth of the steps (the paper's code).
        callback: ``callback(t, X_iterate, info)`` after every Adam step.

    Returns:
        (X_adv, report) as :func:`gradvis.attacks.pgd`; failed images are returned
        unchanged (their report has success False and zero norms), and
        report['c'] holds each image's last constant.
    """
    prob = Problem(X, y, model, targeted, target, seed, "cw_l2")
    n = prob.n
    eps = check_eps(eps, n, allow_none=True)
    c0 = _checks.nonneg_float(c, "c", positive=True)
    kappa = _checks.nonneg_float(kappa, "kappa")
    steps = check_steps(steps)
    binary_steps = check_steps(binary_steps, "binary_steps")
    lr = _checks.nonneg_float(lr, "lr", positive=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    dt = prob.X.dtype
    lo, hi = prob.lo.astype(np.float64), prob.hi.astype(np.float64)
    mid, half = (hi + lo) / 2, np.maximum((hi - lo) / 2, 1e-12)
    w0 = np.arctanh(np.clip((0.0 - mid) / half, -_EDGE, _EDGE))     # the clean image

    everyone = np.arange(n)
    lab = prob.labels
    best = np.zeros_like(prob.X)
    best_l2 = np.full(n, np.inf)
    best_scores = prob.scores(best).astype(np.float64)
    const = np.full(n, c0)
    lower = np.zeros(n)
    upper = np.full(n, np.inf)
    iterations = np.zeros(n, np.int64)
    first = np.full(n, -1, np.int64)
    budget = np.full(n, np.inf) if eps is None else eps
    sign = 1.0 if prob.targeted else -1.0     # margin = sign * (z_lab - max other)
    done = 0
    for b in range(binary_steps):
        w = w0.copy()
        m = np.zeros_like(w)
        v = np.zeros_like(w)
        prev = np.inf
        success_here = np.zeros(n, bool)
        for t in range(steps):
            delta = mid + half * np.tanh(w)
            scores, cache = prob.model.forward(prob.images(delta.astype(dt)), mode="test")
            s = scores.astype(np.float64)
            other = s.copy()
            other[everyone, lab] = -np.inf
            j = other.argmax(axis=1)
            diff = s[everyone, lab] - s[everyone, j]          # z_lab - max other
            margin = sign * diff
            # the loss term: max(-margin, -kappa)
            active = -margin > -kappa
            l2 = norm_of(delta, "2")
            ok = (margin > 0) & (l2 <= budget + 1e-9)
            better = ok & (l2 < best_l2)
            if better.any():
                best[better] = delta[better].astype(dt)
                best_l2[better] = l2[better]
                best_scores[better] = s[better]
            success_here |= margin > 0
            new = ok & (first < 0)
            first[new] = done + t
            obj = ((l2 / 255.0) ** 2 + const * np.where(active, -margin, -kappa)).sum()
            if abort_early and t % max(steps // 10, 1) == 0:
                if obj > prev * 0.9999:
                    break
                prev = obj
            dscores = np.zeros_like(s)
            coef = np.where(active, -sign * const, 0.0)
            dscores[everyone, lab] += coef
            dscores[everyone, j] -= coef
            g = prob.model.backward(dscores.astype(scores.dtype), cache, param_grads=False)[0]
            g_delta = 2.0 * delta / 255.0 ** 2 + g.astype(np.float64) / prob.px
            g_w = g_delta * half * (1.0 - np.tanh(w) ** 2)
            m = 0.9 * m + 0.1 * g_w
            v = 0.999 * v + 0.001 * g_w * g_w
            mh = m / (1 - 0.9 ** (t + 1))
            vh = v / (1 - 0.999 ** (t + 1))
            w = w - lr * mh / (np.sqrt(vh) + 1e-8)
            iterations += 1
            if callback is not None:
                callback(done + t, prob.images(delta.astype(dt)), {"fooled": int(np.isfinite(best_l2).sum())})
        done += steps
        # binary search on c
        upper = np.where(success_here, np.minimum(upper, const), upper)
        lower = np.where(success_here, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2, const * 10.0)
    found = np.isfinite(best_l2)
    # the clean image may already be adversarial (margin > 0 at delta 0)
    rep = make_report(prob, best, best_scores, iterations=np.where(first >= 0, first, iterations), eps=eps)
    rep["success"] = rep["success"] & (found | (rep["l2"] == 0))
    rep["c"] = const
    return prob.images(best), rep
