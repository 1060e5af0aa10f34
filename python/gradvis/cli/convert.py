"""``gradvis convert``: an ONNX export (or any model file) to a self-contained gradvis
``.npz`` with its input normalization and class names."""
from __future__ import annotations

from pathlib import Path

from .common import UsageError, add_command, add_model_options, model_from_args


def cmd_convert(args):
    src, out = Path(args.source), Path(args.out)
    if out.suffix.lower() != ".npz":
        raise UsageError(f"--out {out}: the gradvis model format is a .npz file")
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists (use --force to overwrite)")
    if out.parent and not out.parent.exists():
        raise UsageError(f"--out {out}: no such directory {out.parent}")
    model = model_from_args(args, path=str(src))
    model.save(out, overwrite=True)
    if not args.quiet:
        classes = f", {model.num_classes} classes" if model.num_classes else ""
        names = " with class names" if model.class_names else ""
        print(f"wrote {out}: {len(model.nodes)} layers{classes}{names}, input {'x'.join(map(str, model.input_shape))}")
    return 0


def register(sub):
    """Add this module's commands to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "convert", "convert a model file (an .onnx export, CS231n's .h5) to a "
                     "self-contained gradvis .npz with its preprocessing and class names", cmd_convert)
    sp.add_argument("source", metavar="MODEL", help="the model file to convert (.onnx, .h5 or .npz)")
    sp.add_argument("--out", "-o", required=True, metavar="FILE", help="the .npz file to write")
    sp.add_argument("--force", "-f", action="store_true", help="overwrite an existing --out file")
    sp.add_argument("--quiet", "-q", action="store_true", help="no notes on stdout or stderr")
    add_model_options(sp.add_argument_group("model options"), model=False)
