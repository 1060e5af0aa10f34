"""Legibility of class images: are images optimized for class c on the bundled model
recognized as c by a *different* network that never saw them?

The second network: 5 convolutions with a 3x3 stride-2 stem (the bundled net has
7, with a 5x5 stem), batch norm, ReLU, 3 max pools, global average pooling and a
linear layer, 1.0 M parameters, seed 1, trained by ``gradvis.train`` for
``--epochs`` epochs (3: 41% held-out top-1). Then for each class of ``--classes``
(all 100, or the even or odd half) and each of ``--seeds``, one image is made on
the bundled model by CS231n's class visualization (its defaults, 200 iterations)
and by ``gradvis.optvis.render`` of the class logit (``--steps``, Lucid's
standard transforms sized to the model's 64 pixels unless ``--transforms-size``),
and the second network's top-1 / top-5 rate of recognizing the class is printed
(and the bundled model's own, for reference), with a sign test over the images
that one method gets right and the other not. Both networks read the same uint8
images.

    python bench/legibility_optvis.py [--epochs 3] [--steps 256] [--seeds 0 1] [--classes all]
                                     [--run-dir runs/second] [--second runs/second/final_model.npz]
                                     [--transforms-size N] [--json out.json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import numpy as np  # noqa: E402

import gradvis  # noqa: E402
from gradvis import BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, Model, ReLU  # noqa: E402
from gradvis.io.datasets import load_tiny_imagenet  # noqa: E402
from gradvis.nn.architectures import TINY_IMAGENET_MEAN  # noqa: E402
from gradvis.optvis import objectives as O, param as P, render, transforms as T  # noqa: E402


def second_net(data):
    m = Model(input_shape=(3, 64, 64), mean=TINY_IMAGENET_MEAN, class_names=data.class_names,
              wnids=data.wnids, name="second", seed=1)
    c = 3
    for k, (w, pool) in enumerate([(32, False), (64, True), (128, True), (256, True), (256, False)], 1):
        m.add(f"conv{k}", Conv2d(c, w, 3, stride=2 if k == 1 else 1, padding=1, bias=False))
        m.add(f"bn{k}", BatchNorm2d(w)).add(f"relu{k}", ReLU())
        if pool:
            m.add(f"pool{k}", MaxPool2d(2))
        c = w
    return m.add("gap", GlobalAvgPool()).add("flatten", Flatten()).add("fc", Linear(c, 100))


def ranks(model, imgs, classes):
    """Rank of each image's class among the model's scores (0: top-1)."""
    s = model.predict(model.preprocess(imgs))
    return (s > s[np.arange(len(classes)), classes][:, None]).sum(axis=1)


def make_images(method, model, classes, seed, steps, tf_size):
    """One uint8 image per class, made on ``model`` 25 at a time: CS231n's defaults
    with ``seed``; the render with its starting spectrum and its transforms seeded
    by ``seed + b`` for the batch starting at class-list position b."""
    Xs = []
    for b in range(0, len(classes), 25):
        cs = classes[b:b + 25]
        if method == "cs231n":
            Xs.append(gradvis.create_class_visualization(cs, model, seed=seed))
        else:
            tf = "standard" if tf_size is None else T.standard_transforms(tf_size)
            p = P.image(*model.input_shape[1:], batch=len(cs), seed=seed + b)
            Xs.append(render([O.class_logit(int(c)) for c in cs], model, param=p, steps=steps, transforms=tf,
                             seed=seed + b)[0])
    return model.deprocess(np.concatenate(Xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--classes", choices=["all", "even", "odd"], default="all")
    ap.add_argument("--methods", nargs="+", default=["cs231n", "lucid"], choices=["cs231n", "lucid"])
    ap.add_argument("--transforms-size", type=int, default=None,
                    help="size the Lucid-style render's standard transforms for this many pixels "
                         "(default: the model's input, 64)")
    ap.add_argument("--run-dir", default="runs/second")
    ap.add_argument("--second", default=None, help="an already trained second net (skips training)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = load_tiny_imagenet()
    if args.second:
        second = gradvis.load_model(args.second)
    else:
        from gradvis.train.trainer import TrainConfig, train
        second = second_net(data)
        cfg = TrainConfig(epochs=args.epochs, seed=1, eval_every=0, log_every=50, full_size_epochs=0.5)
        train(second, data, cfg, run_dir=args.run_dir)
        second.save(os.path.join(args.run_dir, "final_model.npz"), overwrite=True)
    bundled = gradvis.load_pretrained()
    r = ranks(second, data.X_val, data.y_val)
    res = {"second_heldout_top1_top5": [float((r == 0).mean()), float((r < 5).mean())], "steps": args.steps,
           "seeds": args.seeds, "classes": args.classes, "transforms_size": args.transforms_size}
    classes = np.arange(bundled.num_classes)
    classes = {"all": classes, "even": classes[0::2], "odd": classes[1::2]}[args.classes]
    for name in args.methods:
        t0 = time.time()
        sec, own = [], []
        for seed in args.seeds:
            imgs = make_images(name, bundled, classes, seed, args.steps, args.transforms_size)
            sec.append(ranks(second, imgs, classes))
            own.append(ranks(bundled, imgs, classes))
            print(name, "seed", seed, "second top-1", float((sec[-1] == 0).mean()), flush=True)
        sec, own = np.stack(sec), np.stack(own)
        res[name] = {"second_rank": sec.tolist(), "bundled_rank": own.tolist(),
                     "second_top1": float((sec == 0).mean()), "second_top5": float((sec < 5).mean()),
                     "second_top1_per_seed": (sec == 0).mean(axis=1).tolist(),
                     "bundled_top1": float((own == 0).mean()), "seconds": time.time() - t0}
    print(f"\nsecond net: held-out top-1 {res['second_heldout_top1_top5'][0]:.1%}, "
          f"top-5 {res['second_heldout_top1_top5'][1]:.1%}")
    n = len(classes) * len(args.seeds)
    print(f"{f'images ({len(classes)} classes x {len(args.seeds)} seeds)':34s} {'second top-1':>12s} "
          f"{'per seed':>12s} {'second top-5':>12s} {'bundled top-1':>13s}")
    labels = {"cs231n": "CS231n class visualization", "lucid": f"optvis render ({args.steps})"}
    for name in args.methods:
        q = res[name]
        per = "/".join(f"{v:.0%}" for v in q["second_top1_per_seed"])
        print(f"{labels[name]:34s} {q['second_top1']:12.1%} {per:>12s} {q['second_top5']:12.1%} "
              f"{q['bundled_top1']:13.1%}")
    if len(args.methods) == 2:
        # paired by class and seed: images the second net gets right with one method and not the other
        a, b = (np.asarray(res[m]["second_rank"]) == 0 for m in args.methods)
        only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
        res["discordant"] = {args.methods[0]: only_a, args.methods[1]: only_b}
        p = _sign_test(only_a, only_b)
        res["sign_test_p"] = p
        print(f"of {n} (class, seed) pairs: only {args.methods[0]} right {only_a}, only {args.methods[1]} "
              f"right {only_b} (two-sided sign test p = {p:.3g})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


def _sign_test(a, b):
    """Two-sided exact binomial (sign) test of a successes against b, p = 1/2."""
    from math import comb
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


if __name__ == "__main__":
    main()
