"""gradvis.attribution against Captum 0.9.0 and pytorch-grad-cam 1.5.7 on the
same networks (PyTorch nets imported through ONNX): a VGG-like net with max
pools, a ResNet-like net with residual adds and a MobileNet-like net with ReLU6
and depthwise convolutions. Relative error (max |difference| / max |reference|)
<= 1e-4 in float32 and <= 1e-6 in float64 (the float64 nets carry weights that
the ONNX export rounded to float32 when it folded batch norms, which bounds the
agreement). Under CI a missing reference fails instead of skipping.

The float32 runs of every net are CI's; the float64 runs are marked slow
except on the VGG-like net."""
import numpy as np
import pytest

from attribution_nets import (CAM_LAYER, NETS, captum, make_pair, module, numpy, pytorch_grad_cam, rel_err,
                              tensor)

import gradvis.attribution as A
from gradvis.attribution.gradients import noise_rows

TOL = {np.float32: 1e-4, np.float64: 1e-6}

CASES = [pytest.param(net, np.float32, id=f"{net}-float32") for net in NETS] + [
    pytest.param(net, np.float64, id=f"{net}-float64",
                 marks=() if net == "vgg" else pytest.mark.slow) for net in NETS]


@pytest.fixture(scope="module")
def pairs():
    cache = {}

    def get(name, dtype):
        if (name, dtype) not in cache:
            cache[name, dtype] = make_pair(name, dtype)
        return cache[name, dtype]
    return get


def _ref(method, *args, **kwargs):
    return numpy(method(*args, **kwargs))


@pytest.mark.parametrize("net_name,dtype", CASES)
def test_gradient_methods_match_captum(pairs, net_name, dtype):
    ca = captum()
    net, model, X, t = pairs(net_name, dtype)
    x, tt = tensor(X), tensor(t)
    tol = TOL[dtype]
    for ab in (True, False):
        out = A.saliency(X, t, model, abs=ab)
        assert out.dtype == dtype and out.shape == X.shape
        assert rel_err(out, _ref(ca.Saliency(net).attribute, x, target=tt, abs=ab)) <= tol
    assert rel_err(A.input_x_gradient(X, t, model), _ref(ca.InputXGradient(net).attribute, x, target=tt)) <= tol
    assert rel_err(A.guided_backprop(X, t, model), _ref(ca.GuidedBackprop(net).attribute, x, target=tt)) <= tol
    assert rel_err(A.deconvolution(X, t, model), _ref(ca.Deconvolution(net).attribute, x, target=tt)) <= tol


@pytest.mark.parametrize("net_name,dtype", CASES)
@pytest.mark.parametrize("method", A.IG_METHODS)
def test_integrated_gradients_match_captum(pairs, net_name, dtype, method):
    ca = captum()
    net, model, X, t = pairs(net_name, dtype)
    base = (0.5 * np.random.default_rng(7).standard_normal(X.shape[1:])).astype(dtype)
    attr, delta = A.integrated_gradients(X, t, model, baselines=base, n_steps=16, method=method,
                                         internal_batch_size=5, return_convergence_delta=True)
    ref, ref_delta = captum().IntegratedGradients(net).attribute(
        tensor(X), baselines=tensor(np.broadcast_to(base, X.shape).copy()), target=tensor(t), n_steps=16,
        method=method, return_convergence_delta=True)
    assert attr.dtype == dtype
    assert rel_err(attr, numpy(ref)) <= TOL[dtype]
    scale = np.abs(numpy(ref)).sum(axis=(1, 2, 3))
    assert np.all(np.abs(delta - numpy(ref_delta)) <= 10 * TOL[dtype] * scale)


@pytest.mark.parametrize("net_name,dtype", CASES)
def test_grad_cam_and_guided_grad_cam_match_captum(pairs, net_name, dtype):
    ca = captum()
    net, model, X, t = pairs(net_name, dtype)
    x, tt = tensor(X), tensor(t)
    layer = CAM_LAYER[net_name]
    tol = TOL[dtype]
    for relu in (True, False):
        ref = ca.LayerGradCam(net, module(net, layer)).attribute(x, target=tt, relu_attributions=relu)
        cam = A.grad_cam(X, t, model, layer, relu_attributions=relu)
        assert cam.shape == (X.shape[0],) + tuple(ref.shape[2:]) and cam.dtype == dtype
        assert rel_err(cam, numpy(ref)[:, 0]) <= tol
        up = ca.LayerAttribution.interpolate(ref, X.shape[2:], "bilinear")
        assert rel_err(A.grad_cam(X, t, model, layer, relu_attributions=relu, upsample=True),
                       numpy(up)[:, 0]) <= tol
    for mode in ("nearest", "bilinear"):
        ref = ca.GuidedGradCam(net, module(net, layer)).attribute(x, target=tt, interpolate_mode=mode)
        assert rel_err(A.guided_grad_cam(X, t, model, layer, interpolate_mode=mode), numpy(ref)) <= tol


def test_grad_cam_of_a_convolution_whose_relu_is_fused(pairs):
    """A layer whose ReLU the model fuses: its pre-activation output is explained."""
    ca = captum()
    net, model, X, t = pairs("vgg", np.float32)
    ref = ca.LayerGradCam(net, module(net, "features.9")).attribute(tensor(X), target=tensor(t))
    assert rel_err(A.grad_cam(X, t, model, "features.9", relu_attributions=False), numpy(ref)[:, 0]) <= 1e-4


@pytest.mark.parametrize("net_name,dtype", CASES)
def test_occlusion_matches_captum(pairs, net_name, dtype):
    ca = captum()
    net, model, X, t = pairs(net_name, dtype)
    X, t = X[:2], t[:2]
    scores = np.abs(model.forward(X)[0]).max()
    for win, strides, base in (((3, 8, 8), (3, 4, 4), 0.0), ((1, 6, 6), (1, 5, 5), 0.5), ((3, 5, 5), 3, 0.0)):
        ours = A.occlusion(X, t, model, win, strides=strides, baselines=base, internal_batch_size=16)
        ref = numpy(ca.Occlusion(net).attribute(tensor(X), target=tensor(t), sliding_window_shapes=win,
                                                strides=strides, baselines=base))
        # each value is a difference of two scores: float rounding of the scores is
        # the floor of the agreement
        eps = np.finfo(dtype).eps
        assert np.abs(ours - ref).max() <= TOL[dtype] * np.abs(ref).max() + 64 * eps * scores


@pytest.mark.parametrize("net_name,dtype", [pytest.param("vgg_bn_between", np.float32), pytest.param(
    "resnet", np.float32), pytest.param("smooth", np.float32), pytest.param("smooth", np.float64),
    pytest.param("vgg_bn_between", np.float64),
    pytest.param("resnet", np.float64, marks=pytest.mark.slow)])
def test_deeplift_matches_captum(pairs, net_name, dtype):
    ca = captum()
    net, model, X, t = pairs(net_name, dtype)
    base = (0.3 * np.random.default_rng(3).standard_normal(X.shape)).astype(dtype)
    attr = A.deeplift(X, t, model, baselines=base)
    ref = numpy(ca.DeepLift(net).attribute(tensor(X), target=tensor(t), baselines=tensor(base)))
    # the rescale rule divides by input differences near 1e-10: 10x the tolerance
    assert rel_err(attr, ref) <= 10 * TOL[dtype]


@pytest.mark.parametrize("net_name", NETS)
def test_noise_tunnel_matches_captum_with_the_same_noise(pairs, net_name, monkeypatch):
    """Captum draws its noise with torch.normal; fed the noise of gradvis's
    seeded stream, NoiseTunnel gives the same result for every nt_type."""
    ca = captum()
    torch = pytest.importorskip("torch")
    # float64: in float32 a pre-activation within rounding of 0 can take the other
    # side of a ReLU in one library and not the other on some noisy copy
    net, model, X, t = pairs(net_name, np.float64)
    nt, std, seed = 4, 0.3, 11

    def fake_normal(mean, std_t):
        # gradvis's noise: one key from the seed's generator, then a stream per (image, copy)
        key = int(np.random.default_rng(seed).integers(0, 2 ** 63))
        rows = np.arange(X.shape[0] * nt)
        z = noise_rows(key, rows // nt, rows % nt, X.shape[1:], np.float64, std, 0.0)
        assert tuple(std_t.shape) == z.shape
        return torch.from_numpy(z)
    for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        ours = A.noise_tunnel(A.saliency, X, t, model, nt_type=nt_type, nt_samples=nt, stdevs=std, seed=seed,
                              internal_batch_size=5, abs=False)
        with monkeypatch.context() as mp:
            mp.setattr(torch, "normal", fake_normal)
            ref = numpy(ca.NoiseTunnel(ca.Saliency(net)).attribute(
                tensor(X), nt_type=nt_type, nt_samples=nt, stdevs=std, target=tensor(t), abs=False))
        assert rel_err(ours, ref) <= TOL[np.float64], nt_type


@pytest.mark.parametrize("net_name", NETS)
def test_gradient_shap_matches_captum_with_the_same_draws(pairs, net_name, monkeypatch):
    """GradientShap's draws (baseline indices and segment positions from numpy's
    global generator, noise from torch.normal) replaced by gradvis's seeded ones."""
    ca = captum()
    torch = pytest.importorskip("torch")
    net, model, X, t = pairs(net_name, np.float64)     # float64: see the noise tunnel's test
    B = 0.5 * np.random.default_rng(2).standard_normal((6,) + X.shape[1:])
    ns, std, seed = 5, 0.1, 4
    rng = np.random.default_rng(seed)
    total = X.shape[0] * ns
    idx = rng.integers(0, len(B), total)
    alpha = rng.uniform(0.0, 1.0, total)
    key = int(rng.integers(0, 2 ** 63))
    rows = np.arange(total)
    z = noise_rows(key, rows // ns, rows % ns, X.shape[1:], np.float64, std, 0.0)
    ours = A.gradient_shap(X, t, model, B, n_samples=ns, stdevs=std, seed=seed, internal_batch_size=4)
    with monkeypatch.context() as mp:
        mp.setattr(np.random, "choice", lambda n, k: idx.copy())
        mp.setattr(np.random, "uniform", lambda lo, hi, k: alpha.copy())
        mp.setattr(torch, "normal", lambda mean, s: torch.from_numpy(z))
        ref = numpy(ca.GradientShap(net).attribute(tensor(X), baselines=tensor(B), target=tensor(t),
                                                   n_samples=ns, stdevs=std))
    assert rel_err(ours, ref) <= TOL[np.float64]


GRAD_CAM_LIB = [("grad_cam_plus_plus", "GradCAMPlusPlus"), ("xgrad_cam", "XGradCAM"), ("layer_cam", "LayerCAM"),
                ("hires_cam", "HiResCAM"), ("score_cam", "ScoreCAM"), ("ablation_cam", "AblationCAM")]


@pytest.fixture
def per_layer_cam(monkeypatch):
    """pytorch-grad-cam's CAM before its min-max scaling and resize (its
    scale_cam_image made the identity for one layer)."""
    pgc = pytorch_grad_cam()
    import pytorch_grad_cam.base_cam as base_cam
    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run(cls_name, net, layer, X, t):
        cam = getattr(pgc, cls_name)(net, [layer])
        return np.asarray(cam(tensor(X), [ClassifierOutputTarget(int(c)) for c in t]))
    return run


@pytest.mark.parametrize("net_name,dtype", CASES)
def test_cam_family_matches_pytorch_grad_cam(pairs, per_layer_cam, net_name, dtype):
    net, model, X, t = pairs(net_name, dtype)
    layer = CAM_LAYER[net_name]
    for ours_name, cls_name in GRAD_CAM_LIB:
        ours = getattr(A, ours_name)(X, t, model, layer)
        ref = per_layer_cam(cls_name, net, module(net, layer), X, t)
        assert ours.shape == ref.shape and ours.dtype == dtype
        # pytorch-grad-cam computes its weights in float32 numpy even for float64 nets
        assert rel_err(ours, ref) <= (1e-5 if dtype == np.float64 else 1e-4), ours_name


@pytest.mark.parametrize("net_name", NETS)
def test_eigen_cam_matches_pytorch_grad_cam_up_to_the_sign(pairs, net_name):
    """A principal component's sign is arbitrary (LAPACK's): a 1e-7 change of the
    activations can flip it, so the raw projection is compared up to sign."""
    pytorch_grad_cam()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    net, model, X, t = pairs(net_name, np.float32)
    layer = CAM_LAYER[net_name]
    ours = A.eigen_cam(X, t, model, layer)
    acts = model.forward(X, end=layer)[0]
    raw = get_2d_projection(acts)
    for i in range(len(X)):
        assert min(rel_err(ours[i], np.maximum(raw[i], 0)), rel_err(ours[i], np.maximum(-raw[i], 0))) <= 1e-4


def test_grad_cam_inside_a_residual_block_matches_captum(pairs):
    """A layer a skip connection crosses (the block's second convolution, batch
    norm folded in): its gradient is read by a backward rule in one pass (for
    Guided Grad-CAM, the pass that also serves guided backpropagation)."""
    ca = captum()
    net, model, X, t = pairs("resnet", np.float32)
    ref = ca.LayerGradCam(net, net.layer2.bn2).attribute(tensor(X), target=tensor(t), relu_attributions=True)
    assert rel_err(A.grad_cam(X, t, model, "layer2.bn2"), numpy(ref)[:, 0]) <= 1e-4
    ref = ca.GuidedGradCam(net, net.layer2.bn2).attribute(tensor(X), target=tensor(t))
    assert rel_err(A.guided_grad_cam(X, t, model, "layer2.bn2"), numpy(ref)) <= 1e-4
    assert rel_err(A.layer_cam(X, t, model, "layer1.bn2"),
                   A.layer_cam(X, t, model, "layer1.bn2", internal_batch_size=1)) == 0
