"""Commands that run the five algorithms on photos: predict, saliency, fool, classvis,
invert, dream."""
from __future__ import annotations

import numpy as np

from ..nn.losses import softmax
from .common import (UsageError, check_image_size, add_command, add_common, class_label, class_name, given,
                     model_photos, nonneg_float, nonneg_int, number, pos_float, pos_int, read_image,
                     resolve_class, resolve_layer, setup, slug, snapshot_steps, photo_stem, resize_rgb,
                     need_classes, model_from_args)

def cmd_predict(args):
    run = setup(args)
    model = need_classes(model_from_args(args), "'predict'")
    k = min(args.top_k, model.num_classes)
    if args.save_npy:
        (npy,) = run.prepare_outputs(["predictions.npy"])
    size = tuple(model.input_shape[1:])
    if args.crops == 1:
        photos, imgs = model_photos(run, model, args.images)
        probs = softmax(model.predict(model.preprocess(imgs)))
    else:
        from ..io.images import multi_crops
        photos = [read_image(p) for p in args.images]
        probs = np.stack([softmax(model.predict(model.preprocess(multi_crops(ph.rgb, size, args.crops)))).mean(0)
                          for ph in photos])
        run.note(f"each photo: the mean of {args.crops} views ({'centre and corners' if args.crops == 5 else 'centre, corners and their mirror images'} "
                 f"of {size[1]}x{size[0]} pixels, from the photo scaled to cover {int(round(size[1] * 1.14))}x{int(round(size[0] * 1.14))})")
    if any(ph.rgb.shape[0] > size[0] or ph.rgb.shape[1] > size[1] for ph in photos):
        what = f"{model.num_classes} classes" + (f" ({model.name})" if getattr(model, "name", "model") not in (None, "", "model") else "")
        run.note(f"the model sees {size[1]}x{size[0]} pixels and knows {what}: a photo is shrunk "
                 f"to that size, so small or off-centre objects may be lost"
                 + ("; --crops 5 averages five views" if args.crops == 1 else "")
                 + "; --model takes a network of your own (e.g. an ImageNet one from ONNX)")
    for ph, p in zip(photos, probs):
        run.say(ph.name)
        for r, i in enumerate(np.argsort(-p)[:k]):
            wn = f"  {model.wnids[i]}" if model.wnids else ""
            run.say(f"  {r + 1}. {p[i]:6.1%}  {class_name(model, i)}{wn}  [{i}]")
    if args.save_npy:
        run.save_npy(probs.astype(np.float32), npy)
    return 0


def cmd_saliency(args):
    from .. import plot
    from ..attribution import compute_saliency_maps, smoothgrad_saliency_maps
    run = setup(args)
    model = need_classes(model_from_args(args), "'saliency'")
    forced = resolve_class(model, args.class_) if args.class_ is not None else None
    base = f"{photo_stem(args.images[0])}_saliency" if len(args.images) == 1 else "saliency"
    paths = run.prepare_outputs([f"{base}.png"] + ([f"{base}.npy"] if args.save_npy else []))
    photos, imgs = model_photos(run, model, args.images)
    X = model.preprocess(imgs)
    probs = softmax(model.predict(X))
    y = np.full(len(photos), forced) if forced is not None else probs.argmax(axis=1)
    if args.smoothgrad:
        run.note(f"SmoothGrad over {args.smoothgrad} noisy copies per image")
        sal = smoothgrad_saliency_maps(X, y, model, num_samples=args.smoothgrad, seed=args.seed)
    else:
        sal = compute_saliency_maps(X, y, model)
    titles = []
    for ph, yi, p in zip(photos, y, probs):
        how = "given" if forced is not None else "predicted"
        run.say(f"{ph.name}: saliency of {class_label(model, yi)} ({how}, p={p[yi]:.2f})")
        titles.append(f"{class_name(model, yi)} ({p[yi]:.2f})")
    fig = plot.saliency_figure(imgs, sal, titles=titles)
    run.save_fig(fig, paths[0])
    if args.save_npy:
        run.save_npy(sal, paths[1])
    return 0


def cmd_fool(args):
    from .. import plot
    from ..attacks import make_fooling_image
    run = setup(args)
    model = need_classes(model_from_args(args), "'fool'")
    target = resolve_class(model, args.target)
    stem = photo_stem(args.image)
    names = [f"{stem}_fooling.png", f"{stem}_fooled.png"]
    if args.save_npy:
        names.append(f"{stem}_fooled.npy")
    paths = run.prepare_outputs(names)
    photos, imgs = model_photos(run, model, [args.image])
    X = model.preprocess(imgs)
    p0 = softmax(model.predict(X))[0]
    before = int(p0.argmax())
    eps = args.eps   # grey levels, as the algorithm takes it
    if args.quantize and eps is not None and eps < 1:
        run.note(f"--eps {eps:g} is below one grey level: an 8-bit image cannot change within it "
                 f"(use a larger --eps, or --no-quantize for a change the saved PNG will not keep)")
    prog = run.progress(args.max_iter, f"fooling -> {class_name(model, target)}")
    try:
        Xf, rep = make_fooling_image(X, target, model, **given(learning_rate=args.lr,
                                                               confidence=args.confidence,
                                                               margin=args.margin),
                                     max_iter=args.max_iter, quantize=args.quantize,
                                     eps=eps, norm=args.norm, return_report=True, callback=prog)
    finally:
        prog.close()
    fooled_rgb = model.deprocess(Xf)
    p8 = softmax(model.predict(model.preprocess(fooled_rgb)))[0]
    ok = bool(rep["success"][0])
    budget = f" within eps {args.eps:g}/255 ({'L-inf' if args.norm == 'inf' else 'L2'})" if eps is not None else ""
    run.say(f"{photos[0].name}: {class_label(model, before)} p={p0[before]:.2f} -> target "
            f"{class_label(model, target)}")
    wanted = "".join([f", target p >= {args.confidence:g}" if args.confidence is not None else "",
                      f", target leading by >= {args.margin:g}" if args.margin is not None else ""])
    run.say(f"fooled: {'yes' if ok else 'no'}{budget}{wanted}, after {int(rep['iterations'][0])} steps; "
            f"the model now says {class_name(model, int(rep['predicted'][0]))} "
            f"(target p={float(rep['target_prob'][0]):.2f})")
    dpx = ((Xf - X) * np.asarray(model.std, np.float64).reshape(1, -1, 1, 1))[0]
    run.say(f"change (0-255 pixel units): max {float(rep['linf_pixels'][0]):.2f}, "
            f"RMS {float(np.sqrt((dpx ** 2).mean())):.2f}, L2 {float(np.sqrt((dpx ** 2).sum())):.1f}")
    still = int(p8.argmax()) == target
    if args.quantize:
        png = "the saved PNG is the image the attack ended on"
    else:
        png = "still fools the model" if still else "rounding undoes it (leave out --no-quantize)"
    run.say(f"as an 8-bit PNG: {png} (predicted {class_name(model, int(p8.argmax()))}, "
            f"target p={p8[target]:.2f})")
    now = int(p8.argmax())
    if ok and still:
        second = f"fooled -> {class_name(model, target)} ({p8[target]:.2f})"
    else:
        second = (f"FAILED: target {class_name(model, target)} ({p8[target]:.2f}); "
                  f"model says {class_name(model, now)} ({p8[now]:.2f})")
    fig = plot.fooling_figure(imgs[0], fooled_rgb[0], titles=[
        (f"original: {class_name(model, before)} ({p0[before]:.2f})", second)])
    run.save_fig(fig, paths[0])
    run.save_png(fooled_rgb[0], paths[1])
    if args.save_npy:
        run.save_npy(Xf, paths[2])
    return 0


def cmd_classvis(args):
    from .. import plot
    from ..generation import create_class_visualization
    run = setup(args)
    model = need_classes(model_from_args(args), "'classvis'")
    targets = [resolve_class(model, c) for c in args.classes]
    slugs = [slug(model.wnids[t] if model.wnids else t) + "_" + slug(class_name(model, t)) for t in targets]
    names = []
    for s in slugs:
        names += [f"classvis_{s}.png", f"classvis_{s}_snapshots.png"]
    if args.save_npy:
        names.append("classvis.npy")
    size = tuple(args.size) if args.size else None
    if size is not None:
        check_image_size(model, size, "--size")
    paths = run.prepare_outputs(names)
    steps = snapshot_steps(args.iterations, args.snapshots)
    if args.style == "lucid":
        from .optvis import lucid_class_images
        X, snapshots = lucid_class_images(run, model, targets, args, size or model.input_shape[1:], steps)
    else:
        prog = run.progress(args.iterations, "class visualization", model, steps)
        try:
            X = create_class_visualization(targets, model, num_iterations=args.iterations,
                                           **given(learning_rate=args.lr, l2_reg=args.l2_reg),
                                           blur_every=args.blur_every,
                                           max_jitter=args.max_jitter, image_size=size, seed=args.seed,
                                           callback=prog)
        finally:
            prog.close()
        snapshots = prog.snapshots
    probs = softmax(model.predict(X)) if X.shape[2:] == tuple(model.input_shape[1:]) else None
    imgs = model.deprocess(X)
    for k, (t, s) in enumerate(zip(targets, slugs)):
        extra = f", the model gives it p={probs[k, t]:.2f}" if probs is not None else ""
        run.say(f"{class_label(model, t)}: {args.iterations} steps{extra}")
        run.save_png(imgs[k], paths[2 * k])
        frames = [snap[k] for _, snap in snapshots]
        labels = [f"t = {t_}" for t_, _ in snapshots]
        fig = plot.snapshots_figure(frames or [imgs[k]], labels or [f"t = {args.iterations}"],
                                    title=f"class visualization: {class_name(model, t)}")
        run.save_fig(fig, paths[2 * k + 1])
    if args.save_npy:
        run.save_npy(X, paths[-1])
    return 0


def run_inversion(run, model, X, layer, args, snapshots=5, desc=None):
    from ..generation import invert_features
    feats, _ = model.forward(X, end=layer, mode="test")
    steps = snapshot_steps(args.iterations, snapshots)
    prog = run.progress(args.iterations, desc or f"inverting {layer}", model, steps)
    try:
        Xr = invert_features(feats, layer, model, num_iterations=args.iterations,
                             **given(learning_rate=args.lr, tv_reg=args.tv_reg, l2_reg=args.l2_reg),
                             blur_every=args.blur_every, seed=args.seed,
                             callback=prog)
    finally:
        prog.close()
    err = prog.last_info.get("feature_error", [float("nan")])
    return Xr, prog.snapshots, float(np.asarray(err)[0])


def cmd_invert(args):
    from .. import plot
    run = setup(args)
    model = model_from_args(args)
    layers = [resolve_layer(model, s) for s in args.layer]
    stem = photo_stem(args.image)
    names = [f"{stem}_invert_{slug(l)}.png" for l in layers] + [f"{stem}_inversion.png"]
    if args.save_npy:
        names += [f"{stem}_invert_{slug(l)}.npy" for l in layers]
    paths = run.prepare_outputs(names)
    photos, imgs = model_photos(run, model, [args.image])
    X = model.preprocess(imgs)
    rows = {}
    for k, layer in enumerate(layers):
        Xr, snaps, err = run_inversion(run, model, X, layer, args)
        run.say(f"{layer}: relative feature error {err:.3f} after {args.iterations} steps")
        run.save_png(model.deprocess(Xr)[0], paths[k])
        rows[layer] = [(s[0], f"t = {t}") for t, s in snaps]
        if args.save_npy:
            run.save_npy(Xr, paths[len(layers) + 1 + k])
    fig = plot.inversion_figure(imgs[0], rows, title=f"feature inversion of {photos[0].name}")
    run.save_fig(fig, paths[len(layers)])
    return 0


def cmd_dream(args):
    from .. import plot
    from ..generation import deepdream
    run = setup(args)
    model = model_from_args(args)
    layer = resolve_layer(model, args.layer, spatial=True, purpose="DeepDream")
    stem = photo_stem(args.image)
    names = [f"{stem}_dream_{slug(layer)}.png", f"{stem}_dream_{slug(layer)}_snapshots.png"]
    if args.save_npy:
        names.append(f"{stem}_dream_{slug(layer)}.npy")
    paths = run.prepare_outputs(names)
    ph = read_image(args.image)
    rgb = ph.rgb
    h, w = rgb.shape[:2]
    if args.max_size and max(h, w) > args.max_size:
        s = args.max_size / max(h, w)
        rgb = resize_rgb(rgb, (max(1, round(h * s)), max(1, round(w * s))))
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
        Xd = deepdream(X, layer, model, num_iterations=args.iterations, **given(learning_rate=args.lr),
                       octaves=args.octaves, octave_scale=args.octave_scale, channel=args.channel,
                       seed=args.seed, callback=prog, param=args.param)
    except ValueError as e:      # e.g. the smallest octave is too small for the layer
        raise UsageError(str(e)) from None
    finally:
        prog.close()
    out = model.deprocess(Xd)[0]
    run.say(f"{ph.name}: DeepDream on {layer}, {args.octaves} octave(s) x {args.iterations} steps, "
            f"{out.shape[1]}x{out.shape[0]}" + (", Fourier parameterization" if args.param == "fft" else ""))
    run.save_png(out, paths[0])
    frames = [rgb] + [resize_rgb(s[0], rgb.shape[:2]) for _, s in prog.snapshots]
    labels = ["original"] + [f"octave {o + 1}/{args.octaves}" for o in range(len(prog.snapshots))]
    fig = plot.snapshots_figure(frames, labels, title=f"DeepDream, layer {layer}")
    run.save_fig(fig, paths[1])
    if args.save_npy:
        run.save_npy(Xd, paths[2])
    return 0


def register(sub):
    """Add this module's commands to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "predict", "top-k classes of photos, with probabilities", cmd_predict)
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("--top-k", "-k", type=pos_int, default=5, help="classes to show (default: 5)")
    sp.add_argument("--crops", type=int, choices=(1, 5, 10), default=1,
                    help="average the probabilities over 1 (the centre, default), 5 (centre and "
                         "corners) or 10 (those and their mirror images) views of each photo")
    add_common(sp, seed=False)

    sp = add_command(sub, "saliency", "saliency maps of photos (Simonyan et al. 2013)", cmd_saliency)
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("--class", "-c", dest="class_", metavar="C", default=None,
                    help="class whose score to explain (default: each photo's predicted class)")
    sp.add_argument("--smoothgrad", type=pos_int, metavar="N", default=0,
                    help="SmoothGrad over N noisy copies instead of the plain gradient")
    add_common(sp)

    sp = add_command(sub, "fool", "a fooling image: a small change that makes the model predict a target class",
             cmd_fool)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--target", "-t", required=True, metavar="C", help="the class to reach")
    sp.add_argument("--eps", type=pos_float, default=None, metavar="E",
                    help="budget for the change, in 0-255 pixel units (default: none)")
    sp.add_argument("--norm", choices=("inf", "2"), default="inf", help="norm of --eps (default: inf)")
    sp.add_argument("--max-iter", type=pos_int, default=100, metavar="N", help="most steps (default: 100)")
    sp.add_argument("--lr", type=pos_float, default=None,
                    help="change of each pixel per step, grey levels (default: the algorithm's, 0.25, signed steps)")
    sp.add_argument("--confidence", type=number(float, 0, lo_open=True, hi=0.999999, name="probability"),
                    default=None, metavar="P",
                    help="keep going until the target's probability is at least P (default: stop at the first flip)")
    sp.add_argument("--margin", type=number(float, 0, name="number"), default=None, metavar="M",
                    help="keep going until the target's score leads every other by M")
    sp.add_argument("--no-quantize", dest="quantize", action="store_false",
                    help="do not keep the image on the 8-bit grid while attacking (the saved PNG may then "
                         "not fool the model)")
    add_common(sp, seed=False)

    sp = add_command(sub, "classvis", "class visualization: an image the model finds typical of a class",
             cmd_classvis)
    sp.add_argument("classes", nargs="+", metavar="C")
    sp.add_argument("--iterations", "-n", type=pos_int, default=200, metavar="N", help="(default: 200)")
    sp.add_argument("--snapshots", type=nonneg_int, default=6, metavar="K",
                    help="snapshots shown over the iterations (default: 6)")
    sp.add_argument("--lr", type=pos_float, default=None,
                    help="mean change per step, grey levels (default: the algorithm's)")
    sp.add_argument("--l2-reg", type=nonneg_float, default=None, help="(default: the algorithm's)")
    sp.add_argument("--blur-every", type=nonneg_int, default=10, metavar="N", help="(default: 10)")
    sp.add_argument("--max-jitter", type=nonneg_int, default=4, metavar="PX", help="(default: 4)")
    sp.add_argument("--size", type=pos_int, nargs=2, metavar=("H", "W"), default=None,
                    help="image size (default: the model's input size)")
    sp.add_argument("--style", choices=("cs231n", "lucid"), default="cs231n",
                    help="cs231n: pixel-space ascent with jitter, L2 and blur (default); lucid: "
                         "gradvis.optvis.render of the class score (Fourier parameterization, "
                         "decorrelated colour, random transforms, Adam; --lr is then Adam's, "
                         "default 0.05; --l2-reg, --blur-every and --max-jitter do not apply)")
    add_common(sp)

    sp = add_command(sub, "invert", "feature inversion: reconstruct a photo from one layer's features "
             "(Mahendran & Vedaldi 2015)", cmd_invert)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--layer", "-l", required=True, nargs="+", metavar="L",
                    help="layer(s) to invert from; several give a shallow-vs-deep figure")
    sp.add_argument("--iterations", "-n", type=pos_int, default=200, metavar="N", help="(default: 200)")
    sp.add_argument("--lr", type=pos_float, default=None,
                    help="Adam step size, grey levels (default: the algorithm's)")
    sp.add_argument("--tv-reg", type=nonneg_float, default=None,
                    help="total-variation weight (default: the algorithm's)")
    sp.add_argument("--l2-reg", type=nonneg_float, default=None, help="(default: the algorithm's)")
    sp.add_argument("--blur-every", type=nonneg_int, default=0, metavar="N",
                    help="Gaussian blur every N steps; helps deep layers (default: 0, never)")
    add_common(sp)

    sp = add_command(sub, "dream", "DeepDream: amplify what a layer sees, at the photo's own size", cmd_dream)
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--layer", "-l", required=True, metavar="L")
    sp.add_argument("--octaves", type=pos_int, default=3, metavar="N", help="scales (default: 3)")
    sp.add_argument("--octave-scale", type=number(float, 1, lo_open=True), default=1.4,
                    help="ratio between scales (default: 1.4)")
    sp.add_argument("--iterations", "-n", type=pos_int, default=10, metavar="N",
                    help="steps per octave (default: 10)")
    sp.add_argument("--lr", type=pos_float, default=None,
                    help="mean change per step, grey levels (default: the algorithm's)")
    sp.add_argument("--channel", type=nonneg_int, default=None, help="amplify one channel only")
    sp.add_argument("--param", choices=("pixels", "fft"), default="pixels",
                    help="climb in pixels (default) or in Lucid's Fourier, colour-decorrelated "
                         "parameterization (larger, smoother patterns)")
    sp.add_argument("--max-size", type=pos_int, default=None, metavar="PX",
                    help="first shrink the photo so its longer side is at most PX (default: own size)")
    add_common(sp)
