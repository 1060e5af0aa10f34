"""Where does an imported network spend its time, layer by layer, next to PyTorch?

    python bench/profile_layers.py [--models mobilenet_v2 efficientnet_b0 ...] [--threads 1]
                                   [--batch 1] [--reps 5] [--simd avx2] [--top 12] [--json out.json]

For each torchvision network (random weights, batch 1 or --batch, 224x224, float32) a torch
process builds the module, exports it to ONNX (as bench/imported_worker.py does)
and times every leaf module's forward (forward pre-hook to forward hook) and
backward (the hook on the gradient of its output to the hook on the gradient of
its input), in a forward + input-gradient pass. A gradvis process, which never
imports torch (the two would share one OpenMP runtime), loads the ONNX file and
times every node's forward and input-gradient backward. Each keeps the best of
--reps passes per layer.

The report gives, per network:
  - per layer type (convolutions split into depthwise / grouped / 1x1 / kxk), the
    summed forward and backward milliseconds of both libraries and their ratio;
  - the convolutions matched one to one (both graphs hold them in the same order:
    the exporter folds batch norm into the convolution, so torch's BatchNorm2d and
    activation times are summed into the types, not matched), sorted by the time
    gradvis loses, the --top worst.
Ratios are torch ms / gradvis ms (above 1: gradvis is faster). Hook overhead adds a
few microseconds per torch module; the gradvis wrappers add about one each.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from torch_compat import gradvis_origin, simd_env   # does not import torch

SIZE = 224
NETWORKS = ["mobilenet_v2", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf"]


def conv_kind(cin, groups, k, stride):
    """A convolution's class in the tables: depthwise / grouped / 1x1 / kxk."""
    kk = "x".join(map(str, k))
    s = "" if tuple(stride) == (1, 1) else f" s{stride[0]}"
    if groups > 1 and groups == cin:
        return f"conv dw {kk}{s}"
    if groups > 1:
        return f"conv grouped {kk}{s}"
    return f"conv {kk}{s}"


def _build_torch(name):
    import torch
    from torch_compat import import_torchvision
    torchvision = import_torchvision()
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    for p in net.parameters():
        p.requires_grad_(False)
    return torch, net


def torch_side(name, out_dir, threads, reps, batch=1):
    import warnings
    torch, net = _build_torch(name)
    nn = torch.nn
    torch.set_num_threads(threads)
    x1 = torch.zeros(1, 3, SIZE, SIZE)
    path = f"{out_dir}/{name}.onnx"
    if not os.path.exists(path):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x1,), path, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32))
    R = torch.from_numpy(rng.standard_normal((batch, 1000)).astype(np.float32))
    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children())]
    rec = {}      # module name -> dict(fwd=[...], bwd=[...])
    marks = {}

    def kind(m, out):
        if isinstance(m, nn.Conv2d):
            return conv_kind(m.in_channels, m.groups, m.kernel_size, m.stride)
        return type(m).__name__

    def pre(n):
        def f(m, inp):
            marks[n] = time.perf_counter()
        return f

    def post(n):
        def f(m, inp, out):
            t = time.perf_counter()
            r = rec.setdefault(n, {"fwd": [], "bwd": [], "type": kind(m, out), "shape": list(out.shape)})
            r["fwd"].append(t - marks[n])
            if torch.is_grad_enabled() and out.requires_grad and inp and inp[0].requires_grad:
                start = {}
                out.register_hook(lambda g: start.__setitem__("t", time.perf_counter()))
                inp[0].register_hook(lambda g: r["bwd"].append(time.perf_counter() - start["t"]))
        return f

    hs = []
    for n, m in leaves:
        hs.append(m.register_forward_pre_hook(pre(n)))
        hs.append(m.register_forward_hook(post(n)))
    for _ in range(reps + 1):
        x = X.clone().requires_grad_(True)
        s = net(x)
        torch.autograd.grad((s * R).sum(), [x])
    for h in hs:
        h.remove()
    layers = [{"name": n, "type": r["type"], "shape": r["shape"], "fwd": min(r["fwd"][1:] or r["fwd"]),
               "bwd": min(r["bwd"][1:]) if len(r["bwd"]) > 1 else 0.0}
              for n, r in ((n, rec[n]) for n, _ in leaves if n in rec)]
    # in execution order (the order of the first forward)
    print(json.dumps({"layers": layers}))


def gradvis_side(name, out_dir, threads, reps, batch=1):
    import gradvis
    from gradvis.nn import Conv2d, passes
    gradvis.set_num_threads(threads)
    model = gradvis.load_onnx(f"{out_dir}/{name}.onnx")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    R = rng.standard_normal((batch, 1000)).astype(np.float32)
    rec = {n.name: {"fwd": [], "bwd": []} for n in model.nodes}

    # A backward pass without parameter gradients calls each convolution's kernel
    # through passes.conv_input_grad, not through the layer: its time is found by
    # the forward cache the call receives (the one the layer's forward returned).
    by_cache = {}

    def wrap(layer, attr, slot, name=None):
        orig = getattr(layer, attr)

        def timed(*a, **k):
            t0 = time.perf_counter()
            r = orig(*a, **k)
            slot.append(time.perf_counter() - t0)
            if name is not None and isinstance(r, tuple):   # (out, cache) or (out, pre, cache)
                by_cache[id(r[-1])] = name
            return r
        setattr(layer, attr, timed)

    direct_grad = passes.conv_input_grad

    def timed_grad(g, c, *a):
        t0 = time.perf_counter()
        r = direct_grad(g, c, *a)
        if r is not None and id(c) in by_cache:
            rec[by_cache[id(c)]]["bwd"].append(time.perf_counter() - t0)
        return r
    passes.conv_input_grad = timed_grad

    for node in model.nodes:
        wrap(node.layer, "forward", rec[node.name]["fwd"], node.name)
        if hasattr(node.layer, "forward_act"):   # a convolution applying the activation after it
            wrap(node.layer, "forward_act", rec[node.name]["fwd"], node.name)
        wrap(node.layer, "backward_inputs", rec[node.name]["bwd"])
        if hasattr(node.layer, "backward_inputs_act"):   # a convolution masking its input gradient
            wrap(node.layer, "backward_inputs_act", rec[node.name]["bwd"])
    fused = set()
    for _ in range(reps + 1):
        out, cache = model.forward(X)
        model.backward(R, cache, param_grads=False)
    for i, node in enumerate(model.nodes):
        if not rec[node.name]["fwd"] and i > 0 and rec[model.nodes[i - 1].name]["fwd"]:
            fused.add(node.name)
    layers = []
    for node in model.nodes:
        r, lay = rec[node.name], node.layer
        if isinstance(lay, Conv2d):
            kind = conv_kind(lay.in_channels, lay.groups, lay.kernel_size, lay.stride)
        else:
            kind = lay.type
        best = lambda v: min(v[1:] or v) if v else 0.0  # noqa: E731  (the first pass warms up)
        layers.append({"name": node.name, "type": kind, "fwd": best(r["fwd"]),
                       "bwd": best(r["bwd"]), "fused_into_prev": node.name in fused})
    print(json.dumps({"layers": layers, "simd": gradvis.simd_level(), "plan_fused": sorted(fused)}))


def run_side(side, name, out_dir, threads, reps, simd, batch=1):
    env = dict(os.environ)
    if simd:
        env.update(simd_env(simd))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--dir", out_dir, "--models", name,
           "--threads", str(threads), "--reps", str(reps), "--batch", str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{side} worker for {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name, tr, gv, top):
    """Prints the per-type table and the worst convolutions; returns them as a dict."""
    types = {}
    for side, res in (("torch", tr), ("gradvis", gv)):
        for lay in res["layers"]:
            t = types.setdefault(lay["type"], {"torch": [0.0, 0.0, 0], "gradvis": [0.0, 0.0, 0]})[side]
            t[0] += lay["fwd"] * 1e3
            t[1] += lay["bwd"] * 1e3
            t[2] += 1
    tot = {s: [sum(v[s][0] for v in types.values()), sum(v[s][1] for v in types.values())] for s in ("torch", "gradvis")}
    print(f"\n{name}: per layer type, ms summed over the layers (best of the passes each); "
          f"x = torch / gradvis; gradvis SIMD {gv.get('simd')}")
    head = f"{'type':<24} {'n pt':>4} {'n gv':>4} {'pt fwd':>8} {'gv fwd':>8} {'x fwd':>6} {'pt bwd':>8} {'gv bwd':>8} {'x bwd':>6}"
    print(head)
    print("-" * len(head))
    ratio = lambda a, b: f"{a / b:6.2f}" if b > 1e-6 and a > 1e-6 else f"{'':>6}"  # noqa: E731
    for k, v in sorted(types.items(), key=lambda kv: -(kv[1]["gradvis"][0] + kv[1]["gradvis"][1])):
        p, g = v["torch"], v["gradvis"]
        print(f"{k:<24} {p[2]:>4} {g[2]:>4} {p[0]:>8.3f} {g[0]:>8.3f} {ratio(p[0], g[0])} "
              f"{p[1]:>8.3f} {g[1]:>8.3f} {ratio(p[1], g[1])}")
    p, g = tot["torch"], tot["gradvis"]
    print(f"{'total (layers)':<24} {'':>4} {'':>4} {p[0]:>8.3f} {g[0]:>8.3f} {ratio(p[0], g[0])} "
          f"{p[1]:>8.3f} {g[1]:>8.3f} {ratio(p[1], g[1])}")
    pc = [lay for lay in tr["layers"] if lay["type"].startswith("conv")]
    gc = [lay for lay in gv["layers"] if lay["type"].startswith("conv")]
    matched = []
    if len(pc) == len(gc) and all(a["type"] == b["type"] for a, b in zip(pc, gc)):
        for a, b in zip(pc, gc):
            loss = (b["fwd"] + b["bwd"]) - (a["fwd"] + a["bwd"])
            matched.append({"torch": a["name"], "gradvis": b["name"], "type": a["type"], "shape": a["shape"],
                            "pt_fwd": a["fwd"] * 1e3, "gv_fwd": b["fwd"] * 1e3, "pt_bwd": a["bwd"] * 1e3,
                            "gv_bwd": b["bwd"] * 1e3, "lost_ms": loss * 1e3})
        matched.sort(key=lambda r: -r["lost_ms"])
        print(f"\n{name}: the {top} convolutions where gradvis loses most (fwd + bwd ms; the gradvis time "
              f"includes a fused activation)")
        head = f"{'gradvis node':<28} {'type':<18} {'out shape':<16} {'pt fwd':>7} {'gv fwd':>7} {'pt bwd':>7} {'gv bwd':>7} {'lost':>6}"
        print(head)
        print("-" * len(head))
        for r in matched[:top]:
            print(f"{r['gradvis'][:28]:<28} {r['type']:<18} {'x'.join(map(str, r['shape'][1:])):<16} "
                  f"{r['pt_fwd']:>7.3f} {r['gv_fwd']:>7.3f} {r['pt_bwd']:>7.3f} {r['gv_bwd']:>7.3f} {r['lost_ms']:>6.3f}")
    else:
        print(f"\n{name}: the convolutions do not match one to one ({len(pc)} torch, {len(gc)} gradvis)")
    return {"types": types, "convs": matched}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["torch", "gradvis"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=NETWORKS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1, help="images per pass")
    ap.add_argument("--reps", type=int, default=5, help="passes per library (the best time per layer is kept)")
    ap.add_argument("--simd", choices=["avx2", "avx512"], help="cap both libraries' SIMD level")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", help="write the tables here")
    a = ap.parse_args()
    if a.reps < 1 or a.threads < 1 or a.batch < 1:
        raise ValueError("--reps, --threads and --batch must be at least 1")
    if a.worker:
        return (torch_side if a.worker == "torch" else gradvis_side)(a.models[0], a.dir, a.threads, a.reps, a.batch)
    out = {}
    env = dict(os.environ)
    if a.simd:
        env.update(simd_env(a.simd))
    gradvis_origin(env)
    with tempfile.TemporaryDirectory() as d:
        for name in a.models:
            tr = run_side("torch", name, d, a.threads, a.reps, a.simd, a.batch)
            gv = run_side("gradvis", name, d, a.threads, a.reps, a.simd, a.batch)
            out[name] = report(name, tr, gv, a.top)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
