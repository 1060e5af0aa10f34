"""The ``gradvis`` command line: the five algorithms on photos, training,
evaluation and a demo gallery.

Run ``gradvis --help`` (or ``python -m gradvis --help``). Each subcommand loads
a model (:func:`load_model_file`), reads photos (:func:`read_image`), fits them to
what the algorithm needs, runs it with a progress bar, and writes PNG figures
drawn by :mod:`gradvis.plot`. Mistakes a user can make end with exit code 2 and
one line, ``gradvis: error: ...``; files are never overwritten without ``--force``.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser", "UsageError", "load_model_file", "read_image", "resolve_class",
           "resolve_layer", "fit_image", "sample_photo_path"]

PROG = "gradvis"


class UsageError(Exception):
    """A mistake the user can fix (a missing file, an unknown class, a bad number):
    reported as one line ``gradvis: error: ...`` with exit code 2."""


# ============================================================================ argparse plumbing
class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line, no usage block; main() prints it
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(kind, lo=None, lo_open=False, name=None, hi=None):
    """An argparse type: a finite int/float, optionally bounded below (and above by ``hi``)."""
    def parse(text):
        try:
            v = int(text) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text!r}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text!r}")
        return v
    parse.__name__ = name or ("int" if kind is int else "float")
    return parse


_pos_int = _number(int, 1)
MAX_THREADS = 1024      # far above any machine's cores; more threads only exhaust the OS
_threads = _number(int, 1, hi=MAX_THREADS, name="int")
_nonneg_int = _number(int, 0)
_pos_float = _number(float, 0, lo_open=True)
_nonneg_float = _number(float, 0)


def _add_common(p, seed=True, save_npy=True, model=True):
    g = p.add_argument_group("common options")
    if model:
        _add_model_options(g)
    g.add_argument("--out", "-o", metavar="DIR", default=".", help="output directory (default: .)")
    if seed:
        g.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default: 0)")
    if save_npy:
        g.add_argument("--save-npy", action="store_true", help="also save the raw arrays as .npy files")
    g.add_argument("--force", "-f", action="store_true", help="overwrite existing output files")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars or notes on stderr")
    g.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help=f"OpenMP threads, 1 to {MAX_THREADS} (default: OMP_NUM_THREADS or all cores)")


def _add_model_options(g):
    g.add_argument("--model", metavar="PATH", default=None,
                   help="model file: a gradvis .npz or training checkpoint, an .onnx export or "
                        "CS231n's .h5 (default, or 'default': the bundled TinyImageNet-100-A model)")
    g.add_argument("--mean", type=_number(float), nargs="+", metavar="M", default=None,
                   help="for an .onnx model: the per-channel mean it was trained with, in units of "
                        "pixel / --scale (one value or one per channel)")
    g.add_argument("--std", type=_number(float, 0, lo_open=True), nargs="+", metavar="S", default=None,
                   help="for an .onnx model: the per-channel standard deviation, like --mean")
    g.add_argument("--input-shape", type=_pos_int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="for an .onnx model whose input size is not fixed: the (C, H, W) to build it for")
    g.add_argument("--scale", type=_pos_float, default=None, metavar="S",
                   help="for an .onnx model: pixels are divided by S before --mean and --std apply "
                        "(torchvision: --scale 255 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)")


# ============================================================================ helpers: model, classes, layers
def _model(args):
    """The model that ``args`` name (--model, and --mean/--std/--scale for ONNX files)."""
    pre = {k: getattr(args, k, None) for k in ("mean", "std", "scale", "input_shape")}
    return load_model_file(args.model, {k: v for k, v in pre.items() if v is not None})


def load_model_file(path=None, preprocessing=None):
    """The model for the CLI: the bundled one (``path`` None or ``'default'``) or a
    file by its extension (see :func:`gradvis.load_any`: gradvis ``.npz`` files and
    training checkpoints, ``.onnx``, CS231n's ``.h5``). ``preprocessing`` (``mean``,
    ``std``, ``scale``, ``input_shape``) applies to ONNX files, which do not record it. User errors
    raise :class:`UsageError`."""
    from .models import load_any
    if path == "default":
        path = None
    if path is not None and not str(path):
        raise UsageError("--model is empty; give a model file or leave it out for the bundled model")
    if preprocessing:
        opts = "/".join(f"--{k.replace('_', '-')}" for k in preprocessing)
        if path is None or Path(path).suffix.lower() != ".onnx":
            raise UsageError(f"{opts} appl{'y' if len(preprocessing) > 1 else 'ies'} to .onnx models only; "
                             f"{'the bundled model' if path is None else path} carries its own preprocessing")
        if "mean" in preprocessing and len(preprocessing["mean"]) == 1:
            preprocessing["mean"] = preprocessing["mean"][0]
        if "std" in preprocessing and len(preprocessing["std"]) == 1:
            preprocessing["std"] = preprocessing["std"][0]
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"{path}: no such model file")
        if p.is_dir():
            raise UsageError(f"{path}: is a directory, not a model file")
    try:
        return load_any("default" if path is None else path, **(preprocessing or {}))
    except ImportError as e:   # an optional reader (onnx, h5py) is not installed
        raise UsageError(f"cannot load model {path}: {e}") from None
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UsageError(str(e) if path is None else f"cannot load model {path}: {e}") from None


def _need_classes(model, what):
    """``model`` if it gives class scores (what ``what`` needs), else :class:`UsageError`."""
    from . import _checks
    try:
        return _checks.classifier(model, what)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _class_name(model, i):
    if model.class_names:
        return model.class_names[i].split(",")[0].strip()
    return f"class {i}"


def _class_label(model, i):
    """'goldfish (n01443537, 3)'."""
    wnid = f"{model.wnids[i]}, " if model.wnids else ""
    return f"{_class_name(model, i)} ({wnid}{i})"


def resolve_class(model, spec):
    """A class index from an index (``"7"``), a wnid (``"n01443537"``) or a name:
    exact (any of its comma-separated synonyms) or an unambiguous prefix,
    case-insensitive. Raises :class:`UsageError` listing candidates otherwise."""
    s = str(spec).strip()
    n = model.num_classes
    if re.fullmatch(r"[+-]?\d+", s):
        i = int(s)
        if not 0 <= i < n:
            raise UsageError(f"class index {i} is out of range: the model has {n} classes (0-{n - 1})")
        return i
    if not s:
        raise UsageError("empty class name")
    key = s.lower()
    if model.wnids:
        hits = [i for i, w in enumerate(model.wnids) if w.lower() == key]
        if hits:
            return hits[0]
    names = model.class_names or []
    synonyms = [[name.lower()] + [part.strip().lower() for part in name.split(",")] for name in names]
    exact = [i for i, syn in enumerate(synonyms) if key in syn]
    if len(exact) == 1:
        return exact[0]
    prefix = exact or [i for i, syn in enumerate(synonyms) if any(x.startswith(key) for x in syn)]
    if len(prefix) == 1:
        return prefix[0]
    if len(prefix) > 1:
        shown = "; ".join(_class_label(model, i) for i in prefix[:8])
        more = f"; and {len(prefix) - 8} more" if len(prefix) > 8 else ""
        raise UsageError(f"class {s!r} is ambiguous: it matches {len(prefix)} classes: {shown}{more}")
    close = difflib.get_close_matches(key, [x for syn in synonyms for x in syn], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
    raise UsageError(f"unknown class {s!r}{hint} (give an index 0-{n - 1}, a wnid or a name; "
                     f"'gradvis classes' lists them)")


def resolve_layer(model, spec, spatial=False, purpose=""):
    """A layer name from a name (case-insensitive) or an index; ``spatial``
    requires a layer with a (C, H, W) output."""
    from .model import LayerNotFoundError
    s = str(spec).strip()
    try:
        if re.fullmatch(r"[+-]?\d+", s):
            name = model.layer_names[model.index(int(s))]
        else:
            lower = {n.lower(): n for n in model.layer_names}
            name = model.layer_names[model.index(lower.get(s.lower(), s))]
    except (LayerNotFoundError, IndexError) as e:
        raise UsageError(str(e)) from None
    if spatial and len(model.output_shapes()[name]) != 3:
        ok = [n for n, sh in model.output_shapes().items() if n != "input" and len(sh) == 3]
        raise UsageError(f"layer {name!r} has no spatial output; {purpose} needs a convolutional "
                         f"layer ({', '.join(ok)})")
    return name


# ============================================================================ helpers: images
@dataclass
class Photo:
    """A photo read for the CLI: ``rgb`` uint8 (H, W, 3) and where it came from."""
    path: Path
    rgb: np.ndarray
    mode: str

    @property
    def name(self):
        return self.path.name

    @property
    def stem(self):
        return _stem(self.path)


def _stem(path):
    """A file-name-safe stem of an input path, for naming outputs."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "image"


def read_image(path):
    """Any image Pillow reads, as RGB uint8 (EXIF rotation applied, transparency
    composited over white, 16-bit and float images rescaled). Raises
    :class:`UsageError` for a missing or unreadable file."""
    from .image import read_rgb
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory, not an image")
    try:
        rgb, mode = read_rgb(p)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return Photo(p, rgb, mode)


def _resize(rgb, size):
    """uint8 (H, W, 3) -> size (H', W') with Pillow's antialiased bicubic."""
    from PIL import Image
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


def fit_image(rgb, size):
    """Resize (keeping the aspect ratio) so the image covers ``size`` (H, W), then
    crop the centre. Returns (image, description of what was done or None)."""
    h0, w0 = rgb.shape[:2]
    h, w = size
    if (h0, w0) == (h, w):
        return rgb, None
    s = max(h / h0, w / w0)
    rh, rw = max(h, int(round(h0 * s))), max(w, int(round(w0 * s)))
    out = _resize(rgb, (rh, rw))
    y, x = (rh - h) // 2, (rw - w) // 2
    out = out[y:y + h, x:x + w]
    what = f"resized from {w0}x{h0} to {rw}x{rh}"
    if (rh, rw) != (h, w):
        what += f" and center-cropped to {w}x{h}"
    return np.ascontiguousarray(out), what


def sample_photo_path():
    """Grace Hopper's portrait from matplotlib's sample data (every install has it)."""
    import matplotlib
    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        import matplotlib.cbook
        p = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return p


# ============================================================================ helpers: output and progress
class _Run:
    """Per-command context: options, stderr notes, planned outputs."""

    def __init__(self, args):
        self.args = args
        self.quiet = bool(getattr(args, "quiet", False))
        self.force = bool(getattr(args, "force", False))
        self.out = Path(getattr(args, "out", ".") or ".")
        self.written = []

    def note(self, msg):
        if not self.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    def say(self, msg=""):
        print(msg, flush=True)

    def prepare_outputs(self, names):
        """Check the output directory and that none of ``names`` exists (unless
        --force); create the directory. Returns the paths. Done before any work."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"output path {out} exists and is not a directory")
        paths = [out / n for n in names]
        for p in paths:
            if p.is_dir():
                raise UsageError(f"{p} is a directory; cannot write a file there")
            if p.exists() and not self.force:
                raise UsageError(f"{p} already exists (use --force to overwrite)")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create output directory {out}: {e.strerror or e}") from None
        return paths

    def wrote(self, path):
        self.written.append(Path(path))
        self.say(f"wrote {path}")

    def save_png(self, rgb, path):
        from PIL import Image
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)
        self.wrote(path)

    def save_fig(self, fig, path, compact=False):
        from . import plot
        plot.save_figure(fig, path, compact=compact)
        self.wrote(path)

    def save_npy(self, arr, path):
        np.save(path, np.asarray(arr))
        self.wrote(path)

    def progress(self, total, desc, model=None, snapshot_at=()):
        return _Progress(total, desc, self.quiet, model, snapshot_at)


class _Progress:
    """An algorithm ``callback(t, X, info)``: drives a tqdm bar on stderr and
    keeps deprocessed snapshots of image 0 (or all images) at chosen steps."""

    def __init__(self, total, desc, quiet, model=None, snapshot_at=()):
        self.bar = None
        if not quiet:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}{postfix}]")
        self.model = model
        self.snapshot_at = set(int(t) for t in snapshot_at)
        self.snapshots = []      # [(t + 1, uint8 images (N, H, W, 3))]
        self.last_info = {}

    def __call__(self, t, X, info):
        self.last_info = info
        if self.model is not None and (t + 1) in self.snapshot_at:
            self.snapshots.append((t + 1, self.model.deprocess(X)))
        if self.bar is not None:
            self.bar.update(1)
            post = []
            for k, v in info.items():
                a = np.asarray(v, dtype=np.float64)
                if a.size and np.issubdtype(a.dtype, np.number):
                    post.append(f"{k}={a.mean():.3g}")
            if post:
                self.bar.set_postfix_str(", ".join(post), refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _snapshot_steps(total, count):
    """``count`` steps spread over 1..total, always including the last."""
    if total <= 0 or count <= 0:
        return []
    return sorted(set(int(round(x)) for x in np.linspace(total / count, total, count)))


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "x"


def _setup(args):
    run = _Run(args)
    if run.out.exists() and not run.out.is_dir():       # fail before any work
        raise UsageError(f"output path {run.out} exists and is not a directory")
    if getattr(args, "threads", None):
        from . import _core
        _core.set_num_threads(int(args.threads))
    return run


def _model_photos(run, model, paths):
    """Read photos and fit each to the model's input size; returns (photos, uint8 (N, H, W, 3))."""
    size = tuple(model.input_shape[1:])
    photos = [read_image(p) for p in paths]
    fitted = []
    for ph in photos:
        img, what = fit_image(ph.rgb, size)
        if what:
            run.note(f"{ph.name}: {what} (the model's input size)")
        if ph.mode not in ("RGB", "L"):
            run.note(f"{ph.name}: converted from mode {ph.mode} to RGB")
        fitted.append(img)
    return photos, np.stack(fitted)


def _given(**kwargs):
    """The keyword arguments the user set (not None): the rest keep the algorithm's defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _softmax(scores):
    s = np.asarray(scores, np.float64)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


# ============================================================================ subcommands
def cmd_predict(args):
    run = _setup(args)
    model = _need_classes(_model(args), "'predict'")
    photos, imgs = _model_photos(run, model, args.images)
    k = min(args.top_k, model.num_classes)
    if args.save_npy:
        (npy,) = run.prepare_outputs(["predictions.npy"])
    probs = _softmax(model.predict(model.preprocess(imgs)))
    for ph, p in zip(photos, probs):
        run.say(ph.name)
        for r, i in enumerate(np.argsort(-p)[:k]):
            wn = f"  {model.wnids[i]}" if model.wnids else ""
            run.say(f"  {r + 1}. {p[i]:6.1%}  {_class_name(model, i)}{wn}  [{i}]")
    if args.save_npy:
        run.save_npy(probs.astype(np.float32), npy)
    return 0


def cmd_saliency(args):
    from . import plot
    from .saliency import compute_saliency_maps, smoothgrad_saliency_maps
    run = _setup(args)
    model = _need_classes(_model(args), "'saliency'")
    forced = resolve_class(model, args.class_) if args.class_ is not None else None
    base = f"{_stem(args.images[0])}_saliency" if len(args.images) == 1 else "saliency"
    paths = run.prepare_outputs([f"{base}.png"] + ([f"{base}.npy"] if args.save_npy else []))
    photos, imgs = _model_photos(run, model, args.images)
    X = model.preprocess(imgs)
    probs = _softmax(model.predict(X))
    y = np.full(len(photos), forced) if forced is not None else probs.argmax(axis=1)
    if args.smoothgrad:
        run.note(f"SmoothGrad over {args.smoothgrad} noisy copies per image")
        sal = smoothgrad_saliency_maps(X, y, model, num_samples=args.smoothgrad, seed=args.seed)
    else:
        sal = compute_saliency_maps(X, y, model)
    titles = []
    for ph, yi, p in zip(photos, y, probs):
        how = "given" if forced is not None else "predicted"
        run.say(f"{ph.name}: saliency of {_class_label(model, yi)} ({how}, p={p[yi]:.2f})")
        titles.append(f"{_class_name(model, yi)} ({p[yi]:.2f})")
    fig = plot.saliency_figure(imgs, sal, titles=titles)
    run.save_fig(fig, paths[0])
    if args.save_npy:
        run.save_npy(sal, paths[1])
    return 0


def cmd_fool(args):
    from . import plot
    from .fooling import make_fooling_image
    run = _setup(args)
    model = _need_classes(_model(args), "'fool'")
    target = resolve_class(model, args.target)
    stem = _stem(args.image)
    names = [f"{stem}_fooling.png", f"{stem}_fooled.png"]
    if args.save_npy:
        names.append(f"{stem}_fooled.npy")
    paths = run.prepare_outputs(names)
    photos, imgs = _model_photos(run, model, [args.image])
    X = model.preprocess(imgs)
    p0 = _softmax(model.predict(X))[0]
    before = int(p0.argmax())
    eps = args.eps   # grey levels, as the algorithm takes it
    prog = run.progress(args.max_iter, f"fooling -> {_class_name(model, target)}")
    try:
        Xf, rep = make_fooling_image(X, target, model, **_given(learning_rate=args.lr),
                                     max_iter=args.max_iter,
                                     eps=eps, norm=args.norm, return_report=True, callback=prog)
    finally:
        prog.close()
    fooled_rgb = model.deprocess(Xf)
    p8 = _softmax(model.predict(model.preprocess(fooled_rgb)))[0]
    ok = bool(rep["success"][0])
    budget = f" within eps {args.eps:g}/255 ({'L-inf' if args.norm == 'inf' else 'L2'})" if eps is not None else ""
    run.say(f"{photos[0].name}: {_class_label(model, before)} p={p0[before]:.2f} -> target "
            f"{_class_label(model, target)}")
    run.say(f"fooled: {'yes' if ok else 'no'}{budget}, after {int(rep['iterations'][0])} steps; "
            f"the model now says {_class_name(model, int(rep['predicted'][0]))} "
            f"(target p={float(rep['target_prob'][0]):.2f})")
    dpx = ((Xf - X) * np.asarray(model.std, np.float64).reshape(1, -1, 1, 1))[0]
    run.say(f"change (0-255 pixel units): max {float(rep['linf_pixels'][0]):.2f}, "
            f"RMS {float(np.sqrt((dpx ** 2).mean())):.2f}, L2 {float(np.sqrt((dpx ** 2).sum())):.1f}")
    still = int(p8.argmax()) == target
    run.say(f"as an 8-bit PNG: {'still fools the model' if still else 'rounding undoes it'} "
            f"(predicted {_class_name(model, int(p8.argmax()))}, target p={p8[target]:.2f})")
    fig = plot.fooling_figure(imgs[0], fooled_rgb[0], titles=[
        (f"original: {_class_name(model, before)} ({p0[before]:.2f})",
         f"fooling: {_class_name(model, int(rep['predicted'][0]))} ({float(rep['target_prob'][0]):.2f})")])
    run.save_fig(fig, paths[0])
    run.save_png(fooled_rgb[0], paths[1])
    if args.save_npy:
        run.save_npy(Xf, paths[2])
    return 0


def cmd_classvis(args):
    from . import plot
    from .class_visualization import create_class_visualization
    run = _setup(args)
    model = _need_classes(_model(args), "'classvis'")
    targets = [resolve_class(model, c) for c in args.classes]
    slugs = [_slug(model.wnids[t] if model.wnids else t) + "_" + _slug(_class_name(model, t)) for t in targets]
    names = []
    for s in slugs:
        names += [f"classvis_{s}.png", f"classvis_{s}_snapshots.png"]
    if args.save_npy:
        names.append("classvis.npy")
    paths = run.prepare_outputs(names)
    size = tuple(args.size) if args.size else None
    steps = _snapshot_steps(args.iterations, args.snapshots)
    prog = run.progress(args.iterations, "class visualization", model, steps)
    try:
        X = create_class_visualization(targets, model, num_iterations=args.iterations,
                                       **_given(learning_rate=args.lr, l2_reg=args.l2_reg),
                                       blur_every=args.blur_every,
                                       max_jitter=args.max_jitter, image_size=size, seed=args.seed,
                                       callback=prog)
    finally:
        prog.close()
    probs = _softmax(model.predict(X)) if X.shape[2:] == tuple(model.input_shape[1:]) else None
    imgs = model.deprocess(X)
    for k, (t, s) in enumerate(zip(targets, slugs)):
        extra = f", the model gives it p={probs[k, t]:.2f}" if probs is not None else ""
        run.say(f"{_class_label(model, t)}: {args.iterations} steps{extra}")
        run.save_png(imgs[k], paths[2 * k])
        frames = [snap[k] for _, snap in prog.snapshots]
        labels = [f"t = {t_}" for t_, _ in prog.snapshots]
        fig = plot.snapshots_figure(frames or [imgs[k]], labels or [f"t = {args.iterations}"],
                                    title=f"class visualization: {_class_name(model, t)}")
        run.save_fig(fig, paths[2 * k + 1])
    if args.save_npy:
        run.save_npy(X, paths[-1])
    return 0


def _run_inversion(run, model, X, layer, args, snapshots=5, desc=None):
    from .inversion import invert_features
    feats, _ = model.forward(X, end=layer, mode="test")
    steps = _snapshot_steps(args.iterations, snapshots)
    prog = run.progress(args.iterations, desc or f"inverting {layer}", model, steps)
    try:
        Xr = invert_features(feats, layer, model, num_iterations=args.iterations,
                             **_given(learning_rate=args.lr, tv_reg=args.tv_reg, l2_reg=args.l2_reg),
                             blur_every=args.blur_every, seed=args.seed,
                             callback=prog)
    finally:
        prog.close()
    err = prog.last_info.get("feature_error", [float("nan")])
    return Xr, prog.snapshots, float(np.asarray(err)[0])


def cmd_invert(args):
    from . import plot
    run = _setup(args)
    model = _model(args)
    layers = [resolve_layer(model, s) for s in args.layer]
    stem = _stem(args.image)
    names = [f"{stem}_invert_{_slug(l)}.png" for l in layers] + [f"{stem}_inversion.png"]
    if args.save_npy:
        names += [f"{stem}_invert_{_slug(l)}.npy" for l in layers]
    paths = run.prepare_outputs(names)
    photos, imgs = _model_photos(run, model, [args.image])
    X = model.preprocess(imgs)
    rows = {}
    for k, layer in enumerate(layers):
        Xr, snaps, err = _run_inversion(run, model, X, layer, args)
        run.say(f"{layer}: relative feature error {err:.3f} after {args.iterations} steps")
        run.save_png(model.deprocess(Xr)[0], paths[k])
        rows[layer] = [(s[0], f"t = {t}") for t, s in snaps]
        if args.save_npy:
            run.save_npy(Xr, paths[len(layers) + 1 + k])
    fig = plot.inversion_figure(imgs[0], rows, title=f"feature inversion of {photos[0].name}")
    run.save_fig(fig, paths[len(layers)])
    return 0


def cmd_dream(args):
    from . import plot
    from .deepdream import deepdream
    run = _setup(args)
    model = _model(args)
    layer = resolve_layer(model, args.layer, spatial=True, purpose="DeepDream")
    stem = _stem(args.image)
    names = [f"{stem}_dream_{_slug(layer)}.png", f"{stem}_dream_{_slug(layer)}_snapshots.png"]
    if args.save_npy:
        names.append(f"{stem}_dream_{_slug(layer)}.npy")
    paths = run.prepare_outputs(names)
    ph = read_image(args.image)
    rgb = ph.rgb
    h, w = rgb.shape[:2]
    if args.max_size and max(h, w) > args.max_size:
        s = args.max_size / max(h, w)
        rgb = _resize(rgb, (max(1, round(h * s)), max(1, round(w * s))))
        run.note(f"{ph.name}: resized from {w}x{h} to {rgb.shape[1]}x{rgb.shape[0]} (--max-size {args.max_size})")
    else:
        run.note(f"{ph.name}: dreaming at the photo's own size, {w}x{h}")
    if ph.mode not in ("RGB", "L"):
        run.note(f"{ph.name}: converted from mode {ph.mode} to RGB")
    X = model.preprocess(rgb)
    total = args.iterations * args.octaves
    steps = [args.iterations * (o + 1) for o in range(args.octaves)]
    prog = run.progress(total, f"DeepDream {layer}", model, steps)
    try:
        Xd = deepdream(X, layer, model, num_iterations=args.iterations, **_given(learning_rate=args.lr),
                       octaves=args.octaves, octave_scale=args.octave_scale, channel=args.channel,
                       seed=args.seed, callback=prog)
    except ValueError as e:      # e.g. the smallest octave is too small for the layer
        raise UsageError(str(e)) from None
    finally:
        prog.close()
    out = model.deprocess(Xd)[0]
    run.say(f"{ph.name}: DeepDream on {layer}, {args.octaves} octave(s) x {args.iterations} steps, "
            f"{out.shape[1]}x{out.shape[0]}")
    run.save_png(out, paths[0])
    frames = [rgb] + [_resize(s[0], rgb.shape[:2]) for _, s in prog.snapshots]
    labels = ["original"] + [f"octave {o + 1}/{args.octaves}" for o in range(len(prog.snapshots))]
    fig = plot.snapshots_figure(frames, labels, title=f"DeepDream, layer {layer}")
    run.save_fig(fig, paths[1])
    if args.save_npy:
        run.save_npy(Xd, paths[2])
    return 0


# ---------------------------------------------------------------------------- data sets
def _is_archive(path):
    return Path(path).is_file() and str(path).lower().endswith((".tar.gz", ".tgz", ".tar"))


def _load_dataset(run, path, size, val_fraction, seed):
    from . import data
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file or directory")
    try:
        if _is_archive(p):
            run.note(f"reading the TinyImageNet archive {p} (decoded once, then cached)")
            ds = data.load_tiny_imagenet(p)
            if tuple(ds.X_train.shape[1:3]) != tuple(size):
                raise UsageError(f"{path}: images are {ds.X_train.shape[2]}x{ds.X_train.shape[1]}, "
                                 f"the model needs {size[1]}x{size[0]}")
            return ds
        if p.is_dir():
            return data.load_image_folder(p, size=size, val_fraction=val_fraction, seed=seed)
    except UsageError:
        raise
    except (ValueError, OSError) as e:
        msg = str(e)
        raise UsageError(msg if str(p) in msg else f"cannot read the data set {path}: {msg}") from None
    raise UsageError(f"{path}: expected an image folder (one sub-folder of images per class) "
                     f"or the TinyImageNet .tar.gz archive")


MAX_IMAGE_SIZE = 1024   # training images are held in memory at this size, all of them


def _check_train_sizes(args, crop):
    """Refuse, before any work, sizes the training or its final evaluation cannot use."""
    from .architectures import default_net
    crop_opt = f"--crop {crop}" if args.crop is not None else f"the crop {crop} (7/8 of --image-size)"
    if args.pad > args.image_size:
        raise UsageError(f"--pad {args.pad} is larger than --image-size {args.image_size}")
    if crop > args.image_size:
        raise UsageError(f"{crop_opt} is larger than --image-size {args.image_size} (the held-out "
                         f"evaluation uses centre crops of that size)")
    probe = default_net(num_classes=2, widths=(1,) * 7, input_size=args.image_size)   # the geometry only

    def fits(px):
        try:
            probe.output_shapes((3, px, px))
            return None
        except ValueError as e:
            return e

    for what, px in ((crop_opt, crop), (f"--image-size {args.image_size}", args.image_size)):
        e = fits(px) if px else None
        if e is not None:
            least = next(s for s in range(px + 1, MAX_IMAGE_SIZE + 1) if fits(s) is None)
            raise UsageError(f"{what} is too small for the net, which needs at least {least} px ({e})")


def cmd_train(args):
    from . import train as T
    from .architectures import default_net
    if args.val_fraction >= 1:
        raise UsageError(f"--val-fraction {args.val_fraction} leaves no training images; use less than 1")
    crop = args.crop if args.crop is not None else int(round(args.image_size * 0.875))
    _check_train_sizes(args, crop)
    overrides = {"crop": crop, "seed": args.seed}
    if args.threads:            # --threads, when given, wins over --num-threads' default
        overrides["num_threads"] = args.threads
    try:
        cfg = T.config_from_args(args, **overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"training options: {e}") from None
    run = _setup(args)
    ckpt = run.out / "checkpoint.npz"
    if args.resume and ckpt.is_file():
        try:
            m, _, _ = T.read_checkpoint(ckpt)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if tuple(m.input_shape[1:]) != (args.image_size, args.image_size):
            raise UsageError(f"{ckpt}: the checkpoint's model takes {m.input_shape[2]}x{m.input_shape[1]} "
                             f"images, not --image-size {args.image_size}")
    names = ["final.npz", "history.json"] + ([] if args.resume else ["checkpoint.npz"])
    paths = run.prepare_outputs(names)
    if args.resume and not ckpt.is_file():
        run.note(f"--resume: no {ckpt}; starting from scratch")
    size = (args.image_size, args.image_size)
    oom = "out of memory (use a smaller --image-size or --batch-size, or fewer images)"
    try:
        ds = _load_dataset(run, args.data, size, args.val_fraction, args.seed)
    except MemoryError:
        raise UsageError(oom) from None
    n_train = len(ds.X_train) if not cfg.max_train else min(cfg.max_train, len(ds.X_train))
    if n_train < cfg.batch_size:
        raise UsageError(f"--batch-size {cfg.batch_size} is larger than the {n_train} training images")
    if len(ds.X_val) == 0:
        raise UsageError(f"{args.data}: no held-out images (raise --val-fraction or add images)")
    mean = tuple(float(v) for v in ds.X_train.reshape(-1, 3).mean(axis=0))
    model = default_net(num_classes=ds.num_classes, class_names=ds.class_names, wnids=ds.wnids,
                        input_size=args.image_size, mean=mean, seed=cfg.seed)
    run.note(f"{model!r}; {n_train} training / {len(ds.X_val)} held-out images, {ds.num_classes} classes")
    total = int(round(cfg.epochs * (n_train // cfg.batch_size)))
    prog = run.progress(total, "training")
    log = None
    if not run.quiet:
        from tqdm import tqdm
        log = lambda s: tqdm.write(f"{PROG}: {s}", file=sys.stderr)   # noqa: E731
    try:
        model, history = T.train(model, ds, cfg, run_dir=run.out, resume=args.resume, log=log,
                                 on_step=lambda step, loss: prog(step - 1, None, {"loss": loss}))
    except (ValueError, FloatingPointError) as e:
        raise UsageError(str(e)) from None
    except MemoryError:
        raise UsageError(oom) from None
    finally:
        prog.close()
    acc = history.get("final_val_acc")
    run.say(f"held-out top-1: {acc:.4f} on {len(ds.X_val)} images" if acc is not None else "stopped")
    for p in paths:
        if p.exists():
            run.wrote(p)
    run.say(f"use it with: gradvis predict IMAGE --model {paths[0]}")
    return 0


def _map_labels(model, names, what):
    """Data-set class folder names / wnids -> the model's class indices."""
    table = {}
    for i in range(model.num_classes):
        if model.wnids:
            table.setdefault(model.wnids[i].lower(), i)
        if model.class_names:
            table.setdefault(model.class_names[i].lower(), i)
            table.setdefault(model.class_names[i].split(",")[0].strip().lower(), i)
    mapping, unknown = [], []
    for n in names:
        i = table.get(str(n).lower())
        mapping.append(-1 if i is None else i)
        if i is None:
            unknown.append(str(n))
    if unknown:
        raise UsageError(f"{what}: {len(unknown)} class folder(s) are not classes of the model "
                         f"(by wnid or name): {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return np.asarray(mapping, np.int64)


def cmd_evaluate(args):
    run = _setup(args)
    model = _need_classes(_model(args), "'evaluate'")
    size = tuple(model.input_shape[1:])
    if args.save_npy:
        (npy,) = run.prepare_outputs(["evaluate_probs.npy"])
    try:
        ds = _load_dataset(run, args.data, size, 0.0, args.seed)
    except MemoryError:
        raise UsageError("out of memory reading the data set") from None
    if _is_archive(args.data):
        X, y_ds, split = ds.X_val, ds.y_val, "held-out split (images 450-499 of each class)"
    else:
        X, y_ds, split = ds.X_train, ds.y_train, "all images"
    if len(X) == 0:
        raise UsageError(f"{args.data}: no images")
    y = _map_labels(model, ds.wnids, args.data)[y_ds]
    bs = args.batch_size
    prog = run.progress(-(-len(X) // bs), "evaluating")
    probs = []
    try:
        for k, i in enumerate(range(0, len(X), bs)):
            probs.append(_softmax(model.forward(model.preprocess(X[i:i + bs]), mode="test")[0]).astype(np.float32))
            prog(k, None, {})
    except MemoryError:
        raise UsageError("out of memory (use a smaller --batch-size)") from None
    finally:
        prog.close()
    probs = np.concatenate(probs)
    top = np.argsort(-probs, axis=1)
    top1 = float((top[:, 0] == y).mean())
    top5 = float((top[:, :5] == y[:, None]).any(axis=1).mean())
    run.say(f"{args.data}: {split}, {len(X)} images, {len(np.unique(y))} classes")
    run.say(f"top-1 accuracy: {top1:.4f}")
    run.say(f"top-5 accuracy: {top5:.4f}")
    if args.save_npy:
        run.save_npy(probs, npy)
    return 0


def cmd_classes(args):
    model = _need_classes(_model(args), "'classes'")
    q = (args.query or "").lower()
    for i in range(model.num_classes):
        wn = model.wnids[i] if model.wnids else ""
        name = model.class_names[i] if model.class_names else ""
        if q and q not in wn.lower() and q not in name.lower() and q != str(i):
            continue
        print(f"{i:4d}  {wn}  {name}")
    return 0


def cmd_layers(args):
    model = _model(args)
    for i, (name, shape) in enumerate(list(model.output_shapes().items())[1:]):
        print(f"{i:4d}  {name:10s} {model[name].describe():40s} {'x'.join(map(str, shape))}")
    return 0


def cmd_demo(args):
    from .demo import run_demo
    run = _setup(args)
    return run_demo(run, args)


# ============================================================================ the parser
_EPILOG = """\
classes: an index (7), a wnid (n01443537) or a name, full or an unambiguous prefix,
case-insensitive ('gold' = goldfish); 'gradvis classes' lists them.
layers: a name (relu4) or an index; 'gradvis layers' lists them.
Photos of any size and mode are resized/center-cropped as needed (said on stderr).
Example: gradvis demo --out gradvis-demo
"""


def build_parser():
    p = _Parser(prog=PROG, description="See what a CNN sees through its gradients: saliency maps, "
                "fooling images, class visualization, feature inversion and DeepDream on the bundled "
                "TinyImageNet-100-A model (or your own).",
                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name, help_, func, **kw):
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", **kw)
        sp.set_defaults(func=func)
        return sp

    sp = add("predict", "top-k classes of photos, with probabilities", cmd_predict)
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("--top-k", "-k", type=_pos_int, default=5, help="classes to show (default: 5)")
    _add_common(sp, seed=False)

    sp = add("saliency", "saliency maps of photos (Simonyan et al. 2013)", cmd_saliency)
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("--class", "-c", dest="class_", metavar="C", default=None,
                    help="class whose score to explain (default: each photo's predicted class)")
    sp.add_argument("--smoothgrad", type=_pos_int, metavar="N", default=0,
                    help="SmoothGrad over N noisy copies instead of the plain gradient")
    _add_common(sp)

    sp = add("fool", "a fooling image: a small change that makes the model predict a target class",
             cmd_fool)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--target", "-t", required=True, metavar="C", help="the class to reach")
    sp.add_argument("--eps", type=_pos_float, default=None, metavar="E",
                    help="budget for the change, in 0-255 pixel units (default: none)")
    sp.add_argument("--norm", choices=("inf", "2"), default="inf", help="norm of --eps (default: inf)")
    sp.add_argument("--max-iter", type=_pos_int, default=100, metavar="N", help="most steps (default: 100)")
    sp.add_argument("--lr", type=_pos_float, default=None,
                    help="change of each pixel per step, grey levels (default: the algorithm's, 0.25, signed steps)")
    _add_common(sp, seed=False)

    sp = add("classvis", "class visualization: an image the model finds typical of a class",
             cmd_classvis)
    sp.add_argument("classes", nargs="+", metavar="C")
    sp.add_argument("--iterations", "-n", type=_pos_int, default=200, metavar="N", help="(default: 200)")
    sp.add_argument("--snapshots", type=_nonneg_int, default=6, metavar="K",
                    help="snapshots shown over the iterations (default: 6)")
    sp.add_argument("--lr", type=_pos_float, default=None,
                    help="mean change per step, grey levels (default: the algorithm's)")
    sp.add_argument("--l2-reg", type=_nonneg_float, default=None, help="(default: the algorithm's)")
    sp.add_argument("--blur-every", type=_nonneg_int, default=10, metavar="N", help="(default: 10)")
    sp.add_argument("--max-jitter", type=_nonneg_int, default=4, metavar="PX", help="(default: 4)")
    sp.add_argument("--size", type=_pos_int, nargs=2, metavar=("H", "W"), default=None,
                    help="image size (default: the model's input size)")
    _add_common(sp)

    sp = add("invert", "feature inversion: reconstruct a photo from one layer's features "
             "(Mahendran & Vedaldi 2015)", cmd_invert)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--layer", "-l", required=True, nargs="+", metavar="L",
                    help="layer(s) to invert from; several give a shallow-vs-deep figure")
    sp.add_argument("--iterations", "-n", type=_pos_int, default=200, metavar="N", help="(default: 200)")
    sp.add_argument("--lr", type=_pos_float, default=None,
                    help="Adam step size, grey levels (default: the algorithm's)")
    sp.add_argument("--tv-reg", type=_nonneg_float, default=None,
                    help="total-variation weight (default: the algorithm's)")
    sp.add_argument("--l2-reg", type=_nonneg_float, default=None, help="(default: the algorithm's)")
    sp.add_argument("--blur-every", type=_nonneg_int, default=0, metavar="N",
                    help="Gaussian blur every N steps; helps deep layers (default: 0, never)")
    _add_common(sp)

    sp = add("dream", "DeepDream: amplify what a layer sees, at the photo's own size", cmd_dream)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--layer", "-l", required=True, metavar="L")
    sp.add_argument("--octaves", type=_pos_int, default=3, metavar="N", help="scales (default: 3)")
    sp.add_argument("--octave-scale", type=_number(float, 1, lo_open=True), default=1.4,
                    help="ratio between scales (default: 1.4)")
    sp.add_argument("--iterations", "-n", type=_pos_int, default=10, metavar="N",
                    help="steps per octave (default: 10)")
    sp.add_argument("--lr", type=_pos_float, default=None,
                    help="mean change per step, grey levels (default: the algorithm's)")
    sp.add_argument("--channel", type=_nonneg_int, default=None, help="amplify one channel only")
    sp.add_argument("--max-size", type=_pos_int, default=None, metavar="PX",
                    help="first shrink the photo so its longer side is at most PX (default: own size)")
    _add_common(sp)

    sp = add("train", "train gradvis's default net on an image folder (one sub-folder of images "
             "per class) or the TinyImageNet archive", cmd_train)
    sp.add_argument("data", metavar="DATA")
    sp.add_argument("--image-size", type=_number(int, 1, hi=MAX_IMAGE_SIZE, name="int"), default=64,
                    metavar="PX", help=f"1 to {MAX_IMAGE_SIZE} (default: 64)")
    sp.add_argument("--val-fraction", type=_number(float, 0, hi=1), default=0.1,
                    help="held out per class of an image folder, 0 to below 1 (default: 0.1)")
    sp.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    from .train import add_config_arguments
    tg = sp.add_argument_group("training options (gradvis.train.TrainConfig)")
    add_config_arguments(tg, skip=("seed",))
    for a in tg._group_actions:
        if a.dest == "crop":
            a.default, a.help = None, "random-crop size, at most --image-size (default: 7/8 of --image-size)"
        elif a.dest == "num_threads":
            a.help = f"{a.help[:-1]}; --threads, when given, wins)"
    _add_common(sp, save_npy=False, model=False)

    sp = add("evaluate", "accuracy of a model on an image folder, or on the TinyImageNet archive's "
             "held-out split", cmd_evaluate)
    sp.add_argument("data", metavar="DATA")
    sp.add_argument("--batch-size", type=_pos_int, default=200, help="(default: 200)")
    _add_common(sp)

    sp = add("classes", "list the model's classes (optionally those matching QUERY)", cmd_classes)
    sp.add_argument("query", nargs="?", default=None)
    _add_model_options(sp)

    sp = add("layers", "list the model's layers and their output shapes", cmd_layers)
    _add_model_options(sp)

    sp = add("demo", "run all five algorithms on the bundled model and a sample photo; write a "
             "gallery (PNG figures and index.html)", cmd_demo)
    sp.add_argument("--fast", action="store_true", help="few iterations (a quick check, rough pictures)")
    _add_common(sp, save_npy=False)
    return p


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 a usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as e:
        msg = " ".join(str(e).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except SystemExit as e:        # --help, --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except MemoryError:            # e.g. --size or a photo far larger than memory allows
        print(f"{PROG}: error: out of memory (use smaller images, --size or --max-size)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:        # the reader went away (`gradvis layers | head`): not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as e:           # writing outputs: permissions, a full disk
        if e.filename is None:
            raise
        print(f"{PROG}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
