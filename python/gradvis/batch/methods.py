"""The per-image methods a batch run can apply: one :class:`Method` entry each.

An entry says how to call a gradvis function on a block of images and what to
keep of its result:

- ``function(X, <class argument>, model, **options)`` (or ``function(X, model,
  **options)`` without a class argument) is the library function itself;
- ``options`` are the keyword arguments a user may set, with their defaults
  (the function checks their values); every method also takes ``batch_size``,
  the images per call (passed on where the function has that argument too);
- ``fixed`` are keyword arguments always passed (``return_report=True``);
- ``outputs`` name the per-image arrays the function returns, in order, with
  their per-image shape: they become the arrays of ``maps.zarr``;
- ``report`` names the per-image columns of the report dict the function
  returns after its arrays: they become columns of ``index.parquet``;
- ``seeded``: the function takes ``seed=``; the run calls it once per image with
  a seed derived from the run's seed and the image id (:func:`image_seed`), so
  a result never depends on which other images share its chunk.

Adding a method is one :func:`register` call, e.g. for an attack ``pgd(X, y,
model, eps=8, steps=10, return_report=True) -> (X_adv, report)``::

    register(Method("pgd", pgd, class_arg="y", options={"eps": 8.0, "steps": 10},
                    fixed={"return_report": True},
                    outputs=(Output("adversarial", "input"),),
                    report={"success": "bool", "linf_pixels": "float64"}))

``fused`` is an optional faster path taking ``(X, choose, model, **options)``
(``choose(scores) -> classes``) and returning ``(scores, result)`` where
``result`` is what ``function`` would return on the chosen classes: the
engine needs the class scores of every image for its index, and a method
whose own forward pass gives them should not pay for a second one. The tests
check every fused path against ``function``, byte for byte.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import numpy as np

from ..attacks import apgd, fgsm, make_fooling_image, pgd
from ..attribution import (compute_saliency_maps, deeplift, grad_cam, guided_backprop, input_x_gradient,
                           integrated_gradients, smoothgrad_saliency_maps)
from ..nn.gradients import input_gradient, one_hot
from ..nn.losses import softmax

__all__ = ["Output", "Method", "register", "get_method", "method_names", "image_seed",
           "predict_probabilities", "METHODS"]

# Per-image shapes an output can have, from the model: its input (C, H, W), one
# channel of it (H, W), or one value per class (K,).
_SHAPES = {
    "input": lambda model: tuple(model.input_shape),
    "map": lambda model: tuple(model.input_shape[1:]),
    "classes": lambda model: (model.num_classes,),
}
_REPORT_TYPES = ("bool", "int64", "float32", "float64")
# Images per call of a method (and per forward pass): every method takes the
# option ``batch_size``; functions that have their own take it as well.
DEFAULT_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Output:
    """A per-image array of a method's result.

    Args:
        name: the array's name in ``maps.zarr``.
        shape: 'input' (C, H, W), 'map' (H, W) or 'classes' (K,), or a function
            of the model giving the per-image shape.
        dtype: the stored dtype (default float32).
    """
    name: str
    shape: object
    dtype: str = "float32"

    def image_shape(self, model):
        f = _SHAPES.get(self.shape, self.shape) if isinstance(self.shape, str) else self.shape
        if not callable(f):
            raise ValueError(f"output {self.name!r}: shape must be one of {sorted(_SHAPES)} or a function "
                             f"of the model, got {self.shape!r}")
        return tuple(int(v) for v in f(model))


@dataclasses.dataclass(frozen=True)
class Method:
    """One per-image method of batch runs (see the module doc)."""
    name: str
    function: Callable
    outputs: tuple
    class_arg: str | None = "y"
    options: dict = dataclasses.field(default_factory=dict)
    fixed: dict = dataclasses.field(default_factory=dict)
    report: dict = dataclasses.field(default_factory=dict)
    seeded: bool = False
    fused: Callable | None = None
    summary: str = ""

    def __post_init__(self):
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"method name must be a non-empty word, got {self.name!r}")
        if not self.outputs and not self.report:
            raise ValueError(f"method {self.name!r}: give outputs, report columns or both")
        for o in self.outputs:
            if not isinstance(o, Output):
                raise TypeError(f"method {self.name!r}: outputs must be Output entries, got {o!r}")
        for col, dt in self.report.items():
            if dt not in _REPORT_TYPES:
                raise ValueError(f"method {self.name!r}: report column {col!r} has type {dt!r}; "
                                 f"expected one of {_REPORT_TYPES}")
        params = inspect.signature(self.function).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for k in [*self.options, *self.fixed, *(["seed"] if self.seeded else [])]:
            if k not in params and not takes_any:
                raise ValueError(f"method {self.name!r}: {self.function.__name__} takes no argument {k!r}")

    def resolve_options(self, given):
        """The full option dict: the defaults updated by ``given``; an unknown name
        raises TypeError listing the known ones."""
        unknown = sorted(set(given) - set(self.options) - {"batch_size"})
        if unknown:
            known = ", ".join(sorted({*self.options, "batch_size"}))
            raise TypeError(f"method {self.name!r} takes no option {', '.join(map(repr, unknown))} "
                            f"(its options: {known})")
        out = {"batch_size": DEFAULT_BATCH_SIZE}
        out.update(self.options)
        out.update(given)
        return out

    def call(self, X, y, model, options, seeds=None):
        """The method on the images X (N, C, H, W) with classes y (N,): ``(arrays,
        report)``, a list of (N, ...) arrays (one per output) and a dict of (N,)
        columns. A seeded method is called once per image with ``seeds[i]``."""
        if self.seeded:
            parts = [self._split(self._invoke(X[i:i + 1], y[i:i + 1], model, options, seed=int(seeds[i])))
                     for i in range(X.shape[0])]
            arrays = [np.concatenate([p[0][j] for p in parts]) for j in range(len(self.outputs))]
            report = {k: np.concatenate([p[1][k] for p in parts]) for k in self.report}
            return arrays, report
        return self._split(self._invoke(X, y, model, options))

    def call_scored(self, X, choose, model, options, seeds=None):
        """``(scores, y, arrays, report)``: the class scores (N, K) of X, the classes
        ``choose(scores)`` and the method's result for them; through ``fused``
        where the method has it, else ``model.predict`` then :meth:`call`."""
        if self.fused is not None:
            chosen = []

            def keep(scores):
                chosen.append(np.asarray(choose(scores)))
                return chosen[-1]
            scores, result = self.fused(X, keep, model, **options)
            # a method without a class argument chooses none: record the choice anyway
            y = np.concatenate(chosen) if chosen else np.asarray(choose(scores))
            return (scores, y) + self._split(result)
        scores = model.predict(X, batch_size=max(1, X.shape[0]))
        y = np.asarray(choose(scores))
        return (scores, y) + self.call(X, y, model, options, seeds)

    def _invoke(self, X, y, model, options, **extra):
        kw = dict(options, **self.fixed, **extra)
        if not self.takes_batch_size:
            kw.pop("batch_size", None)      # the engine's block size only
        if self.class_arg is None:
            return self.function(X, model, **kw)
        return self.function(X, y, model, **kw)

    @property
    def takes_batch_size(self):
        return "batch_size" in inspect.signature(self.function).parameters

    def _split(self, result):
        parts = result if isinstance(result, tuple) else (result,)
        want = len(self.outputs) + (1 if self.report else 0)
        if len(parts) != want:
            raise ValueError(f"method {self.name!r}: {self.function.__name__} returned {len(parts)} "
                             f"values, expected {want}")
        arrays = [np.asarray(a) for a in parts[:len(self.outputs)]]
        report = {}
        if self.report:
            got = parts[-1]
            missing = [k for k in self.report if k not in got]
            if missing:
                raise ValueError(f"method {self.name!r}: the report lacks {missing}")
            report = {k: np.asarray(got[k]).astype(dt) for k, dt in self.report.items()}
        return arrays, report


METHODS: dict = {}


def register(method, replace=False):
    """Add ``method`` (a :class:`Method`) to the batch methods; an existing name
    raises ValueError unless ``replace``."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be a gradvis.batch.Method, got {type(method).__name__}")
    if method.name in METHODS and not replace:
        raise ValueError(f"a batch method named {method.name!r} exists; pass replace=True")
    METHODS[method.name] = method
    return method


def method_names():
    return sorted(METHODS)


def get_method(name):
    """The registered :class:`Method` called ``name`` (or ``name`` itself if it is one);
    ValueError naming the known ones otherwise."""
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise TypeError(f"method must be a method name (str), got {type(name).__name__}")
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown batch method {name!r}; known: {', '.join(method_names())}") from None


def image_seed(seed, image_id):
    """The seed of one image of a run: an int in [0, 2**63) from the run's ``seed``
    and the image's id through numpy's SeedSequence (independent streams for
    different ids; the same for the same pair, whatever the chunking)."""
    state = np.random.SeedSequence([int(seed), int(image_id)]).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


# ---------------------------------------------------------------------------- the entries
def predict_probabilities(X, model, batch_size=64):
    """Class probabilities (N, K) float32: softmax of ``model.predict(X, batch_size)``."""
    return softmax(model.predict(X, batch_size=batch_size)).astype(np.float32)


def _predict_fused(X, choose, model, batch_size=64):
    scores = model.predict(X, batch_size=batch_size)
    return scores, softmax(scores).astype(np.float32)


def _saliency_fused(X, choose, model, batch_size=64):
    # compute_saliency_maps's own passes (forward in test mode, then the input
    # gradient of the one-hot class score), on the same blocks of batch_size,
    # with the classes chosen from that forward pass's scores
    scores, out = [], np.empty((X.shape[0],) + X.shape[2:], dtype=X.dtype)
    for i in range(0, X.shape[0], batch_size):
        s, cache = model.forward(X[i:i + batch_size], mode="test")
        y = choose(s)
        dX = input_gradient(model, one_hot(s.shape[0], s.shape[1], y, s.dtype), cache)
        out[i:i + batch_size] = np.abs(dX).max(axis=1)
        scores.append(s)
    return np.concatenate(scores), out


register(Method(
    "predict", predict_probabilities, class_arg=None,
    outputs=(Output("probabilities", "classes"),), fused=_predict_fused,
    summary="class probabilities (the index holds the prediction and its probability)"))

register(Method(
    "saliency", compute_saliency_maps,
    outputs=(Output("saliency", "map"),), fused=_saliency_fused,
    summary="saliency maps |d score / d X|, max over channels (Simonyan et al. 2013)"))

register(Method(
    "smoothgrad", smoothgrad_saliency_maps, seeded=True,
    options={"num_samples": 25, "noise_level": 0.15},
    outputs=(Output("saliency", "map"),),
    summary="SmoothGrad saliency maps (Smilkov et al. 2017), noise seeded per image"))

register(Method(
    "fool", make_fooling_image, class_arg="target_y",
    options={"learning_rate": None, "max_iter": 100, "normalize_step": "sign", "eps": None,
             "norm": "inf", "clip": True},
    fixed={"return_report": True},
    outputs=(Output("fooling", "input"),),
    report={"success": "bool", "iterations": "int64", "target_prob": "float64",
            "predicted": "int64", "l2": "float64", "linf": "float64",
            "l2_pixels": "float64", "linf_pixels": "float64"},
    summary="fooling images towards a target class (CS231n; Szegedy et al. 2014)"))


# ---------------------------------------------------------------------------- the attribution suite
def _grad_cam_upsampled(X, target, model, layer=None, relu_attributions=True):
    """Grad-CAM resized to the input (what a map of the run holds)."""
    return grad_cam(X, target, model, layer=layer, relu_attributions=relu_attributions, upsample=True)


for _name, _fn, _options, _summary in [
        ("integrated_gradients", integrated_gradients, {"n_steps": 50, "method": "gausslegendre"},
         "integrated gradients from a black baseline (Sundararajan et al. 2017), Captum's semantics"),
        ("input_x_gradient", input_x_gradient, {}, "input times gradient (Shrikumar et al. 2016)"),
        ("guided_backprop", guided_backprop, {}, "guided backpropagation (Springenberg et al. 2014)"),
        ("deeplift", deeplift, {}, "DeepLIFT, rescale rule, black baseline (Shrikumar et al. 2017)")]:
    register(Method(_name, _fn, class_arg="target", options=_options,
                    outputs=(Output("attribution", "input"),), summary=_summary))

register(Method(
    "grad_cam", _grad_cam_upsampled, class_arg="target", options={"layer": None},
    outputs=(Output("cam", "map"),),
    summary="Grad-CAM of a layer (default: the last spatial one), upsampled to the image (Selvaraju et al. 2017)"))

# ---------------------------------------------------------------------------- attacks (untargeted, on the chosen class)
_ATTACK_REPORT = {"success": "bool", "margin": "float64", "predicted": "int64", "iterations": "int64",
                  "linf": "float64", "l2": "float64", "l1": "float64"}
for _name, _fn, _options, _summary in [
        ("fgsm", fgsm, {"eps": 8.0, "norm": "inf"}, "FGSM (Goodfellow et al. 2015), eps in grey levels"),
        ("pgd", pgd, {"eps": 8.0, "norm": "inf", "steps": 10, "random_start": True, "restarts": 1},
         "PGD (Madry et al. 2018), eps in grey levels, seeded per image"),
        ("apgd", apgd, {"eps": 8.0, "norm": "inf", "steps": 100, "loss": "ce"},
         "APGD-CE/DLR (Croce & Hein 2020), eps in grey levels, seeded per image")]:
    register(Method(_name, _fn, class_arg="y", options=_options, seeded=True,
                    outputs=(Output("adversarial", "input"),), report=_ATTACK_REPORT, summary=_summary))
