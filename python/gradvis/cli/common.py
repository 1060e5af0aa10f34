"""What every ``gradvis`` command shares: argument types, model loading, class and
layer lookup, reading and fitting photos, output files and progress bars.

Each command loads a model (:func:`load_model_file`), reads photos
(:func:`read_image`), fits them to what the algorithm needs, runs it with a
progress bar (:class:`Progress`), and writes outputs through :class:`Run`, which
never overwrites a file without ``--force``. Mistakes a user can make raise
:class:`UsageError`, which :func:`gradvis.cli.main` turns into exit code 2 and one
line, ``gradvis: error: ...``.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.images import fit_image, resize_rgb

__all__ = ["add_command", "PROG", "UsageError", "Parser", "number", "pos_int", "MAX_THREADS", "threads_arg", "nonneg_int", "pos_float", "nonneg_float", "add_common", "add_model_options", "model_from_args", "read_labels", "WARNINGS", "flush_warnings", "load_model_file", "need_classes", "class_name", "class_label", "resolve_class", "check_image_size", "resolve_layer", "Photo", "photo_stem", "read_image", "resize_rgb", "fit_image", "sample_photo_path", "Run", "Progress", "snapshot_steps", "slug", "setup", "model_photos", "given"]

PROG = "gradvis"


class UsageError(Exception):
    """A mistake the user can fix (a missing file, an unknown class, a bad number):
    reported as one line ``gradvis: error: ...`` with exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):           # one line, no usage block; main() prints it
        raise UsageError(f"{message} (see '{self.prog} --help')")


def number(kind, lo=None, lo_open=False, name=None, hi=None):
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


pos_int = number(int, 1)


MAX_THREADS = 1024      # far above any machine's cores; more threads only exhaust the OS


threads_arg = number(int, 1, hi=MAX_THREADS, name="int")


nonneg_int = number(int, 0)


pos_float = number(float, 0, lo_open=True)


nonneg_float = number(float, 0)


def add_common(p, seed=True, save_npy=True, model=True):
    g = p.add_argument_group("common options")
    if model:
        add_model_options(g)
    g.add_argument("--out", "-o", metavar="DIR", default=".", help="output directory (default: .)")
    if seed:
        g.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default: 0)")
    if save_npy:
        g.add_argument("--save-npy", action="store_true", help="also save the raw arrays as .npy files")
    g.add_argument("--force", "-f", action="store_true", help="overwrite existing output files")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars or notes on stderr")
    g.add_argument("--threads", type=threads_arg, default=None, metavar="N",
                   help=f"kernel threads, 1 to {MAX_THREADS} (default: OMP_NUM_THREADS or all cores)")


def add_model_options(g, model=True):
    if model:
        g.add_argument("--model", metavar="PATH", default=None,
                       help="model file: a gradvis .npz or training checkpoint, an .onnx export or "
                            "CS231n's .h5 (default, or 'default': the bundled TinyImageNet-100-A model)")
    g.add_argument("--labels", metavar="FILE", default=None,
                   help="class names, one per line (e.g. for an .onnx model, which records none)")
    g.add_argument("--labels-offset", type=nonneg_int, default=0, metavar="N",
                   help="skip the first N lines of --labels (1 for files that start with 'background')")
    g.add_argument("--mean", type=number(float), nargs="+", metavar="M", default=None,
                   help="for an .onnx model: the per-channel mean it was trained with, in units of "
                        "pixel / --scale (one value or one per channel)")
    g.add_argument("--std", type=number(float, 0, lo_open=True), nargs="+", metavar="S", default=None,
                   help="for an .onnx model: the per-channel standard deviation, like --mean")
    g.add_argument("--input-shape", type=pos_int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="for an .onnx model whose input size is not fixed: the (C, H, W) to build it for")
    g.add_argument("--scale", type=pos_float, default=None, metavar="S",
                   help="for an .onnx model: pixels are divided by S before --mean and --std apply "
                        "(torchvision: --scale 255 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)")


def model_from_args(args, path=None):
    """The model that ``args`` name (--model, or ``path``; --mean/--std/--scale/--input-shape
    for ONNX files; --labels), with a one-line warning on stderr when it records no
    input normalization."""
    path = getattr(args, "model", None) if path is None else path
    pre = {k: getattr(args, k, None) for k in ("mean", "std", "scale", "input_shape")}
    pre = {k: v for k, v in pre.items() if v is not None}
    model = load_model_file(path, pre)
    if getattr(args, "labels", None) is not None:
        model.class_names, wnids = read_labels(args.labels, args.labels_offset, model)
        if wnids:
            model.wnids = wnids
    elif getattr(args, "labels_offset", 0):
        raise UsageError("--labels-offset needs --labels")
    if path not in (None, "default") and not pre and not getattr(args, "quiet", False) \
            and not np.any(model.mean) and np.all(model.std == 1):
        WARNINGS.append(f"{path} records no input normalization, so it sees raw 0-255 pixels; give the "
                        "one it was trained with: --mean, --std and --scale (torchvision's: --scale 255 "
                        "--mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)")
    return model


# Warnings wait until the command's arguments have passed their checks, so that a
# mistake still ends in one line: setup() or main() prints them, main() drops them
# on a UsageError.
WARNINGS = []


def flush_warnings():
    while WARNINGS:
        print(f"{PROG}: warning: {WARNINGS.pop(0)}", file=sys.stderr)


def read_labels(path, offset, model):
    """(class names, wnids or None) from a text file, one class a line from line
    ``offset`` on (trailing blank lines ignored), optionally 'wnid name' as in
    TinyImageNet's words.txt or ImageNet's synset lists; as many as the model has classes."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--labels {path}: {getattr(e, 'strerror', None) or e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    lines = [ln.strip() for ln in lines[offset:]]
    k = model.num_classes
    if k is None:
        raise UsageError(f"--labels: the model {model.name!r} gives no class scores")
    if len(lines) != k:
        hint = ""
        if len(lines) == k + 1 and lines and lines[0].lower() == "background":
            hint = f"; its first line is 'background': add --labels-offset {offset + 1}"
        raise UsageError(f"--labels {path} has {len(lines)} names{f' after skipping {offset} lines' if offset else ''}, "
                         f"the model has {k} classes{hint}")
    if any(not ln for ln in lines):
        raise UsageError(f"--labels {path}: line {offset + lines.index('') + 1} is empty")
    names, wnids = [], []
    for ln in lines:
        head, _, rest = ln.partition("\t") if "\t" in ln else ln.partition(" ")
        if rest.strip() and len(head) == 9 and head[0] == "n" and head[1:].isdigit():
            wnids.append(head)
            names.append(rest.strip())
        else:
            names.append(ln)
    return (names, wnids) if len(wnids) == k else (lines, None)


def load_model_file(path=None, preprocessing=None):
    """The model for the CLI: the bundled one (``path`` None or ``'default'``) or a
    file by its extension (see :func:`gradvis.load_any`: gradvis ``.npz`` files and
    training checkpoints, ``.onnx``, CS231n's ``.h5``). ``preprocessing`` (``mean``,
    ``std``, ``scale``, ``input_shape``) applies to ONNX files, which do not record it. User errors
    raise :class:`UsageError`."""
    from ..io.pretrained import load_any
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


def need_classes(model, what):
    """``model`` if it gives class scores (what ``what`` needs), else :class:`UsageError`."""
    from ..nn.graph import check_classifier
    try:
        return check_classifier(model, what)
    except ValueError as e:
        raise UsageError(str(e)) from None


def class_name(model, i):
    if model.class_names:
        return model.class_names[i].split(",")[0].strip()
    return f"class {i}"


def class_label(model, i):
    """'goldfish (n01443537, 3)'."""
    wnid = f"{model.wnids[i]}, " if model.wnids else ""
    return f"{class_name(model, i)} ({wnid}{i})"


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
    from .. import _checks
    try:
        return _checks.class_index(model, s, "class")
    except (ValueError, TypeError) as e:
        msg = str(e).removeprefix("class: ")
        if msg.startswith("unknown class"):
            msg += f" (give an index 0-{n - 1}, a wnid or a name; 'gradvis classes' lists them)"
        raise UsageError(msg) from None


def check_image_size(model, size, option, end=None):
    """Refuse, before any work, an image size (H, W) the model's layers (up to ``end``)
    cannot take, naming the smallest size they accept."""
    if model.fits(size, end):
        return
    least = model.min_input_size(end)
    h, w = size
    if least is None:
        raise UsageError(f"{option} {h} {w}: no image size fits the model's layers")
    if h < least[0] or w < least[1]:
        raise UsageError(f"{option} {h} {w} is too small for the model, which needs at least "
                         f"{option} {least[0]} {least[1]}")
    shape = (model.input_shape[0],) + tuple(size)
    try:
        model.output_shapes(shape, end)
    except ValueError as e:
        raise UsageError(f"{option} {h} {w} does not fit the model: {e}") from None


def resolve_layer(model, spec, spatial=False, purpose=""):
    """A layer name from a name (case-insensitive) or an index; ``spatial``
    requires a layer with a (C, H, W) output."""
    from ..nn import LayerNotFoundError
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
        return photo_stem(self.path)


def photo_stem(path):
    """A file-name-safe stem of an input path, for naming outputs."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "image"


def read_image(path):
    """Any image Pillow reads, as RGB uint8 (EXIF rotation applied, transparency
    composited over white, 16-bit and float images rescaled). Raises
    :class:`UsageError` for a missing or unreadable file."""
    from ..io.images import read_rgb
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


def sample_photo_path():
    """Grace Hopper's portrait from matplotlib's sample data (every install has it)."""
    import matplotlib
    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        import matplotlib.cbook
        p = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return p


class Run:
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
        from .. import plot
        plot.save_figure(fig, path, compact=compact)
        self.wrote(path)

    def save_npy(self, arr, path):
        np.save(path, np.asarray(arr))
        self.wrote(path)

    def progress(self, total, desc, model=None, snapshot_at=()):
        return Progress(total, desc, self.quiet, model, snapshot_at)


class Progress:
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


def snapshot_steps(total, count):
    """``count`` steps spread over 1..total, always including the last."""
    if total <= 0 or count <= 0:
        return []
    return sorted(set(int(round(x)) for x in np.linspace(total / count, total, count)))


def slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "x"


def setup(args):
    run = Run(args)
    if run.out.exists() and not run.out.is_dir():       # fail before any work
        raise UsageError(f"output path {run.out} exists and is not a directory")
    if getattr(args, "threads", None):
        from .. import _core
        _core.set_num_threads(int(args.threads))
    flush_warnings()
    return run


def model_photos(run, model, paths):
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


def given(**kwargs):
    """The keyword arguments the user set (not None): the rest keep the algorithm's defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def add_command(sub, name, help_, func, **kw):
    """A subcommand parser whose description is its help sentence; ``func(args)`` runs it."""
    sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", **kw)
    sp.set_defaults(func=func)
    return sp
