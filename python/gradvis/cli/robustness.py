"""The ``robustness`` command: robust accuracy of a model under attack, over a range
of budgets, on an image folder or the TinyImageNet archive's held-out split."""
from __future__ import annotations

import csv
import json

import numpy as np

from .common import UsageError, add_command, add_common, model_from_args, need_classes, number, pos_int
from .training import labelled_images

ATTACK_CHOICES = ("fgsm", "pgd", "pgd-margin", "apgd-ce", "apgd-dlr", "apgd-t", "cw", "deepfool", "noise")


def cmd_robustness(args):
    from ..attacks import robust_accuracy
    from ..plot_robustness import security_curve
    from .common import setup
    run = setup(args)
    model = need_classes(model_from_args(args), "'robustness'")
    if len(set(args.attack)) != len(args.attack):
        raise UsageError(f"--attack names an attack twice: {' '.join(args.attack)}")
    eps = sorted(set(args.eps))
    if eps != list(args.eps):
        run.note(f"eps in increasing order, without repeats: {' '.join(f'{e:g}' for e in eps)}")
    paths = run.prepare_outputs(["robustness.csv", "robustness.json", "robustness.png"])
    size = tuple(model.input_shape[1:])
    X, y, split = labelled_images(run, model, args.data, size, args.seed)
    if args.limit is not None and args.limit < len(X):
        idx = np.sort(np.random.default_rng(args.seed).choice(len(X), args.limit, replace=False))
        X, y = X[idx], y[idx]
        split += f", {args.limit} drawn with seed {args.seed}"
    X = model.preprocess(X)
    bar = {}

    def progress(done, total, info):
        if "p" not in bar:
            bar["p"] = run.progress(total, "attacking")
        bar["p"](done - 1, None, {})

    try:
        table = robust_accuracy(X, y, model, attacks=list(args.attack), eps_list=eps, norm=args.norm,
                                targeted=args.targeted, seed=args.seed, steps=args.steps,
                                restarts=args.restarts, batch_size=args.batch_size, callback=progress)
    except MemoryError:
        raise UsageError("out of memory (use a smaller --batch-size)") from None
    finally:
        if "p" in bar:
            bar["p"].close()
    run.say(f"{args.data}: {split}, {len(X)} images; clean accuracy {table['clean_accuracy']:.3f}")
    names = table["attacks"]
    header = ["eps"] + names + ["worst_case", "success_rate", "success_rate_correct"]
    rows = []
    for i, e in enumerate(table["eps"]):
        rows.append([e] + [table["accuracy"][nm][i] for nm in names]
                    + [table["worst_case"][i], table["success_rate"][i], table["success_rate_correct"][i]])
    widths = [max(7, len(h) + 2) for h in header]
    run.say(f"robust accuracy, eps in grey levels ({'L-inf' if args.norm == 'inf' else 'L2'}), "
            f"{'targeted' if args.targeted else 'untargeted'}:")
    run.say("".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for r in rows:
        run.say("".join(f"{v:>{w}.3f}" if j else f"{v:>{w}g}" for j, (v, w) in enumerate(zip(r, widths))))
    for w in table["warnings"]:
        run.say(f"gradient masking? {w}")
    with open(paths[0], "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(header)
        wr.writerow([0] + [table["clean_accuracy"]] * len(names) + [table["clean_accuracy"], "", ""])
        for r in rows:
            wr.writerow(r)
    run.wrote(paths[0])
    out = {k: v for k, v in table.items() if k != "robust"}
    out.update(data=str(args.data), split=split, model=getattr(model, "name", None),
               steps=args.steps, restarts=args.restarts, seed=args.seed)
    with open(paths[1], "w") as f:
        json.dump(out, f, indent=1, default=float)
    run.wrote(paths[1])
    run.save_fig(security_curve(table), paths[2])
    return 0


def register(sub):
    """Add this module's command to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "robustness", "robust accuracy under attack over a range of budgets (eps in grey "
                     "levels), on an image folder or the TinyImageNet archive's held-out split; writes "
                     "robustness.csv, robustness.json and the security curve robustness.png", cmd_robustness)
    sp.add_argument("data", metavar="DATA")
    sp.add_argument("--attack", nargs="+", choices=ATTACK_CHOICES, default=["fgsm", "pgd", "apgd-ce"],
                    metavar="A", help=f"attacks, the worst case is taken over them: {', '.join(ATTACK_CHOICES)} "
                    "(default: fgsm pgd apgd-ce)")
    sp.add_argument("--eps", nargs="+", type=number(float, 0, name="number"), default=[1.0, 2.0, 4.0, 8.0],
                    metavar="E", help="budgets in 0-255 grey levels (default: 1 2 4 8)")
    sp.add_argument("--norm", choices=("inf", "2"), default="inf", help="norm of --eps (default: inf)")
    sp.add_argument("--targeted", action="store_true",
                    help="targeted attacks towards a random other class per image (drawn with --seed)")
    sp.add_argument("--limit", type=pos_int, default=None, metavar="N",
                    help="attack N images drawn at random (with --seed) instead of all")
    sp.add_argument("--steps", type=pos_int, default=None, metavar="N",
                    help="iterations of pgd/apgd/cw (default: each attack's: 10, 100, 100)")
    sp.add_argument("--restarts", type=pos_int, default=None, metavar="N", help="restarts of pgd/apgd (default: 1)")
    sp.add_argument("--batch-size", type=pos_int, default=64, help="images per attack call (default: 64)")
    add_common(sp, save_npy=False)
