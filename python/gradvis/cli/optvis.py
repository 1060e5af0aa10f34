"""Commands of Lucid-style feature visualization (:mod:`gradvis.optvis`): features
(a channel atlas of one layer) and render (any objective, with snapshots); the
``--style lucid`` option of classvis uses :func:`lucid_class_images`."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

from .common import (UsageError, add_command, add_common, nonneg_int, pos_float, pos_int,
                     resolve_layer, setup, slug, snapshot_steps, model_from_args)

DEFAULT_CHANNELS = 16


def parse_channels(text, count, layer):
    """'0-31', '3,5,9-12' or '7' -> sorted channel indices, each < count."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UsageError(f"--channels: expected indices and ranges like 0-31 or 3,5,9-12, got {text!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise UsageError(f"--channels: range {part!r} runs backwards")
        if b >= count:
            raise UsageError(f"--channels: channel {b} is out of range for layer {layer!r} with "
                             f"{count} channels (0-{count - 1})")
        out.extend(range(a, b + 1))
    return sorted(set(out))


def _image_size(args, model):
    size = tuple(args.size) if getattr(args, "size", None) else tuple(model.input_shape[1:])
    return size


def _render(run, model, objectives, args, size, desc, thresholds=()):
    """Render ``objectives`` (one image each) in batches of --batch; returns (final
    images (N, 3, H, W), {threshold: images})."""
    from ..optvis import param as param_, render
    snaps = {t: [] for t in thresholds}
    finals = []
    batch = args.batch
    prog = run.progress(args.steps * ((len(objectives) + batch - 1) // batch), desc)
    try:
        for start in range(0, len(objectives), batch):
            objs = objectives[start:start + batch]
            p = param_.image(size[0], size[1], batch=len(objs), fft=not args.pixels,
                             decorrelate=not args.no_decorrelate, seed=args.seed + start)
            ths = tuple(sorted(set(thresholds) | {args.steps}))
            try:
                out = render(objs if len(objs) > 1 else objs[0], model, param=p, transforms=None if args.no_transforms else "standard",
                             learning_rate=args.lr, steps=args.steps, thresholds=ths, seed=args.seed + start,
                             redirected_relu_steps=args.redirected_relu_steps,
                             callback=lambda t, X, info: prog(t, X, info))
            except ValueError as e:
                raise UsageError(str(e)) from None
            by_t = dict(zip(ths, out))
            finals.append(by_t[args.steps])
            for t in thresholds:
                snaps[t].append(by_t[t])
    finally:
        prog.close()
    return np.concatenate(finals), {t: np.concatenate(v) for t, v in snaps.items()}


def _add_render_options(sp, steps, batch=True):
    g = sp.add_argument_group("rendering")
    g.add_argument("--steps", "-n", type=pos_int, default=steps, metavar="N", help=f"(default: {steps})")
    g.add_argument("--lr", type=pos_float, default=0.05, help="Adam step size (default: 0.05)")
    g.add_argument("--pixels", action="store_true",
                   help="optimize pixels instead of a 1/f-scaled Fourier spectrum")
    g.add_argument("--no-decorrelate", action="store_true", help="no colour decorrelation")
    g.add_argument("--no-transforms", action="store_true",
                   help="no random pad, jitter, scale and rotation")
    g.add_argument("--redirected-relu-steps", type=nonneg_int, default=16, metavar="N",
                   help="first steps with redirected ReLU gradients (default: 16)")
    if batch:
        g.add_argument("--batch", type=pos_int, default=16, metavar="N",
                       help="images rendered at once (default: 16)")


def lucid_class_images(run, model, targets, args, size, snapshot_at):
    """classvis --style lucid: the class logits rendered as Lucid does. Returns the
    final images (N, 3, H, W) and the Progress-like snapshots [(t, uint8 images)]."""
    from ..optvis import objectives as O
    ns = SimpleNamespace(batch=max(1, len(targets)), steps=args.iterations, pixels=False,
                         no_decorrelate=False, no_transforms=False, lr=args.lr or 0.05,
                         seed=args.seed, redirected_relu_steps=16)
    X, snaps = _render(run, model, [O.class_logit(t) for t in targets], ns, size,
                       "class visualization (lucid)", [t for t in snapshot_at if t >= 1])
    return X, [(t, model.deprocess(snaps[t])) for t in sorted(snaps)]


def cmd_features(args):
    from .. import plot
    from ..optvis import objectives as O
    run = setup(args)
    model = model_from_args(args)
    layer = resolve_layer(model, args.layer, spatial=True, purpose="'features'")
    size = _image_size(args, model)
    try:
        count = model.output_shapes()[layer][0]
    except ValueError as e:
        raise UsageError(str(e)) from None
    channels = (parse_channels(args.channels, count, layer) if args.channels is not None
                else list(range(min(count, DEFAULT_CHANNELS))))
    names = [f"features_{slug(layer)}.png"] + ([f"features_{slug(layer)}.npy"] if args.save_npy else [])
    paths = run.prepare_outputs(names)
    run.note(f"rendering {len(channels)} channel(s) of {layer} at {size[0]}x{size[1]}, {args.steps} steps")
    X, _ = _render(run, model, [O.channel(layer, c) for c in channels], args, size, f"features {layer}")
    acts, _ = model.forward(X, end=layer)
    means = acts.mean(axis=(2, 3))
    own = means[np.arange(len(channels)), channels]
    run.say(f"{layer}: each channel's mean activation on its own image is {np.median(own / np.maximum(means.mean(axis=1), 1e-12)):.1f}x "
            f"the layer's average there (median over {len(channels)} channels)")
    fig = plot.image_grid(model.deprocess(X), titles=[f"{c}" for c in channels],
                          title=f"{layer}: one image per channel", labels_below=True)
    run.save_fig(fig, paths[0])
    if args.save_npy:
        run.save_npy(X, paths[1])
    return 0


def cmd_render(args):
    from .. import plot
    from ..optvis import objectives as O
    run = setup(args)
    model = model_from_args(args)
    try:
        objective = O.parse(args.objective)
    except ValueError as e:
        raise UsageError(f"--objective: {e}") from None
    size = _image_size(args, model)
    thresholds = sorted(set(args.thresholds) if args.thresholds else
                        {t for t in snapshot_steps(args.steps, 6) if t >= 1})
    bad = [t for t in thresholds if t > args.steps]
    if bad:
        raise UsageError(f"--thresholds {bad} are beyond --steps {args.steps}")
    base = "render_" + slug(str(objective))[:80]
    names = [f"{base}.png", f"{base}_snapshots.png"] + ([f"{base}.npy"] if args.save_npy else [])
    paths = run.prepare_outputs(names)
    objs = [objective] * args.images
    args.batch = args.images
    X, snaps = _render(run, model, objs, args, size, "render", thresholds)
    run.say(f"{objective}: {args.steps} steps on {args.images} image(s) of {size[0]}x{size[1]}")
    imgs = model.deprocess(X)
    fig = plot.image_grid(imgs, titles=[str(objective)] + [""] * (len(imgs) - 1))
    run.save_fig(fig, paths[0])
    frames = [model.deprocess(snaps[t])[0] for t in thresholds]
    fig = plot.snapshots_figure(frames, [f"t = {t}" for t in thresholds], title=str(objective))
    run.save_fig(fig, paths[1])
    if args.save_npy:
        run.save_npy(X, paths[2])
    return 0


def register(sub):
    sp = add_command(sub, "features", "a channel atlas: one image per channel of a layer, rendered as "
                     "Lucid does (Fourier parameterization, decorrelated colour, random transforms)",
                     cmd_features)
    sp.add_argument("--layer", "-l", required=True, metavar="L", help="a convolutional layer")
    sp.add_argument("--channels", metavar="LIST", default=None,
                    help=f"channels, e.g. 0-31 or 3,5,9-12 (default: the first {DEFAULT_CHANNELS})")
    sp.add_argument("--size", type=pos_int, nargs=2, metavar=("H", "W"), default=None,
                    help="image size (default: the model's input size)")
    _add_render_options(sp, 256)
    add_common(sp)

    sp = add_command(sub, "render", "feature visualization of any objective, e.g. "
                     "\"channel:relu5:7 - 0.5*channel:relu5:3\", with snapshots over the steps", cmd_render)
    sp.add_argument("--objective", required=True, metavar="TEXT",
                    help="terms joined by + and -, each optionally times a number: channel:LAYER:N, "
                         "neuron:LAYER:N[:X:Y], class_logit:N, deepdream:LAYER, diversity:LAYER, "
                         "l1, l2, total_variation, blur_input")
    sp.add_argument("--thresholds", type=pos_int, nargs="+", metavar="T", default=None,
                    help="steps after which a snapshot is shown (default: 6 spread over --steps)")
    sp.add_argument("--images", type=pos_int, default=1, metavar="N",
                    help="images rendered at once (default: 1; use several with diversity)")
    sp.add_argument("--size", type=pos_int, nargs=2, metavar=("H", "W"), default=None,
                    help="image size (default: the model's input size)")
    _add_render_options(sp, 512, batch=False)
    add_common(sp)
