"""The explorer's method registry: what the page can run, with its parameters.

Each method is one declarative :class:`Method`: a name, a family, its parameters
(:class:`Param`: type, default, range), whether it runs long and streams
progress, and a ``run`` function that calls the public gradvis function. The
server, the page, the exported Python call and the CLI command are all built from
these entries, so adding a method is one :func:`register` call::

    register(Method(
        name="integrated_gradients", label="Integrated Gradients", family="attribution",
        params=(Param("steps", "int", 32, lo=1, hi=512, kwarg="steps"),),
        run=lambda model, image, target, params, progress, cancelled: map_result(
            integrated_gradients(image.X, [target], model, **params)[0], signed=True),
        call="gradvis.attribution.integrated_gradients(X, [{target}], model{kwargs})"))

``run(model, image, target, params, progress, cancelled)`` gets the model, an
:class:`ImageInput` (the photo fitted to the model, its model input ``X`` and the
original photo), the target class (an int, or None for methods without one), the
checked parameters as a dict, ``progress(step, total, X=None, info=None)`` to
report progress (``X`` a model-input array to show as a preview) and
``cancelled()``; long methods pass :func:`step_callback` to the algorithm, which
raises :class:`Cancelled` at the next step once the job is cancelled. It returns
a :class:`MethodResult`.

This module imports no web framework: notebooks and tests use it directly.
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["Param", "Method", "MethodResult", "ImageInput", "Cancelled", "METHODS", "register",
           "get_method", "check_params", "step_callback", "map_result", "channel_map", "image_result",
           "python_code", "cli_command", "describe"]


class Cancelled(Exception):
    """Raised inside a running method (through its step callback) once its job is cancelled."""


@dataclass(frozen=True)
class Param:
    """One parameter of a method.

    ``kind`` is 'int', 'float', 'choice' (one of ``choices``), 'layer' (a layer name
    of the model; ``spatial`` restricts it to layers with (C, H, W) outputs) or
    'bool'. ``lo``/``hi`` are the range the page offers (the library checks the
    values itself, so its own message reaches the user). ``kwarg`` is the
    keyword of the library function (None: the parameter is not passed as a keyword),
    ``cli`` the option of the ``gradvis`` command (None: the command has none).
    ``optional`` parameters may be None (the library's default). A 'layer'
    parameter whose default is not a layer of the model gets a middle ReLU
    (``default='middle'``) or the last layer (``default='last'``: CAMs)."""
    name: str
    kind: str
    default: Any
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: tuple = ()
    label: str = ""
    help: str = ""
    kwarg: Optional[str] = None
    cli: Optional[str] = None
    spatial: bool = False
    optional: bool = False

    def describe(self, model=None):
        d = {"name": self.name, "kind": self.kind, "default": self.default, "label": self.label or self.name,
             "help": self.help, "optional": self.optional}
        if self.lo is not None:
            d["min"] = self.lo
        if self.hi is not None:
            d["max"] = self.hi
        if self.kind == "choice":
            d["choices"] = list(self.choices)
        if self.kind == "layer" and model is not None:
            d["choices"] = layer_choices(model, self.spatial)
            if d["default"] not in d["choices"] and d["choices"]:
                d["default"] = default_layer(model, self.spatial, self.default == "last")
        return d


@dataclass(frozen=True, eq=False)
class Method:
    """One method the explorer offers (see the module docstring).

    ``output`` is 'map' (a (H, W) attribution map), 'image' (a generated or
    changed image) or 'classes' (predictions). ``needs_target``: the method
    explains or reaches a class; ``uses_image``: it starts from the photo.
    ``streams``: it runs for many steps, reports
    previews and can be cancelled between steps. ``call`` is the Python
    call, formatted with ``{target}``, ``{kwargs}`` (the keyword arguments given,
    each as ``, name=value``) and each parameter by name; ``command`` the
    ``gradvis`` command (None: none), formatted likewise, to which the
    parameters' ``cli`` options are appended."""
    name: str
    label: str
    family: str
    run: Callable
    params: tuple = ()
    output: str = "map"
    needs_target: bool = True
    uses_image: bool = True
    streams: bool = False
    call: str = ""
    command: Optional[str] = None
    reference: str = ""
    description: str = ""
    small_params: dict = field(default_factory=dict)


@dataclass
class MethodResult:
    """What a method returns. ``array`` is saved as ``.npy``; ``map`` (H, W) float32
    for map methods (``signed``: its sign matters); ``image`` uint8 (H, W, 3) for
    image methods; ``notes`` are shown beside the result (a failed attack says so);
    ``stats`` are JSON-able numbers and words."""
    output: str
    array: np.ndarray
    map: Optional[np.ndarray] = None
    signed: bool = False
    image: Optional[np.ndarray] = None
    notes: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    success: Optional[bool] = None


@dataclass
class ImageInput:
    """An image prepared for the model: ``original`` uint8 (H0, W0, 3) as read,
    ``rgb`` uint8 (H, W, 3) resized and centre-cropped to the model's input size as
    the CLI does, ``X`` float32 (1, C, H, W) its model input, ``name`` the file name
    shown in exported code, ``notes`` what was done to it."""
    original: np.ndarray
    rgb: np.ndarray
    X: np.ndarray
    name: str = "photo.jpg"
    notes: list = field(default_factory=list)


METHODS: dict = {}


def register(method):
    """Add ``method`` (a :class:`Method`) to the registry; a name may be registered once."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be a gradvis.explore.methods.Method, got {type(method).__name__}")
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    if method.output not in ("map", "image", "classes"):
        raise ValueError(f"method {method.name!r}: output must be 'map', 'image' or 'classes', got {method.output!r}")
    names = [p.name for p in method.params]
    if len(set(names)) != len(names):
        raise ValueError(f"method {method.name!r} has two parameters of the same name")
    METHODS[method.name] = method
    return method


def get_method(name):
    """The registered method ``name``; ValueError listing the known ones otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


def _spatial(shape):
    """A (C, H, W) output larger than one position (global pooling gives (C, 1, 1))."""
    return len(shape) == 3 and shape[1] * shape[2] > 1


def layer_choices(model, spatial=False):
    shapes = model.output_shapes()
    return [n for n in model.layer_names if not spatial or _spatial(shapes[n])]


def default_layer(model, spatial=True, last=False):
    """A middle convolutional layer: deep enough to see parts, shallow enough to
    keep detail; with ``last``, the last layer with a (C, H, W) output (CAMs)."""
    shapes = model.output_shapes()
    conv = [n for n in model.layer_names if _spatial(shapes[n])]
    if last and conv:
        return conv[-1]
    relu = [n for n in conv if n.lower().startswith("relu")] or conv
    if not relu:
        return model.layer_names[0] if model.layer_names else None
    return relu[len(relu) // 2]


def check_params(method, params, model):
    """The parameters of ``method`` from ``params`` (a dict from JSON), with
    defaults filled in and types converted. Unknown names, wrong types and
    unknown layers or choices raise ValueError naming the parameter; ranges
    are left to the library, whose own message then reaches the user."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"params must be an object of parameter values, got {type(params).__name__}")
    known = {p.name: p for p in method.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {method.name!r}; "
                         f"it takes {', '.join(known) or 'none'}")
    out = {}
    for p in method.params:
        v = params.get(p.name, p.default)
        if p.kind == "layer" and p.name not in params:
            v = p.default if p.default in model.layer_names else default_layer(model, p.spatial, p.default == "last")
        out[p.name] = _convert(p, v, model)
    return out


def _convert(p, v, model):
    if v is None or (isinstance(v, str) and not v.strip() and p.kind in ("int", "float")):
        if p.optional:
            return None
        raise ValueError(f"parameter {p.name!r} needs a value")
    if p.kind in ("int", "float"):
        if isinstance(v, bool):
            raise ValueError(f"parameter {p.name!r} must be a number, got {v!r}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {p.name!r} must be a number, got {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"parameter {p.name!r} must be finite, got {v!r}")
        if p.kind == "int":
            if f != int(f) or abs(f) > 2 ** 31:
                raise ValueError(f"parameter {p.name!r} must be an integer, got {v!r}")
            return int(f)
        return f
    if p.kind == "bool":
        if isinstance(v, bool):
            return v
        raise ValueError(f"parameter {p.name!r} must be true or false, got {v!r}")
    if p.kind == "choice":
        if v not in p.choices:
            raise ValueError(f"parameter {p.name!r} must be one of {', '.join(map(str, p.choices))}, got {v!r}")
        return v
    if p.kind == "layer":
        ok = layer_choices(model, p.spatial)
        if isinstance(v, str) and v in ok:
            return v
        if isinstance(v, str) and v in model.layer_names:
            raise ValueError(f"parameter {p.name!r}: layer {v!r} has no spatial output; "
                             f"use one of {', '.join(ok)}")
        raise ValueError(f"parameter {p.name!r}: unknown layer {v!r}; the model's layers are {', '.join(ok)}")
    raise ValueError(f"parameter {p.name!r} has an unknown kind {p.kind!r}")


def kwargs_of(method, params):
    """The library keyword arguments of checked ``params`` (None values left out)."""
    return {p.kwarg: params[p.name] for p in method.params if p.kwarg and params.get(p.name) is not None}


def step_callback(progress, cancelled, total, every=5, preview=True):
    """A ``callback(t, X, info)`` for the library's iterative algorithms: raises
    :class:`Cancelled` once ``cancelled()``, reports ``progress(t + 1, total, X)``
    every ``every`` steps and at the last (X only when ``preview``)."""
    every = max(1, int(every))

    def callback(t, X, info):
        if cancelled():
            raise Cancelled()
        step = int(t) + 1
        if step % every == 0 or step >= total:
            progress(step, total, X if preview else None, info)
        else:
            progress(step, total, None, info)
    return callback


def map_result(saliency, signed=False, notes=(), stats=None):
    """A :class:`MethodResult` for one (H, W) map (or (1, H, W))."""
    m = np.asarray(saliency, dtype=np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"a map result must be (H, W), got shape {m.shape}")
    s = {"min": float(m.min()), "max": float(m.max()), "dtype": str(np.asarray(saliency).dtype)}
    s.update(stats or {})
    return MethodResult("map", m, map=m, signed=signed, notes=list(notes), stats=s)


def channel_map(attribution, signed=True, notes=(), stats=None):
    """A :class:`MethodResult` for an attribution shaped like the input, (1, C, H, W)
    or (C, H, W): summed over the channels (signed) or the largest absolute value
    over them (``signed=False``, as the saliency map)."""
    a = np.asarray(attribution)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"a per-pixel attribution must be (1, C, H, W) or (C, H, W), got shape {np.asarray(attribution).shape}")
    m = a.sum(axis=0) if signed else np.abs(a).max(axis=0)
    res = map_result(m, signed=signed, notes=notes, stats=stats)
    res.array = np.asarray(attribution, np.float32)      # the .npy keeps every channel
    res.stats["dtype"] = str(a.dtype)
    return res


def image_result(model, X, notes=(), stats=None, success=None):
    """A :class:`MethodResult` for one model-input image X (1, C, H, W)."""
    X = np.asarray(X)
    return MethodResult("image", X.astype(np.float32, copy=False), image=model.deprocess(X)[0],
                        notes=list(notes), stats=dict(stats or {}), success=success)


# ---------------------------------------------------------------------------- code export
def _py(v):
    return repr(v)


def python_code(method, params, target, model_path=None, image_name="photo.jpg", model_options=None):
    """The Python lines that reproduce a result: load the model (``model_options``:
    an ONNX file's preprocessing) and the photo as the explorer does, then the
    library call."""
    kw = kwargs_of(method, params)
    fmt = dict(params)
    fmt.update(target=target, kwargs="".join(f", {k}={_py(v)}" for k, v in kw.items()))
    opts = "".join(f", {k}={_py(v)}" for k, v in (model_options or {}).items())
    load = "gradvis.load_pretrained()" if model_path is None else f"gradvis.load_any({str(model_path)!r}{opts})"
    lines = ["import numpy as np", "import gradvis", "from gradvis.io.images import fit_image, read_rgb, resize_rgb",
             "",
             f"model = {load}",
             f"photo, _ = read_rgb({image_name!r})",
             "rgb, _ = fit_image(photo, model.input_shape[1:])   # resized and centre-cropped as the CLI does",
             "X = model.preprocess(rgb)                          # (1, C, H, W)"]
    lines.append(method.call.format(**fmt))
    return "\n".join(lines)


def cli_command(method, params, target, model_path=None, image_name="photo.jpg", model_options=None):
    """The ``gradvis`` command that computes the same result (None when there is
    none, or when a parameter the command has no option for is not at its default)."""
    if not method.command:
        return None
    if any(p.cli is None and params.get(p.name) != p.default for p in method.params):
        return None
    fmt = dict(params)
    fmt.update(target=target, image=shlex.quote(image_name))
    parts = [method.command.format(**fmt)]
    for p in method.params:
        v = params.get(p.name)
        if p.cli and v is not None and v is not False:
            parts.append(p.cli if v is True else f"{p.cli} {shlex.quote(str(v))}")
    if model_path is not None:
        parts.append(f"--model {shlex.quote(str(model_path))}")
        for k, v in (model_options or {}).items():
            vals = v if isinstance(v, (list, tuple)) else [v]
            parts.append(f"--{k.replace('_', '-')} " + " ".join(shlex.quote(str(x)) for x in vals))
    return " ".join(parts)


def describe(method, model):
    """A JSON-able description of ``method`` for the page and the API."""
    return {"name": method.name, "label": method.label, "family": method.family, "output": method.output,
            "needs_target": method.needs_target, "uses_image": method.uses_image, "streams": method.streams, "reference": method.reference,
            "description": method.description, "params": [p.describe(model) for p in method.params]}


# ---------------------------------------------------------------------------- the methods on main
def _softmax(s):
    s = np.asarray(s, np.float64)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(model, X, k=5):
    """[(class index, probability)] of the k most likely classes of X (1, C, H, W)."""
    from ..nn.graph import check_classifier
    check_classifier(model, "predictions")
    p = _softmax(model.predict(X))[0]
    k = min(int(k), p.shape[0])
    idx = np.argsort(-p, kind="stable")[:k]
    return [(int(i), float(p[i])) for i in idx], p


def _run_predict(model, image, target, params, progress, cancelled):
    top, p = top_k(model, image.X, params["k"])
    res = MethodResult("classes", p.astype(np.float32), stats={"top": [{"class": i, "prob": q} for i, q in top]})
    return res


def _run_saliency(model, image, target, params, progress, cancelled):
    from ..attribution import compute_saliency_maps
    return map_result(compute_saliency_maps(image.X, np.array([target]), model))


def _run_smoothgrad(model, image, target, params, progress, cancelled):
    from ..attribution import smoothgrad_saliency_maps
    m = smoothgrad_saliency_maps(image.X, np.array([target]), model, **kwargs_of(METHODS["smoothgrad"], params))
    return map_result(m)


def _run_fooling(model, image, target, params, progress, cancelled):
    from ..attacks import make_fooling_image
    kw = kwargs_of(METHODS["fooling"], params)
    cb = step_callback(progress, cancelled, params["max_iter"], every=5)
    Xf, rep = make_fooling_image(image.X, target, model, return_report=True, callback=cb, **kw)
    ok = bool(rep["success"][0])
    pred = int(rep["predicted"][0])
    stats = {"success": ok, "iterations": int(rep["iterations"][0]), "predicted": pred,
             "target_prob": float(rep["target_prob"][0]), "linf_pixels": float(rep["linf_pixels"][0]),
             "l2_pixels": float(rep["l2_pixels"][0])}
    top, _ = top_k(model, model.preprocess(model.deprocess(Xf)), 1)
    stats["predicted_8bit"] = top[0][0]
    notes = []
    if ok:
        notes.append(f"Fooled: the model now predicts the target after {stats['iterations']} steps "
                     f"(target p={stats['target_prob']:.2f}; largest change {stats['linf_pixels']:.1f}/255).")
        if top[0][0] != target:
            notes.append("Rounded to an 8-bit image (the PNG), it no longer fools the model.")
    else:
        budget = f" within eps {params['eps']:g}/255" if params.get("eps") is not None else ""
        notes.append(f"Attack failed{budget}: after {stats['iterations']} steps the model still predicts "
                     f"class {pred}, not the target (target p={stats['target_prob']:.2f}).")
    return image_result(model, Xf, notes=notes, stats=stats, success=ok)


def _run_classvis(model, image, target, params, progress, cancelled):
    from ..generation import create_class_visualization
    kw = kwargs_of(METHODS["classvis"], params)
    cb = step_callback(progress, cancelled, params["iterations"], every=10)
    X = create_class_visualization(target, model, callback=cb, **kw)
    p = _softmax(model.predict(X))[0]
    return image_result(model, X, stats={"target_prob": float(p[target])},
                        notes=[f"The model gives this image p={float(p[target]):.2f} for the target class."])


def _run_inversion(model, image, target, params, progress, cancelled):
    from ..generation import invert_features
    kw = kwargs_of(METHODS["inversion"], params)
    layer = params["layer"]
    feats, _ = model.forward(image.X, end=layer, mode="test")
    errs = []

    def keep(step, total, X=None, info=None):
        if info and "feature_error" in info:
            errs[:] = [float(np.asarray(info["feature_error"])[0])]
        progress(step, total, X, info)
    cb = step_callback(keep, cancelled, params["iterations"], every=10)
    X = invert_features(feats, layer, model, callback=cb, **kw)
    stats = {"feature_error": errs[0] if errs else None}
    notes = [f"Relative feature error at {layer}: {errs[0]:.3f}."] if errs else []
    return image_result(model, X, notes=notes, stats=stats)


def _dream_input(model, image, max_size):
    """The photo at its own size, shrunk so its longer side is at most ``max_size``."""
    from ..io.images import resize_rgb
    rgb = image.original
    h, w = rgb.shape[:2]
    s = min(1.0, max_size / max(h, w))
    return resize_rgb(rgb, (max(1, round(h * s)), max(1, round(w * s))))


def _run_deepdream(model, image, target, params, progress, cancelled):
    from ..generation import deepdream
    kw = kwargs_of(METHODS["deepdream"], params)
    rgb = _dream_input(model, image, params["max_size"])
    total = params["iterations"] * params["octaves"]
    cb = step_callback(progress, cancelled, total, every=max(1, min(5, params["iterations"])))
    X = deepdream(model.preprocess(rgb), params["layer"], model, callback=cb, **kw)
    return image_result(model, X, notes=[f"Dreamed at {rgb.shape[1]}x{rgb.shape[0]} pixels."])


_SEED = Param("seed", "int", 0, lo=0, hi=2 ** 31 - 1, label="seed", kwarg="seed", cli="--seed")

register(Method(
    name="predict", label="Top-5 predictions", family="prediction", run=_run_predict, output="classes",
    needs_target=False,
    params=(Param("k", "int", 5, lo=1, hi=100, label="classes shown", cli="--top-k"),),
    call="probs = gradvis.nn.losses.softmax(model.predict(X))[0]\ntop = np.argsort(-probs)[:{k}]",
    command="gradvis predict {image}",
    description="The model's most likely classes, with probabilities."))

register(Method(
    name="saliency", label="Saliency", family="attribution", run=_run_saliency,
    call="saliency = gradvis.compute_saliency_maps(X, np.array([{target}]), model)[0]   # (H, W)",
    command="gradvis saliency {image} --class {target} --save-npy",
    reference="Simonyan, Vedaldi & Zisserman 2013, arXiv:1312.6034",
    description="Largest absolute gradient of the class score over the colour channels."))

register(Method(
    name="smoothgrad", label="SmoothGrad", family="attribution", run=_run_smoothgrad,
    params=(Param("num_samples", "int", 25, lo=1, hi=500, label="noisy samples", kwarg="num_samples",
                  cli="--smoothgrad"),
            Param("noise_level", "float", 0.15, lo=0.0, hi=1.0, label="noise level", kwarg="noise_level",
                  help="noise standard deviation as a fraction of the image's range"),
            _SEED),
    call="saliency = gradvis.smoothgrad_saliency_maps(X, np.array([{target}]), model{kwargs})[0]",
    command="gradvis saliency {image} --class {target} --save-npy",
    reference="Smilkov et al. 2017, arXiv:1706.03825",
    small_params={"num_samples": 3},
    description="Saliency averaged over noisy copies of the image."))

register(Method(
    name="fooling", label="Fooling image", family="attacks", run=_run_fooling, output="image", streams=True,
    params=(Param("max_iter", "int", 100, lo=1, hi=2000, label="most steps", kwarg="max_iter", cli="--max-iter"),
            Param("eps", "float", None, lo=0.0, hi=255.0, label="budget (0-255)", kwarg="eps", cli="--eps",
                  optional=True, help="largest change, in pixel units; empty: none"),
            Param("norm", "choice", "inf", choices=("inf", "2"), label="norm", kwarg="norm", cli="--norm")),
    call="X_fool, report = gradvis.make_fooling_image(X, {target}, model{kwargs}, return_report=True)",
    command="gradvis fool {image} --target {target} --save-npy",
    reference="Szegedy et al. 2013, arXiv:1312.6199",
    small_params={"max_iter": 5},
    description="A small change of the photo that makes the model predict the target class."))

register(Method(
    name="classvis", label="Class visualization", family="generation", run=_run_classvis, output="image",
    streams=True, uses_image=False,
    params=(Param("iterations", "int", 200, lo=1, hi=5000, label="steps", kwarg="num_iterations", cli="--iterations"),
            Param("blur_every", "int", 10, lo=0, hi=1000, label="blur every", kwarg="blur_every", cli="--blur-every"),
            Param("max_jitter", "int", 4, lo=0, hi=64, label="jitter (px)", kwarg="max_jitter", cli="--max-jitter"),
            _SEED),
    call="X_vis = gradvis.create_class_visualization({target}, model{kwargs})",
    command="gradvis classvis {target} --save-npy",
    reference="Simonyan, Vedaldi & Zisserman 2013; Yosinski et al. 2015",
    small_params={"iterations": 5},
    description="An image grown from noise that the model finds typical of the target class."))

register(Method(
    name="inversion", label="Feature inversion", family="generation", run=_run_inversion, output="image",
    needs_target=False, streams=True,
    params=(Param("layer", "layer", "relu4", label="layer", cli="--layer"),
            Param("iterations", "int", 200, lo=1, hi=5000, label="steps", kwarg="num_iterations", cli="--iterations"),
            Param("blur_every", "int", 0, lo=0, hi=1000, label="blur every", kwarg="blur_every", cli="--blur-every"),
            _SEED),
    call="feats, _ = model.forward(X, end={layer!r}, mode='test')\n"
         "X_rec = gradvis.invert_features(feats, {layer!r}, model{kwargs})",
    command="gradvis invert {image} --save-npy",
    reference="Mahendran & Vedaldi 2015, arXiv:1412.0035",
    small_params={"iterations": 5},
    description="An image whose features at one layer match the photo's."))

register(Method(
    name="deepdream", label="DeepDream", family="generation", run=_run_deepdream, output="image",
    needs_target=False, streams=True,
    params=(Param("layer", "layer", "relu4", label="layer", cli="--layer", spatial=True),
            Param("iterations", "int", 10, lo=1, hi=1000, label="steps per octave", kwarg="num_iterations",
                  cli="--iterations"),
            Param("octaves", "int", 3, lo=1, hi=8, label="octaves", kwarg="octaves", cli="--octaves"),
            Param("octave_scale", "float", 1.4, lo=1.01, hi=3.0, label="octave scale", kwarg="octave_scale",
                  cli="--octave-scale"),
            Param("max_size", "int", 256, lo=16, hi=1024, label="longest side (px)", cli="--max-size",
                  help="the photo is shrunk to this size first"),
            _SEED),
    call="s = min(1.0, {max_size} / max(photo.shape[:2]))   # the photo at its own size, longer side <= {max_size}\n"
         "rgb = resize_rgb(photo, (max(1, round(photo.shape[0] * s)), max(1, round(photo.shape[1] * s))))\n"
         "X_dream = gradvis.deepdream(model.preprocess(rgb), {layer!r}, model{kwargs})",
    command="gradvis dream {image} --save-npy",
    reference="Mordvintsev, Olah & Tyka 2015",
    small_params={"iterations": 2, "octaves": 2, "max_size": 96},
    description="Amplify what a layer sees, at the photo's own size (shrunk to the longest side given)."))
# --- gradvis.attribution (after the attribution branch is merged) ---------------------------
def _cam(fn_name):
    def run(model, image, target, params, progress, cancelled):
        from .. import attribution
        cam = getattr(attribution, fn_name)(image.X, target, model, layer=params["layer"], upsample=True)
        return map_result(cam[0])
    return run


def _pixel(fn_name, signed=True, **fixed):
    def run(model, image, target, params, progress, cancelled):
        from .. import attribution
        kw = dict(fixed, **kwargs_of(METHODS[fn_name], params))
        return channel_map(getattr(attribution, fn_name)(image.X, target, model, **kw), signed=signed)
    return run


_CAM_LAYER = Param("layer", "layer", "last", label="layer", kwarg="layer", cli="--layer", spatial=True)
for _name, _label, _ref in [
        ("grad_cam", "Grad-CAM", "Selvaraju et al. 2017, arXiv:1610.02391"),
        ("grad_cam_plus_plus", "Grad-CAM++", "Chattopadhyay et al. 2018, arXiv:1710.11063"),
        ("xgrad_cam", "XGrad-CAM", "Fu et al. 2020, arXiv:2008.02312"),
        ("layer_cam", "Layer-CAM", "Jiang et al. 2021"),
        ("hires_cam", "HiResCAM", "Draelos & Carin 2020, arXiv:2011.08891"),
        ("eigen_cam", "Eigen-CAM", "Muhammad & Yeasin 2020, arXiv:2008.00299"),
        ("score_cam", "Score-CAM", "Wang et al. 2020, arXiv:1910.01279"),
        ("ablation_cam", "Ablation-CAM", "Desai & Ramaswamy 2020")]:
    register(Method(
        name=_name, label=_label, family="CAM", run=_cam(_name), params=(_CAM_LAYER,),
        call=f"cam = gradvis.attribution.{_name}(X, {{target}}, model, layer={{layer!r}}, upsample=True)[0]",
        reference=_ref, description="A class activation map of one layer, upsampled to the image."))

register(Method(
    name="integrated_gradients", label="Integrated Gradients", family="attribution",
    run=_pixel("integrated_gradients"),
    params=(Param("n_steps", "int", 50, lo=1, hi=1000, label="steps", kwarg="n_steps"),),
    call="attr = gradvis.attribution.integrated_gradients(X, {target}, model{kwargs})   # (1, C, H, W)",
    reference="Sundararajan, Taly & Yan 2017, arXiv:1703.01365",
    description="Path integral of the gradient from a black baseline (summed over colour channels, signed).",
    small_params={"n_steps": 4}))

register(Method(
    name="input_x_gradient", label="Input x Gradient", family="attribution", run=_pixel("input_x_gradient"),
    call="attr = gradvis.attribution.input_x_gradient(X, {target}, model)",
    reference="Shrikumar et al. 2016, arXiv:1605.01713",
    description="The input times its gradient (summed over colour channels, signed)."))

register(Method(
    name="guided_backprop", label="Guided Backpropagation", family="attribution",
    run=_pixel("guided_backprop", signed=False),
    call="attr = gradvis.attribution.guided_backprop(X, {target}, model)",
    reference="Springenberg et al. 2014, arXiv:1412.6806",
    description="The gradient with negative signals stopped at every ReLU (largest absolute value over channels)."))

register(Method(
    name="deeplift", label="DeepLIFT", family="attribution", run=_pixel("deeplift"),
    call="attr = gradvis.attribution.deeplift(X, {target}, model)",
    reference="Shrikumar, Greenside & Kundaje 2017, arXiv:1704.02685",
    description="Contributions against a black baseline by the rescale rule (summed over channels, signed)."))
