"""The smallest budget for which an attack succeeds, per image, by bisection;
and random noise, the baseline that gradient attacks must beat."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .apgd import apgd
from .common import Problem, check_eps, check_norm, make_report, norm_of, project
from .gradient import fgsm, pgd

__all__ = ["min_norm", "random_noise"]


def random_noise(X, y, model, eps=8.0, targeted=False, target=None, seed=0, norm="inf", samples=10):
    """Random changes of size eps: ``samples`` draws per image of uniformly random
    signs times eps (L-inf: a random corner of the ball) or of a random direction
    of norm eps (L2, L1); each image keeps the draw with the largest adversarial
    margin. A black-box baseline: a gradient attack that does worse than it at
    the same eps is a sign of gradient masking (Athalye et al. 2018).

    Args, Returns: as :func:`gradvis.attacks.pgd`; report['iterations'] counts draws.
    """
    prob = Problem(X, y, model, targeted, target, seed, "random_noise")
    norm = check_norm(norm, what="random_noise")
    eps = check_eps(eps, prob.n)
    samples = _checks.positive_int(samples, "samples")
    everyone = np.arange(prob.n)
    best = np.zeros_like(prob.X)
    best_scores = prob.scores(best).astype(np.float64)
    best_margin = prob.margin(best_scores, everyone)
    first = np.where(best_margin > 0, 0, -1)
    col = eps.reshape(-1, 1, 1, 1)
    for s in range(samples):
        if norm == "inf":
            d = prob.rng.choice(np.array([-1.0, 1.0]), size=prob.X.shape) * col
        else:
            d = prob.rng.standard_normal(prob.X.shape) if norm == "2" else prob.rng.laplace(size=prob.X.shape)
            d = d * (eps / np.maximum(norm_of(d, norm), 1e-30)).reshape(-1, 1, 1, 1)
        d = prob.clip(project(d.astype(prob.X.dtype), eps, norm))
        sc = prob.scores(d).astype(np.float64)
        mg = prob.margin(sc, everyone)
        take = mg > best_margin
        best[take], best_scores[take], best_margin[take] = d[take], sc[take], mg[take]
        first[(mg > 0) & (first < 0)] = s + 1
    it = np.where(first >= 0, first, samples)
    return prob.images(best), make_report(prob, best, best_scores, iterations=it, eps=eps)


def min_norm(X, y, model, attack="pgd", eps_max=32.0, bisection_steps=8, targeted=False, target=None,
             seed=0, norm="inf", **attack_kwargs):
    """The smallest budget, per image, for which an eps attack succeeds: bisection
    on [0, eps_max] grey levels, each image on its own bracket (all images of a
    round are attacked in one call, each with its own eps).

    After ``bisection_steps`` rounds each fooled image's bracket is ``eps_max /
    2**bisection_steps`` wide: the attack succeeded at report['eps'] (the
    returned image) and failed at report['eps_lower'] (with the same seed).

    Args:
        X, y, model: images (N, C, H, W), true classes, a classifier.
        attack: 'fgsm', 'pgd' or 'apgd' (their functions in gradvis.attacks), or a
            callable ``attack(X, y, model, eps=(n,), targeted=, target=, seed=,
            **attack_kwargs) -> (X_adv, report)`` with report['success'].
        eps_max: the largest budget tried (grey levels, > 0).
        bisection_steps: rounds after the first try at eps_max, >= 1.
        targeted, target, seed: passed to the attack (see :func:`gradvis.attacks.pgd`).
        norm: the budget's norm, passed to the named attacks.
        attack_kwargs: more arguments for the attack (steps, restarts, ...).

    Returns:
        X_adv: (N, C, H, W), the adversarial image at report['eps'] (the clean
        image where none was found).
        report: dict of (N,) arrays: 'success' (found within eps_max), 'eps' (the
        smallest budget that succeeded; inf where none did; 0 for images already
        misclassified), 'eps_lower' (the largest that failed), 'margin',
        'predicted', 'linf', 'l2', 'l1' (of the returned change, grey levels)
        and 'attack_calls'.

    Example:
        >>> X_adv, rep = min_norm(X, y, model, 'pgd', eps_max=16, steps=20)
        >>> np.median(rep['eps'])
    """
    named = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd}
    if isinstance(attack, str):
        if attack not in named:
            raise ValueError(f"attack must be one of {', '.join(map(repr, named))} or a callable, got {attack!r}")
        fn = named[attack]
        attack_kwargs = dict(attack_kwargs, norm=norm)
    elif callable(attack):
        fn = attack
    else:
        raise TypeError(f"attack must be an attack name or a callable, got {type(attack).__name__}")
    prob = Problem(X, y, model, targeted, target, seed, "min_norm")
    check_norm(norm, what="min_norm")
    n = prob.n
    eps_max = float(check_eps(eps_max, 1, "eps_max")[0])
    if eps_max <= 0:
        raise ValueError(f"eps_max must be > 0 grey levels, got {eps_max}")
    bisection_steps = _checks.positive_int(bisection_steps, "bisection_steps", hi=60)
    seed_value = seed if not isinstance(seed, np.random.Generator) else int(seed.integers(2**31))
    everyone = np.arange(n)
    clean = prob.scores(np.zeros_like(prob.X)).astype(np.float64)
    best = prob.X.copy()
    best_scores = clean.copy()
    already = prob.margin(clean, everyone) > 0
    hi = np.where(already, 0.0, np.inf)
    lo = np.zeros(n)
    calls = 0

    def run(idx, e):
        nonlocal calls
        calls += 1
        tgt = prob.target[idx] if prob.targeted else None
        Xa, rep = fn(prob.X[idx], prob.y[idx], prob.model, eps=e, targeted=prob.targeted, target=tgt,
                     seed=seed_value, **attack_kwargs)
        ok = np.asarray(rep["success"], bool)
        if ok.any():
            best[idx[ok]] = Xa[ok]
            best_scores[idx[ok]] = prob.scores((Xa[ok] - prob.X[idx[ok]]) * prob.px, idx[ok])
        return ok

    idx = np.flatnonzero(~already)
    if idx.size:
        ok = run(idx, np.full(idx.size, eps_max))
        hi[idx[ok]] = eps_max
    for _ in range(bisection_steps):
        idx = np.flatnonzero(np.isfinite(hi) & (hi > 0))
        if idx.size == 0:
            break
        mid = (lo[idx] + hi[idx]) / 2
        ok = run(idx, mid)
        hi[idx[ok]] = mid[ok]
        lo[idx[~ok]] = mid[~ok]
    delta = ((best - prob.X) * prob.px).astype(prob.X.dtype)
    rep = make_report(prob, delta, best_scores)
    rep.pop("iterations")
    rep["success"] = np.isfinite(hi)
    rep["eps"] = hi
    rep["eps_lower"] = np.where(np.isfinite(hi), lo, eps_max)
    rep["attack_calls"] = np.full(n, calls, np.int64)
    return best, rep
