"""The ``gradvis`` command line: the five algorithms on photos, training,
evaluation and a demo gallery.

Run ``gradvis --help`` (or ``python -m gradvis --help``). Each command family is a
module with a ``register(subparsers)`` function, listed in :data:`COMMANDS`;
:mod:`gradvis.cli.common` holds what they share. Mistakes a user can make end with
exit code 2 and one line, ``gradvis: error: ...``; files are never overwritten
without ``--force``.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import algorithms, attribution, batch, convert, demo, explore, info, optvis, robustness, training
from .common import PROG, WARNINGS, Parser, UsageError, flush_warnings

__all__ = ["main", "build_parser", "COMMANDS"]

# The command modules, in the order their commands are listed by --help.
COMMANDS = [algorithms, attribution, optvis, robustness, training, batch, info, convert, demo, explore]

_EPILOG = """\
classes: an index (7), a wnid (n01443537) or a name, full or an unambiguous prefix,
case-insensitive ('gold' = goldfish); 'gradvis classes' lists them.
layers: a name (relu4) or an index; 'gradvis layers' lists them.
Photos of any size and mode are resized/center-cropped as needed (said on stderr).
Example: gradvis demo --out gradvis-demo
"""


def build_parser():
    p = Parser(prog=PROG, description="See what a CNN sees through its gradients: saliency maps, "
                "fooling images, class visualization, feature inversion and DeepDream on the bundled "
                "TinyImageNet-100-A model (or your own).",
                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 a usage error)."""
    parser = build_parser()
    WARNINGS.clear()
    try:
        args = parser.parse_args(argv)
        code = int(args.func(args) or 0)
        flush_warnings()
        return code
    except UsageError as e:
        WARNINGS.clear()
        msg = " ".join(str(e).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except SystemExit as e:        # --help, --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except ValueError as e:        # a value the checks below the command line refused
        msg = " ".join(str(e).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
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
