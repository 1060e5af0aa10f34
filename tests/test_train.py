"""gradvis.train: optimizers vs PyTorch, schedules, augmentation, a short run, checkpoint/resume."""
import types

import numpy as np
import pytest

from gradvis.nn.architectures import default_net
from gradvis.io.model_file import load_model
from gradvis.train import (SGD, AdamW, CosineWarmup, OneCycle, StepLR, TrainConfig, augment_batch,
                           random_crop, random_flip, train)

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


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_continues_exactly(tmp_path, optimizer):
    data = _toy_data(n_per_class=16)
    cfg = _cfg(epochs=3, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003)
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
