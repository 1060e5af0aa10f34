"""How fast are gradvis's attacks next to torchattacks on PyTorch (CPU)?

PGD-40 (L-inf), APGD-CE-100 and CW-L2-100 (one value of c, no binary search)
with the same settings on the same networks and images:

- the bundled TinyImageNet-100-A model, 64x64, batch 64 (PyTorch: the same
  layers and weights, bench_algorithms.torch_model);
- a ResNet-18 (random weights, plain torch.nn from bench_imported; imported
  with gradvis.from_torch), 224x224, batch 8.

Labels are each network's own clean predictions, so every image is attacked.
Each library runs in a process of its own that never imports the other (torch
and gradvis each bring a libgomp); a first process writes the networks (a
TorchScript trace for PyTorch, a .npz for gradvis) and the images to a temporary
folder. Both use ``--threads`` threads. gradvis's CW runs with
``abort_early=False``; torchattacks' CW stops early when its cost rises, so its
time is for at most as many steps. Prints a table last: seconds per attack (best
of ``--reps``), robust accuracy after it, and torchattacks time / gradvis time.

    python bench/bench_attacks.py [--threads 2] [--cases bundled resnet18]
        [--attacks pgd apgd cw] [--reps 1] [--quick] [--json out.json]

``--quick`` divides every attack's steps by 10 (a smoke run).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = {"pgd": 40, "apgd": 100, "cw": 100}
CASES = {"bundled": (64, 64), "resnet18": (8, 224)}   # batch, image size


# ---------------------------------------------------------------------------- preparation
def prepare(folder):
    """Write each case's networks, images and labels (this process imports both)."""
    import numpy as np
    import torch
    import gradvis
    sys.path.insert(0, HERE)
    from bench_algorithms import load_model, torch_model
    from bench_imported import ResNet18, randomize_bn

    class Unit(torch.nn.Module):
        """[0, 1] images -> the network's input (x * 255 - mean) / std."""
        def __init__(self, net, mean, std):
            super().__init__()
            self.net = net
            self.register_buffer("m", torch.tensor(np.asarray(mean, np.float32)).view(1, -1, 1, 1))
            self.register_buffer("s", torch.tensor(np.asarray(std, np.float32)).view(1, -1, 1, 1))

        def forward(self, x):
            return self.net((x * 255 - self.m) / self.s)

    rng = np.random.default_rng(0)
    for case, (batch, size) in CASES.items():
        if case == "bundled":
            gm = load_model()
            tnet = torch_model(gm)
        else:
            torch.manual_seed(0)
            tnet = ResNet18(num_classes=100).eval()
            randomize_bn(tnet)
            gm = gradvis.from_torch(tnet, torch.zeros(1, 3, size, size), mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225), scale=255)
        mean = gm.mean if gm.mean.ndim == 1 else gm.mean.mean(axis=(1, 2))
        unit = Unit(tnet, mean, gm.std).eval()
        # smooth random photos-like images on the 8-bit grid
        k = max(size // 8, 1)
        u8 = np.clip(rng.uniform(0, 255, (batch, size // k, size // k, 3)).repeat(k, 1).repeat(k, 2)
                     + rng.normal(0, 10, (batch, size, size, 3)), 0, 255).astype(np.uint8)
        X = gm.preprocess(u8)
        y = gm.predict(X).argmax(1)
        x01 = torch.tensor(np.ascontiguousarray(u8.transpose(0, 3, 1, 2)), dtype=torch.float32) / 255
        with torch.no_grad():
            agree = float((unit(x01).argmax(1).numpy() == y).mean())
        gm.save(os.path.join(folder, f"{case}.npz"), overwrite=True)
        torch.jit.save(torch.jit.trace(unit, x01[:1]), os.path.join(folder, f"{case}.pt"))
        np.save(os.path.join(folder, f"{case}_u8.npy"), u8)
        np.save(os.path.join(folder, f"{case}_y.npy"), y)
        print(json.dumps({"case": case, "agree": agree}), flush=True)


# ---------------------------------------------------------------------------- the timed runs
def run_gradvis(folder, case, attack, eps, steps, threads, reps):
    import numpy as np
    import gradvis
    from gradvis.attacks import apgd, cw_l2, pgd
    gradvis.set_num_threads(threads)
    m = gradvis.load_model(os.path.join(folder, f"{case}.npz"))
    X = m.preprocess(np.load(os.path.join(folder, f"{case}_u8.npy")))
    y = np.load(os.path.join(folder, f"{case}_y.npy"))
    best, rep = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        if attack == "pgd":
            _, rep = pgd(X, y, m, eps=eps, steps=steps, step_size=eps / 4, seed=0)
        elif attack == "apgd":
            _, rep = apgd(X, y, m, eps=eps, steps=steps, loss="ce", seed=0)
        else:
            _, rep = cw_l2(X, y, m, c=1.0, kappa=0.0, steps=steps, binary_steps=1, lr=0.01, abort_early=False)
        best = min(best, time.perf_counter() - t)
    return best, float(1 - rep["success"].mean())


def run_torchattacks(folder, case, attack, eps, steps, threads, reps):
    import numpy as np
    import torch
    import torchattacks
    torch.set_num_threads(threads)
    net = torch.jit.load(os.path.join(folder, f"{case}.pt")).eval()
    u8 = np.load(os.path.join(folder, f"{case}_u8.npy"))
    x = torch.tensor(np.ascontiguousarray(u8.transpose(0, 3, 1, 2)), dtype=torch.float32) / 255
    y = torch.tensor(np.load(os.path.join(folder, f"{case}_y.npy")))
    if attack == "pgd":
        atk = torchattacks.PGD(net, eps=eps / 255, alpha=eps / 4 / 255, steps=steps, random_start=True)
    elif attack == "apgd":
        atk = torchattacks.APGD(net, eps=eps / 255, steps=steps, loss="ce", seed=0)
    else:
        atk = torchattacks.CW(net, c=1.0, kappa=0.0, steps=steps, lr=0.01)
    best, adv = float("inf"), None
    for _ in range(reps):
        torch.manual_seed(0)
        t = time.perf_counter()
        adv = atk(x, y)
        best = min(best, time.perf_counter() - t)
    with torch.no_grad():
        acc = float((net(adv).argmax(1) == y).float().mean())
    return best, acc


def child(argv):
    lib, folder, case, attack, eps, steps, threads, reps = argv
    fn = run_gradvis if lib == "gradvis" else run_torchattacks
    sec, acc = fn(folder, case, attack, float(eps), int(steps), int(threads), int(reps))
    print(json.dumps({"seconds": sec, "robust_accuracy": acc}), flush=True)


def spawn(*args):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *map(str, args)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{args}: {out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--prep":
        return prepare(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--attacks", nargs="+", default=list(STEPS), choices=list(STEPS))
    p.add_argument("--eps", type=float, default=4.0, help="L-inf budget in grey levels (default: 4)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for line in spawn("--prep", folder):
            print(f"# {line['case']}: PyTorch and gradvis agree on {line['agree']:.0%} of the clean predictions",
                  flush=True)
        for case in args.cases:
            for attack in args.attacks:
                steps = max(STEPS[attack] // (10 if args.quick else 1), 1)
                r = {"case": case, "batch": CASES[case][0], "size": CASES[case][1], "attack": attack,
                     "steps": steps, "threads": args.threads}
                # alternate the order so neither side always runs first
                for lib in (("gradvis", "torchattacks") if len(rows) % 2 == 0 else ("torchattacks", "gradvis")):
                    (res,) = spawn("--child", lib, folder, case, attack, args.eps, steps, args.threads, args.reps)
                    r[lib] = res
                r["speedup"] = r["torchattacks"]["seconds"] / r["gradvis"]["seconds"]
                rows.append(r)
                print(f"# {case} {attack}-{steps}: gradvis {r['gradvis']['seconds']:.2f} s, "
                      f"torchattacks {r['torchattacks']['seconds']:.2f} s", flush=True)
    import torch  # noqa: F401  (only for the version line; the timed runs are done)
    print(f"\nL-inf eps {args.eps:g}/255 (CW: L2, c=1); {args.threads} threads; best of {args.reps}; "
          f"torch {torch.__version__}")
    head = (f"{'case':9s} {'batch':>5s} {'size':>4s} {'attack':>7s} {'steps':>5s} {'gradvis s':>10s} "
            f"{'torchatt. s':>11s} {'x faster':>8s} {'rob.acc gv':>10s} {'rob.acc ta':>10s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case']:9s} {r['batch']:5d} {r['size']:4d} {r['attack']:>7s} {r['steps']:5d} "
              f"{r['gradvis']['seconds']:10.2f} {r['torchattacks']['seconds']:11.2f} {r['speedup']:8.2f} "
              f"{r['gradvis']['robust_accuracy']:10.3f} {r['torchattacks']['robust_accuracy']:10.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
