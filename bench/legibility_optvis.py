"""Legibility of class images: are images optimized for class c on the bundled model
recognized as c by *other* networks that never saw them?

Two judges, trained on the same TinyImageNet-100-A classes by ``gradvis.train`` for
``--epochs`` epochs (3: about 41% held-out top-1 each), of architectures unlike the
bundled net's (7 convolutions with a 5x5 stride-2 stem) and unlike each other:

- ``second``: 5 convolutions with a 3x3 stride-2 stem, 3 max pools, seed 1;
- ``third``: 5 convolutions with a 5x5 stride-1 stem, 3 max pools, seed 2;

both with batch norm, ReLU, global average pooling and a linear layer. Then for each
class of ``--classes`` (all 100, or the even or odd half) and each of ``--seeds``,
one image is made on the bundled model by CS231n's class visualization (its
defaults, ``--iterations`` 200) and by ``gradvis.optvis.render`` of the class logit
(``--steps``, Lucid's standard transforms sized to the model's 64 pixels unless
``--transforms-size``). For each judge the script prints its top-1 / top-5 rate of
recognizing the class (and the bundled model's own, for reference), and a sign test
over the images that one method gets right and the other not. All networks read the
same uint8 images.

    python bench/legibility_optvis.py [--epochs 3] [--steps 256] [--iterations 200] [--seeds 0 1] [--classes all]
                                     [--judges second third] [--run-dir runs]
                                     [--judge-files runs/second/final_model.npz ...]
                                     [--transforms-size N] [--json out.json]

A judge is trained into ``<run-dir>/<name>/`` unless ``--judge-files`` gives its
saved model (one file per name of ``--judges``, in that order).
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


# name: (seed, [(width, kernel, stride, pool after)] per convolution)
JUDGES = {
    "second": (1, [(32, 3, 2, False), (64, 3, 1, True), (128, 3, 1, True), (256, 3, 1, True), (256, 3, 1, False)]),
    "third": (2, [(32, 5, 1, True), (64, 3, 1, True), (128, 3, 1, True), (256, 3, 1, False), (256, 3, 1, False)]),
}


def judge_net(data, name):
    """An untrained judge network (see the module docstring)."""
    seed, convs = JUDGES[name]
    m = Model(input_shape=(3, 64, 64), mean=TINY_IMAGENET_MEAN, class_names=data.class_names,
              wnids=data.wnids, name=name, seed=seed)
    c = 3
    for k, (w, ks, stride, pool) in enumerate(convs, 1):
        m.add(f"conv{k}", Conv2d(c, w, ks, stride=stride, padding=ks // 2, bias=False))
        m.add(f"bn{k}", BatchNorm2d(w)).add(f"relu{k}", ReLU())
        if pool:
            m.add(f"pool{k}", MaxPool2d(2))
        c = w
    return m.add("gap", GlobalAvgPool()).add("flatten", Flatten()).add("fc", Linear(c, 100))


def ranks(model, imgs, classes):
    """Rank of each image's class among the model's scores (0: top-1)."""
    s = model.predict(model.preprocess(imgs))
    return (s > s[np.arange(len(classes)), classes][:, None]).sum(axis=1)


def make_images(method, model, classes, seed, steps, tf_size, iterations=200):
    """One uint8 image per class, made on ``model`` 25 at a time: CS231n's defaults
    with ``seed``; the render with its starting spectrum and its transforms seeded
    by ``seed + b`` for the batch starting at class-list position b."""
    Xs = []
    for b in range(0, len(classes), 25):
        cs = classes[b:b + 25]
        if method == "cs231n":
            Xs.append(gradvis.create_class_visualization(cs, model, num_iterations=iterations, seed=seed))
        else:
            tf = "standard" if tf_size is None else T.standard_transforms(tf_size)
            p = P.image(*model.input_shape[1:], batch=len(cs), seed=seed + b)
            Xs.append(render([O.class_logit(int(c)) for c in cs], model, param=p, steps=steps, transforms=tf,
                             seed=seed + b)[0])
    return model.deprocess(np.concatenate(Xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=256, help="the render's steps")
    ap.add_argument("--iterations", type=int, default=200, help="CS231n's iterations (its default: 200)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--classes", choices=["all", "even", "odd"], default="all")
    ap.add_argument("--methods", nargs="+", default=["cs231n", "lucid"], choices=["cs231n", "lucid"])
    ap.add_argument("--transforms-size", type=int, default=None,
                    help="size the Lucid-style render's standard transforms for this many pixels "
                         "(default: the model's input, 64)")
    ap.add_argument("--judges", nargs="+", default=["second", "third"], choices=sorted(JUDGES))
    ap.add_argument("--run-dir", default="runs", help="judges are trained into RUN_DIR/<name>/")
    ap.add_argument("--judge-files", nargs="+", default=None,
                    help="already trained judges, one per name of --judges (skips training)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.judge_files is not None and len(args.judge_files) != len(args.judges):
        ap.error(f"--judge-files gives {len(args.judge_files)} files for {len(args.judges)} judges")
    data = load_tiny_imagenet()
    judges = {}
    for k, name in enumerate(args.judges):
        if args.judge_files:
            judges[name] = gradvis.load_model(args.judge_files[k])
            continue
        from gradvis.train.trainer import TrainConfig, train
        run_dir = os.path.join(args.run_dir, name)
        m = judge_net(data, name)
        cfg = TrainConfig(epochs=args.epochs, seed=JUDGES[name][0], eval_every=0, log_every=50,
                          full_size_epochs=0.5)
        train(m, data, cfg, run_dir=run_dir)
        m.save(os.path.join(run_dir, "final_model.npz"), overwrite=True)
        judges[name] = m
    bundled = gradvis.load_pretrained()
    res = {"steps": args.steps, "iterations": args.iterations, "seeds": args.seeds, "classes": args.classes,
           "transforms_size": args.transforms_size, "judges": {}}
    for name, m in judges.items():
        r = ranks(m, data.X_val, data.y_val)
        res["judges"][name] = {"heldout_top1_top5": [float((r == 0).mean()), float((r < 5).mean())]}
    classes = np.arange(bundled.num_classes)
    classes = {"all": classes, "even": classes[0::2], "odd": classes[1::2]}[args.classes]
    for method in args.methods:
        t0 = time.time()
        rk = {name: [] for name in judges}
        own = []
        for seed in args.seeds:
            imgs = make_images(method, bundled, classes, seed, args.steps, args.transforms_size, args.iterations)
            for name, m in judges.items():
                rk[name].append(ranks(m, imgs, classes))
            own.append(ranks(bundled, imgs, classes))
            print(method, "seed", seed, " ".join(f"{name} top-1 {float((v[-1] == 0).mean()):.2f}"
                                                  for name, v in rk.items()), flush=True)
        own = np.stack(own)
        res[method] = {"bundled_rank": own.tolist(), "bundled_top1": float((own == 0).mean()),
                       "seconds": time.time() - t0}
        for name in judges:
            r = np.stack(rk[name])
            res[method][name] = {"rank": r.tolist(), "top1": float((r == 0).mean()), "top5": float((r < 5).mean()),
                                 "top1_per_seed": (r == 0).mean(axis=1).tolist()}
    n = len(classes) * len(args.seeds)
    labels = {"cs231n": f"CS231n class visualization ({args.iterations})", "lucid": f"optvis render ({args.steps})"}
    for name in judges:
        h = res["judges"][name]["heldout_top1_top5"]
        print(f"\njudge {name}: held-out top-1 {h[0]:.1%}, top-5 {h[1]:.1%}")
        print(f"{f'images ({len(classes)} classes x {len(args.seeds)} seeds)':34s} {'top-1':>8s} "
              f"{'per seed':>12s} {'top-5':>8s} {'bundled top-1':>13s}")
        for method in args.methods:
            q = res[method][name]
            per = "/".join(f"{v:.0%}" for v in q["top1_per_seed"])
            print(f"{labels[method]:34s} {q['top1']:8.1%} {per:>12s} {q['top5']:8.1%} "
                  f"{res[method]['bundled_top1']:13.1%}")
        if len(args.methods) == 2:
            # paired by class and seed: images the judge gets right with one method and not the other
            a, b = (np.asarray(res[m][name]["rank"]) == 0 for m in args.methods)
            only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
            p = _sign_test(only_a, only_b)
            res["judges"][name].update(discordant={args.methods[0]: only_a, args.methods[1]: only_b},
                                       sign_test_p=p)
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
