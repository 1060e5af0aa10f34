"""Attribution methods: gradvis.attribution next to Captum and pytorch-grad-cam.

Models: the bundled TinyImageNet model (64x64) and a ResNet-18 (torchvision's
definition, seeded random weights, nothing downloaded) at 224x224, imported
into gradvis through ONNX. Methods: integrated gradients (50 steps), SmoothGrad
(NoiseTunnel over Saliency), Grad-CAM, Guided Grad-CAM, Occlusion, ScoreCAM
(pytorch-grad-cam) and DeepLift, each on both sides with the same inputs,
targets and settings.

Every (library, model, method) runs in a fresh process that imports only its
own library (torch and gradvis would otherwise share one libgomp), at the same
thread count; the process reports the best and median wall time over
``--reps`` calls after one warm-up call, and its peak resident memory
(``ru_maxrss``, which includes the library and model).

    python bench/bench_attribution.py [--threads 2] [--reps 3] [--quick] [--json out.json]

``--quick`` shrinks the batches (bundled 16 images, ResNet-18 2) and ScoreCAM
to one image, for a shared machine; the defaults are the full sizes (bundled
64 images, ResNet-18 8). Captum's IntegratedGradients and NoiseTunnel default
to one batch of all steps or samples; they are given gradvis's default
``internal_batch_size`` (printed) so that they fit in memory: peak memory is
compared at equal batching.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("ig", "smoothgrad", "gradcam", "guided_gradcam", "occlusion", "scorecam", "deeplift")
CAM_LAYER = {"bundled": "relu7", "resnet18": "layer4.1.relu_1"}
TORCH_LAYER = {"bundled": "relu7", "resnet18": "layer4"}


def sizes(model, quick):
    if model == "bundled":
        return dict(n=16 if quick else 64, hw=64, window=16, stride=8, nt=10, score_n=1 if quick else 4)
    return dict(n=2 if quick else 8, hw=224, window=56, stride=28, nt=10, score_n=1)


def inputs(model, quick):
    s = sizes(model, quick)
    X = np.random.default_rng(0).standard_normal((s["n"], 3, s["hw"], s["hw"])).astype(np.float32)
    t = np.arange(s["n"]) * 7 % (100 if model == "bundled" else 1000)
    return X, t, s


# ------------------------------------------------------------------ gradvis worker
def gradvis_worker(a):
    import gradvis
    import gradvis.attribution as A
    gradvis.set_num_threads(a.threads)
    if a.model == "bundled":
        m = gradvis.load_pretrained()
        layer = CAM_LAYER["bundled"]
    else:
        from gradvis.io.onnx_import import load_onnx
        m = load_onnx(os.path.join(a.tmp, "resnet18.onnx"))
        layer = [n.name for n in m.nodes if n.layer.type == "ReLU"][-1]
    X, t, s = inputs(a.model, a.quick)
    ib = A.default_batch_size(m, X.shape[1:], X.dtype)
    std = 0.15 * float(X.max() - X.min())
    fns = {
        "ig": lambda: A.integrated_gradients(X, t, m, n_steps=50),
        "smoothgrad": lambda: A.noise_tunnel(A.saliency, X, t, m, nt_samples=s["nt"], stdevs=std, abs=False),
        "gradcam": lambda: A.grad_cam(X, t, m, layer),
        "guided_gradcam": lambda: A.guided_grad_cam(X, t, m, layer),
        "occlusion": lambda: A.occlusion(X, t, m, (3, s["window"], s["window"]), strides=(3, s["stride"], s["stride"])),
        "scorecam": lambda: A.score_cam(X[:s["score_n"]], t[:s["score_n"]], m, layer),
        "deeplift": lambda: A.deeplift(X, t, m),
    }
    return fns[a.method], {"internal_batch_size": ib, "layer": layer}


# ------------------------------------------------------------------ torch worker
def _torch_bundled(tmp):
    import torch
    z = np.load(os.path.join(tmp, "bundled.npz"), allow_pickle=False)
    spec = json.loads(str(z["spec"]))
    mods = []
    for name, typ, cfg in spec:
        p = lambda k: torch.from_numpy(z[f"{name}.{k}"].copy())   # noqa: E731
        if typ == "Conv2d":
            pt, pb, pl, pr = cfg["padding"]
            c = torch.nn.Conv2d(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg["stride"],
                                (pt, pl), cfg["dilation"], cfg["groups"], bias=cfg["bias"])
            c.weight.data = p("weight")
            if cfg["bias"]:
                c.bias.data = p("bias")
            mods.append(c)
        elif typ == "BatchNorm2d":
            b = torch.nn.BatchNorm2d(cfg["num_features"], eps=cfg["eps"])
            b.weight.data, b.bias.data = p("gamma"), p("beta")
            b.running_mean.data, b.running_var.data = p("running_mean"), p("running_var")
            mods.append(b)
        elif typ == "ReLU":
            mods.append(torch.nn.ReLU())
        elif typ == "MaxPool2d":
            mods.append(torch.nn.MaxPool2d(cfg["kernel_size"], cfg["stride"]))
        elif typ == "GlobalAvgPool":
            mods.append(torch.nn.AdaptiveAvgPool2d(1))
        elif typ == "Flatten":
            mods.append(torch.nn.Flatten())
        elif typ == "Dropout":
            mods.append(torch.nn.Dropout(cfg["p"]))
        elif typ == "Linear":
            lin = torch.nn.Linear(cfg["in_features"], cfg["out_features"])
            lin.weight.data = torch.from_numpy(z[f"{name}.weight"].T.copy())
            lin.bias.data = p("bias")
            mods.append(lin)
        else:
            raise ValueError(f"no torch counterpart for {typ}")
    names = [n for n, _, _ in spec]
    net = torch.nn.Sequential(*mods).eval()
    return net, net[names.index("relu7")]


def _torchvision():
    from torch_compat import import_torchvision
    return import_torchvision()


def _resnet18():
    import torch
    torch.manual_seed(0)
    return _torchvision().models.resnet18(weights=None).eval()


def torch_worker(a):
    import torch
    torch.set_num_threads(a.threads)
    import captum.attr as ca
    if a.model == "bundled":
        net, layer = _torch_bundled(a.tmp)
    else:
        net = _resnet18()
        layer = net.layer4
    X, t, s = inputs(a.model, a.quick)
    x, tt = torch.from_numpy(X), torch.from_numpy(t)
    ib = a.internal_batch_size
    std = 0.15 * float(X.max() - X.min())

    def scorecam():
        _torchvision()      # pytorch-grad-cam imports torchvision
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        cam = pgc.ScoreCAM(net, [layer])
        cam.batch_size = ib
        n = s["score_n"]
        return cam(x[:n], [ClassifierOutputTarget(int(c)) for c in t[:n]])

    fns = {
        "ig": lambda: ca.IntegratedGradients(net).attribute(x, target=tt, n_steps=50, internal_batch_size=ib),
        "smoothgrad": lambda: ca.NoiseTunnel(ca.Saliency(net)).attribute(
            x, target=tt, nt_type="smoothgrad", nt_samples=s["nt"], stdevs=std, abs=False,
            nt_samples_batch_size=max(1, ib // len(X))),
        "gradcam": lambda: ca.LayerGradCam(net, layer).attribute(x, target=tt, relu_attributions=True),
        "guided_gradcam": lambda: ca.GuidedGradCam(net, layer).attribute(x, target=tt),
        "occlusion": lambda: ca.Occlusion(net).attribute(
            x, target=tt, sliding_window_shapes=(3, s["window"], s["window"]),
            strides=(3, s["stride"], s["stride"]), perturbations_per_eval=ib),
        "scorecam": scorecam,
        "deeplift": lambda: ca.DeepLift(net).attribute(x, target=tt),
    }
    return fns[a.method], {"internal_batch_size": ib}


def worker(a):
    import warnings
    warnings.filterwarnings("ignore")
    fn, info = (gradvis_worker if a.worker == "gradvis" else torch_worker)(a)
    try:
        fn()    # warm-up (caches, allocator)
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res = {"best": min(times), "median": statistics.median(times)}
    except Exception as e:      # a method the library cannot run on this model
        res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res.update(info)
    print("RESULT " + json.dumps(res))


# ------------------------------------------------------------------ preparation
def prepare(tmp, threads):
    """The bundled model's layers for torch (from a gradvis-only process) and the
    ResNet-18 ONNX file (from a torch-only process)."""
    code_g = f"""
import json, numpy as np, gradvis
m = gradvis.load_pretrained()
spec = [(n.name, n.layer.type, n.layer.config()) for n in m.nodes]
arrays = dict(m.params); arrays.update(m.buffers)
np.savez({os.path.join(tmp, 'bundled.npz')!r}, spec=json.dumps(spec), **arrays)
"""
    code_t = f"""
import sys; sys.path.insert(0, {HERE!r})
import torch, bench_attribution as b
net = b._resnet18()
torch.onnx.export(net, torch.zeros(1, 3, 224, 224), {os.path.join(tmp, 'resnet18.onnx')!r}, dynamo=False,
                  opset_version=17, input_names=['x'], dynamic_axes={{'x': {{0: 'n'}}}})
"""
    for code in (code_g, code_t):
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def run_one(lib, model, method, args, tmp, ib):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", lib, "--model", model, "--method", method,
           "--threads", str(args.threads), "--reps", str(args.reps), "--tmp", tmp,
           "--internal-batch-size", str(ib)] + (["--quick"] if args.quick else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (r.stderr.strip().splitlines() or ["no output"])[-1][:160]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", nargs="+", default=["bundled", "resnet18"], choices=["bundled", "resnet18"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", choices=["gradvis", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--internal-batch-size", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare(tmp, args.threads)
        for model in args.models:
            for method in args.methods:
                g = run_one("gradvis", model, method, args, tmp, 0)
                ib = g.get("internal_batch_size", 64)
                t = run_one("torch", model, method, args, tmp, ib)
                rows.append({"model": model, "method": method, "gradvis": g, "torch": t})
                print(f"{model:9s} {method:15s} gradvis {g.get('best', float('nan')):8.3f} s "
                      f"{g.get('peak_rss_mb', 0):7.0f} MB | reference {t.get('best', float('nan')):8.3f} s "
                      f"{t.get('peak_rss_mb', 0):7.0f} MB {t.get('error', '')}{g.get('error', '')}", flush=True)
    import gradvis
    meta = {"threads": args.threads, "reps": args.reps, "quick": args.quick, "simd": gradvis.simd_level(),
            "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    print(f"\n{meta}\n")
    print(f"| model | method | gradvis best (median) s | reference best (median) s | x ref | "
          f"gradvis peak MB | reference peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        g, t = r["gradvis"], r["torch"]
        if "best" in g and "best" in t:
            ratio = f"{t['best'] / g['best']:.2f}"
        else:
            ratio = "-"
        fmt = lambda d: f"{d['best']:.3f} ({d['median']:.3f})" if "best" in d else d.get("error", "-")  # noqa: E731
        print(f"| {r['model']} | {r['method']} | {fmt(g)} | {fmt(t)} | {ratio} | "
              f"{g.get('peak_rss_mb', 0):.0f} | {t.get('peak_rss_mb', 0):.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
