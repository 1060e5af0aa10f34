"""One side of bench_imported.py's torchvision rows, in a process of its own that
imports only its library (torch and gradvis would share one OpenMP runtime):

    python bench/imported_worker.py torch NAME DIR --threads 1 2 --reps 3
        builds torchvision's NAME (random weights, random batch-norm statistics),
        exports it to DIR/NAME.onnx with the TorchScript exporter, writes the input,
        the output weights and the float64 reference to DIR/NAME.npz, times forward
        plus backward to the input, and prints one JSON line;
    python bench/imported_worker.py gradvis NAME DIR --threads 1 2 --reps 3
        imports DIR/NAME.onnx with gradvis.load_onnx, times the same pass, and prints
        one JSON line with the float32 errors against the float64 reference.
    --passes fwd fwdgrad times the forward pass alone as well (bench_modern.py --networks):
    torch under no_grad, gradvis with cache=False (nothing kept for a backward pass).
"""
import argparse
import json
import time

import numpy as np

SIZE = 224


def best_time(fn, reps):
    fn()   # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def torch_side(name, out_dir, threads, reps, passes=None):
    import warnings

    import torch
    from torch_compat import import_torchvision
    torchvision = import_torchvision()
    nn = torch.nn
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    for p in net.parameters():
        p.requires_grad_(False)
    x1 = torch.zeros(1, 3, SIZE, SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        torch.onnx.export(net, (x1,), f"{out_dir}/{name}.onnx", dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
        t_export = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    R = rng.standard_normal((1, 1000)).astype(np.float32)
    xt, rt = torch.from_numpy(X), torch.from_numpy(R)
    macs = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            macs.append(out.numel() * m.in_features)
    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(xt)
    for h in hs:
        h.remove()

    def tr():
        x = xt.clone().requires_grad_(True)
        s = net(x)
        (dx,) = torch.autograd.grad((s * rt).sum(), [x])
        return s.detach().numpy(), dx.numpy()

    def tr_fwd():
        with torch.no_grad():
            return net(xt)

    ms = {}
    for nt in threads:
        torch.set_num_threads(nt)
        if passes is None:
            ms[nt] = 1e3 * best_time(tr, reps)
        else:
            for ps in passes:
                ms[f"{ps}|{nt}"] = 1e3 * best_time(tr if ps == "fwdgrad" else tr_fwd, reps)
    s32, dx32 = tr()
    net.double()
    x = torch.from_numpy(X.astype(np.float64)).requires_grad_(True)
    s64 = net(x)
    (dx64,) = torch.autograd.grad((s64 * rt.double()).sum(), [x])
    s64, dx64 = s64.detach().numpy(), dx64.numpy()
    np.savez(f"{out_dir}/{name}.npz", X=X, R=R, s64=s64, dx64=dx64)
    print(json.dumps({"ms": ms, "gflop": 4 * sum(macs) / 1e9, "export_s": t_export,
                      "err": max(rel_err(s32, s64), rel_err(dx32, dx64)), "torch": torch.__version__}))


def gradvis_side(name, out_dir, threads, reps, passes=None):
    import gradvis
    t0 = time.perf_counter()
    model = gradvis.load_onnx(f"{out_dir}/{name}.onnx")
    t_import = time.perf_counter() - t0
    d = np.load(f"{out_dir}/{name}.npz")
    X, R = d["X"], d["R"]

    def gv():
        s, cache = model.forward(X)
        return s, model.backward(R, cache, param_grads=False)[0]

    ms = {}
    for nt in threads:
        gradvis.set_num_threads(nt)
        if passes is None:
            ms[nt] = 1e3 * best_time(gv, reps)
        else:
            for ps in passes:
                ms[f"{ps}|{nt}"] = 1e3 * best_time(
                    gv if ps == "fwdgrad" else (lambda: model.forward(X, cache=False)), reps)
    s, dx = gv()
    print(json.dumps({"ms": ms, "import_s": t_import, "layers": len(model.nodes),
                      "err": max(rel_err(s, d["s64"]), rel_err(dx, d["dx64"])), "simd": gradvis.simd_level()}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("side", choices=["torch", "gradvis"])
    ap.add_argument("name")
    ap.add_argument("dir")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--passes", nargs="+", choices=["fwd", "fwdgrad"],
                    help="time these passes (keys 'PASS|THREADS'); default forward + input gradient only")
    a = ap.parse_args()
    (torch_side if a.side == "torch" else gradvis_side)(a.name, a.dir, a.threads, a.reps, a.passes)
