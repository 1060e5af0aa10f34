"""Robust accuracy over a range of budgets, the worst case over several attacks,
and the signs of gradient masking in the result."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .apgd import apgd
from .common import Problem, check_norm, norm_of
from .cw import cw_l2
from .deepfool import deepfool
from .gradient import fgsm, pgd
from .search import random_noise

__all__ = ["ATTACKS", "robust_accuracy", "gradient_masking_signs"]

# name -> (function, fixed arguments, kind); kind 'eps': run once per eps;
# 'min': a minimum-norm attack, run once and counted at each eps its norm fits.
ATTACKS = {
    "fgsm": (fgsm, {}, "eps"),
    "pgd": (pgd, {}, "eps"),
    "pgd-margin": (pgd, {"loss": "margin"}, "eps"),
    "apgd-ce": (apgd, {"loss": "ce"}, "eps"),
    "apgd-dlr": (apgd, {"loss": "dlr"}, "eps"),
    "apgd-t": (apgd, {"loss": "dlr", "targeted": True}, "eps"),
    "cw": (cw_l2, {}, "min"),
    "deepfool": (deepfool, {}, "min"),
    "noise": (random_noise, {}, "eps"),
}
ONE_STEP = ("fgsm",)
ITERATED = ("pgd", "pgd-margin", "apgd-ce", "apgd-dlr", "apgd-t")
BLACK_BOX = ("noise",)
# which of the options (steps, restarts) each attack takes
_TAKES = {"fgsm": (), "noise": (), "pgd": ("steps", "restarts"), "pgd-margin": ("steps", "restarts"),
          "apgd-ce": ("steps", "restarts"), "apgd-dlr": ("steps", "restarts"), "apgd-t": ("steps", "restarts"),
          "cw": ("steps",), "deepfool": ()}


def _attack_list(attacks):
    out = []
    if isinstance(attacks, (str, bytes)) or callable(attacks):
        attacks = [attacks]
    try:
        attacks = list(attacks)
    except TypeError:
        raise TypeError(f"attacks must be a list of attack names or (name, callable) pairs, "
                        f"got {type(attacks).__name__}") from None
    if not attacks:
        raise ValueError("attacks is empty")
    for a in attacks:
        if isinstance(a, str):
            if a not in ATTACKS:
                raise ValueError(f"unknown attack {a!r}; known: {', '.join(ATTACKS)}")
            out.append((a, a))
        elif isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) and callable(a[1]):
            out.append(a)
        elif callable(a):
            out.append((getattr(a, "__name__", "attack"), a))
        else:
            raise TypeError(f"each attack must be a name, a callable or a (name, callable) pair, got {a!r}")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"attack names repeat: {names}")
    return out


def robust_accuracy(X, y, model, attacks=("fgsm", "pgd", "apgd-ce"), eps_list=(1, 2, 4, 8), norm="inf",
                    targeted=False, target=None, seed=0, steps=None, restarts=None, batch_size=64,
                    callback=None):
    """Accuracy under attack for each budget, per attack and in the worst case.

    Every attack runs on every image at every eps (minimum-norm attacks, 'cw'
    and 'deepfool', once, counted at each eps their change fits in ``norm``). An
    image is robust at eps when it is classified correctly and no attack found an
    adversarial change within eps; since a change within a smaller eps also fits
    a larger one, the table's accuracies count a success at every larger eps
    (the raw per-eps results are kept too: 'accuracy_raw').

    Args:
        X: images (N, C, H, W) in the model's input space.
        y: true labels (N,) (required: the table needs them).
        model: a :class:`gradvis.Model` classifier.
        attacks: names from :data:`ATTACKS` ('fgsm', 'pgd', 'pgd-margin', 'apgd-ce',
            'apgd-dlr', 'apgd-t', 'cw', 'deepfool', 'noise') or (name, callable)
            pairs, a callable taking ``(X, y, model, eps=, targeted=, target=,
            seed=, norm=)`` and returning ``(X_adv, report)``.
        eps_list: budgets in 0-255 grey levels, each >= 0, increasing.
        norm: 'inf', '2' (or '1' for pgd and noise).
        targeted, target, seed: see :func:`gradvis.attacks.pgd`.
        steps, restarts: override the iterated attacks' defaults.
        batch_size: images per attack call (memory bound).
        callback: ``callback(done, total, info)`` after each attack call.

    Returns:
        a dict: 'eps' (list), 'attacks' (names), 'norm', 'n_images',
        'clean_accuracy', 'accuracy' {name: [per eps]}, 'accuracy_raw', 'worst_case'
        [per eps], 'success_rate' (worst case, all images) and
        'success_rate_correct' (over the correctly classified), 'robust' (bool
        array (len(eps), N): robust per image), 'median_norm' {min-norm attack:
        median norm of the successes}, and 'warnings' (see
        :func:`gradient_masking_signs`).

    Example:
        >>> table = robust_accuracy(X, y, model, ['fgsm', 'pgd', 'apgd-ce'], [1, 2, 4, 8])
        >>> table['worst_case']
    """
    if y is None:
        raise ValueError("robust_accuracy needs the true labels y of the images; got y=None")
    prob = Problem(X, y, model, targeted, target, seed, "robust_accuracy")
    norm = check_norm(norm, what="robust_accuracy")
    pairs = _attack_list(attacks)
    try:
        eps_arr = np.asarray(list(eps_list), np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"eps_list must be a list of numbers (grey levels), got {eps_list!r}") from None
    if eps_arr.ndim != 1 or eps_arr.size == 0:
        raise ValueError(f"eps_list must be a non-empty list of numbers, got {eps_list!r}")
    if not np.all(np.isfinite(eps_arr)) or np.any(eps_arr < 0):
        raise ValueError(f"every eps must be a finite number >= 0 grey levels, got {eps_arr.tolist()}")
    if np.any(np.diff(eps_arr) <= 0):
        raise ValueError(f"eps_list must increase, got {eps_arr.tolist()}")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if steps is not None:
        steps = _checks.positive_int(steps, "steps")
    if restarts is not None:
        restarts = _checks.positive_int(restarts, "restarts")
    seed_value = seed if not isinstance(seed, np.random.Generator) else int(seed.integers(2**31))
    n = prob.n
    clean_pred = prob.model.predict(prob.X, batch_size=batch_size).argmax(axis=1)
    correct = clean_pred == prob.y
    tgt = prob.target if prob.targeted else None
    ne = eps_arr.size
    raw = {}
    min_norms = {}
    calls = [(name, fn) for name, fn in pairs]
    total = sum(1 if (isinstance(fn, str) and ATTACKS[fn][2] == "min") else ne for _, fn in calls)
    total *= -(-n // batch_size)
    done = 0
    for name, fn in calls:
        success = np.zeros((ne, n), bool)
        if isinstance(fn, str):
            func, fixed, kind = ATTACKS[fn]
            kw = dict(fixed)
            if kind == "eps" or fn == "deepfool":
                kw["norm"] = norm if not (fn == "deepfool" and norm == "1") else "2"
            if steps is not None and "steps" in _TAKES[fn]:
                kw["steps"] = steps
            if restarts is not None and "restarts" in _TAKES[fn]:
                kw["restarts"] = restarts
            if kw.pop("targeted", False) and not prob.targeted:
                kw["targeted"] = True        # APGD-T: its own target classes
            elif prob.targeted:
                kw["targeted"] = True
        else:
            func, kw, kind = fn, {"norm": norm}, "eps"
            if prob.targeted:
                kw["targeted"] = True
        for b in range(0, n, batch_size):
            sl = slice(b, min(b + batch_size, n))
            Xb, yb = prob.X[sl], prob.y[sl]
            tb = None if tgt is None else tgt[sl]
            if kind == "min":
                Xa, rep = func(Xb, yb, prob.model, targeted=prob.targeted, target=tb, seed=seed_value,
                               **{k: v for k, v in kw.items() if k != "targeted"})
                d = norm_of((Xa - Xb) * prob.px, norm)
                ok = np.asarray(rep["success"], bool)
                success[:, sl] = ok[None, :] & (d[None, :] <= eps_arr[:, None] + 1e-6)
                min_norms.setdefault(name, []).append(np.where(ok, d, np.nan))
                done += 1
                if callback is not None:
                    callback(done, total, {"attack": name})
                continue
            for i, e in enumerate(eps_arr):
                if e == 0:
                    m = Problem(Xb, yb, prob.model, prob.targeted, tb, 0, name)
                    sc = m.scores(np.zeros_like(m.X))
                    success[i, sl] = m.margin(sc, np.arange(len(Xb))) > 0
                else:
                    _, rep = func(Xb, yb, prob.model, eps=e, target=tb, seed=seed_value, **kw)
                    success[i, sl] = np.asarray(rep["success"], bool)
                done += 1
                if callback is not None:
                    callback(done, total, {"attack": name, "eps": float(e)})
        raw[name] = success
    names = [nm for nm, _ in pairs]
    fooled_raw = np.zeros((ne, n), bool)
    for nm in names:
        fooled_raw |= raw[nm]
    # a change within a smaller budget fits every larger one
    cum = {nm: np.logical_or.accumulate(raw[nm], axis=0) for nm in names}
    fooled = np.logical_or.accumulate(fooled_raw, axis=0)
    robust = correct[None, :] & ~fooled
    # untargeted: a wrong clean prediction is already a success
    worst_success = fooled | (~correct[None, :] if not prob.targeted else False)
    table = {
        "eps": eps_arr.tolist(),
        "attacks": names,
        "norm": norm,
        "targeted": prob.targeted,
        "n_images": int(n),
        "clean_accuracy": float(correct.mean()),
        "accuracy": {nm: (correct[None, :] & ~cum[nm]).mean(axis=1).tolist() for nm in names},
        "accuracy_raw": {nm: (correct[None, :] & ~raw[nm]).mean(axis=1).tolist() for nm in names},
        "worst_case": robust.mean(axis=1).tolist(),
        "success_rate": worst_success.mean(axis=1).tolist(),
        "success_rate_correct": (fooled[:, correct].mean(axis=1).tolist() if correct.any()
                                 else [float("nan")] * ne),
        "robust": robust,
        "median_norm": {nm: float(np.nanmedian(np.concatenate(v))) if np.isfinite(np.concatenate(v)).any()
                        else float("nan") for nm, v in min_norms.items()},
    }
    table["warnings"] = gradient_masking_signs(table)
    return table


def gradient_masking_signs(table, large_eps=None):
    """Signs of gradient masking (Athalye et al. 2018, Carlini et al. 2019,
    "On evaluating adversarial robustness", section 5) in a
    :func:`robust_accuracy` table, as sentences (an empty list: none seen):

    - accuracy does not reach 0 at a large budget (``large_eps`` grey levels;
      default 32 for L-inf, else the largest eps), or stays flat above 0 over the
      last two budgets;
    - a one-step attack (fgsm) beats an iterated one at some eps;
    - random noise (a black-box attack) beats a gradient attack at some eps.
    """
    eps = list(table["eps"])
    acc = table["accuracy_raw"]
    worst = table["worst_case"]
    out = []
    if large_eps is None:
        large_eps = 32.0 if table.get("norm") == "inf" else eps[-1]
    if worst[-1] > 0 and (eps[-1] >= large_eps or (len(eps) > 1 and worst[-1] >= worst[-2])):
        out.append(f"accuracy does not reach 0: {worst[-1]:.1%} of the images resist every attack at "
                   f"eps {eps[-1]:g}" + (f" (no lower than at eps {eps[-2]:g})" if len(eps) > 1 and
                                         worst[-1] >= worst[-2] else "")
                   + "; an unbounded attack should reach 0")
    gradient = [a for a in acc if a not in BLACK_BOX]
    for one in [a for a in acc if a in ONE_STEP]:
        for it in [a for a in acc if a in ITERATED]:
            bad = [e for e, p, q in zip(eps, acc[one], acc[it]) if p < q]
            if bad:
                out.append(f"the one-step {one} beats the iterated {it} at eps {', '.join(f'{e:g}' for e in bad)}")
    for bb in [a for a in acc if a in BLACK_BOX]:
        for g in gradient:
            bad = [e for e, p, q in zip(eps, acc[bb], acc[g]) if p < q]
            if bad:
                out.append(f"random {bb} beats the gradient attack {g} at eps "
                           f"{', '.join(f'{e:g}' for e in bad)}")
    return out
