"""Fooling images: small changes that make the network predict a chosen class."""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..nn.gradients import class_score_gradient
from ..nn.graph import check_classifier
from ..nn.losses import softmax

__all__ = ["make_fooling_image"]


def _per_image_norm(a, ord_):
    flat = a.reshape(a.shape[0], -1).astype(np.float64)
    if ord_ == "inf":
        return np.abs(flat).max(axis=1)
    return np.sqrt((flat * flat).sum(axis=1))


def _project(delta, eps, norm):
    """Project each image's change onto the eps-ball of the given norm."""
    if norm == "inf":
        return np.clip(delta, -eps, eps)
    n = _per_image_norm(delta, "2").reshape(-1, 1, 1, 1)
    scale = np.minimum(1.0, eps / np.maximum(n, 1e-30))
    return (delta * scale).astype(delta.dtype)


def make_fooling_image(X, target_y, model, learning_rate=None, max_iter=100, normalize_step="sign",
                       eps=None, norm="inf", clip=True, return_report=False, callback=None,
                       confidence=None, margin=None, quantize=False):
    """Gradient ascent on the target class score until the model predicts it.

    Each step moves the images that are not yet fooled along the gradient ``g``
    of the unnormalized target score; an image stops changing as soon as the
    model predicts its target (the CS231n behaviour), or, with ``confidence``
    or ``margin``, as soon as it predicts the target that surely. The step is

    - ``normalize_step='sign'`` (default): ``learning_rate * sign(g)`` grey
      levels, the steepest ascent for the largest pixel change (iterated FGSM),
      so the change stays small in L-inf: on the bundled model, 0.25 grey levels
      a step fools every one of 60 held-out images towards random targets with a
      median largest change of about 6 grey levels out of 255;
    - ``'rms'``: ``learning_rate * g / rms(g)`` with g taken with respect to 0-255
      pixel values, so each step changes pixels by ``learning_rate`` grey levels
      (root mean square), whatever the model's input normalization; default 0.1;
    - ``'l2'``: ``learning_rate * g / ||g||_2`` in the model's input space
      (CS231n 2017+; default learning_rate 1);
    - ``None``: ``learning_rate * g`` (CS231n 2016; default learning_rate 1).

    With ``eps`` the total change is projected, after every step, onto an L-inf
    (``norm='inf'``) or L2 (``norm='2'``) ball of radius eps grey levels
    (projected gradient ascent); with ``clip`` the images stay inside the model's
    valid pixel range (pixels already outside it are not pulled in).

    Stopping at the first flip leaves an image just across the boundary, where
    rounding it to 8 bits for a PNG usually undoes the attack. Two remedies:

    - ``confidence=p`` (keep going until the target's softmax probability is at
      least p) or ``margin=m`` (until the target's score leads every other by at
      least m); with both, both must hold;
    - ``quantize=True``: every image the model is asked about is on the 8-bit
      grid of the model's pixel units (``model.preprocess(model.deprocess(.))``,
      so needs 3 channels): the steps accumulate in a continuous copy and the
      gradient and the stopping test are taken at its rounding
      (a straight-through step), and the returned image, saved as a PNG and read
      back, is exactly the image that fooled the model. An image not on the grid
      is rounded first and the budget is measured from its rounding (the
      report's norms from X as given); the budget is kept after rounding (L-inf:
      at most floor(eps) grey levels; L2: the change is rounded towards zero
      where rounding to nearest would leave the ball). Implies ``clip``.

    Args:
        X: images in the model's input space, (N, C, H, W).
        target_y: the class to reach, one int for all images or (N,); class names or wnids
            where the model has them.
        model: a :class:`gradvis.Model`.
        learning_rate: step size (see above; default 0.25 for 'sign').
        max_iter: most steps per image.
        normalize_step: 'sign', 'rms', 'l2' or None.
        eps: budget for the change in 0-255 pixel units, or None for none.
        norm: 'inf' or '2', the norm of the budget.
        clip: keep the images inside ``model.input_range()``.
        return_report: also return a per-image report.
        callback: called as ``callback(t, X_fooling, info)`` after every step.
        confidence: a probability in (0, 1) the target must reach, or None.
        margin: score units (>= 0) by which the target must lead, or None.
        quantize: keep every evaluated image on the 8-bit pixel grid.

    Returns:
        X_fooling: (N, C, H, W), same dtype as X. With ``return_report=True``,
        ``(X_fooling, report)`` where report is a dict of (N,) arrays: 'success'
        (the target is predicted, with the asked confidence and margin),
        'iterations', 'target_prob', 'margin' (target score minus the best other),
        'predicted', 'l2' and 'linf' (model input units) and 'l2_pixels',
        'linf_pixels' (0-255 pixel units).

    Example:
        >>> X_fool, rep = make_fooling_image(X, 6, model, quantize=True, confidence=0.9,
        ...                                  return_report=True)
        >>> png = model.deprocess(X_fool)     # fools the model as X_fool does
    """
    check_classifier(model, "make_fooling_image")
    X = _checks.images(X, model)
    n = X.shape[0]
    target = _checks.labels(target_y, n, model, name="target_y")
    if normalize_step not in ("sign", "rms", "l2", None):
        raise ValueError(f"normalize_step must be 'sign', 'rms', 'l2' or None, got {normalize_step!r}")
    if learning_rate is None:
        learning_rate = {"sign": 0.25, "rms": 0.1}.get(normalize_step, 1.0)
    learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)
    max_iter = _checks.positive_int(max_iter, "max_iter", allow_zero=True)
    if norm not in ("inf", "2"):
        raise ValueError(f"norm must be 'inf' or '2', got {norm!r}")
    if eps is not None:
        eps = _checks.nonneg_float(eps, "eps", positive=True)
    if confidence is not None:
        confidence = _checks.finite_float(confidence, "confidence")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be a probability in (0, 1), got {confidence}")
    if margin is not None:
        margin = _checks.nonneg_float(margin, "margin")
    if not isinstance(quantize, (bool, np.bool_)):
        raise TypeError(f"quantize must be True or False, got {quantize!r}")
    if quantize and X.shape[1] != 3:
        raise ValueError(f"quantize needs a 3-channel (RGB) model to round to 8-bit pixels; "
                         f"X has {X.shape[1]} channels")
    px = _checks.pixel_scale(model, X.dtype)
    X_orig = X
    if quantize:
        X = _on_grid(model, X)
        clip = True
    lo, hi = (None, None)
    if clip:
        lo, hi = _checks.valid_range(model, X.shape, X.dtype)
        # A pixel already outside the valid range is not pulled in: that would be
        # a change the budget did not allow.
        lo, hi = np.minimum(lo, X), np.maximum(hi, X)

    def reached(scores_a, tgt):
        s = scores_a.astype(np.float64)
        ok = s.argmax(axis=1) == tgt
        if confidence is not None:
            ok &= softmax(s)[np.arange(len(tgt)), tgt] >= confidence
        if margin is not None:
            ok &= _target_margin(s, tgt) >= margin
        return ok

    X_cont = X.copy()          # where the steps accumulate
    X_fool = X.copy()          # what the model is asked about (its rounding, with quantize)
    iterations = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    scores = None
    for t in range(max_iter + 1):
        active = np.flatnonzero(~done)
        if active.size == 0:
            break
        scores_a, g = class_score_gradient(model, X_fool[active], target[active])
        if scores is None:
            scores = np.empty((n, scores_a.shape[1]), dtype=scores_a.dtype)
        scores[active] = scores_a
        hit = reached(scores_a, target[active])
        done[active[hit]] = True
        if t == max_iter:
            break
        move = active[~hit]
        if move.size == 0:
            break
        g = g[~hit]
        if normalize_step == "sign":
            step = (learning_rate * np.sign(g)).astype(X.dtype) / px   # the sign is the same in pixel units
        elif normalize_step == "rms":
            gp = g / px                                   # with respect to pixel values
            rms = np.sqrt(np.mean(gp.astype(np.float64) ** 2, axis=(1, 2, 3))).reshape(-1, 1, 1, 1)
            step = (learning_rate * gp / np.maximum(rms, 1e-30)).astype(X.dtype) / px
        elif normalize_step == "l2":
            step = learning_rate * g / np.maximum(_per_image_norm(g, "2"), 1e-30).reshape(-1, 1, 1, 1)
        else:
            step = learning_rate * g
        Xm = X_cont[move] + step.astype(X.dtype)
        if eps is not None:
            # project in pixel units, where the budget is given
            Xm = X[move] + _project((Xm - X[move]) * px, eps, norm) / px
        if clip:
            Xm = np.clip(Xm, lo[move], hi[move])
        X_cont[move] = Xm
        X_fool[move] = _round_change(model, X[move], Xm, px, eps, norm) if quantize else Xm
        iterations[move] += 1
        if callback is not None:
            callback(t, X_fool, {"active": move.size, "fooled": int(done.sum())})

    if not return_report:
        return X_fool
    probs = softmax(scores)
    delta = X_fool - X_orig
    delta_px = delta * px
    return X_fool, {
        "success": reached(scores, target),
        "iterations": iterations,
        "target_prob": probs[np.arange(n), target],
        "margin": _target_margin(scores.astype(np.float64), target),
        "predicted": scores.argmax(axis=1),
        "l2": _per_image_norm(delta, "2"),
        "linf": _per_image_norm(delta, "inf"),
        "l2_pixels": _per_image_norm(delta_px, "2"),
        "linf_pixels": _per_image_norm(delta_px, "inf"),
    }


def _target_margin(scores, target):
    """z_target - max_{j != target} z_j, (N,)."""
    rows = np.arange(len(target))
    other = scores.copy()
    other[rows, target] = -np.inf
    return scores[rows, target] - other.max(axis=1)


def _on_grid(model, X):
    """X rounded to 8-bit pixels, exactly as a PNG of it reads back."""
    return model.preprocess(model.deprocess(X)).astype(X.dtype, copy=False)


def _round_change(model, X0, Xc, px, eps, norm):
    """The 8-bit image nearest to ``Xc`` whose change from ``X0`` (on the grid)
    keeps the budget: whole grey levels, rounded to nearest; L-inf: at most
    floor(eps); L2: rounded towards zero where the nearest would leave the ball."""
    d = (Xc - X0).astype(np.float64) * px
    if eps is not None and norm == "inf":
        d = np.clip(d, -np.floor(eps), np.floor(eps))
    q = np.rint(d)
    if eps is not None and norm == "2":
        over = _per_image_norm(q, "2") > eps
        q[over] = np.trunc(d[over])
    return _on_grid(model, (X0 + q / px).astype(X0.dtype))
