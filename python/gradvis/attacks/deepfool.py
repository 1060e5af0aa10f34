"""DeepFool: the nearest decision boundary of the locally linearized classifier."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .common import Problem, check_eps, check_norm, check_steps, make_report, norm_of

__all__ = ["deepfool"]


def deepfool(X, y, model, eps=None, targeted=False, target=None, seed=0, norm="2", steps=50,
             overshoot=0.02, candidates=10, callback=None):
    """DeepFool (Moosavi-Dezfooli et al. 2016, Algorithms 2 and 3): at each step,
    linearize the differences ``f_k = z_k - z_y`` of the scores around the current
    image, move to the nearest linearized boundary (in L2 or L-inf, in grey
    levels), and repeat until the prediction changes; the total change is scaled
    by ``1 + overshoot``.

    Args:
        X, y, model: images (N, C, H, W), true classes, a classifier.
        eps: optional budget in grey levels (in ``norm``): a success counts only
            within it. None: no budget (a minimum-norm attack).
        targeted, target, seed: only the boundary with ``target`` is considered
            (a targeted DeepFool); see :func:`gradvis.attacks.pgd`.
        norm: '2' or 'inf'.
        steps: most linearization steps, >= 1.
        overshoot: the paper's 0.02.
        candidates: the classes whose boundaries are considered: the
            ``candidates`` most likely ones by the clean scores (the paper's
            code uses 10); each costs a backward pass per step.
        callback: ``callback(t, X_iterate, info)`` after every step.

    Returns:
        (X_adv, report) as :func:`gradvis.attacks.pgd`.
    """
    prob = Problem(X, y, model, targeted, target, seed, "deepfool")
    n = prob.n
    eps = check_eps(eps, n, allow_none=True)
    norm = check_norm(norm, ("2", "inf"), "deepfool")
    steps = check_steps(steps)
    overshoot = _checks.nonneg_float(overshoot, "overshoot")
    k = prob.model.num_classes
    candidates = _checks.positive_int(candidates, "candidates")
    candidates = min(max(candidates, 2), k)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    dt = prob.X.dtype
    everyone = np.arange(n)
    clean = prob.scores(np.zeros_like(prob.X)).astype(np.float64)
    if prob.targeted:
        others = prob.target[:, None]
    else:
        order = np.argsort(-clean, axis=1, kind="stable")
        others = np.array([[c for c in row if c != yi][:candidates - 1] for row, yi in zip(order, prob.y)])
    r_tot = np.zeros(prob.X.shape, np.float64)
    delta = np.zeros_like(prob.X)
    scores = clean.copy()
    iterations = np.zeros(n, np.int64)
    active = prob.margin(clean, everyone) <= 0
    for t in range(steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        s, cache = prob.model.forward(prob.images(delta[idx], idx), mode="test")
        s64 = s.astype(np.float64)
        scores[idx] = s64
        fooled = prob.margin(s64, idx) > 0
        if fooled.any():
            active[idx[fooled]] = False
        keep = ~fooled
        idx_k = idx[keep]
        if idx_k.size == 0:
            break
        rows = np.arange(idx.size)
        base = prob.y[idx]

        def grad_of(cls):
            d = np.zeros_like(s)
            d[rows, cls] = 1.0
            return prob.model.backward(d, cache, param_grads=False)[0].astype(np.float64) / prob.px

        g_y = grad_of(base)
        best_dist = np.full(idx.size, np.inf)
        best_step = np.zeros(prob.X[idx].shape)
        for j in range(others.shape[1]):
            cls = others[idx, j]
            w = grad_of(cls) - g_y
            f = s64[rows, cls] - s64[rows, base]         # < 0 while y wins
            if norm == "2":
                wn = norm_of(w, "2")
                dist = np.abs(f) / np.maximum(wn, 1e-12)
                step = ((np.abs(f) + 1e-4) / np.maximum(wn, 1e-12) ** 2)[:, None, None, None] * w
            else:
                wn = norm_of(w, "1")
                dist = np.abs(f) / np.maximum(wn, 1e-12)
                step = ((np.abs(f) + 1e-4) / np.maximum(wn, 1e-12))[:, None, None, None] * np.sign(w)
            closer = dist < best_dist
            best_dist[closer] = dist[closer]
            best_step[closer] = step[closer]
        r_tot[idx_k] += best_step[keep]
        d = (1.0 + overshoot) * r_tot[idx_k]
        delta[idx_k] = np.clip(d, prob.lo[idx_k], prob.hi[idx_k]).astype(dt)
        iterations[idx_k] += 1
        if callback is not None:
            callback(t, prob.images(delta), {"fooled": int((~active).sum())})
    final = np.flatnonzero(active)
    if final.size:
        scores[final] = prob.scores(delta[final], final)
    rep = make_report(prob, delta, scores, iterations=iterations, eps=eps)
    if eps is not None:
        within = rep["l2" if norm == "2" else "linf"] <= eps + 1e-9
        rep["success"] &= within
    return prob.images(delta), rep
