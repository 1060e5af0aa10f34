"""What every attack shares: argument checks, losses on class scores, norms and
projections, all in 0-255 grey levels.

An attack works on the change ``delta`` of each image measured in grey levels of
the model's pixel units: the model sees ``X + delta / std`` (``std`` is
``model.std``, grey levels per input unit, shaped (1, C, 1, 1)). Budgets, step
sizes and the reported norms are therefore the same numbers whatever the model's
input normalization, and an L2 or L1 ball is a ball in pixel space (where the
image is saved), not in the model's normalized space. The valid pixel box is
``model.input_range()``; a pixel that is already outside it is not pulled in.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _checks
from ..nn.graph import check_classifier

__all__ = ["NORMS", "adversarial_margin", "score_loss", "norm_of"]

# accepted spellings -> canonical name
NORMS = {"inf": "inf", "linf": "inf", "l-inf": "inf", "2": "2", "l2": "2", "1": "1", "l1": "1"}


def check_norm(norm, allowed=("inf", "2", "1"), what="this attack"):
    """'inf', '2' or '1' from 'inf'/'linf'/np.inf, 2/'2'/'l2', 1/'1'/'l1'; else ValueError."""
    if isinstance(norm, (bool, np.bool_)):
        key = None
    elif isinstance(norm, numbers.Real) and not isinstance(norm, numbers.Integral) and np.isinf(norm):
        key = "inf"
    elif isinstance(norm, (numbers.Integral, np.integer)):
        key = str(int(norm))
    elif isinstance(norm, str):
        key = norm.strip().lower()
    else:
        key = None
    name = NORMS.get(key)
    if name is None:
        raise ValueError(f"norm must be one of 'inf', '2' or '1' (also np.inf, 2, 1, 'linf', 'l2', 'l1'), "
                         f"got {norm!r}")
    if name not in allowed:
        raise ValueError(f"{what} supports norm {' or '.join(repr(a) for a in allowed)}, got {norm!r}")
    return name


def check_eps(eps, n, name="eps", allow_none=False):
    """A budget in grey levels as a float64 (n,) array: a number or one per image, each >= 0."""
    if eps is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of grey levels (0-255 units) or one per image, got None")
    if isinstance(eps, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a number of grey levels (0-255 units), got {eps!r}")
    try:
        arr = np.asarray(eps, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of grey levels (0-255 units), got {eps!r}") from None
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be one number or one per image ({n},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:3].tolist()}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 grey levels, got {arr[arr < 0][:3].tolist()}")
    return arr


def check_steps(steps, name="steps"):
    return _checks.positive_int(steps, name)


def check_loss(loss, allowed=("ce", "margin")):
    if loss not in allowed:
        raise ValueError(f"loss must be one of {', '.join(repr(a) for a in allowed)}, got {loss!r}")
    return loss


class Problem:
    """One attack call's fixed data: the clean images, labels, targets and the box.

    Attributes:
        X: clean images (N, C, H, W), model input units.
        y: true labels (N,); target: the classes to reach (N,) or None.
        px: grey levels per input unit, (1, C, 1, 1) (``model.std``).
        lo, hi: bounds on ``delta`` in grey levels (N, C, H, W) from the valid box.
    """

    def __init__(self, X, y, model, targeted, target, seed, what):
        self.model = check_classifier(model, what)
        self.X = _checks.images(X, model)
        n = self.X.shape[0]
        self.n = n
        self.y = _checks.labels(y, n, model, name="y")
        self.rng = _checks.rng_from(seed)
        if not isinstance(targeted, (bool, np.bool_)):
            raise TypeError(f"targeted must be True or False, got {targeted!r}")
        self.targeted = bool(targeted) or target is not None
        self.target = None
        if self.targeted:
            if target is None:
                # a random class other than the true one, from the seed
                k = self.model.num_classes
                if k < 2:
                    raise ValueError("a targeted attack needs a model with at least 2 classes")
                t = self.rng.integers(0, k - 1, size=n)
                self.target = t + (t >= self.y)
            else:
                self.target = _checks.labels(target, n, model, name="target")
                same = self.target == self.y
                if same.any():
                    raise ValueError(f"target equals the true class y for image(s) "
                                     f"{np.flatnonzero(same)[:5].tolist()} in a targeted attack; "
                                     f"choose another class")
        dt = self.X.dtype
        self.px = _checks.pixel_scale(model, dt)
        lo, hi = _checks.valid_range(model, self.X.shape, dt)
        lo, hi = np.minimum(lo, self.X), np.maximum(hi, self.X)
        self.lo = ((lo - self.X) * self.px).astype(dt)
        self.hi = ((hi - self.X) * self.px).astype(dt)

    @property
    def labels(self):
        """The class each image's margin is measured against: the target when targeted."""
        return self.target if self.targeted else self.y

    def images(self, delta, idx=None):
        """Model input for a change ``delta`` (grey levels) of images ``idx``."""
        X = self.X if idx is None else self.X[idx]
        return (X + delta / self.px).astype(self.X.dtype, copy=False)

    def clip(self, delta, idx=None):
        if idx is None:
            return np.clip(delta, self.lo, self.hi)
        return np.clip(delta, self.lo[idx], self.hi[idx])

    def scores_and_gradient(self, delta, idx, loss, extra=None):
        """Class scores (n, K), per-image loss (n,) and d loss / d delta (grey levels)
        at ``X[idx] + delta``: one forward and one backward pass."""
        Xa = self.images(delta, idx)
        scores, cache = self.model.forward(Xa, mode="test")
        lab = self.labels[idx]
        value, dscores = score_loss(scores, lab, loss, self.targeted, extra=extra)
        g = self.model.backward(dscores.astype(scores.dtype, copy=False), cache, param_grads=False)[0]
        return scores, value, (g / self.px).astype(self.X.dtype, copy=False)

    def scores(self, delta, idx=None, batch_size=None):
        Xa = self.images(delta, idx)
        return self.model.forward(Xa, mode="test", cache=False)[0]

    def margin(self, scores, idx):
        return adversarial_margin(scores, self.y[idx], self.target[idx] if self.targeted else None)


def adversarial_margin(scores, y, target=None):
    """How far each image is past the decision boundary, in score units, (N,).

    Untargeted: ``max_{j != y} z_j - z_y``; targeted: ``z_t - max_{j != t} z_j``.
    Positive means the attack succeeded (the prediction is wrong, or is the target).
    """
    s = np.asarray(scores, np.float64)
    n = s.shape[0]
    lab = np.asarray(y if target is None else target)
    own = s[np.arange(n), lab]
    other = s.copy()
    other[np.arange(n), lab] = -np.inf
    best_other = other.max(axis=1)
    return best_other - own if target is None else own - best_other


def _softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def score_loss(scores, labels, loss, targeted, extra=None):
    """A per-image loss on class scores that the attack increases, and its
    gradient with respect to the scores.

    Args:
        scores: (N, K) class scores (logits).
        labels: (N,) the true class (untargeted) or the target (targeted).
        loss: 'ce' (cross-entropy: increased for the true class, decreased for the
            target), 'margin' (the adversarial margin, see :func:`adversarial_margin`),
            or 'dlr' (Croce & Hein 2020, eq. 6; targeted: eq. 7 with ``extra`` the
            true classes (N,)).
        targeted: whether ``labels`` are targets.

    Returns:
        (value (N,) float64, d value / d scores (N, K) float64).
    """
    s = np.asarray(scores, np.float64)
    n, k = s.shape
    rows = np.arange(n)
    lab = np.asarray(labels)
    if loss == "ce":
        p = _softmax(s)
        value = -np.log(np.maximum(p[rows, lab], 1e-300))
        grad = p.copy()
        grad[rows, lab] -= 1.0
        if targeted:
            return -value, -grad
        return value, grad
    if loss == "margin":
        other = s.copy()
        other[rows, lab] = -np.inf
        j = other.argmax(axis=1)
        grad = np.zeros_like(s)
        if targeted:
            value = s[rows, lab] - s[rows, j]
            grad[rows, lab] += 1.0
            grad[rows, j] -= 1.0
        else:
            value = s[rows, j] - s[rows, lab]
            grad[rows, j] += 1.0
            grad[rows, lab] -= 1.0
        return value, grad
    if loss == "dlr":
        order = np.argsort(s, axis=1)
        p1, p2, p3 = order[:, -1], order[:, -2], order[:, -3]
        grad = np.zeros_like(s)
        if not targeted:
            # -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)
            j = np.where(p1 == lab, p2, p1)
            num = s[rows, lab] - s[rows, j]
            den = s[rows, p1] - s[rows, p3] + 1e-12
            value = -num / den
            grad[rows, lab] -= 1.0 / den
            grad[rows, j] += 1.0 / den
            grad[rows, p1] += num / den ** 2
            grad[rows, p3] -= num / den ** 2
            return value, grad
        if k < 4:
            raise ValueError("the targeted DLR loss needs a model with at least 4 classes")
        ytrue = np.asarray(extra)
        p4 = order[:, -4]
        # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
        num = s[rows, ytrue] - s[rows, lab]
        den = s[rows, p1] - 0.5 * (s[rows, p3] + s[rows, p4]) + 1e-12
        value = -num / den
        grad[rows, ytrue] -= 1.0 / den
        grad[rows, lab] += 1.0 / den
        grad[rows, p1] += num / den ** 2
        grad[rows, p3] -= 0.5 * num / den ** 2
        grad[rows, p4] -= 0.5 * num / den ** 2
        return value, grad
    raise ValueError(f"loss must be 'ce', 'margin' or 'dlr', got {loss!r}")


def norm_of(delta, norm):
    """Per-image norm (N,) float64 of a change (N, ...) in the given canonical norm."""
    flat = np.asarray(delta).reshape(len(delta), -1).astype(np.float64)
    if norm == "inf":
        return np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(len(flat))
    if norm == "2":
        return np.sqrt((flat * flat).sum(axis=1))
    return np.abs(flat).sum(axis=1)


def _col(v, like):
    return np.asarray(v, np.float64).reshape((-1,) + (1,) * (like.ndim - 1))


def project(delta, eps, norm):
    """The nearest point of each image's eps-ball (``eps`` (N,) grey levels) to ``delta``
    (L-inf, L2; L1 by the sort-based simplex projection of Duchi et al. 2008)."""
    dt = delta.dtype
    if norm == "inf":
        e = _col(eps, delta).astype(dt)
        return np.clip(delta, -e, e)
    if norm == "2":
        nrm = norm_of(delta, "2")
        scale = np.minimum(1.0, eps / np.maximum(nrm, 1e-30))
        return (delta * _col(scale, delta)).astype(dt)
    return project_l1(delta, eps)


def project_l1(delta, eps):
    n = len(delta)
    flat = delta.reshape(n, -1).astype(np.float64)
    a = np.abs(flat)
    out = flat.copy()
    eps = np.asarray(eps, np.float64)
    over = a.sum(axis=1) > eps
    if over.any():
        u = -np.sort(-a[over], axis=1)
        css = np.cumsum(u, axis=1)
        idx = np.arange(1, u.shape[1] + 1)
        e = eps[over][:, None]
        cond = u - (css - e) / idx > 0
        rho = cond.shape[1] - 1 - np.argmax(cond[:, ::-1], axis=1)
        theta = (css[np.arange(len(rho)), rho] - e[:, 0]) / (rho + 1)
        theta = np.maximum(theta, 0.0)
        out[over] = np.sign(flat[over]) * np.maximum(a[over] - theta[:, None], 0.0)
    return out.reshape(delta.shape).astype(delta.dtype)


def random_start(shape, eps, norm, rng, dtype):
    """A random change inside each image's eps-ball (grey levels): uniform per pixel
    for L-inf (Madry et al. 2018); a uniformly random direction scaled by a uniform
    radius in [0, eps] for L2 and L1."""
    n = shape[0]
    if norm == "inf":
        return (rng.uniform(-1.0, 1.0, shape) * _col(eps, np.empty(shape))).astype(dtype)
    if norm == "2":
        d = rng.standard_normal(shape)
    else:
        d = rng.laplace(size=shape)
    nrm = norm_of(d, norm)
    r = rng.uniform(0.0, 1.0, n) * eps
    return (d * _col(r / np.maximum(nrm, 1e-30), d)).astype(dtype)


def steepest_step(g, norm, step, l1_sparsity=0.95):
    """The change of norm ``step`` (N,) grey levels that increases a linearized loss
    with gradient ``g`` the most: ``step * sign(g)`` (L-inf), ``step * g / ||g||_2``
    (L2); for L1 the sign of the ``1 - l1_sparsity`` largest gradient entries,
    scaled to L1 norm ``step`` (Tramer & Boneh 2019, "sparse L1 descent")."""
    dt = g.dtype
    if norm == "inf":
        return (_col(step, g) * np.sign(g)).astype(dt)
    if norm == "2":
        nrm = norm_of(g, "2")
        return (g * _col(step / np.maximum(nrm, 1e-30), g)).astype(dt)
    n = len(g)
    flat = np.abs(g.reshape(n, -1))
    q = np.quantile(flat, l1_sparsity, axis=1, keepdims=True)
    mask = (flat >= q) & (flat > 0)
    count = np.maximum(mask.sum(axis=1), 1)
    e = (np.sign(g.reshape(n, -1)) * mask) * (np.asarray(step, np.float64) / count)[:, None]
    return e.reshape(g.shape).astype(dt)


def make_report(prob, delta, scores, idx_all=None, iterations=None, eps=None):
    """The per-image report every attack returns: a dict of (N,) arrays.

    'success' (bool: the margin is positive), 'margin' (see
    :func:`adversarial_margin`), 'predicted', 'iterations' (gradient steps until the
    first success, or all steps taken), 'linf', 'l2', 'l1' (grey levels) and
    'eps' (the budget, when there is one).
    """
    margin = prob.margin(scores, np.arange(prob.n))
    rep = {
        "success": margin > 0,
        "margin": margin,
        "predicted": np.asarray(scores).argmax(axis=1),
        "iterations": np.zeros(prob.n, np.int64) if iterations is None else np.asarray(iterations, np.int64),
        "linf": norm_of(delta, "inf"),
        "l2": norm_of(delta, "2"),
        "l1": norm_of(delta, "1"),
    }
    if eps is not None:
        rep["eps"] = np.asarray(eps, np.float64)
    if prob.targeted:
        rep["target"] = prob.target.copy()
    return rep
