"""``gradvis demo``: all five algorithms on the bundled model and a photo every
install has (Grace Hopper's portrait from matplotlib's sample data), written as
a gallery: PNG figures and an ``index.html`` with the settings used.

Part of the command line (it uses :mod:`gradvis.cli.common`'s helpers); the
algorithms and :mod:`gradvis.plot` know nothing of it.
"""
from __future__ import annotations

import html
import platform
import time
from pathlib import Path

import numpy as np

from .. import plot
from ..attacks import make_fooling_image
from ..attribution import compute_saliency_maps
from ..generation import create_class_visualization, deepdream, invert_features
from ..nn.losses import softmax
from .common import (UsageError, add_command, add_common, class_name, fit_image, load_model_file, read_image,
                     resize_rgb, resolve_class, sample_photo_path, setup, snapshot_steps)

__all__ = ["run_demo", "DEMO_FILES", "register"]

DEMO_FILES = ["predictions.png", "saliency.png", "fooling.png", "classvis.png", "classvis_snapshots.png",
              "inversion.png", "deepdream.png", "deepdream_snapshots.png", "index.html"]

# Classes to visualize and the fooling target, for the bundled TinyImageNet model;
# other models fall back to their first classes.
_DEMO_CLASSES = ("goldfish", "tarantula", "school bus", "lemon")
_FOOL_TARGET = "goldfish"

# Settings: (normal, --fast). Step sizes are in 0-255 pixel units, as the algorithms take them.
_SETTINGS = {
    "fooling": dict(learning_rate=(0.25, 1.0), max_iter=(100, 5)),
    "classvis": dict(num_iterations=(150, 3), learning_rate=(4.0, 4.0), l2_reg=(1e-3, 1e-3),
                     blur_every=(10, 4), max_jitter=(4, 4)),
    # the deep layer gets stronger priors (Mahendran & Vedaldi: deep layers need them)
    "inversion": dict(num_iterations=(200, 3), learning_rate=(8.0, 8.0), tv_reg=(1e-4, 1e-4),
                      deep_tv_reg=(3e-4, 3e-4), deep_blur_every=(10, 2), l2_reg=(1e-5, 1e-5)),
    "deepdream": dict(max_size=(256, 80), octaves=(3, 2), num_iterations=(10, 1), learning_rate=(3.0, 3.0)),
}


def _settings(name, fast):
    return {k: v[1 if fast else 0] for k, v in _SETTINGS[name].items()}


def _demo_layers(model):
    """(shallow, middle, deep) spatial layers, preferring ReLU outputs."""
    shapes = model.output_shapes()
    spatial = [n for n in model.layer_names if len(shapes[n]) == 3]
    relus = [n for n in spatial if n.lower().startswith("relu")] or spatial
    if not relus:
        raise UsageError("the model has no convolutional layers; the demo needs some")
    k = len(relus)
    return relus[k // 4], relus[k // 2], relus[(3 * k) // 4]


def _demo_classes(model, names, count):
    out = []
    for n in names:
        try:
            out.append(resolve_class(model, n))
        except UsageError:
            pass
    for i in range(model.num_classes):
        if len(out) >= count:
            break
        if i not in out:
            out.append(i)
    return out[:count]


def _extra_images(photo_rgb, size):
    """Two more 64x64 views for saliency: a close-up of the face, and matplotlib's
    sample 'present' clip art when the install has it."""
    out = []
    h, w = photo_rgb.shape[:2]
    # Grace Hopper's face: the upper-middle of the portrait
    face = photo_rgb[int(0.12 * h):int(0.62 * h), int(0.2 * w):int(0.8 * w)]
    out.append(("grace_hopper.jpg, face close-up", fit_image(face, size)[0]))
    present = Path(sample_photo_path()).with_name("Minduka_Present_Blue_Pack.png")
    if present.is_file():
        try:
            out.append((present.name, fit_image(read_image(present).rgb, size)[0]))
        except UsageError:
            pass
    return out


def _save(run, fig, path):
    run.save_fig(fig, path, compact=True)


def _save_png_compact(run, rgb, path):
    from PIL import Image
    Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    run.wrote(path)


class _Timer:
    def __init__(self):
        self.t = time.perf_counter()

    def lap(self):
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


def run_demo(run, args):
    fast = bool(args.fast)
    paths = dict(zip(DEMO_FILES, run.prepare_outputs(DEMO_FILES)))
    t_all = time.perf_counter()
    model = load_model_file(args.model)
    seed = args.seed
    size = tuple(model.input_shape[1:])
    shallow, middle, deep = _demo_layers(model)
    photo_path = sample_photo_path()
    photo = read_image(photo_path)
    img, what = fit_image(photo.rgb, size)
    run.note(f"photo: {photo_path} ({photo.rgb.shape[1]}x{photo.rgb.shape[0]}); {what} for the classifier")
    sections = []
    timer = _Timer()

    # -------------------------------------------------------------- predictions + saliency
    views = [("grace_hopper.jpg", img)] + _extra_images(photo.rgb, size)
    imgs = np.stack([v[1] for v in views])
    X = model.preprocess(imgs)
    probs = softmax(model.predict(X))
    top = [[(class_name(model, i), float(p[i])) for i in np.argsort(-p)[:5]] for p in probs]
    _save(run, plot.predictions_figure(imgs, top, titles=[v[0] for v in views]), paths["predictions.png"])
    lines = [f"{v[0]}: " + ", ".join(f"{n} {p:.2f}" for n, p in t[:3]) for v, t in zip(views, top)]
    sections.append(dict(title="Predictions", files=["predictions.png"], seconds=timer.lap(),
                         text="The model's top-5 classes for the photo (64x64 center crop), a close-up "
                              "of the face and a clip-art image.",
                         settings={"images": "resized and center-cropped to "
                                             f"{size[1]}x{size[0]}", "top-k": 5},
                         results=lines))
    y = probs.argmax(axis=1)
    sal = compute_saliency_maps(X, y, model)
    _save(run, plot.saliency_figure(imgs, sal, titles=[f"{class_name(model, c)} ({probs[i, c]:.2f})"
                                            for i, c in enumerate(y)]), paths["saliency.png"])
    sections.append(dict(title="Saliency maps", files=["saliency.png"], seconds=timer.lap(),
                         text="|d score / d image| of each image's predicted class, maximum over the "
                              "colour channels (Simonyan et al. 2013); bottom row: the map over the image.",
                         settings={"class": "the predicted class", "method": "plain gradient"}))

    # -------------------------------------------------------------- fooling
    st = _settings("fooling", fast)
    target = _demo_classes(model, [_FOOL_TARGET], 1)[0]
    if target == int(y[0]):
        target = (target + 1) % model.num_classes
    prog = run.progress(st["max_iter"], f"fooling -> {class_name(model, target)}")
    try:
        Xf, rep = make_fooling_image(X[:1], target, model, learning_rate=st["learning_rate"],
                                     max_iter=st["max_iter"], return_report=True, callback=prog)
    finally:
        prog.close()
    fooled = model.deprocess(Xf)[0]
    ok = bool(rep["success"][0])
    _save(run, plot.fooling_figure(img, fooled, titles=[(
        f"original: {class_name(model, int(y[0]))} ({probs[0, y[0]]:.2f})",
        f"fooling: {class_name(model, int(rep['predicted'][0]))} ({float(rep['target_prob'][0]):.2f})")]), paths["fooling.png"])
    sections.append(dict(title="Fooling image", files=["fooling.png"], seconds=timer.lap(),
                         text="Gradient ascent on the target class score, in small signed steps, until the "
                              "model predicts the target; original | fooling image | difference | "
                              "difference magnified 10x (gray = no change).",
                         settings={"target": class_name(model, target),
                                   "step (signed, grey levels per pixel)": st["learning_rate"],
                                   "max steps": st["max_iter"], "budget": "none"},
                         results=[f"fooled: {'yes' if ok else 'no'} after {int(rep['iterations'][0])} steps; "
                                  f"largest change {float(rep['linf_pixels'][0]):.1f}/255"]))

    # -------------------------------------------------------------- class visualization
    st = _settings("classvis", fast)
    classes = _demo_classes(model, _DEMO_CLASSES, 4)
    steps = snapshot_steps(st["num_iterations"], 6)
    prog = run.progress(st["num_iterations"], "class visualization", model, steps)
    try:
        Xc = create_class_visualization(classes, model, num_iterations=st["num_iterations"],
                                        learning_rate=st["learning_rate"], l2_reg=st["l2_reg"],
                                        blur_every=st["blur_every"], max_jitter=st["max_jitter"],
                                        seed=seed, callback=prog)
    finally:
        prog.close()
    pc = softmax(model.predict(Xc))
    names = [class_name(model, c) for c in classes]
    _save(run, plot.image_grid(list(model.deprocess(Xc)), [f"{n} ({pc[i, c]:.2f})" for i, (n, c) in
                                                enumerate(zip(names, classes))]), paths["classvis.png"])
    _save(run, plot.snapshots_figure([s[0] for _, s in prog.snapshots], [f"t = {t}" for t, _ in prog.snapshots],
                          title=f"class visualization of {names[0]} over the iterations"), paths["classvis_snapshots.png"])
    sections.append(dict(title="Class visualization", files=["classvis.png", "classvis_snapshots.png"],
                         seconds=timer.lap(),
                         text="Gradient ascent from noise on score - l2_reg * ||X||^2, with random jitter, "
                              "Gaussian blur and clipping (Simonyan et al. 2013; Yosinski et al. 2015); "
                              "the model's probability for the class in brackets.",
                         settings={"classes": ", ".join(names), "iterations": st["num_iterations"],
                                   "step (mean per pixel, pixel units)": st["learning_rate"],
                                   "l2_reg": st["l2_reg"], "blur": f"Gaussian sigma 0.5 every {st['blur_every']}",
                                   "max jitter (px)": st["max_jitter"], "seed": seed}))

    # -------------------------------------------------------------- feature inversion
    st = _settings("inversion", fast)
    rows, errs = {}, []
    for layer in (shallow, deep):
        feats, _ = model.forward(X[:1], end=layer, mode="test")
        steps = snapshot_steps(st["num_iterations"], 5)
        prog = run.progress(st["num_iterations"], f"inverting {layer}", model, steps)
        is_deep = layer == deep
        try:
            invert_features(feats, layer, model, num_iterations=st["num_iterations"],
                            learning_rate=st["learning_rate"],
                            tv_reg=st["deep_tv_reg"] if is_deep else st["tv_reg"],
                            blur_every=st["deep_blur_every"] if is_deep else 0,
                            l2_reg=st["l2_reg"], seed=seed, callback=prog)
        finally:
            prog.close()
        rows[f"{layer}\n{'shallow' if layer == shallow else 'deep'}"] = [(s[0], f"t = {t}") for t, s in prog.snapshots]
        errs.append(f"{layer}: relative feature error "
                    f"{float(np.asarray(prog.last_info.get('feature_error', [np.nan]))[0]):.3f}")
    _save(run, plot.inversion_figure(img, rows, title="feature inversion: shallow vs deep layer"), paths["inversion.png"])
    sections.append(dict(title="Feature inversion", files=["inversion.png"], seconds=timer.lap(),
                         text="An image whose features at one layer match the photo's, by Adam from noise "
                              "with total-variation and L2 priors (Mahendran & Vedaldi 2015). The shallow "
                              "layer keeps nearly everything; the deep one keeps parts, not their arrangement.",
                         settings={"layers": f"{shallow} (shallow), {deep} (deep)",
                                   "iterations": st["num_iterations"],
                                   "Adam step (pixel units)": st["learning_rate"],
                                   "tv_reg": f"{st['tv_reg']:g} ({shallow}), {st['deep_tv_reg']:g} ({deep})",
                                   "blur": f"Gaussian sigma 0.5 every {st['deep_blur_every']} steps ({deep} only)",
                                   "l2_reg": st["l2_reg"], "seed": seed},
                         results=errs))

    # -------------------------------------------------------------- DeepDream
    st = _settings("deepdream", fast)
    h, w = photo.rgb.shape[:2]
    s = min(1.0, st["max_size"] / max(h, w))
    rgb = resize_rgb(photo.rgb, (max(1, round(h * s)), max(1, round(w * s))))
    run.note(f"DeepDream on the photo at {rgb.shape[1]}x{rgb.shape[0]} (shrunk from {w}x{h} to keep the demo quick)")
    total = st["octaves"] * st["num_iterations"]
    steps = [st["num_iterations"] * (o + 1) for o in range(st["octaves"])]
    prog = run.progress(total, f"DeepDream {middle}", model, steps)
    try:
        Xd = deepdream(model.preprocess(rgb), middle, model, num_iterations=st["num_iterations"],
                       learning_rate=st["learning_rate"], octaves=st["octaves"], seed=seed,
                       callback=prog)
    finally:
        prog.close()
    dream = model.deprocess(Xd)[0]
    _save_png_compact(run, dream, paths["deepdream.png"])
    _save(run, plot.snapshots_figure([rgb] + [resize_rgb(sn[0], rgb.shape[:2]) for _, sn in prog.snapshots],
                          ["original"] + [f"octave {o + 1}/{st['octaves']}" for o in range(len(prog.snapshots))],
                          title=f"DeepDream, layer {middle}"), paths["deepdream_snapshots.png"])
    sections.append(dict(title="DeepDream", files=["deepdream.png", "deepdream_snapshots.png"],
                         seconds=timer.lap(),
                         text="Gradient ascent on the squared activations of one layer, on a pyramid of "
                              "scales with the detail carried up (Mordvintsev et al. 2015). Any photo size "
                              "works: the layer is convolutional.",
                         settings={"layer": middle, "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
                                   "octaves": f"{st['octaves']} (scale 1.4)",
                                   "steps per octave": st["num_iterations"],
                                   "step (mean per pixel, pixel units)": st["learning_rate"],
                                   "max jitter (px)": 16, "seed": seed}))

    total_s = time.perf_counter() - t_all
    _write_index(paths["index.html"], sections, model, args, photo_path, fast, total_s)
    run.wrote(paths["index.html"])
    run.say(f"gallery: {paths['index.html']} ({total_s:.0f} s)")
    return 0


def _write_index(path, sections, model, args, photo_path, fast, seconds):
    from .. import __version__
    e = html.escape
    model_desc = e(str(args.model) if args.model else "the bundled TinyImageNet-100-A model")
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<title>gradvis gallery</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:90%;margin:.5em 0}"
        "td{border:1px solid #ddd;padding:2px 8px}td:first-child{color:#555}"
        "section{margin-bottom:2.5em}.small{color:#666;font-size:85%}</style></head><body>",
        "<h1>What the network sees</h1>",
        f"<p>gradvis {e(__version__)} on {model_desc} ({e(repr(model))}), input "
        f"{model.input_shape[2]}x{model.input_shape[1]} RGB. Photo: <code>{e(Path(photo_path).name)}</code> "
        f"from matplotlib's sample data, resized and center-cropped to the model's input size where a "
        f"classifier needs it. Seed {args.seed}{'; <b>--fast</b> (few iterations, rough pictures)' if fast else ''}.</p>",
        "<ul>" + "".join(f"<li><a href='#{_anchor(s['title'])}'>{e(s['title'])}</a></li>" for s in sections) + "</ul>",
    ]
    for s in sections:
        parts.append(f"<section id='{_anchor(s['title'])}'><h2>{e(s['title'])}</h2><p>{e(s['text'])}</p>")
        for f in s["files"]:
            parts.append(f"<p><img src='{e(f)}' alt='{e(s['title'])}: {e(f)}'></p>")
        rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in s["settings"].items())
        parts.append(f"<table>{rows}<tr><td>time</td><td>{s['seconds']:.1f} s</td></tr></table>")
        if s.get("results"):
            parts.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in s["results"]) + "</ul>")
        parts.append("</section>")
    parts.append(f"<p class='small'>Made by <code>gradvis demo</code> in {seconds:.0f} s on "
                 f"{e(platform.machine())}, {time.strftime('%Y-%m-%d %H:%M')}.</p></body></html>")
    Path(path).write_text("\n".join(parts), encoding="utf-8")


def _anchor(title):
    return "".join(c if c.isalnum() else "-" for c in title.lower())


def cmd_demo(args):
    run = setup(args)
    return run_demo(run, args)


DEFAULT_OUT = "gradvis-demo"


def register(sub):
    """Add this module's commands to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "demo", "run all five algorithms on the bundled model and a sample photo; write a "
             "gallery (PNG figures and index.html)", cmd_demo)
    sp.add_argument("--fast", action="store_true", help="few iterations (a quick check, rough pictures)")
    add_common(sp, save_npy=False)
    sp.set_defaults(out=DEFAULT_OUT)     # a gallery of its own, not nine files in the current directory
    for action in sp._actions:
        if action.dest == "out":
            action.help = f"output directory (default: ./{DEFAULT_OUT}/)"
