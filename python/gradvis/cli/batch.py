"""``gradvis batch METHOD DATA --out DIR``: a per-image method over a whole data set, on Dask."""
from __future__ import annotations

import argparse
import sys

from .common import PROG, UsageError, add_command, add_model_options, model_from_args, number, pos_int

# Flags of the command itself; a method option of the same name is not offered.
_OWN = {"out", "workers", "scheduler", "chunk_size", "seed", "target", "threads_per_worker", "dashboard",
        "quiet", "model", "mean", "std", "scale", "input_shape", "no_resume", "help"}


def _value(text):
    """A method option's value: an int, a float, true/false, none, or the text."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low == "none":
        return None
    for kind in (int, float):
        try:
            v = kind(t)
        except ValueError:
            continue
        if v == v and abs(v) != float("inf"):       # 'inf' and 'nan' stay text
            return v
    return t


def _typed(default):
    """The parser of an option whose default is ``default``: its type, where it has one."""
    if isinstance(default, bool):
        def parse_bool(text):
            v = _value(text)
            if not isinstance(v, bool):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return v
        return parse_bool
    if isinstance(default, int):
        return number(int)
    if isinstance(default, float):
        return number(float)
    if isinstance(default, str):
        def parse_text(text):
            return None if text.strip().lower() == "none" else text
        return parse_text
    return _value


def _target(text):
    t = text.strip()
    if t in ("predicted", "label", "random"):
        return t
    return ("class", t)        # an index, wnid or name: resolved against the model


def register(sub):
    from ..batch.methods import METHODS, DEFAULT_BATCH_SIZE
    lines = [f"  {name:<11} {m.summary}" for name, m in sorted(METHODS.items())]
    opts = {}
    for name, m in sorted(METHODS.items()):
        for o, d in {"batch_size": DEFAULT_BATCH_SIZE, **m.options}.items():
            if o not in _OWN:
                opts.setdefault(o, []).append((name, d))
    lines.append("\nmethod options (each method takes only its own; default in brackets):")
    for o, uses in sorted(opts.items()):
        lines.append(f"  --{o.replace('_', '-'):<16} " + ", ".join(f"{n} [{d}]" for n, d in uses))
    p = add_command(sub, "batch", "run a per-image method over a whole data set on Dask, resumably",
                    cmd_batch, formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="methods:\n" + "\n".join(lines) + "\n\nExample: gradvis batch saliency "
                           "tinyimagenet:val --out sal-val\nSee docs/scale.md for clusters.")
    p.add_argument("method", metavar="METHOD", help=f"one of: {', '.join(sorted(METHODS))}")
    p.add_argument("data", metavar="DATA",
                   help="an image folder (class sub-folders give labels), 'tinyimagenet[:val|:train]' or "
                        "the archive's path[:val], a .npy file or .zarr array, or a text file of paths")
    p.add_argument("--out", "-o", metavar="DIR", required=True,
                   help="run directory: maps.zarr, index.parquet, run.json (resumed when it holds this run)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=pos_int, default=None, metavar="N",
                       help="worker processes of the local cluster (default: one per 4 cores)")
    where.add_argument("--scheduler", metavar="ADDR", default=None,
                       help="use an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--chunk-size", type=pos_int, default=256, metavar="K",
                   help="images per task and per Zarr chunk (default 256; a multiple of --batch-size)")
    p.add_argument("--seed", type=number(int, 0), default=0, help="the run's seed (default 0)")
    p.add_argument("--target", type=_target, default="predicted", metavar="CLASS",
                   help="the class per image: predicted (default), label, random, or a class "
                        "(index, wnid or name)")
    p.add_argument("--threads-per-worker", type=pos_int, default=None, metavar="N",
                   help="gradvis kernel threads per worker (default: cores / workers)")
    p.add_argument("--dashboard", action="store_true", help="print the Dask dashboard's address")
    p.add_argument("--no-resume", action="store_true", help="refuse a directory that holds a run")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(p.add_argument_group("model"))
    g = p.add_argument_group("method options")
    for o in sorted(opts):
        g.add_argument(f"--{o.replace('_', '-')}", dest=f"opt_{o}", type=_typed(opts[o][0][1]),
                       default=argparse.SUPPRESS,
                       metavar="V", help=argparse.SUPPRESS)


def cmd_batch(args):
    from ..batch import get_method, run
    from .common import resolve_class
    try:
        method = get_method(args.method)
    except ValueError as e:
        raise UsageError(str(e)) from None
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    allowed = set(method.options) | {"batch_size"}
    extra = sorted(set(options) - allowed)
    if extra:
        raise UsageError(f"method {method.name!r} takes no option "
                         f"{', '.join('--' + o.replace('_', '-') for o in extra)} (its options: "
                         f"{', '.join('--' + o.replace('_', '-') for o in sorted(allowed))})")
    model = model_from_args(args)
    target = args.target
    if isinstance(target, tuple):
        target = resolve_class(model, target[1])
    try:
        doc = run(method.name, args.data, args.out, model=model, scheduler=args.scheduler, workers=args.workers,
                  chunk_size=args.chunk_size, resume=not args.no_resume, progress=not args.quiet, seed=args.seed,
                  target=target, threads_per_worker=args.threads_per_worker, dashboard=args.dashboard,
                  **options)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        if e.filename is not None:
            raise
        raise UsageError(str(e)) from None
    except RuntimeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    s = doc["sessions"][-1]
    print(f"{args.out}: {doc['images']} images in {doc['chunks']} chunks, {doc.get('failed_images', 0)} failed; "
          f"this run computed {s['images_computed']} images in {s['seconds']:.1f} s "
          f"({s['images_per_second']:.1f}/s), skipped {s['chunks_skipped']} finished chunks")
    return 0
