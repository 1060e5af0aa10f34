"""FGSM and projected gradient descent (PGD) under an L-inf, L2 or L1 budget."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .common import (Problem, check_eps, check_loss, check_norm, check_steps, make_report, project,
                     random_start as _random_start, steepest_step)

__all__ = ["fgsm", "pgd"]


def fgsm(X, y, model, eps=8.0, targeted=False, target=None, seed=0, norm="inf", loss="ce"):
    """The fast gradient sign method (Goodfellow et al. 2015): one step of ``eps``
    grey levels along the sign of the loss gradient (``norm='2'``: along the
    normalized gradient, the "fast gradient method"), then clipped to the valid
    pixel box.

    Args:
        X: images (N, C, H, W) in the model's input space.
        y: true classes, one int or (N,).
        model: a :class:`gradvis.Model` classifier.
        eps: the budget in 0-255 grey levels, a number or one per image (N,).
        targeted: move towards ``target`` (decrease its cross-entropy) instead of
            away from ``y``; a given ``target`` implies it. Without ``target`` a
            random class other than y is drawn from ``seed``.
        target: the classes to reach, one int or (N,), each != y.
        seed: an int or numpy Generator (for the random targets).
        norm: 'inf' (FGSM) or '2' (FGM).
        loss: 'ce' or 'margin'.

    Returns:
        (X_adv (N, C, H, W), report): see :func:`gradvis.attacks.pgd`.
    """
    prob = Problem(X, y, model, targeted, target, seed, "fgsm")
    norm = check_norm(norm, ("inf", "2"), "fgsm")
    eps = check_eps(eps, prob.n)
    loss = check_loss(loss, ("ce", "margin"))
    return _iterate(prob, eps, norm, 1, eps, False, 1, loss, keep_best=False)


def pgd(X, y, model, eps=8.0, targeted=False, target=None, seed=0, norm="inf", steps=10,
        step_size=None, random_start=True, restarts=1, loss="ce", l1_sparsity=0.95, callback=None):
    """Projected gradient descent (Madry et al. 2018; Kurakin et al. 2017 without
    the random start): ``steps`` steepest-ascent steps on the loss, each projected
    back onto the eps-ball around X and into the valid pixel box.

    The step is ``step_size * sign(g)`` for L-inf, ``step_size * g / ||g||_2`` for
    L2 and, for L1, sparse L1 descent (Tramer & Boneh 2019): the sign of the
    largest ``1 - l1_sparsity`` fraction of the gradient entries, scaled to L1 norm
    ``step_size``. All in grey levels of the model's pixel units, so the ball is a
    ball around the saved image whatever the model's normalization. With
    ``restarts`` > 1 the attack starts again (a fresh random start) on the images
    not yet fooled. Of every iterate seen, each image keeps the one with the
    largest adversarial margin.

    Args:
        X: images (N, C, H, W) in the model's input space.
        y: true classes, one int or (N,).
        model: a :class:`gradvis.Model` classifier.
        eps: budget in 0-255 grey levels, a number or one per image (N,), >= 0.
        targeted, target: see :func:`gradvis.attacks.fgsm`.
        seed: an int or numpy Generator: random starts and random targets.
        norm: 'inf', '2' or '1'.
        steps: gradient steps per restart, >= 1.
        step_size: grey levels per step (a number or (N,)); default ``2.5 * eps / steps``.
        random_start: start from a uniformly random point of the ball.
        restarts: runs, >= 1.
        loss: 'ce' (cross-entropy), 'margin' (the CW margin) or 'dlr' (Croce & Hein 2020).
        l1_sparsity: quantile of |g| above which the L1 step moves pixels.
        callback: called as ``callback(t, X_iterate, info)`` after every step,
            with the current iterate of all images (N, C, H, W).

    Returns:
        X_adv: (N, C, H, W) of X's dtype.
        report: dict of (N,) arrays: 'success', 'margin' (score units, > 0 when
        adversarial), 'predicted', 'iterations' (steps until the first success),
        'linf', 'l2', 'l1' (grey levels), 'eps' (and 'target' when targeted).

    Example:
        >>> X_adv, rep = pgd(X, y, model, eps=4, steps=40)
        >>> 1 - rep['success'].mean()      # robust accuracy at 4/255 when all were correct
    """
    prob = Problem(X, y, model, targeted, target, seed, "pgd")
    norm = check_norm(norm, what="pgd")
    eps = check_eps(eps, prob.n)
    steps = check_steps(steps)
    restarts = check_steps(restarts, "restarts")
    loss = check_loss(loss, ("ce", "margin", "dlr"))
    step = 2.5 * eps / steps if step_size is None else check_eps(step_size, prob.n, "step_size")
    l1_sparsity = _checks.finite_float(l1_sparsity, "l1_sparsity")
    if not 0.0 <= l1_sparsity < 1.0:
        raise ValueError(f"l1_sparsity must be in [0, 1), got {l1_sparsity}")
    if not isinstance(random_start, (bool, np.bool_)):
        raise TypeError(f"random_start must be True or False, got {random_start!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    return _iterate(prob, eps, norm, steps, step, bool(random_start), restarts, loss,
                    keep_best=True, l1_sparsity=l1_sparsity, callback=callback)


def _iterate(prob, eps, norm, steps, step, random_start, restarts, loss, keep_best=True,
             l1_sparsity=0.95, callback=None):
    n, dt = prob.n, prob.X.dtype
    everyone = np.arange(n)
    best = np.zeros_like(prob.X)
    scores0 = prob.scores(best)
    best_scores = scores0.astype(np.float64)
    best_margin = prob.margin(scores0, everyone)
    iterations = np.zeros(n, np.int64)
    first = np.where(best_margin > 0, 0, -1)
    extra = prob.y if loss == "dlr" and prob.targeted else None
    for r in range(restarts):
        idx = everyone if r == 0 else np.flatnonzero(best_margin <= 0)
        if idx.size == 0:
            break
        e = eps[idx]
        if random_start:
            delta = _random_start(prob.X[idx].shape, e, norm, prob.rng, dt)
            delta = prob.clip(delta, idx)
        else:
            delta = np.zeros_like(prob.X[idx])
        for t in range(steps + 1):
            if t < steps:
                scores, _, g = prob.scores_and_gradient(delta, idx, loss,
                                                        extra=None if extra is None else extra[idx])
            else:
                scores = prob.scores(delta, idx)
            margin = prob.margin(scores, idx)
            # the iterate that counts: the last one, or the best one seen
            take = margin > best_margin[idx] if keep_best else np.full(idx.size, t == steps)
            if take.any():
                best[idx[take]] = delta[take]
                best_margin[idx[take]] = margin[take]
                best_scores[idx[take]] = scores[take]
            hit = (margin > 0) & (first[idx] < 0)
            first[idx[hit]] = r * steps + t
            if t == steps:
                break
            iterations[idx] += 1
            delta = delta + steepest_step(g, norm, step[idx], l1_sparsity)
            delta = prob.clip(project(delta, e, norm), idx)
            if callback is not None:
                cur = best.copy()
                cur[idx] = delta
                callback(t, prob.images(cur), {"fooled": int((best_margin > 0).sum())})
    iterations = np.where(first >= 0, first, iterations)
    rep = make_report(prob, best, best_scores, iterations=iterations, eps=eps)
    return prob.images(best), rep
