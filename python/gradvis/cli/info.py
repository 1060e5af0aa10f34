"""Commands that describe a model: classes, layers."""
from __future__ import annotations

from .common import add_command, add_model_options, model_from_args, need_classes

def cmd_classes(args):
    model = need_classes(model_from_args(args), "'classes'")
    q = (args.query or "").lower()
    for i in range(model.num_classes):
        wn = model.wnids[i] if model.wnids else ""
        name = model.class_names[i] if model.class_names else ""
        if q and q not in wn.lower() and q not in name.lower() and q != str(i):
            continue
        print(f"{i:4d}  {wn}  {name}")
    return 0


def cmd_layers(args):
    model = model_from_args(args)
    for i, (name, shape) in enumerate(list(model.output_shapes().items())[1:]):
        print(f"{i:4d}  {name:10s} {model[name].describe():40s} {'x'.join(map(str, shape))}")
    return 0


def register(sub):
    """Add this module's commands to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "classes", "list the model's classes (optionally those matching QUERY)", cmd_classes)
    sp.add_argument("query", nargs="?", default=None)
    add_model_options(sp)
    _add_quiet(sp)

    sp = add_command(sub, "layers", "list the model's layers and their output shapes", cmd_layers)
    add_model_options(sp)
    _add_quiet(sp)


def _add_quiet(sp):
    # the listings write no notes; the option is taken, as by every command
    sp.add_argument("--quiet", "-q", action="store_true", help="no notes on stderr")
