"""Whole algorithms on the bundled model: gradvis next to the same loops in PyTorch.

Both sides run the same network with the same weights and inputs, written the
same way (forward, one backward to the input, a numpy/torch update), at equal
thread counts:

- saliency maps of 64 images;
- 200 iterations of class visualization (jitter, L2, blur every 10, clip);
- 100 iterations of single-octave DeepDream on a 256x256 photo;
- training throughput: forward + backward + SGD step on batches of 128.

    python bench/bench_algorithms.py [--threads 1 2] [--quick] [--json out.json]
"""
import argparse
import json
import platform
import time

import numpy as np

import gradvis
from bench_conv import warm_malloc
from gradvis import Conv2d, BatchNorm2d, ReLU, MaxPool2d, GlobalAvgPool, Flatten, Linear, Dropout
from gradvis.nn.gradients import input_gradient, one_hot
from gradvis.nn.architectures import default_net
from gradvis.nn.imageops import jitter, unjitter
from gradvis.layers import gaussian_blur, softmax_loss

try:
    import torch
    import torch.nn.functional as TF
except ImportError:
    torch = None


def load_model():
    try:
        return gradvis.load_pretrained()
    except FileNotFoundError:
        return default_net()   # random weights: the same work


def torch_model(m):
    """The gradvis chain as a torch.nn.Sequential with the same weights (eval mode)."""
    mods = []
    for node in m.nodes:
        lay, n = node.layer, node.name
        if isinstance(lay, Conv2d):
            pt, pb, pl, pr = lay.padding
            assert pt == pb and pl == pr
            c = torch.nn.Conv2d(lay.in_channels, lay.out_channels, lay.kernel_size, lay.stride, (pt, pl),
                                lay.dilation, lay.groups, bias=lay.bias)
            c.weight.data = torch.from_numpy(m.params[n + ".weight"].copy())
            if lay.bias:
                c.bias.data = torch.from_numpy(m.params[n + ".bias"].copy())
            mods.append(c)
        elif isinstance(lay, BatchNorm2d):
            b = torch.nn.BatchNorm2d(lay.num_features, eps=lay.eps, momentum=1 - lay.momentum)
            b.weight.data = torch.from_numpy(m.params[n + ".gamma"].copy())
            b.bias.data = torch.from_numpy(m.params[n + ".beta"].copy())
            b.running_mean.data = torch.from_numpy(m.buffers[n + ".running_mean"].copy())
            b.running_var.data = torch.from_numpy(m.buffers[n + ".running_var"].copy())
            mods.append(b)
        elif isinstance(lay, ReLU):
            mods.append(torch.nn.ReLU())
        elif isinstance(lay, MaxPool2d):
            mods.append(torch.nn.MaxPool2d(lay.kernel_size, lay.stride))
        elif isinstance(lay, GlobalAvgPool):
            mods.append(torch.nn.AdaptiveAvgPool2d(1))
        elif isinstance(lay, Flatten):
            mods.append(torch.nn.Flatten())
        elif isinstance(lay, Dropout):
            mods.append(torch.nn.Dropout(lay.p))
        elif isinstance(lay, Linear):
            f = torch.nn.Linear(lay.in_features, lay.out_features, bias=lay.bias)
            f.weight.data = torch.from_numpy(np.ascontiguousarray(m.params[n + ".weight"].T))
            if lay.bias:
                f.bias.data = torch.from_numpy(m.params[n + ".bias"].copy())
            mods.append(f)
        else:
            raise TypeError(f"no torch counterpart for {lay.type}")
    return torch.nn.Sequential(*mods).eval()


def gaussian_kernel1d(sigma, truncate=4.0):
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * x ** 2 / sigma ** 2)
    return (k / k.sum()).astype(np.float32)


def torch_blur(x, sigma):
    k = torch.from_numpy(gaussian_kernel1d(sigma))
    r = (len(k) - 1) // 2
    c = x.shape[1]
    x = TF.conv2d(TF.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return TF.conv2d(TF.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


# ------------------------------------------------------------------- workloads
def saliency_gradvis(m, X, y):
    return gradvis.compute_saliency_maps(X, y, m)


def saliency_torch(tm, X, y):
    x = torch.from_numpy(X).requires_grad_(True)
    s = tm(x)
    s.gather(1, torch.from_numpy(y).view(-1, 1)).sum().backward()
    return x.grad.abs().amax(1).numpy()


def classvis_gradvis(m, iters, target=3, lr=1.0, l2=1e-3, jit=4, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = m.input_range()
    X = (10 * rng.standard_normal((1, 3, 64, 64))).astype(np.float32)
    for t in range(iters):
        oy, ox = rng.integers(-jit, jit + 1, 2)
        s, cache = m.forward(jitter(X, oy, ox))
        g = unjitter(input_gradient(m, one_hot(1, s.shape[1], [target], s.dtype), cache), oy, ox)
        g = g / np.abs(g).mean() - 2 * l2 * X
        X = np.clip(X + lr * g, lo, hi)
        if (t + 1) % 10 == 0:
            X = gaussian_blur(X, sigma)
    return X


def classvis_torch(tm, m, iters, target=3, lr=1.0, l2=1e-3, jit=4, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = (torch.from_numpy(a) for a in m.input_range())
    X = torch.from_numpy((10 * rng.standard_normal((1, 3, 64, 64))).astype(np.float32))
    for t in range(iters):
        oy, ox = (int(v) for v in rng.integers(-jit, jit + 1, 2))
        x = torch.roll(X, (oy, ox), (2, 3)).requires_grad_(True)
        tm(x)[0, target].backward()
        g = torch.roll(x.grad, (-oy, -ox), (2, 3))
        g = g / g.abs().mean() - 2 * l2 * X
        X = torch.clamp(X + lr * g, lo, hi)
        if (t + 1) % 10 == 0:
            X = torch_blur(X, sigma)
    return X.numpy()


def dream_gradvis(m, X, layer, iters, lr=1.5, jit=16, seed=0):
    return gradvis.deepdream(X, layer, m, num_iterations=iters, learning_rate=lr, max_jitter=jit, seed=seed)


def dream_torch(tm_prefix, m, X, iters, lr=1.5, jit=16, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = (torch.from_numpy(a) for a in m.input_range())
    Xt = torch.from_numpy(X.copy())
    for _ in range(iters):
        oy, ox = (int(v) for v in rng.integers(-jit, jit + 1, 2))
        x = torch.roll(Xt, (oy, ox), (2, 3)).requires_grad_(True)
        a = tm_prefix(x)
        a.backward(a.detach())
        g = torch.roll(x.grad, (-oy, -ox), (2, 3))
        Xt = torch.clamp(Xt + lr * g / g.abs().mean(), lo, hi)
    return Xt.numpy()


def train_steps_gradvis(m, X, y, steps, lr=0.01):
    for _ in range(steps):
        s, cache = m.forward(X, mode="train")
        _, ds = softmax_loss(s, y)
        _, grads = m.backward(ds, cache, input_grad=False)
        for k, g in grads.items():
            m.params[k] -= lr * g


def train_steps_torch(tm, X, y, steps, lr=0.01):
    tm.train()
    opt = torch.optim.SGD(tm.parameters(), lr=lr)
    x, t = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        TF.cross_entropy(tm(x), t).backward()
        opt.step()
    tm.eval()


def best(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    warm_malloc()
    if torch is None:
        raise SystemExit("this benchmark compares with PyTorch: pip install torch==2.13.0")
    m = load_model()
    tm = torch_model(m)
    rng = np.random.default_rng(0)
    X64 = rng.uniform(-100, 100, (64, 3, 64, 64)).astype(np.float32)
    y64 = rng.integers(0, m.num_classes, 64)
    photo = rng.uniform(-100, 100, (1, 3, 256, 256)).astype(np.float32)
    Xtr = rng.uniform(-100, 100, (128, 3, 56, 56)).astype(np.float32)
    ytr = rng.integers(0, m.num_classes, 128)
    q = args.quick
    cv_iters, dream_iters, train_steps = (20, 10, 1) if q else (200, 100, 3)
    reps = 1 if q else args.reps
    layer = "relu5" if "relu5" in m.layer_names else m.layer_names[len(m.layer_names) // 2]
    prefix = tm[:m.index(layer) + 1]

    work = [
        ("saliency, 64 images", lambda: saliency_gradvis(m, X64, y64), lambda: saliency_torch(tm, X64, y64), 64, "img"),
        (f"class visualization, {cv_iters} it", lambda: classvis_gradvis(m, cv_iters),
         lambda: classvis_torch(tm, m, cv_iters), cv_iters, "it"),
        (f"DeepDream 256x256 {layer}, {dream_iters} it", lambda: dream_gradvis(m, photo, layer, dream_iters),
         lambda: dream_torch(prefix, m, photo, dream_iters), dream_iters, "it"),
        (f"training, batch 128 @56, {train_steps} steps", lambda: train_steps_gradvis(m.copy(), Xtr, ytr, train_steps),
         lambda: train_steps_torch(torch_model(m), Xtr, ytr, train_steps), 128 * train_steps, "img"),
    ]
    rows = []
    for nt in args.threads:
        gradvis.set_num_threads(nt)
        torch.set_num_threads(nt)
        for name, fg, ft, units, unit in work:
            tg = best(fg, reps)
            tt = best(ft, reps)
            rows.append(dict(workload=name, threads=nt, gradvis_s=tg, torch_s=tt, speedup=tt / tg,
                             gradvis_rate=units / tg, torch_rate=units / tt, unit=unit))
    info = dict(machine=platform.processor() or platform.machine(), simd=gradvis.simd_level(),
                torch=torch.__version__, command="python bench/bench_algorithms.py " +
                " ".join(f"--threads {' '.join(map(str, args.threads))}".split()) + (" --quick" if q else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)
    print(f"# {info['command']}  (simd {info['simd']}, torch {info['torch']})")
    print(f"{'workload':42s} {'thr':>3s} {'gradvis s':>10s} {'torch s':>10s} {'torch/gradvis':>13s} {'gradvis rate':>14s}")
    for r in rows:
        print(f"{r['workload']:42s} {r['threads']:3d} {r['gradvis_s']:10.3f} {r['torch_s']:10.3f} "
              f"{r['speedup']:13.2f} {r['gradvis_rate']:10.1f} {r['unit']}/s")


if __name__ == "__main__":
    main()
