"""The attribution methods do what they are for: completeness of integrated
gradients and DeepLift, CAMs of the true class on the object (TinyImageNet
boxes), the sanity check telling gradients from an edge detector; results do not
depend on the batching; and bad input gets a clear error."""
import os

import numpy as np
import pytest

import gradvis.attribution as A
from gradvis.nn import (Add, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, Model, Mul, ReLU,
                        ReLU6, Sigmoid)
from gradvis.nn.architectures import default_net


def _net(seed=0, act=ReLU, classes=5):
    """conv-bn-act, max pool, a residual add, conv-act, global pool, linear."""
    m = Model(input_shape=(3, 16, 16), seed=seed, class_names=[f"class{i}" for i in range(classes)])
    m.add("conv1", Conv2d(3, 8, 3, padding=1)).add("bn1", BatchNorm2d(8)).add("act1", act())
    m.add("pool1", MaxPool2d(2))
    m.add("conv2", Conv2d(8, 8, 3, padding=1)).add("act2", act())
    m.add("add", Add(), ["act2", "pool1"])
    m.add("conv3", Conv2d(8, 12, 3, padding=1)).add("act3", act())
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(12, classes))
    rng = np.random.default_rng(seed)
    m.buffers["bn1.running_mean"][:] = rng.standard_normal(8) * 0.1
    m.buffers["bn1.running_var"][:] = rng.random(8) + 0.5
    return m


def _X(n=3, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(dtype)


# ---------------------------------------------------------------- completeness
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_delta_goes_to_zero(method):
    m, X = _net(), _X()
    deltas = []
    for n in (4, 16, 64, 256):
        attr, d = A.integrated_gradients(X, 2, m, n_steps=n, method=method, return_convergence_delta=True)
        deltas.append(np.abs(d).max())
    scores = m.forward(X)[0]
    gap = np.abs(scores[:, 2] - m.forward(np.zeros_like(X))[0][:, 2]).max()
    assert deltas[-1] < 0.25 * deltas[0]
    assert deltas[-1] < 1e-2 * gap
    assert deltas[-1] <= min(deltas[:-1]) * 1.01


@pytest.mark.parametrize("act", [ReLU, ReLU6, Sigmoid])
def test_deeplift_sums_to_the_score_difference(act):
    """Summation to delta holds exactly with the rescale and max-pool rules, ReLU6
    and residual adds included (Captum applies plain gradients to ReLU6)."""
    m = _net(act=act)
    X = _X()
    base = 0.3 * np.random.default_rng(4).standard_normal(X.shape)
    attr, delta = A.deeplift(X, [0, 3, 4], m, baselines=base, return_convergence_delta=True)
    gap = m.forward(X)[0][np.arange(3), [0, 3, 4]] - m.forward(base)[0][np.arange(3), [0, 3, 4]]
    np.testing.assert_allclose(attr.reshape(3, -1).sum(axis=1), gap, rtol=1e-9, atol=1e-12)
    assert np.abs(delta).max() < 1e-9 * np.abs(gap).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deeplift_where_inputs_equal_their_baselines(dtype):
    """Where delta_in is 0 the rules take the layer's gradient instead of 0 / 0:
    an image equal to its baseline gets exactly zero attributions, one equal to it
    on a band still sums to its score difference, and nothing is NaN."""
    m = _net()
    X = _X(3, dtype=dtype)
    base = (0.3 * np.random.default_rng(4).standard_normal(X.shape)).astype(dtype)
    base[0] = X[0]
    base[1, :, :5] = X[1, :, :5]
    t = [0, 3, 4]
    attr, delta = A.deeplift(X, t, m, baselines=base, return_convergence_delta=True)
    assert np.isfinite(attr).all()
    np.testing.assert_array_equal(attr[0], 0)
    assert np.all(attr[1, :, :5] == 0) and np.abs(attr[1]).max() > 0
    gap = (m.forward(X)[0] - m.forward(base)[0])[np.arange(3), t]
    tol = 1e-9 if dtype == np.float64 else 1e-4
    assert np.abs(delta).max() <= tol * np.abs(gap).max()


def test_deeplift_refuses_layers_it_has_no_rule_for():
    m = Model(input_shape=(3, 8, 8))
    m.add("conv", Conv2d(3, 4, 3)).add("gate", Sigmoid()).add("mul", Mul(), ["conv", "gate"])
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(4, 3))
    with pytest.raises(ValueError, match=r"no rule for layer\(s\) 'mul' \(Mul\)"):
        A.deeplift(np.zeros((1, 3, 8, 8)), 0, m)


# ---------------------------------------------------------------- batching
def test_results_do_not_depend_on_the_batching():
    m, X = _net(), _X(3, dtype=np.float32)
    t = [1, 2, 3]
    for fn, kw in ((A.integrated_gradients, dict(n_steps=7)), (A.saliency, {}), (A.guided_backprop, {}),
                   (A.gradient_shap, dict(baselines=np.zeros((2, 3, 16, 16)), n_samples=3, stdevs=0.1)),
                   (A.occlusion, dict(sliding_window_shapes=(3, 4, 4), strides=3)), (A.deeplift, {})):
        a = fn(X, t, m, internal_batch_size=1, **kw)
        b = fn(X, t, m, internal_batch_size=64, **kw)
        assert a.dtype == np.float32 and a.shape == X.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=fn.__name__)
    for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        a = A.noise_tunnel("saliency", X, t, m, nt_type=nt_type, nt_samples=5, stdevs=0.2, seed=3,
                           internal_batch_size=2)
        b = A.noise_tunnel("saliency", X, t, m, nt_type=nt_type, nt_samples=5, stdevs=0.2, seed=3,
                           internal_batch_size=15)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * np.abs(b).max())


@pytest.mark.parametrize("layer", ["pool1", "conv2", "act2", "act3"])
def test_guided_grad_cam_is_guided_backprop_times_the_resized_grad_cam(layer):
    """One forward pass serves both factors, whether the layer is a cut of the
    graph (pool1, act3) or a skip connection crosses it (conv2, act2: pool1 is
    also read by the add); the product equals the two methods run apart."""
    m, X = _net(), _X(3)
    t = [1, 2, 3]
    guided = A.guided_backprop(X, t, m)
    cam = A.grad_cam(X, t, m, layer)
    h, w = cam.shape[1:]
    nearest = cam[:, (np.arange(16) * h) // 16][:, :, (np.arange(16) * w) // 16]
    want = guided * nearest[:, None]
    tol = dict(rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(A.guided_grad_cam(X, t, m, layer), want, **tol)
    np.testing.assert_allclose(A.guided_grad_cam(X, t, m, layer, interpolate_mode="bilinear"),
                               guided * A.grad_cam(X, t, m, layer, upsample=True)[:, None], **tol)
    np.testing.assert_allclose(A.guided_grad_cam(X, t, m, layer, internal_batch_size=1),
                               A.guided_grad_cam(X, t, m, layer, internal_batch_size=2), **tol)


def test_seeded_methods_repeat_and_seeds_matter():
    m, X = _net(), _X()
    a = A.noise_tunnel(A.saliency, X, 1, m, nt_samples=3, stdevs=0.5, seed=1)
    np.testing.assert_array_equal(a, A.noise_tunnel(A.saliency, X, 1, m, nt_samples=3, stdevs=0.5, seed=1))
    assert np.abs(a - A.noise_tunnel(A.saliency, X, 1, m, nt_samples=3, stdevs=0.5, seed=2)).max() > 0
    # vargrad is the variance: non-negative; smoothgrad with no noise is the method
    assert A.noise_tunnel("saliency", X, 1, m, nt_type="vargrad", stdevs=0.5).min() >= -1e-12
    np.testing.assert_allclose(A.noise_tunnel("saliency", X, 1, m, stdevs=0.0), A.saliency(X, 1, m), rtol=1e-12)


def test_gradient_shap_with_one_baseline_and_no_noise_averages_gradients_on_the_segment():
    m, X = _net(), _X(1)
    attr = A.gradient_shap(X, 0, m, np.zeros((1, 3, 16, 16)), n_samples=400, seed=0)
    ig = A.integrated_gradients(X, 0, m, n_steps=200)
    assert np.abs(attr - ig).max() < 0.2 * np.abs(ig).max()


def test_default_batch_size_bounds_memory():
    m = default_net(input_size=224)
    b = A.default_batch_size(m, (3, 224, 224), np.float32)
    per = sum(int(np.prod(s)) for s in m.output_shapes((3, 224, 224)).values()) * 4 * 3
    assert 1 <= b and b * per <= A._common.DEFAULT_MEMORY_BYTES
    assert A.default_batch_size(m, (3, 224, 224), np.float64) <= b


# ---------------------------------------------------------------- sanity check
def test_sanity_check_separates_gradients_from_an_edge_detector():
    m = _net()
    X = _X(4)
    grad = A.sanity_check("saliency", X, 1, m, seed=0)
    edge = A.sanity_check(A.edge_detector, X, 1, m, seed=0)
    assert grad["layers"] == ["fc", "conv3", "conv2", "bn1", "conv1"]
    assert grad["correlations"].shape == (5, 4) and len(grad["maps"]) == 6
    np.testing.assert_array_equal(edge["correlations"], 1.0)
    assert grad["correlations"][-1].mean() < 0.5
    # the CAM family too: Grad-CAM depends on the weights above its layer
    cam = A.sanity_check(A.grad_cam, X, 1, m, layer="act3")
    assert cam["correlations"][0].mean() < 0.9


def test_spearman():
    assert A.metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert A.metrics.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get their average rank (scipy's rankdata convention)
    assert A.metrics.spearman([0, 0, 1, 2], [0, 0, 1, 2]) == pytest.approx(1.0)
    assert A.metrics.spearman([1, 1, 1], [1, 2, 3]) == 0.0


# ---------------------------------------------------------------- metrics
def test_infidelity_is_zero_for_an_exact_linear_explanation():
    """A linear model: gradient * perturbation is exactly the score drop."""
    m = Model(input_shape=(3, 4, 4))
    m.add("flat", Flatten()).add("fc", Linear(48, 3))
    X = _X(2)[:, :, :4, :4].copy()
    grad = A.saliency(X, 1, m, abs=False)
    assert A.infidelity(X, grad, 1, m, stdevs=0.1).max() < 1e-20
    assert A.infidelity(X, 2 * grad, 1, m, stdevs=0.1).min() > 1e-6
    assert A.infidelity(X, 2 * grad, 1, m, stdevs=0.1, normalize=True).max() < 1e-20


def test_sensitivity_max_is_zero_for_a_linear_model_and_grows_with_the_radius():
    m = Model(input_shape=(3, 4, 4))
    m.add("flat", Flatten()).add("fc", Linear(48, 3))
    X = _X(2)[:, :, :4, :4].copy()
    assert A.sensitivity_max(A.saliency, X, 0, m).max() < 1e-12
    m2, X2 = _net(), _X(2)
    small = A.sensitivity_max(A.saliency, X2, 0, m2, perturb_radius=0.01)
    big = A.sensitivity_max(A.saliency, X2, 0, m2, perturb_radius=0.5)
    assert np.all(big > small) and np.all(small > 0)


def test_deletion_and_insertion_curves():
    m, X = _net(), _X(2)
    sal = A.saliency(X, None, m)
    curves, auc = A.deletion_curve(X, sal, None, m, pixels_per_step=32)
    assert curves.shape == (2, 9) and auc.shape == (2,)
    p = np.exp(m.forward(X)[0])
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(curves[:, 0], p.max(axis=1), rtol=1e-12)
    full = np.exp(m.forward(np.zeros_like(X))[0])
    np.testing.assert_allclose(curves[:, -1], (full / full.sum(axis=1, keepdims=True))[[0, 1], p.argmax(axis=1)],
                               rtol=1e-12)
    ins, auc_i = A.insertion_curve(X, A.grad_cam(X, None, m), None, m, pixels_per_step=64)
    np.testing.assert_allclose(ins[:, -1], p.max(axis=1), rtol=1e-12)
    assert np.all((auc_i >= 0) & (auc_i <= 1))


def test_curves_do_not_depend_on_the_frames_per_pass(monkeypatch):
    """The frames are built one forward pass at a time: passes of 4 frames
    (a pass boundary inside each curve) give the curves of one pass."""
    import gradvis.attribution._common as C
    m, X = _net(), _X(2)
    sal = A.saliency(X, [1, 2], m)
    one = [A.deletion_curve(X, sal, [1, 2], m, pixels_per_step=20)[0],
           A.insertion_curve(X, sal, [1, 2], m, pixels_per_step=20)[0]]
    monkeypatch.setattr(C, "default_batch_size", lambda *args, **kw: 4)
    chunked = [A.deletion_curve(X, sal, [1, 2], m, pixels_per_step=20)[0],
               A.insertion_curve(X, sal, [1, 2], m, pixels_per_step=20)[0]]
    assert one[0].shape == (2, 14)
    for a, b in zip(one, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        assert np.ptp(a[0]) > 0


# ---------------------------------------------------------------- CAMs on the object
@pytest.mark.data
def test_cams_of_the_true_class_fall_inside_the_boxes():
    """Held-out TinyImageNet images, the bundled model: Grad-CAM of the true
    class puts more of its mass inside the object's box than outside, more than
    the box's share of the image."""
    from gradvis.io.datasets import find_tiny_imagenet, load_tiny_imagenet
    from gradvis.io.pretrained import DEFAULT_WEIGHTS, load_pretrained
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail("bundled weights missing") if os.environ.get("CI") else pytest.skip("no bundled weights")
    try:
        find_tiny_imagenet()
    except FileNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("TinyImageNet archive not found")
    ds = load_tiny_imagenet()
    m = load_pretrained()
    idx = np.random.default_rng(0).choice(len(ds.X_val), 100, replace=False)
    X, y, boxes = m.preprocess(ds.X_val[idx]), ds.y_val[idx], ds.boxes_val[idx]
    inside = np.zeros((len(X),) + X.shape[2:], bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        inside[i, y0:y1 + 1, x0:x1 + 1] = True
    area = inside.mean(axis=(1, 2))
    for fn in (A.grad_cam, A.layer_cam):
        cam = fn(X, y, m, upsample=True)
        total = cam.sum(axis=(1, 2))
        ok = total > 0
        mass = (cam * inside).sum(axis=(1, 2))[ok] / total[ok]
        assert ok.mean() > 0.9
        assert mass.mean() > 0.55, fn.__name__
        assert mass.mean() > area[ok].mean() + 0.05, fn.__name__
        assert (mass > area[ok]).mean() > 0.7, fn.__name__


# ---------------------------------------------------------------- bad input
def test_bad_input_errors():
    m, X = _net(), _X(2)
    with pytest.raises(ValueError, match="'gap' outputs .* not a spatial .* layers that work: conv1, bn1"):
        A.grad_cam(X, 0, m, "gap")
    with pytest.raises(ValueError, match="'fc'.*layers that work"):
        A.score_cam(X, 0, m, -1)
    with pytest.raises(KeyError, match="no layer named 'conv9'"):
        A.grad_cam(X, 0, m, "conv9")
    with pytest.raises(ValueError, match=r"baselines of shape \(2, 3\) does not broadcast"):
        A.integrated_gradients(X, 0, m, baselines=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        A.integrated_gradients(X, 0, m, n_steps=0)
    with pytest.raises(TypeError, match="n_steps"):
        A.integrated_gradients(X, 0, m, n_steps=2.5)
    with pytest.raises(ValueError, match="n_steps must be >= 2 for riemann_left"):
        A.integrated_gradients(X, 0, m, n_steps=1, method="riemann_left")
    with pytest.raises(ValueError, match="method must be one of"):
        A.integrated_gradients(X, 0, m, method="simpson")
    with pytest.raises(ValueError, match="sliding_window_shapes .* exceeds the input's H size 16"):
        A.occlusion(X, 0, m, (3, 20, 4))
    with pytest.raises(ValueError, match="strides must have 3 entries"):
        A.occlusion(X, 0, m, (3, 4, 4), strides=(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"target has class indices out of range \[0, 5\): \[7, 7\]"):
        A.saliency(X, 7, m)
    with pytest.raises(ValueError, match="target must have shape"):
        A.saliency(X, [1, 2, 3], m)
    with pytest.raises(ValueError, match="'zebra' is not a class of the model"):
        A.saliency(X, "zebra", m)
    np.testing.assert_array_equal(A.saliency(X, "class3", m), A.saliency(X, 3, m))
    with pytest.raises(ValueError, match="nt_type must be one of"):
        A.noise_tunnel("saliency", X, 0, m, nt_type="smooth")
    with pytest.raises(ValueError, match="not a pixel attribution method"):
        A.noise_tunnel("gradcam", X, 0, m)
    with pytest.raises(ValueError, match="stdevs"):
        A.noise_tunnel("saliency", X, 0, m, stdevs=-1)
    with pytest.raises(ValueError, match="baselines must be"):
        A.gradient_shap(X, 0, m, np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="internal_batch_size"):
        A.saliency(X, 0, m, internal_batch_size=0)
    with pytest.raises(ValueError, match="attributions must have X's shape"):
        A.infidelity(X, np.zeros((2, 3)), 0, m)
    with pytest.raises(ValueError, match="interpolate_mode"):
        A.guided_grad_cam(X, 0, m, interpolate_mode="cubic")
    with pytest.raises(TypeError, match="X must be a float array"):
        A.saliency(np.zeros((1, 3, 16, 16), np.uint8), 0, m)
    with pytest.raises(ValueError, match="X contains NaN"):
        A.saliency(np.full((1, 3, 16, 16), np.nan), 0, m)


def test_ablation_cam_needs_a_cut_of_the_graph():
    m, X = _net(), _X(1)
    with pytest.raises(ValueError, match="'act2'.*also read 'pool1'"):
        A.ablation_cam(X, 0, m, "act2")
    assert A.ablation_cam(X, 0, m, "act3").shape == (1, 8, 8)


def test_cam_shapes_and_default_layer():
    m, X = _net(), _X(2, dtype=np.float32)
    assert A.default_cam_layer(m) == "act3"
    for name, fn in A.CAM_METHODS.items():
        cam = fn(X, None, m)
        assert cam.shape == (2, 8, 8) and cam.dtype == np.float32, name
        assert cam.min() >= 0, name
        assert fn(X, None, m, upsample=True).shape == (2, 16, 16), name
    assert A.guided_grad_cam(X, None, m).shape == X.shape


def test_predicted_class_targets_come_from_the_gradient_passes_themselves():
    """target=None is each image's predicted class; methods whose passes run X
    take it from those passes' scores (no extra forward pass) and give what the
    explicit classes give, in any batching."""
    m, X = _net(), _X(5)
    pred = m.forward(X)[0].argmax(axis=1)
    calls = []
    orig = m.forward

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)
    m.forward = counting
    for fn, kw in ((A.saliency, {}), (A.input_x_gradient, {}), (A.guided_backprop, {}),
                   (A.deconvolution, {}), (A.grad_cam, dict(layer="pool1")),
                   (A.guided_grad_cam, dict(layer="pool1")), (A.layer_cam, dict(layer="pool1"))):
        for ib in (2, 5):
            calls.clear()
            got = fn(X, None, m, internal_batch_size=ib, **kw)
            n_none = len(calls)
            calls.clear()
            want = fn(X, pred, m, internal_batch_size=ib, **kw)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=fn.__name__)
            assert n_none == len(calls), fn.__name__


def _score_cam_by_hand(X, t, m, layer):
    """Score-CAM as pytorch-grad-cam writes it: one pass per channel, every channel."""
    acts = m.forward(X, end=layer)[0]
    out = []
    for i in range(len(X)):
        up = np.stack([_bilinear_ac(a, X.shape[2:]) for a in acts[i]])
        lo = up.reshape(len(up), -1).min(1)[:, None, None]
        hi = up.reshape(len(up), -1).max(1)[:, None, None]
        masks = (up - lo) / (hi - lo + 1e-8)
        s = m.forward(X[i][None] * masks[:, None])[0][:, t[i]]
        w = np.exp(s - s.max())
        w /= w.sum()
        out.append(np.maximum((w[:, None, None] * acts[i]).sum(0), 0))
    return np.stack(out)


def _bilinear_ac(a, size):
    """align_corners=True bilinear resize of one (h, w) map, float64."""
    (h, w), (H, W) = a.shape, size
    ys = np.linspace(0, h - 1, H) if H > 1 else np.zeros(1)
    xs = np.linspace(0, w - 1, W) if W > 1 else np.zeros(1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def test_score_cam_with_dead_channels_equals_every_channel_scored():
    m, X = _net(), _X(3)
    m.params["conv3.bias"][:5] = -1e3          # five channels of act3 never fire
    m.params["conv3.bias"][5:] = 0.5
    acts = m.forward(X, end="act3")[0]
    assert (~acts.reshape(3, 12, -1).any(axis=2)).sum(axis=1).min() >= 5
    t = np.array([0, 3, 4])
    want = _score_cam_by_hand(X, t, m, "act3")
    for ib in (1, 4, None):
        got = A.score_cam(X, t, m, "act3", internal_batch_size=ib)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    m.params["conv3.bias"][:] = -1e3           # every channel dead: the map is zero
    np.testing.assert_array_equal(A.score_cam(X, t, m, "act3"), 0)


def test_noise_of_an_image_depends_only_on_the_seed_and_its_place():
    """SmoothGrad's noise for image i, copy s comes from its own stream: the same
    with any batching and thread count, and the same for image i whatever the
    other images are."""
    import gradvis
    m, X = _net(), _X(4, dtype=np.float32)
    a = A.noise_tunnel("saliency", X, 1, m, nt_samples=3, stdevs=0.3, seed=5, internal_batch_size=5)
    old = gradvis.get_num_threads()
    try:
        gradvis.set_num_threads(1)
        b = A.noise_tunnel("saliency", X, 1, m, nt_samples=3, stdevs=0.3, seed=5, internal_batch_size=2)
    finally:
        gradvis.set_num_threads(old)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * np.abs(a).max())
    X2 = X.copy()
    X2[3] = 0                                   # another image elsewhere in the batch
    c = A.noise_tunnel("saliency", X2, 1, m, nt_samples=3, stdevs=0.3, seed=5)
    np.testing.assert_allclose(c[:3], a[:3], rtol=1e-5, atol=1e-7 * np.abs(a).max())
    d = A.noise_tunnel("saliency", X, 1, m, nt_samples=3, stdevs=0.3, seed=6)
    assert np.abs(d - a).max() > 1e-3 * np.abs(a).max()
    from gradvis.attribution.gradients import noise_rows
    z = noise_rows(7, np.array([0, 0, 1]), np.array([0, 1, 0]), (3, 64, 64), np.float64, 1.0, 0.0)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert not np.array_equal(z[0], z[1]) and not np.array_equal(z[0], z[2])
