"""gradvis.train: optimizers vs PyTorch, schedules, augmentation, a short run, checkpoint/resume."""
import types

import numpy as np
import pytest

from gradvis.nn.architectures import default_net
from gradvis.io.model_file import load_model
from gradvis.train import (SGD, AdamW, CosineWarmup, OneCycle, StepLR, TrainConfig, WeightAverage,
                           alternating_flips, augment_batch, balanced_subset, random_crop, random_flip, train,
                           whitening_filters)

from conftest import require_torch


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float64),
            "bn.gamma": rng.standard_normal(4).astype(np.float64)}


@pytest.mark.parametrize("which", ["sgd", "adamw"])
def test_optimizers_match_torch(which):
    torch = require_torch()
    params = _params()
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    groups = [{"params": [tparams["conv.weight"]], "weight_decay": 0.01},
              {"params": [tparams["bn.gamma"]], "weight_decay": 0.0}]    # no decay on BN
    if which == "sgd":
        opt, topt = SGD(0.9, nesterov=True, weight_decay=0.01), torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)
    else:
        opt, topt = AdamW(weight_decay=0.01), torch.optim.AdamW(groups, lr=0.1)
    rng = np.random.default_rng(1)
    for _ in range(4):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(params, grads, 0.1)
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        topt.step()
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_optimizer_state_round_trip():
    params, grads = _params(), {k: np.ones_like(v) for k, v in _params().items()}
    for make in (lambda: SGD(weight_decay=0.1), lambda: AdamW(weight_decay=0.1)):
        a, b = make(), make()
        pa = {k: v.copy() for k, v in params.items()}
        a.step(pa, grads, 0.1)
        b.load_state_arrays({k: v.copy() for k, v in a.state_arrays().items()})
        pb = {k: v.copy() for k, v in pa.items()}
        a.step(pa, grads, 0.1)
        b.step(pb, grads, 0.1)
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_schedules():
    s = OneCycle(1.0, 100, pct_start=0.25, div=10, final_div=100)
    assert s(0) == pytest.approx(0.1) and s(25) == pytest.approx(1.0) and s(100) == pytest.approx(1e-3)
    assert all(s(i) <= s(i - 1) for i in range(26, 101))
    c = CosineWarmup(1.0, 100, warmup=10)
    assert c(0) == pytest.approx(0.1) and c(9) == pytest.approx(1.0) and c(100) == pytest.approx(0.0)
    st = StepLR(1.0, [10, 20], 0.1)
    assert (st(9), st(10), st(25)) == (1.0, pytest.approx(0.1), pytest.approx(0.01))


def test_augmentation_is_seeded_and_correct():
    imgs = np.random.default_rng(0).integers(0, 256, (6, 10, 10, 3), dtype=np.uint8)
    a = augment_batch(imgs, np.random.default_rng(3), crop=8, pad=2)
    b = augment_batch(imgs, np.random.default_rng(3), crop=8, pad=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 8, 8, 3) and a.dtype == np.uint8
    crops = random_crop(imgs, 8, 0, np.random.default_rng(4))
    for i in range(6):   # each crop is a window of its own image
        hits = [(y, x) for y in range(3) for x in range(3) if np.array_equal(imgs[i, y:y + 8, x:x + 8], crops[i])]
        assert hits
    f = random_flip(imgs, np.random.default_rng(5), p=1.0)
    np.testing.assert_array_equal(f, imgs[:, :, ::-1])
    with pytest.raises(ValueError, match="larger"):
        random_crop(imgs, 20, 0, np.random.default_rng(0))


def _toy_data(n_per_class=48, classes=4, size=32, seed=0):
    """Classes told apart by colour and a stripe: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(classes):
        base = np.zeros((n_per_class, size, size, 3), np.float32)
        base[..., c % 3] = 160
        if c >= 3:
            base[:, :, size // 2 - 2: size // 2 + 2, :] = 255
        X.append(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8))
        y.append(np.full(n_per_class, c))
    X, y = np.concatenate(X), np.concatenate(y)
    perm = rng.permutation(len(X))
    X, y = X[perm], y[perm]
    k = len(X) * 3 // 4
    return types.SimpleNamespace(X_train=X[:k], y_train=y[:k], X_val=X[k:], y_val=y[k:])


def _toy_net(seed=0):
    return default_net(num_classes=4, widths=(4, 8, 8, 8, 8, 8, 8), dropout=0.1, input_size=32, seed=seed)


def _cfg(**kw):
    base = dict(epochs=4, batch_size=16, lr=0.05, crop=28, pad=2, checkpoint_every=3, log_every=2,
                eval_every=2, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_learns_and_writes_files(tmp_path):
    data = _toy_data()
    lines = []
    model, hist = train(_toy_net(), data, _cfg(), run_dir=tmp_path, log=lines.append)
    curve = hist["curve"]
    assert curve[-1][1] < curve[0][1]                  # the loss went down
    assert hist["final_val_acc"] > 0.5                 # chance is 0.25
    assert any("img/s" in s and "ETA" in s for s in lines)
    for name in ("checkpoint.npz", "final.npz", "history.json"):
        assert (tmp_path / name).is_file()
    again = load_model(tmp_path / "final.npz")
    np.testing.assert_array_equal(again.params["fc.weight"], model.params["fc.weight"])


def test_silent_when_log_is_none(capsys, tmp_path):
    train(_toy_net(), _toy_data(n_per_class=8), _cfg(epochs=1, eval_every=0), log=None)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("optimizer,tricks", [("sgd", False), ("adamw", False), ("sgd", True)])
def test_resume_continues_exactly(tmp_path, optimizer, tricks):
    data = _toy_data(n_per_class=16)
    extra = dict(ema=0.9, whiten=True, flip_mode="alternate", bias_lr_scale=4.0) if tricks else {}
    cfg = _cfg(epochs=3, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003, **extra)
    full, _ = train(_toy_net(), data, cfg, run_dir=tmp_path / "full", log=None)
    # interrupt after 5 steps (mid-epoch), then resume in a fresh call
    train(_toy_net(), data, cfg, run_dir=tmp_path / "cut", log=None, on_step=lambda step, loss: step < 5)
    lines = []
    resumed, _ = train(_toy_net(seed=9), data, cfg, run_dir=tmp_path / "cut", resume=True, log=lines.append)
    assert any("resumed" in s and "step 5" in s for s in lines)
    for k in full.params:
        np.testing.assert_allclose(resumed.params[k], full.params[k], rtol=1e-6, atol=1e-7, err_msg=k)
    for k in full.buffers:
        np.testing.assert_allclose(resumed.buffers[k], full.buffers[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # resuming the finished run (to export it) adds no second end-of-run evaluation
    _, hist = train(_toy_net(), data, cfg, run_dir=tmp_path / "full", resume=True, log=None)
    assert [e for e, _ in hist["val_acc"]].count(3.0) == 1


@pytest.mark.parametrize("which", ["sgd", "adamw"])
def test_learning_rate_scales_match_torch_param_groups(which):
    """``scales`` multiplies one parameter's learning rate (as a PyTorch param group
    with its own lr) and 0 freezes it, weight decay included."""
    torch = require_torch()
    params = _params()
    params["frozen"] = np.arange(6.0).reshape(2, 3)
    before = params["frozen"].copy()
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items() if k != "frozen"}
    groups = [{"params": [tparams["conv.weight"]], "weight_decay": 0.01},
              {"params": [tparams["bn.gamma"]], "weight_decay": 0.0, "lr": 0.3}]
    if which == "sgd":
        opt, topt = SGD(0.9, nesterov=True, weight_decay=0.01), torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)
    else:
        opt, topt = AdamW(weight_decay=0.01), torch.optim.AdamW(groups, lr=0.1)
    rng = np.random.default_rng(2)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(params, grads, 0.1, scales={"bn.gamma": 3.0, "frozen": 0.0})
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        topt.step()
    for k, t in tparams.items():
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(params["frozen"], before)


def test_alternating_flips():
    a0, a1, a2 = (alternating_flips(1000, e, seed=3) for e in range(3))
    np.testing.assert_array_equal(a0, ~a1)          # each image both ways over two epochs
    np.testing.assert_array_equal(a0, a2)
    np.testing.assert_array_equal(a0, alternating_flips(1000, 0, seed=3))
    assert 400 < a0.sum() < 600
    assert not np.array_equal(a0, alternating_flips(1000, 0, seed=4))
    imgs = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    out = augment_batch(imgs, np.random.default_rng(0), crop=0, pad=0, flips=np.array([1, 0, 0, 1], bool))
    np.testing.assert_array_equal(out[[0, 3]], imgs[[0, 3], :, ::-1])
    np.testing.assert_array_equal(out[[1, 2]], imgs[[1, 2]])
    with pytest.raises(ValueError, match="flips"):
        augment_batch(imgs, np.random.default_rng(0), crop=0, pad=0, flips=np.ones(3, bool))


def test_whitening_filters_decorrelate_patches():
    data = _toy_data(n_per_class=24, size=24)
    net = default_net(num_classes=4, widths=(16, 8, 8, 8, 8, 8, 8), input_size=24)
    filt = whitening_filters(net, data.X_train, n_patches=20_000, eps=1e-6, seed=0)
    assert filt.shape == (16, 3, 5, 5) and filt.dtype == np.float64
    np.testing.assert_array_equal(filt[8:], -filt[:8])
    # every 5x5 patch of every image (the filters saw a random sample of them)
    x = np.asarray(net.preprocess(data.X_train), np.float64)
    win = np.lib.stride_tricks.sliding_window_view(x, (5, 5), axis=(2, 3))      # N, C, H', W', 5, 5
    patches = win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 75)
    resp = (patches - patches.mean(0)) @ filt[:8].reshape(8, 75).T
    cov = resp.T @ resp / len(resp)
    d = np.sqrt(np.diag(cov))
    corr = cov / np.outer(d, d)
    assert np.abs(corr - np.eye(8)).max() < 0.05          # decorrelated
    np.testing.assert_allclose(np.diag(cov), 1.0, rtol=0.1)   # and whitened (eps ~ 0)
    # the leading directions: more patch variance than any unit vector orthogonal to them
    u = filt[:8].reshape(8, 75).T
    q, _ = np.linalg.qr(u)
    rest = np.random.default_rng(1).standard_normal(75)
    rest -= q @ (q.T @ rest)
    rest /= np.linalg.norm(rest)
    lead_var = np.var(patches @ q[:, 0])
    assert lead_var > np.var(patches @ rest)
    for widths, match in (((15, 8, 8, 8, 8, 8, 8), "even"), ((152, 8, 8, 8, 8, 8, 8), "at most 150")):
        with pytest.raises(ValueError, match=match):
            whitening_filters(default_net(num_classes=4, widths=widths, input_size=24), data.X_train)


def test_whitened_first_conv_stays_frozen_and_average_is_exported(tmp_path):
    data = _toy_data()
    net = _toy_net()
    cfg = _cfg(whiten=True, ema=0.8, bias_lr_scale=2.0, flip_mode="alternate")
    lines = []
    model, hist = train(net, data, cfg, run_dir=tmp_path, log=lines.append)
    assert any("whitened" in s and "conv1" in s for s in lines)
    filt = whitening_filters(_toy_net(), data.X_train, seed=cfg.seed)
    np.testing.assert_allclose(model.params["conv1.weight"], filt.astype(np.float32), rtol=1e-6)
    assert hist["final_val_acc"] > 0.5 and "final_val_acc_last_weights" in hist
    saved = load_model(tmp_path / "final.npz")
    np.testing.assert_array_equal(saved.params["fc.weight"], model.params["fc.weight"])


def test_weight_average_arithmetic():
    net = _toy_net()
    avg = WeightAverage(net, 0.5)
    w0 = net.params["fc.weight"].copy()
    net.params["fc.weight"] += 1.0
    avg.update(net)                         # t=0: d = min(0.5, 1/10) = 0.1
    np.testing.assert_allclose(avg.arrays["p/fc.weight"], 0.1 * w0 + 0.9 * (w0 + 1), rtol=1e-6)
    m = avg.model(net)
    np.testing.assert_allclose(m.params["fc.weight"], avg.arrays["p/fc.weight"])
    assert m.params["fc.weight"] is not net.params["fc.weight"]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="ema"):
            WeightAverage(net, bad)


@pytest.mark.parametrize("field,value,exc", [("ema", 1.0, ValueError), ("ema", "0.9", TypeError),
                                             ("flip_mode", "sometimes", ValueError),
                                             ("bias_lr_scale", -1.0, ValueError)])
def test_new_config_fields_are_checked(field, value, exc):
    with pytest.raises(exc, match=field):
        TrainConfig(**{field: value}).validate()


def test_balanced_subset_takes_every_class():
    labels = np.repeat(np.arange(5), [10, 10, 10, 10, 2])      # stored class by class
    keep = balanced_subset(labels, 20)
    assert len(keep) == 20 and np.all(np.diff(keep) > 0)
    counts = np.bincount(labels[keep], minlength=5)
    assert counts[4] == 2 and counts[:4].max() - counts[:4].min() <= 1
    np.testing.assert_array_equal(keep[:5], [0, 1, 2, 3, 4])     # each class's first images
    np.testing.assert_array_equal(balanced_subset(labels, 100), np.arange(42))
