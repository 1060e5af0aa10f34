"""Commands of the attribution suite: ``gradvis attribute`` (any method, or all of
them in one comparison grid) and ``gradvis sanity`` (the randomization figure)."""
from __future__ import annotations

import numpy as np

from ..nn.losses import softmax
from .common import (UsageError, add_command, add_common, class_label, class_name, model_from_args,
                     model_photos, need_classes, photo_stem, pos_int, resolve_class, resolve_layer, setup)

__all__ = ["register", "METHODS", "GRID_METHODS"]

# CLI name -> (function name in gradvis.attribution, kind): kind 'cam' takes a layer
METHODS = {
    "saliency": ("saliency", "pixel"),
    "input-x-gradient": ("input_x_gradient", "pixel"),
    "ig": ("integrated_gradients", "pixel"),
    "smoothgrad": ("noise_tunnel", "pixel"),
    "gradient-shap": ("gradient_shap", "pixel"),
    "guided-backprop": ("guided_backprop", "pixel"),
    "deconvolution": ("deconvolution", "pixel"),
    "deeplift": ("deeplift", "pixel"),
    "occlusion": ("occlusion", "pixel"),
    "gradcam": ("grad_cam", "cam"),
    "guided-gradcam": ("guided_grad_cam", "guided"),
    "gradcam++": ("grad_cam_plus_plus", "cam"),
    "xgradcam": ("xgrad_cam", "cam"),
    "layercam": ("layer_cam", "cam"),
    "hirescam": ("hires_cam", "cam"),
    "eigencam": ("eigen_cam", "cam"),
    "scorecam": ("score_cam", "cam"),
    "ablationcam": ("ablation_cam", "cam"),
}
# --method all: a grid of the methods that take a few passes each
GRID_METHODS = ("saliency", "ig", "smoothgrad", "guided-backprop", "deeplift", "gradcam", "gradcam++",
                "guided-gradcam", "layercam")


def _compute(A, name, X, y, model, args, layer):
    fn_name, kind = METHODS[name]
    fn = getattr(A, fn_name)
    if name == "ig":
        return fn(X, y, model, n_steps=args.steps)
    if name == "smoothgrad":
        # noise of 15% of the input range (Smilkov et al.'s default), in input units
        lo, hi = model.input_range()
        std = 0.15 * float(np.mean(np.asarray(hi) - np.asarray(lo)))
        return fn(A.saliency, X, y, model, nt_samples=args.samples, stdevs=std, seed=args.seed)
    if name == "gradient-shap":
        return fn(X, y, model, baselines=np.zeros((1,) + X.shape[1:], X.dtype), n_samples=args.samples,
                  seed=args.seed)
    if name == "occlusion":
        w = args.window
        return fn(X, y, model, (X.shape[1], w, w), strides=(X.shape[1], max(1, w // 2), max(1, w // 2)))
    if kind == "pixel":
        return fn(X, y, model)
    if kind == "guided":
        return fn(X, y, model, layer)
    return fn(X, y, model, layer)


def _setup_common(args, what):
    from .. import attribution as A
    run = setup(args)
    model = need_classes(model_from_args(args), what)
    layer = resolve_layer(model, args.layer, spatial=True, purpose=what) if args.layer is not None else None
    forced = resolve_class(model, args.class_) if args.class_ is not None else None
    return A, run, model, layer, forced


def _photos(run, model, images, forced):
    photos, imgs = model_photos(run, model, images)
    X = model.preprocess(imgs)
    probs = softmax(model.predict(X))
    y = np.full(len(photos), forced) if forced is not None else probs.argmax(axis=1)
    return photos, imgs, X, y, probs


def cmd_attribute(args):
    from .. import plot_attribution as pa
    A, run, model, layer, forced = _setup_common(args, "'attribute'")
    names = list(GRID_METHODS) if args.method == "all" else [args.method]
    base = photo_stem(args.images[0]) if len(args.images) == 1 else "attribute"
    tag = "all" if args.method == "all" else args.method.replace("+", "p")
    outs = [f"{base}_{tag}.png"]
    if args.save_npy:
        outs += [f"{base}_{n.replace('+', 'p')}.npy" for n in names]
    paths = run.prepare_outputs(outs)
    photos, imgs, X, y, probs = _photos(run, model, args.images, forced)
    how = "given" if forced is not None else "predicted"
    for ph, yi, p in zip(photos, y, probs):
        run.say(f"{ph.name}: {class_label(model, yi)} ({how}, p={p[yi]:.2f})")
    if layer is None and any(METHODS[n][1] != "pixel" for n in names):
        run.note(f"CAM layer: {A.default_cam_layer(model, X.shape[1:])} (the last spatial layer; --layer to change)")
    maps = {}
    for n in names:
        run.note(f"{n} ...")
        try:
            maps[n] = _compute(A, n, X, y, model, args, layer)
        except ValueError as e:      # a layer that does not suit the method, a model it cannot run
            raise UsageError(f"{n}: {e}") from None
    titles = [f"{class_name(model, yi)} ({p[yi]:.2f})" for yi, p in zip(y, probs)]
    if len(names) == 1:
        fig = pa.attribution_figure(imgs, maps[names[0]], method=args.display, sign=args.sign, titles=titles)
    else:
        fig = pa.comparison_figure(imgs, maps, method=args.display, sign=args.sign, titles=titles)
    run.save_fig(fig, paths[0])
    if args.save_npy:
        for n, p in zip(names, paths[1:]):
            run.save_npy(maps[n], p)
    return 0


def cmd_sanity(args):
    from .. import plot_attribution as pa
    A, run, model, layer, forced = _setup_common(args, "'sanity'")
    tag = args.method.replace("+", "p")
    (path,) = run.prepare_outputs([f"{photo_stem(args.image)}_sanity_{tag}.png"])
    photos, imgs, X, y, probs = _photos(run, model, [args.image], forced)
    run.note(f"randomizing the layers from the top, recomputing {args.method} after each")

    def method(Xs, ys, m):
        return _compute(A, args.method, Xs, ys, m, args, layer)
    try:
        res = A.sanity_check(method, X, y, model, seed=args.seed)
    except ValueError as e:
        raise UsageError(f"{args.method}: {e}") from None
    for name, c in zip(res["layers"], res["correlations"][:, 0]):
        run.say(f"  randomized down to {name:<16} rank correlation {c:+.3f}")
    fig = pa.sanity_figure(res, imgs[0], title=f"{args.method}: {class_name(model, y[0])}")
    run.save_fig(fig, path)
    return 0


def _method_options(sp):
    sp.add_argument("--layer", "-l", default=None, metavar="L",
                    help="layer of the CAM methods (default: the last spatial layer)")
    sp.add_argument("--class", "-c", dest="class_", metavar="C", default=None,
                    help="class to explain (default: each photo's predicted class)")
    sp.add_argument("--steps", type=pos_int, default=50, metavar="N",
                    help="integrated gradients: quadrature points (default: 50)")
    sp.add_argument("--samples", type=pos_int, default=20, metavar="N",
                    help="smoothgrad / gradient-shap: samples per image (default: 20)")
    sp.add_argument("--window", type=pos_int, default=8, metavar="PX",
                    help="occlusion: window size, stride half of it (default: 8)")


def register(sub):
    """Add ``attribute`` and ``sanity`` to the ``gradvis`` parser's subparsers."""
    from ..plot_attribution import DISPLAY_METHODS, SIGNS
    sp = add_command(sub, "attribute", "attribution maps of photos: gradients, integrated gradients, "
                     "DeepLift, occlusion, Grad-CAM and its family", cmd_attribute)
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("--method", "-m", required=True, choices=sorted(METHODS) + ["all"], metavar="M",
                    help=f"one of {', '.join(sorted(METHODS))}, or 'all' for a comparison grid of "
                         f"{', '.join(GRID_METHODS)}")
    _method_options(sp)
    sp.add_argument("--display", choices=DISPLAY_METHODS, default="blended_heat_map",
                    help="how pixel maps are drawn, as Captum's (default: blended_heat_map)")
    sp.add_argument("--sign", choices=SIGNS, default="absolute_value",
                    help="which values are drawn (default: absolute_value)")
    add_common(sp)

    sp = add_command(sub, "sanity", "the model-randomization sanity check of an attribution method "
                     "(Adebayo et al. 2018)", cmd_sanity)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--method", "-m", required=True, choices=sorted(METHODS), metavar="M",
                    help=f"one of {', '.join(sorted(METHODS))}")
    _method_options(sp)
    add_common(sp, save_npy=False)
