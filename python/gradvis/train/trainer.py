"""Training on gradvis's own kernels: optimizers, schedules, augmentation, checkpoints.

The pieces are small and separate (an optimizer, a learning-rate schedule, an
augmentation function) and :func:`train` puts them together::

    from gradvis import train
    from gradvis.io.datasets import load_tiny_imagenet
    from gradvis.nn.architectures import default_net
    ds = load_tiny_imagenet()
    model = default_net(class_names=ds.class_names, wnids=ds.wnids)
    cfg = train.TrainConfig()   # the shipped recipe: 10 epochs, one-cycle SGD
    train.train(model, ds, cfg, run_dir="runs/default", resume=True)

Run from the command line: ``python -m gradvis.train --help``.

Checkpoints are gradvis model files (:mod:`gradvis.nn.fileformat`, no pickle)
holding the weights, the optimizer's state, the data-order generator's state,
the epoch's permutation and the step, written atomically; with ``resume=True``
a stopped run continues from its latest checkpoint and ends where an
uninterrupted run would have.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from .. import _checks
from ..io.model_file import read_model_file
from ..nn.fileformat import save_model
from ..nn.losses import softmax_cross_entropy

__all__ = ["SGD", "AdamW", "OneCycle", "CosineWarmup", "StepLR", "make_schedule",
           "random_crop", "random_flip", "alternating_flips", "augment_batch", "evaluate", "TrainConfig",
           "train", "whitening_filters", "apply_whitening", "WeightAverage", "balanced_subset", "init_from",
           "decays", "add_config_arguments", "config_from_args", "read_checkpoint", "check_sizes"]


# ============================================================================ optimizers
def decays(name, value):
    """Weight decay applies to conv/linear weights, not to biases or batch-norm parameters."""
    return value.ndim > 1


class SGD:
    """SGD with (Nesterov) momentum and decoupled-from-BN L2 weight decay.

    v = momentum * v + (g + wd * w);  w -= lr * (g + wd * w + momentum * v) if nesterov
    else w -= lr * v (PyTorch's formulation).
    """
    kind = "sgd"

    def __init__(self, momentum=0.9, nesterov=True, weight_decay=0.0):
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.state = {}

    def step(self, params, grads, lr, scales=None):
        """One update of every array in ``params`` (name -> array, updated in place)
        from ``grads``; ``scales`` (name -> float) multiplies the learning rate of the
        named parameters, and a scale of 0 leaves a parameter frozen."""
        mu, wd = self.momentum, self.weight_decay
        for name, w in params.items():
            scale = 1.0 if scales is None else scales.get(name, 1.0)
            if scale == 0.0:
                continue
            lr_w = lr * scale
            g = grads[name]
            if g.dtype != w.dtype:
                g = g.astype(w.dtype)
            if wd and decays(name, w):
                g = g + wd * w
            v = self.state.get(name)
            if v is None:
                v = self.state[name] = np.zeros_like(w)
            v *= mu
            v += g
            if self.nesterov:
                w -= lr_w * (g + mu * v)
            else:
                w -= lr_w * v

    def state_arrays(self):
        return {f"sgd.v/{k}": v for k, v in self.state.items()}

    def load_state_arrays(self, arrays):
        self.state = {k[len("sgd.v/"):]: v.copy() for k, v in arrays.items() if k.startswith("sgd.v/")}


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter): w -= lr * wd * w (decayed
    parameters only), then the Adam step."""
    kind = "adamw"

    def __init__(self, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.m, self.v = {}, {}

    def step(self, params, grads, lr, scales=None):
        """As :meth:`SGD.step`: ``scales`` multiplies named parameters' learning
        rates, 0 freezes them."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, w in params.items():
            scale = 1.0 if scales is None else scales.get(name, 1.0)
            if scale == 0.0:
                continue
            lr_w = lr * scale
            g = grads[name].astype(w.dtype, copy=False)
            if self.weight_decay and decays(name, w):
                w -= lr_w * self.weight_decay * w
            m = self.m.setdefault(name, np.zeros_like(w))
            v = self.v.setdefault(name, np.zeros_like(w))
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            w -= lr_w * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_arrays(self):
        out = {"adamw.t": np.array(self.t, np.int64)}
        out.update({f"adamw.m/{k}": v for k, v in self.m.items()})
        out.update({f"adamw.v/{k}": v for k, v in self.v.items()})
        return out

    def load_state_arrays(self, arrays):
        self.t = int(arrays.get("adamw.t", 0))
        self.m = {k[len("adamw.m/"):]: v.copy() for k, v in arrays.items() if k.startswith("adamw.m/")}
        self.v = {k[len("adamw.v/"):]: v.copy() for k, v in arrays.items() if k.startswith("adamw.v/")}


# ============================================================================ schedules
class OneCycle:
    """Warm up from max_lr / div to max_lr over pct_start of the steps (cosine), then
    anneal (cosine) to max_lr / (div * final_div) — Smith's one-cycle, as PyTorch's."""

    def __init__(self, max_lr, total_steps, pct_start=0.25, div=10.0, final_div=100.0):
        self.max_lr, self.total = float(max_lr), int(total_steps)
        self.up = max(1, int(pct_start * self.total))
        self.lo, self.end = self.max_lr / div, self.max_lr / (div * final_div)

    def __call__(self, step):
        if step < self.up:
            a, b, t = self.lo, self.max_lr, step / self.up
        else:
            a, b, t = self.max_lr, self.end, min(1.0, (step - self.up) / max(1, self.total - self.up))
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))


class CosineWarmup:
    """Linear warm-up over ``warmup`` steps, then cosine decay to min_lr."""

    def __init__(self, lr, total_steps, warmup=0, min_lr=0.0):
        self.lr, self.total, self.warmup, self.min_lr = float(lr), int(total_steps), int(warmup), float(min_lr)

    def __call__(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


class StepLR:
    """lr * gamma ** (number of milestones (in steps) passed)."""

    def __init__(self, lr, milestones, gamma=0.1):
        self.lr, self.milestones, self.gamma = float(lr), sorted(int(m) for m in milestones), float(gamma)

    def __call__(self, step):
        return self.lr * self.gamma ** sum(step >= m for m in self.milestones)


def make_schedule(name, lr, total_steps, steps_per_epoch=1, warmup_epochs=0.0,
                  milestones=(), gamma=0.1):
    """A schedule by name: 'onecycle', 'cosine', 'step' (milestones in epochs) or 'constant'."""
    if name == "onecycle":
        return OneCycle(lr, total_steps)
    if name == "cosine":
        return CosineWarmup(lr, total_steps, warmup=int(warmup_epochs * steps_per_epoch))
    if name == "step":
        return StepLR(lr, [m * steps_per_epoch for m in milestones], gamma)
    if name == "constant":
        return lambda step: lr
    raise ValueError(f"unknown schedule {name!r}; use 'onecycle', 'cosine', 'step' or 'constant'")


# ============================================================================ augmentation
def random_crop(images, size, pad, rng, pad_mode="reflect"):
    """Random ``size`` x ``size`` crops of uint8 (N, H, W, C) images, after padding
    each side by ``pad`` (reflect). One offset per image, drawn from ``rng``."""
    n, h, w = images.shape[:3]
    if pad:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=pad_mode)
        h, w = h + 2 * pad, w + 2 * pad
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the (padded) images {h}x{w}")
    oy = rng.integers(0, h - size + 1, n)
    ox = rng.integers(0, w - size + 1, n)
    ar = np.arange(size)
    return images[np.arange(n)[:, None, None], (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]]


def random_flip(images, rng, p=0.5):
    """Mirror each (N, H, W, C) image left-right with probability p (a new array)."""
    images = images.copy()
    flip = rng.random(len(images)) < p
    images[flip] = images[flip, :, ::-1]
    return images


def alternating_flips(n, epoch, seed):
    """The (n,) boolean flip mask of epoch ``epoch`` for alternating flips: each image
    is mirrored in every other epoch, starting from a seeded random half of the
    images in epoch 0, so that over two epochs every image is seen both ways (Keller
    Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024, arXiv:2404.00498)."""
    first = np.random.default_rng([int(seed), 0x666C6970]).random(int(n)) < 0.5
    return first ^ bool(int(epoch) % 2)


def augment_batch(images, rng, crop=56, pad=4, flip=True, flips=None):
    """Random crop (after padding) and horizontal flip of uint8 (N, H, W, C) images.
    ``flips``: an (N,) boolean mask of the images to mirror (e.g. from
    :func:`alternating_flips`) instead of random flips with probability 1/2."""
    out = random_crop(images, crop, pad, rng) if crop else images
    if not flip:
        return out
    if flips is None:
        return random_flip(out, rng)
    flips = np.asarray(flips, dtype=bool)
    if flips.shape != (len(out),):
        raise ValueError(f"flips must be a boolean mask of shape ({len(out)},), got shape {flips.shape}")
    out = out.copy()
    out[flips] = out[flips, :, ::-1]
    return out


def balanced_subset(labels, n):
    """Indices (sorted) of ``n`` of the images with these (N,) labels, as many of each
    class as possible (counts differ by at most one where classes are large enough):
    each class's first images in order. Data sets are often stored class by class,
    where the first ``n`` would hold only a few classes."""
    labels = np.asarray(labels)
    n = _checks.positive_int(n, "n")
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    return np.sort(np.lexsort((labels, rank))[:n])


# ============================================================================ whitening, EMA
def _first_conv(model):
    for node in model.nodes:
        if node.layer.type == "Conv2d":
            return node
    raise ValueError("whiten: the model has no Conv2d layer to whiten")


def whitening_filters(model, images, n_patches=100_000, eps=1e-2, seed=0):
    """Patch-whitening weights for the model's first convolution.

    Draws ``n_patches`` kh x kw patches of the preprocessed uint8 (N, H, W, C)
    ``images``, computes their covariance and its eigendecomposition (one
    ``numpy.linalg.eigh``), and returns float64 filters of shape (F, C, kh, kw) made of the
    F/2 leading eigenvectors v_i scaled by 1/sqrt(lambda_i + eps * lambda_max), each
    with its negation, so that a ReLU after the convolution passes both signs (as in
    Jordan 2024, arXiv:2404.00498, after Coates & Ng's whitened patches). F must be
    even and at most twice the patch dimension C * kh * kw. The first conv must
    have groups 1 and dilation 1.
    """
    node = _first_conv(model)
    conv = node.layer
    f, c = conv.out_channels, conv.in_channels
    kh, kw = conv.kernel_size
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
        raise ValueError(f"whiten: the first convolution {node.name!r} must have groups 1 and dilation 1")
    dim = c * kh * kw
    if f % 2 or f > 2 * dim:
        raise ValueError(f"whiten: the first convolution {node.name!r} has {f} output channels; whitening "
                         f"needs an even number of at most {2 * dim} (twice its {c}x{kh}x{kw} patches)")
    n_patches = _checks.positive_int(n_patches, "n_patches")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] < kh or images.shape[2] < kw:
        raise ValueError(f"whiten: images must be (N, H, W, C) of at least {kh}x{kw} pixels, "
                         f"got shape {images.shape}")
    rng = np.random.default_rng(seed)
    n, h, w = images.shape[:3]
    pick = rng.integers(0, n, n_patches)
    order = np.argsort(pick, kind="stable")
    pick = pick[order]
    ys, xs = rng.integers(0, h - kh + 1, n_patches), rng.integers(0, w - kw + 1, n_patches)
    patches = np.empty((n_patches, dim), np.float64)
    step = 4096
    for i in range(0, n_patches, step):
        sel = slice(i, i + step)
        imgs, inv = np.unique(pick[sel], return_inverse=True)
        x = np.asarray(model.preprocess(images[imgs]), np.float64)   # (m, C, H, W)
        dy, dx = np.arange(kh), np.arange(kw)
        p = x[inv[:, None, None, None], np.arange(c)[None, :, None, None],
              (ys[sel][:, None, None, None] + dy[None, None, :, None]),
              (xs[sel][:, None, None, None] + dx[None, None, None, :])]
        patches[sel] = p.reshape(len(p), dim)
    patches -= patches.mean(0)
    cov = patches.T @ patches / n_patches
    lam, vec = np.linalg.eigh(cov)                       # ascending
    lam, vec = lam[::-1][:f // 2], vec[:, ::-1][:, :f // 2]
    lam = np.maximum(lam, 0.0)
    filt = (vec / np.sqrt(lam + eps * max(float(lam[0]), 1e-12))).T.reshape(f // 2, c, kh, kw)
    return np.concatenate([filt, -filt])


def apply_whitening(model, images, seed=0):
    """Set the model's first convolution to :func:`whitening_filters` (its bias, if
    any, to zero) and return the names of the parameters to freeze."""
    node = _first_conv(model)
    names = [k for k in model.params if k.split(".", 1)[0] == node.name]
    weight = [k for k in names if model.params[k].ndim == 4]
    if len(weight) != 1:
        raise ValueError(f"whiten: cannot find the weight of {node.name!r} among {names}")
    filt = whitening_filters(model, images, seed=seed)
    model.params[weight[0]][...] = filt.astype(model.params[weight[0]].dtype)
    for k in names:
        if k not in weight:
            model.params[k][...] = 0
    return names


class WeightAverage:
    """An exponential moving average of a model's parameters and buffers (batch-norm
    statistics): ``avg = d * avg + (1 - d) * current`` after every step, with
    d = min(decay, (1 + t) / (10 + t)) at update t so that early averages are not
    dominated by the initial weights (Polyak & Juditsky 1992; the warm-up as in
    TensorFlow's ExponentialMovingAverage)."""

    def __init__(self, model, decay):
        self.decay = float(decay)
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        self.t = 0
        self.arrays = {f"p/{k}": v.copy() for k, v in model.params.items()}
        self.arrays.update({f"b/{k}": v.copy() for k, v in model.buffers.items()})

    def update(self, model):
        d = min(self.decay, (1 + self.t) / (10 + self.t))
        self.t += 1
        for k, avg in self.arrays.items():
            cur = model.params[k[2:]] if k[0] == "p" else model.buffers[k[2:]]
            avg *= d
            avg += (1 - d) * cur

    def model(self, model):
        """A copy of ``model`` holding the averaged weights."""
        m = model.copy()
        for k, avg in self.arrays.items():
            (m.params if k[0] == "p" else m.buffers)[k[2:]][...] = avg
        return m

    def state_arrays(self):
        out = {f"ema/{k}": v for k, v in self.arrays.items()}
        out["ema.t"] = np.array(self.t, np.int64)
        return out

    def load_state_arrays(self, arrays):
        loaded = {k[len("ema/"):]: v for k, v in arrays.items() if k.startswith("ema/")}
        if set(loaded) != set(self.arrays):
            raise ValueError("the checkpoint's weight average does not match the model "
                             "(was it written with --ema?)")
        self.arrays = {k: v.copy() for k, v in loaded.items()}
        self.t = int(arrays.get("ema.t", 0))


def evaluate(model, X, y, batch_size=500, crop=None):
    """Top-1 accuracy of ``model`` (test mode) on uint8 images X (N, H, W, 3), labels y.
    ``crop``: evaluate on centre crops of that size (default: full images)."""
    correct = 0
    for i in range(0, len(X), batch_size):
        xb = X[i:i + batch_size]
        if crop:
            oy, ox = (xb.shape[1] - crop) // 2, (xb.shape[2] - crop) // 2
            xb = xb[:, oy:oy + crop, ox:ox + crop]
        scores, _ = model.forward(model.preprocess(xb), mode="test")
        correct += int((scores.argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, len(X))


# ============================================================================ training loop
@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of :func:`train` (all saved in checkpoints)."""
    epochs: float = 10.0
    batch_size: int = 128
    optimizer: str = "sgd"          # 'sgd' (Nesterov momentum) or 'adamw'
    lr: float = 0.2                 # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"      # 'onecycle', 'cosine', 'step', 'constant'
    warmup_epochs: float = 1.0      # for 'cosine'
    milestones: tuple = ()          # epochs, for 'step'
    label_smoothing: float = 0.1
    crop: int = 56                  # train on random crops of this size (0: full images)
    full_size_epochs: float = 1.0   # ...except the last epochs, on full-size crops of the padded
                                    # images, so the test-time (full size) statistics are seen
    pad: int = 4                    # reflect padding before cropping
    flip: bool = True
    flip_mode: str = "random"       # 'random' (each image, p=1/2) or 'alternate' (every other epoch)
    ema: float = 0.0                # decay of a moving average of the weights, evaluated and
                                    # exported instead of the last weights (0: off)
    whiten: bool = False            # first conv: frozen patch-whitening filters (one eigh)
    bias_lr_scale: float = 1.0      # learning-rate multiplier of biases and batch-norm shifts
    seed: int = 0
    eval_every: int = 2             # epochs between held-out evaluations (0: only at the end)
    checkpoint_every: int = 200     # steps between checkpoints (and at each epoch end)
    log_every: int = 20             # steps between progress lines
    num_threads: int = 2
    max_train: int = 0              # use only N training images, as many of each class (0: all)

    def validate(self):
        """Check every field; raises TypeError/ValueError naming the bad one. Returns self."""
        for name in ("batch_size", "checkpoint_every", "log_every"):
            _checks.positive_int(getattr(self, name), name)
        for name in ("crop", "pad", "seed", "eval_every", "max_train"):
            _checks.positive_int(getattr(self, name), name, allow_zero=True)
        _checks.positive_int(self.num_threads, "num_threads", hi=1024)
        _checks.nonneg_float(self.lr, "lr", positive=True)
        for name in ("epochs", "weight_decay", "warmup_epochs", "full_size_epochs"):
            _checks.nonneg_float(getattr(self, name), name)
        if not 0.0 <= _checks.finite_float(self.momentum, "momentum") < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0.0 <= _checks.finite_float(self.label_smoothing, "label_smoothing") < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        for m in self.milestones:
            _checks.nonneg_float(m, "milestones")
        if self.flip_mode not in ("random", "alternate"):
            raise ValueError(f"unknown flip_mode {self.flip_mode!r}; use 'random' or 'alternate'")
        if not (self.ema == 0.0 or 0.0 < _checks.finite_float(self.ema, "ema") < 1.0):
            raise ValueError(f"ema must be 0 (off) or in (0, 1), got {self.ema!r}")
        _checks.nonneg_float(self.bias_lr_scale, "bias_lr_scale")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use 'sgd' or 'adamw'")
        if self.schedule not in ("onecycle", "cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}; use 'onecycle', 'cosine', 'step' or 'constant'")
        return self


def _make_optimizer(cfg):
    if cfg.optimizer == "sgd":
        return SGD(cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return AdamW(weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'sgd' or 'adamw'")


def _fmt_time(s):
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def read_checkpoint(path):
    """(model, extra, state) from a training checkpoint written by :func:`train`,
    checked: ValueError naming ``path`` if it is not a gradvis file, or a model file
    rather than a training checkpoint, or its training state is damaged."""
    try:
        model, extra, state = read_model_file(path)
    except (ValueError, OSError) as e:
        msg = str(e)
        raise ValueError(msg if str(path) in msg else f"{path}: {msg}") from None
    missing = [k for k in ("step", "rng", "model_rng") if not isinstance(extra, dict) or k not in extra]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint (no {', '.join(map(repr, missing))} "
                         f"in it: a model file?)")
    step = extra["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path}: damaged training checkpoint (step {step!r})")
    for key in ("rng", "model_rng"):
        try:
            np.random.default_rng().bit_generator.state = extra[key]
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: damaged training checkpoint ({key}: {e})") from None
    perm = state.get("perm")
    if perm is not None and (perm.ndim != 1 or perm.dtype.kind not in "iu"):
        raise ValueError(f"{path}: damaged training checkpoint (perm of shape {perm.shape}, dtype {perm.dtype})")
    return model, extra, state


def check_sizes(model, image_size, crop, pad=0):
    """Check, before any training, that ``model`` takes both the ``crop`` x ``crop``
    training crops and the full (H, W) ``image_size`` images (the held-out
    evaluation and the last full-size epochs), and that the centre-crop evaluation
    can cut ``crop`` from the images. ValueError naming the problem."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if crop and crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the {w}x{h} images (the held-out evaluation "
                         f"uses centre crops of this size); use a crop of at most {min(h, w)}")
    if pad > min(h, w):
        raise ValueError(f"pad {pad} is larger than the {w}x{h} images; use a pad of at most {min(h, w)}")
    c = model.input_shape[0]
    sizes = ([(f"crop {crop}", (c, crop, crop))] if crop else []) + [(f"the {w}x{h} images", (c, h, w))]
    for what, shape in sizes:
        try:
            model.output_shapes(shape)
        except ValueError as e:
            raise ValueError(f"{what}: too small for the model ({e})") from None


def train(model, data, config=None, run_dir=None, resume=False, log=print, on_step=None):
    """Train ``model`` on ``data`` (an object with X_train, y_train, X_val, y_val as
    uint8 images / int labels, e.g. :func:`gradvis.io.datasets.load_tiny_imagenet`).

    Args:
        config: :class:`TrainConfig`.
        run_dir: directory for ``checkpoint.npz`` (every ``checkpoint_every`` steps and
            each epoch), ``final.npz`` and ``history.json``; None: no files.
        resume: continue from ``run_dir/checkpoint.npz`` if it exists (the model's
            weights are replaced by the checkpoint's).
        log: called with each progress line (None: silent).
        on_step: optional callback ``on_step(step, loss)``, e.g. to stop a run in tests.

    Returns:
        (model, history): the trained model (a new object when resumed or when
        ``config.ema`` is on: then the weight average) and a dict with per-epoch
        'val_acc' (of the returned kind of model) and the training curve.
    """
    cfg = (config or TrainConfig()).validate()
    say = log or (lambda *a, **k: None)
    try:
        from .. import _core
        _core.set_num_threads(int(cfg.num_threads))
    except Exception:   # a build without the setter keeps its default
        pass
    X_train, y_train = data.X_train, np.asarray(data.y_train)
    if getattr(X_train, "ndim", 0) != 4:
        raise ValueError(f"X_train must be uint8 images (N, H, W, 3), got shape {np.shape(X_train)}")
    if cfg.max_train and cfg.max_train < len(X_train):
        keep = balanced_subset(y_train, cfg.max_train)
        X_train, y_train = X_train[keep], y_train[keep]
    n = len(X_train)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {n} training images")
    total_steps = int(round(cfg.epochs * steps_per_epoch))
    full_from = total_steps - int(round(cfg.full_size_epochs * steps_per_epoch)) if cfg.crop else 0
    schedule = make_schedule(cfg.schedule, cfg.lr, total_steps, steps_per_epoch,
                             cfg.warmup_epochs, cfg.milestones)
    opt = _make_optimizer(cfg)
    rng = np.random.default_rng(cfg.seed)
    model.unfreeze().seed(cfg.seed + 1)   # (its weights change in place)
    step, perm = 0, None
    history = {"config": dataclasses.asdict(cfg), "val_acc": [], "curve": []}
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt = run_dir / "checkpoint.npz" if run_dir else None

    if resume and ckpt is not None and ckpt.is_file():
        model, extra, state = read_checkpoint(ckpt)
        num_classes = getattr(data, "num_classes", None)
        if num_classes is not None and model.num_classes != num_classes:
            raise ValueError(f"{ckpt}: the checkpoint's model has {model.num_classes} classes, "
                             f"the data {num_classes}")
        if tuple(model.input_shape[1:]) != tuple(X_train.shape[1:3]):
            raise ValueError(f"{ckpt}: the checkpoint's model takes {model.input_shape[2]}x{model.input_shape[1]} "
                             f"images, the data are {X_train.shape[2]}x{X_train.shape[1]}")
    check_sizes(model, tuple(X_train.shape[1:3]), cfg.crop, cfg.pad)
    resumed = resume and ckpt is not None and ckpt.is_file()
    scales = {}
    if cfg.whiten:   # a resumed run's checkpoint already holds the whitened filters
        first = _first_conv(model).name
        frozen = (apply_whitening(model, X_train, seed=cfg.seed) if not resumed
                  else [k for k in model.params if k.split(".", 1)[0] == first])
        scales.update({k: 0.0 for k in frozen})
        if not resumed:
            say(f"whitened and froze {first!r} (eigenvectors of training-image patches)")
    if cfg.bias_lr_scale != 1.0:
        for k, v in model.params.items():
            if v.ndim == 1 and k.rsplit(".", 1)[-1] in ("beta", "bias") and k not in scales:
                scales[k] = cfg.bias_lr_scale
    ema = WeightAverage(model, cfg.ema) if cfg.ema else None
    if resumed:
        if ema is not None:
            ema.load_state_arrays(state)
        opt.load_state_arrays(state)
        rng.bit_generator.state = extra["rng"]
        model.rng.bit_generator.state = extra["model_rng"]
        step = int(extra["step"])
        perm = state.get("perm")
        history = extra.get("history", history)
        if extra.get("config") != _json_safe(dataclasses.asdict(cfg)):
            say("note: resuming with a different config than the checkpoint's")
        say(f"resumed from {ckpt} at step {step}/{total_steps}")

    def save_checkpoint():
        if ckpt is None:
            return
        extra = {"step": step, "rng": rng.bit_generator.state, "model_rng": model.rng.bit_generator.state,
                 "config": dataclasses.asdict(cfg), "history": history}
        arrays = dict(opt.state_arrays())
        if ema is not None:
            arrays.update(ema.state_arrays())
        if perm is not None:
            arrays["perm"] = perm
        save_model(model, ckpt, overwrite=True, extra_json=_json_safe(extra), extra_arrays=arrays)

    t_start, step_start = time.time(), step
    loss_ema = acc_ema = None
    flip_mask = None   # (epoch, its (n,) alternating-flip mask)
    while step < total_steps:
        epoch, k = divmod(step, steps_per_epoch)
        if k == 0 or perm is None:
            if k == 0:
                perm = rng.permutation(n).astype(np.int64)
            elif perm is None:   # resumed from a checkpoint without a permutation: redraw
                perm = rng.permutation(n).astype(np.int64)
        idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        crop = cfg.crop if step < full_from else X_train.shape[1]
        if cfg.flip_mode == "alternate" and (flip_mask is None or flip_mask[0] != epoch):
            flip_mask = (epoch, alternating_flips(n, epoch, cfg.seed))   # one mask per epoch
        flips = flip_mask[1][idx] if cfg.flip_mode == "alternate" else None
        xb = augment_batch(X_train[idx], rng, crop, cfg.pad, cfg.flip, flips)
        yb = y_train[idx]
        X = model.preprocess(xb)
        scores, cache = model.forward(X, mode="train")
        loss, dscores = softmax_cross_entropy(scores, yb, cfg.label_smoothing)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {step}; lower the learning rate")
        _, grads = model.backward(dscores, cache, input_grad=False)
        lr = schedule(step)
        opt.step(model.params, grads, lr, scales)
        if ema is not None:
            ema.update(model)
        step += 1
        acc = float((scores.argmax(1) == yb).mean())
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
        acc_ema = acc if acc_ema is None else 0.95 * acc_ema + 0.05 * acc
        if on_step is not None and on_step(step, loss) is False:
            save_checkpoint()
            return model, history
        if step % cfg.log_every == 0 or step == total_steps:
            elapsed = time.time() - t_start
            ips = (step - step_start) * cfg.batch_size / max(elapsed, 1e-9)
            eta = (total_steps - step) * cfg.batch_size / max(ips, 1e-9)
            say(f"epoch {step / steps_per_epoch:6.2f}  step {step}/{total_steps}  loss {loss_ema:.3f}  "
                f"train acc {acc_ema:.3f}  lr {lr:.4f}  {ips:.0f} img/s  ETA {_fmt_time(eta)}")
            history["curve"].append([step, round(loss_ema, 4), round(acc_ema, 4)])
        end_of_epoch = step % steps_per_epoch == 0
        if end_of_epoch and cfg.eval_every and (step // steps_per_epoch) % cfg.eval_every == 0 \
                and step < total_steps:
            acc_v = evaluate(model, data.X_val, data.y_val)
            if ema is not None:
                acc_e = evaluate(ema.model(model), data.X_val, data.y_val)
                history.setdefault("val_acc_last_weights", []).append([step / steps_per_epoch, acc_v])
                history["val_acc"].append([step / steps_per_epoch, acc_e])
                say(f"epoch {step / steps_per_epoch:.2f}: held-out top-1 {acc_e:.4f} (average), "
                    f"{acc_v:.4f} (last weights)")
            else:
                history["val_acc"].append([step / steps_per_epoch, acc_v])
                say(f"epoch {step / steps_per_epoch:.2f}: held-out top-1 {acc_v:.4f}")
        if end_of_epoch or step % cfg.checkpoint_every == 0:
            save_checkpoint()

    final = model
    if ema is not None:
        history["final_val_acc_last_weights"] = evaluate(model, data.X_val, data.y_val)
        final = ema.model(model)
    acc_v = evaluate(final, data.X_val, data.y_val)
    # (a run resumed after its last step evaluates again: one entry for the end)
    history["val_acc"] = [v for v in history["val_acc"] if v[0] < step / steps_per_epoch]
    history["val_acc"].append([step / steps_per_epoch, acc_v])
    history["final_val_acc"] = acc_v
    if run_dir is not None:   # the trained model first: the extra evaluation below cannot lose it
        save_checkpoint()
        save_model(final, run_dir / "final.npz", overwrite=True,
                   extra_json={"val_acc": acc_v, "config": _json_safe(dataclasses.asdict(cfg))})
    if cfg.crop:
        history["final_val_acc_center_crop"] = evaluate(final, data.X_val, data.y_val, crop=cfg.crop)
    if ema is not None:
        say(f"last weights (not the average): held-out top-1 {history['final_val_acc_last_weights']:.4f}")
    say(f"done: held-out top-1 {acc_v:.4f} at {data.X_val.shape[1]}x{data.X_val.shape[2]}"
        + (f", {history['final_val_acc_center_crop']:.4f} on centre {cfg.crop}x{cfg.crop} crops" if cfg.crop else ""))
    if run_dir is not None:
        (run_dir / "history.json").write_text(json.dumps(_json_safe(history), indent=1))
    return final, history


def init_from(model, path):
    """Copy the parameters and buffers of the model file (or training checkpoint) at
    ``path`` into ``model``, whose architecture must have the same arrays (names and
    shapes); ValueError naming the first difference."""
    src, _, _ = read_model_file(path)
    for what, mine, theirs in (("parameter", model.params, src.params), ("buffer", model.buffers, src.buffers)):
        if set(mine) != set(theirs):
            diff = sorted(set(mine) ^ set(theirs))
            raise ValueError(f"{path}: its {what}s differ from the model's (e.g. {diff[0]!r}); "
                             f"--init needs a model of the same architecture")
        for k, v in mine.items():
            if theirs[k].shape != v.shape:
                raise ValueError(f"{path}: {what} {k!r} has shape {theirs[k].shape}, the model's {v.shape}")
            v[...] = theirs[k]
    return model


# ============================================================================ command line
_TRUE, _FALSE = ("1", "true", "yes", "on", "y", "t"), ("0", "false", "no", "off", "n", "f")


def _parse_bool(text):
    """An argparse type for a yes/no option; anything unrecognised is an error."""
    t = str(text).strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false (or yes/no, on/off, 1/0), got {text!r}")


_parse_bool.__name__ = "bool"


def add_config_arguments(parser, skip=()):
    """Add one ``--option`` per :class:`TrainConfig` field (except those in ``skip``)
    to an argparse parser; :func:`config_from_args` reads them back. Shared by
    ``python -m gradvis.train`` and ``gradvis train``."""
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if f.name == "milestones":
            parser.add_argument(flag, type=float, nargs="*", default=(), metavar="EPOCH")
        elif f.type in ("bool", bool):
            parser.add_argument(flag, type=_parse_bool, default=getattr(defaults, f.name), metavar="BOOL",
                                help=f"true/false, yes/no, on/off or 1/0 (default: {getattr(defaults, f.name)})")
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), type(getattr(defaults, f.name)))
            parser.add_argument(flag, type=typ, default=getattr(defaults, f.name),
                                metavar=f.name.upper(), help=f"(default: {getattr(defaults, f.name)})")
    return parser


def config_from_args(args, **overrides):
    """A :class:`TrainConfig` from parsed :func:`add_config_arguments` options;
    fields missing from ``args`` keep their defaults; ``overrides`` win."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values.update(overrides)
    cfg = TrainConfig(**values)
    cfg.milestones = tuple(cfg.milestones)
    return cfg.validate()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m gradvis.train",
                                description="Train gradvis's default net on TinyImageNet-100-A.")
    add_config_arguments(p)
    p.add_argument("--run-dir", required=True, help="checkpoints, final.npz, history.json")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.npz")
    p.add_argument("--data", default=None, help="path of tiny-imagenet-100-A-train.tar.gz")
    p.add_argument("--export", default=None, help="also save the final model here (e.g. the bundled default.npz)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this model file's (or checkpoint's) weights instead of a random "
                        "initialization: a new schedule from trained weights (a warm restart)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)

    from ..io.datasets import COLOR_INFO_KEY, color_correlation_from_images, load_tiny_imagenet
    from ..nn.architectures import default_net
    ds = load_tiny_imagenet(args.data)
    model = default_net(num_classes=ds.num_classes, class_names=ds.class_names, wnids=ds.wnids,
                        seed=cfg.seed)
    if args.init and not (args.resume and (Path(args.run_dir) / "checkpoint.npz").is_file()):
        init_from(model, args.init)
    log = None if args.quiet else (lambda s: print(time.strftime("%H:%M:%S"), s, flush=True))
    if log:
        log(f"config: {json.dumps(dataclasses.asdict(cfg))}")
        log(f"{model!r}; {len(ds.X_train)} train / {len(ds.X_val)} held-out images")
    model, history = train(model, ds, cfg, run_dir=args.run_dir, resume=args.resume, log=log)
    if args.export:
        # what the model file says about its own training: the colour statistics of its
        # images (feature visualization decorrelates colours with them) and the recipe
        model.info = dict(model.info or {})
        model.info[COLOR_INFO_KEY] = np.round(color_correlation_from_images(ds.X_train), 6).tolist()
        model.info["color_correlation_source"] = (
            f"TinyImageNet-100-A training images (0-449 of each class, {len(ds.X_train):,}), RGB / 255: "
            "U sqrt(S) of their channel covariance U S U^T (Lucid's color_correlation_svd_sqrt)")
        model.info["training"] = {"config": _json_safe(dataclasses.asdict(cfg)),
                                  "held_out_top1": history.get("final_val_acc")}
        save_model(model, args.export, overwrite=True)
        if log:
            log(f"saved {args.export}")
    return 0
