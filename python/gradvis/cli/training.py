"""Commands that train and evaluate models: train, evaluate."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..nn.losses import softmax
from .common import (PROG, UsageError, add_command, add_common, model_from_args, need_classes, number, pos_int,
                     setup)


# ---------------------------------------------------------------------------- data sets
def is_archive(path):
    return Path(path).is_file() and str(path).lower().endswith((".tar.gz", ".tgz", ".tar"))


def load_dataset(run, path, size, val_fraction, seed):
    from ..io import datasets as data
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file or directory")
    try:
        if is_archive(p):
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


def check_train_sizes(args, crop):
    """Refuse, before any work, sizes the training or its final evaluation cannot use."""
    from ..nn.architectures import default_net
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
    from ..train import trainer as T
    from ..nn.architectures import default_net
    if args.val_fraction >= 1:
        raise UsageError(f"--val-fraction {args.val_fraction} leaves no training images; use less than 1")
    crop = args.crop if args.crop is not None else int(round(args.image_size * 0.875))
    check_train_sizes(args, crop)
    overrides = {"crop": crop, "seed": args.seed}
    if args.threads:            # --threads, when given, wins over --num-threads' default
        overrides["num_threads"] = args.threads
    try:
        cfg = T.config_from_args(args, **overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"training options: {e}") from None
    run = setup(args)
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
        ds = load_dataset(run, args.data, size, args.val_fraction, args.seed)
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


def map_labels(model, names, what):
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


def labelled_images(run, model, data, size, seed):
    """(X uint8 (N, H, W, 3), y (N,) in the model's classes, what split) of an image folder
    (all its images) or the TinyImageNet archive (its held-out split, images 450-499)."""
    try:
        ds = load_dataset(run, data, size, 0.0, seed)
    except MemoryError:
        raise UsageError("out of memory reading the data set") from None
    if is_archive(data):
        X, y_ds, split = ds.X_val, ds.y_val, "held-out split (images 450-499 of each class)"
    else:
        X, y_ds, split = ds.X_train, ds.y_train, "all images"
    if len(X) == 0:
        raise UsageError(f"{data}: no images")
    return X, map_labels(model, ds.wnids, data)[y_ds], split


def cmd_evaluate(args):
    run = setup(args)
    model = need_classes(model_from_args(args), "'evaluate'")
    size = tuple(model.input_shape[1:])
    if args.save_npy:
        (npy,) = run.prepare_outputs(["evaluate_probs.npy"])
    X, y, split = labelled_images(run, model, args.data, size, args.seed)
    bs = args.batch_size
    prog = run.progress(-(-len(X) // bs), "evaluating")
    probs = []
    try:
        for k, i in enumerate(range(0, len(X), bs)):
            probs.append(softmax(model.forward(model.preprocess(X[i:i + bs]), mode="test", cache=False)[0]).astype(np.float32))
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


def register(sub):
    """Add this module's commands to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "train", "train gradvis's default net on an image folder (one sub-folder of images "
             "per class) or the TinyImageNet archive", cmd_train)
    sp.add_argument("data", metavar="DATA")
    sp.add_argument("--image-size", type=number(int, 1, hi=MAX_IMAGE_SIZE, name="int"), default=64,
                    metavar="PX", help=f"1 to {MAX_IMAGE_SIZE} (default: 64)")
    sp.add_argument("--val-fraction", type=number(float, 0, hi=1), default=0.1,
                    help="held out per class of an image folder, 0 to below 1 (default: 0.1)")
    sp.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    from ..train import add_config_arguments
    tg = sp.add_argument_group("training options (gradvis.train.TrainConfig)")
    add_config_arguments(tg, skip=("seed",))
    for a in tg._group_actions:
        if a.dest == "crop":
            a.default, a.help = None, "random-crop size, at most --image-size (default: 7/8 of --image-size)"
        elif a.dest == "num_threads":
            a.help = f"{a.help[:-1]}; --threads, when given, wins)"
    add_common(sp, save_npy=False, model=False)

    sp = add_command(sub, "evaluate", "accuracy of a model on an image folder, or on the TinyImageNet archive's "
             "held-out split", cmd_evaluate)
    sp.add_argument("data", metavar="DATA")
    sp.add_argument("--batch-size", type=pos_int, default=200, help="(default: 200)")
    add_common(sp)
