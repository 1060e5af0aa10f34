"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size that halves
when the loss stops improving; no step size to tune."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .common import Problem, check_eps, check_loss, check_norm, check_steps, make_report, project

__all__ = ["apgd"]


def apgd(X, y, model, eps=8.0, targeted=False, target=None, seed=0, norm="inf", steps=100,
         restarts=1, loss="ce", rho=0.75, n_target_classes=9, callback=None):
    """Auto-PGD, APGD-CE and APGD-DLR (Croce & Hein 2020, "Reliable evaluation of
    adversarial robustness with an ensemble of diverse parameter-free attacks",
    Algorithm 1), untargeted or targeted (APGD-T).

    The step starts at ``2 * eps`` grey levels and halves, going back to the best
    point so far, at checkpoints where the loss rose in fewer than ``rho`` of the
    steps since the last one, or where neither the step nor the best loss changed;
    the update mixes in momentum 0.25. Each run starts at a random point on the
    sphere of radius eps (as the paper's reference code). ``restarts`` runs are
    made on the images not yet fooled.

    Targeted with ``target=None`` is APGD-T: one run for each of the
    ``n_target_classes`` most likely classes other than y (by the clean scores),
    on the images not yet misclassified; its report is an untargeted one
    (success: a wrong prediction, margin against y) and report['target'] gives
    the target of the run that fooled the image (or the last one tried). With
    ``target`` given, that class is the target.

    Args:
        X, y, model: images (N, C, H, W), true classes (N,), a classifier.
        eps: budget in 0-255 grey levels, a number or (N,), >= 0.
        targeted, target, seed: see :func:`gradvis.attacks.pgd`.
        norm: 'inf' or '2'.
        steps: iterations per run (the paper: 100).
        restarts: runs (per target class when targeted without target).
        loss: 'ce' or 'dlr' (the difference of logits ratio; targeted: eq. 7,
            which needs 4 classes).
        rho: the checkpoint threshold (0.75).
        n_target_classes: target classes of APGD-T.
        callback: ``callback(t, X_iterate, info)`` after every step of every run.

    Returns:
        (X_adv, report) as :func:`gradvis.attacks.pgd`.
    """
    want_random_targets = (targeted and target is None)
    prob = Problem(X, y, model, False if want_random_targets else targeted, target, seed, "apgd")
    norm = check_norm(norm, ("inf", "2"), "apgd")
    eps = check_eps(eps, prob.n)
    steps = check_steps(steps)
    restarts = check_steps(restarts, "restarts")
    loss = check_loss(loss, ("ce", "dlr"))
    rho = _checks.finite_float(rho, "rho")
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    n = prob.n
    everyone = np.arange(n)
    best = np.zeros_like(prob.X)
    best_scores = prob.scores(best).astype(np.float64)
    iterations = np.zeros(n, np.int64)
    first = np.full(n, -1, np.int64)

    if want_random_targets:
        k = prob.model.num_classes
        n_target_classes = _checks.positive_int(n_target_classes, "n_target_classes", hi=max(k - 1, 1))
        order = np.argsort(-best_scores, axis=1, kind="stable")
        ranked = np.array([[c for c in row if c != yi] for row, yi in zip(order, prob.y)])
        prob.targeted = True
        prob.target = ranked[:, 0].copy()
        plan = [ranked[:, j] for j in range(n_target_classes)]
    else:
        plan = [prob.target] if prob.targeted else [None]

    best_margin = prob.margin(best_scores, everyone)
    # APGD-T counts any wrong prediction, whichever target led there
    wrong = (best_scores.argmax(axis=1) != prob.y) if want_random_targets else best_margin > 0
    first[wrong] = 0
    done_steps = 0
    for tgt in plan:
        for _ in range(restarts):
            idx = np.flatnonzero(~wrong)
            if idx.size == 0:
                break
            if tgt is not None and want_random_targets:
                # the margin of the images tried is now against this target
                prob.target[idx] = tgt[idx]
                best_margin[idx] = prob.margin(best_scores[idx], idx)
            out = _run(prob, idx, eps[idx], norm, steps, loss, rho, callback, best, done_steps)
            delta, margin, scores, first_hit = out
            take = margin > best_margin[idx]
            best[idx[take]] = delta[take]
            best_margin[idx[take]] = margin[take]
            best_scores[idx[take]] = scores[take]
            new = (first_hit >= 0) & (first[idx] < 0)
            first[idx[new]] = done_steps + first_hit[new]
            iterations[idx] += steps
            done_steps += steps
            if want_random_targets:
                hit = best_scores[idx].argmax(axis=1) != prob.y[idx]
                wrong[idx[hit]] = True
                first[idx[hit & (first[idx] < 0)]] = done_steps
            else:
                wrong[idx] = best_margin[idx] > 0
    iterations = np.where(first >= 0, first, iterations)
    if not want_random_targets:
        return prob.images(best), make_report(prob, best, best_scores, iterations=iterations, eps=eps)
    # report as an untargeted attack (success: a wrong prediction), with the target tried last
    tried = prob.target
    prob.targeted, prob.target = False, None
    rep = make_report(prob, best, best_scores, iterations=iterations, eps=eps)
    rep["target"] = tried
    return prob.images(best), rep


def _oscillating(loss_steps, i, k, rho):
    # the reference's check: the loss rose in at most k * rho of the last k steps
    t = np.zeros(loss_steps.shape[1])
    for c in range(k):
        t += loss_steps[i - c] > loss_steps[i - c - 1]
    return t <= k * rho


def _run(prob, idx, e, norm, steps, loss, rho, callback, best_all, offset):
    """One APGD run on images ``idx``; returns the best-margin change (n, C, H, W),
    its margin and scores, and the step of the first success (-1: none)."""
    dt = prob.X.dtype
    n = idx.size
    shape = prob.X[idx].shape
    extra = prob.y[idx] if (loss == "dlr" and prob.targeted) else None
    n_iter_2 = max(int(0.22 * steps), 1)
    n_iter_min = max(int(0.06 * steps), 1)
    size_decr = max(int(0.03 * steps), 1)
    ecol = e.reshape(-1, 1, 1, 1)

    if norm == "inf":
        t = prob.rng.uniform(-1.0, 1.0, shape)
        t = t / np.maximum(np.abs(t.reshape(n, -1)).max(axis=1), 1e-30).reshape(-1, 1, 1, 1)
    else:
        t = prob.rng.standard_normal(shape)
        t = t / (np.sqrt((t.reshape(n, -1) ** 2).sum(axis=1)) + 1e-12).reshape(-1, 1, 1, 1)
    delta = prob.clip((ecol * t).astype(dt), idx)

    def evaluate(d):
        s, v, g = prob.scores_and_gradient(d, idx, loss, extra=extra)
        return s, v, g

    scores, lval, g = evaluate(delta)
    margin = prob.margin(scores, idx)
    out_delta, out_margin, out_scores = delta.copy(), margin.copy(), scores.astype(np.float64)
    first = np.where(margin > 0, 0, -1)
    x_best, g_best, loss_best = delta.copy(), g.copy(), lval.copy()
    step = (2.0 * e).reshape(-1, 1, 1, 1)
    delta_old = delta.copy()
    loss_steps = np.zeros((steps, n))
    counter3, k = 0, n_iter_2
    loss_best_last = loss_best.copy()
    reduced_last = np.ones(n, bool)

    def proj(d):
        return prob.clip(project(d, e, norm), idx)

    for i in range(steps):
        grad2 = delta - delta_old
        delta_old = delta
        a = 0.75 if i > 0 else 1.0
        if norm == "inf":
            z = proj(delta + (step * np.sign(g)).astype(dt))
        else:
            gn = np.sqrt((g.reshape(n, -1).astype(np.float64) ** 2).sum(axis=1)) + 1e-12
            z = proj(delta + (step * g / gn.reshape(-1, 1, 1, 1)).astype(dt))
        delta = proj(delta + (z - delta) * a + grad2 * (1 - a)).astype(dt)

        scores, lval, g = evaluate(delta)
        margin = prob.margin(scores, idx)
        take = margin > out_margin
        out_delta[take], out_margin[take], out_scores[take] = delta[take], margin[take], scores[take]
        first = np.where((margin > 0) & (first < 0), i + 1, first)
        if callback is not None:
            cur = best_all.copy()
            cur[idx] = delta
            callback(offset + i, prob.images(cur), {"fooled": int((out_margin > 0).sum())})

        loss_steps[i] = lval
        up = lval > loss_best
        x_best[up], g_best[up], loss_best[up] = delta[up], g[up], lval[up]
        counter3 += 1
        if counter3 == k:
            osc = _oscillating(loss_steps, i, k, rho)
            no_impr = (~reduced_last) & (loss_best_last >= loss_best)
            fl = osc | no_impr
            reduced_last = fl.copy()
            loss_best_last = loss_best.copy()
            if fl.any():
                step[fl] /= 2.0
                delta = delta.copy()
                g = g.copy()
                delta[fl] = x_best[fl]
                g[fl] = g_best[fl]
            counter3 = 0
            k = max(k - size_decr, n_iter_min)
    return out_delta, out_margin, out_scores, first
