"""Legibility of class images: are images optimized for class c on the bundled model
recognized as c by a *different* network that never saw them?

The second network: 5 convolutions with a 3x3 stride-2 stem (the bundled net has
7, with a 5x5 stem), batch norm, ReLU, 3 max pools, global average pooling and a
linear layer, 1.0 M parameters, seed 1, trained by ``gradvis.train`` for
``--epochs`` epochs (3: 41% held-out top-1). Then for each of the 100 classes one
image is made on the bundled model by CS231n's class visualization (its defaults,
200 iterations) and by ``gradvis.optvis.render`` of the class logit (``--steps``),
and the second network's top-1 / top-5 rate of recognizing the class is printed
(and the bundled model's own, for reference). Both networks read the same uint8 images.

    python bench/legibility_optvis.py [--epochs 3] [--steps 256] [--run-dir runs/second]
                                     [--second runs/second/final_model.npz] [--json out.json]
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
from gradvis.optvis import objectives as O, render  # noqa: E402


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


def rates(model, X, y):
    top = np.argsort(-model.predict(X), axis=1)[:, :5]
    return float((top[:, 0] == y).mean()), float((top == y[:, None]).any(axis=1).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=256)
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
    res = {"second_heldout_top1_top5": rates(second, second.preprocess(data.X_val), data.y_val),
           "steps": args.steps}
    classes = np.arange(bundled.num_classes)
    for name in ("cs231n", "lucid"):
        t0 = time.time()
        Xs = []
        for b in range(0, len(classes), 25):
            cs = classes[b:b + 25]
            if name == "cs231n":
                Xs.append(gradvis.create_class_visualization(cs, bundled, seed=0))
            else:
                Xs.append(render([O.class_logit(int(c)) for c in cs], bundled, steps=args.steps, seed=0)[0])
        imgs = bundled.deprocess(np.concatenate(Xs))
        res[name] = {"second_top1_top5": rates(second, second.preprocess(imgs), classes),
                     "bundled_top1_top5": rates(bundled, bundled.preprocess(imgs), classes),
                     "seconds": time.time() - t0}
        print(name, res[name], flush=True)
    print(f"\nsecond net: held-out top-1 {res['second_heldout_top1_top5'][0]:.1%}, "
          f"top-5 {res['second_heldout_top1_top5'][1]:.1%}")
    print(f"{'images (100 classes)':28s} {'second top-1':>12s} {'second top-5':>12s} {'bundled top-1':>13s}")
    for name, label in (("cs231n", "CS231n class visualization"), ("lucid", f"optvis render ({args.steps})")):
        r = res[name]
        print(f"{label:28s} {r['second_top1_top5'][0]:12.0%} {r['second_top1_top5'][1]:12.0%} "
              f"{r['bundled_top1_top5'][0]:13.0%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
