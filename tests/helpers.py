"""What many test files share: tolerances against float64 references, finite
differences, small models and images, and running the command line."""
import os
import re

import numpy as np
import pytest

import gradvis
from gradvis import (BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, Model, ReLU, cli)
from gradvis.io.pretrained import DEFAULT_WEIGHTS


# ---------------------------------------------------------------------------- numbers
def close(got, want, dtype, terms):
    """|got - want| small next to the result's magnitude: within 30 eps(dtype) sqrt(terms + 1)
    of max(|want|, 1), where ``terms`` is the number of products summed per output."""
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape
    scale = max(np.abs(want).max(), 1.0)
    err = np.abs(got - want).max()
    bound = 30 * np.finfo(dtype).eps * np.sqrt(terms + 1) * scale
    assert err <= bound, f"max error {err:.3g} > {bound:.3g}"


def rel_err(got, want):
    """max |got - want| / max |want|: the error relative to the reference's scale."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def tol(dtype, float32=(2e-5, 2e-6), float64=(1e-12, 1e-13)):
    """``assert_allclose`` keyword arguments (rtol, atol) for ``dtype``."""
    rtol, atol = float32 if np.dtype(dtype) == np.float32 else float64
    return dict(rtol=rtol, atol=atol)


def numeric_grad(f, x, dout, h=1e-6):
    """Centred finite differences of sum(f(x) * dout) with respect to x (float64)."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = np.sum(f(x) * dout)
        x[i] = old - h
        fm = np.sum(f(x) * dout)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def numeric_partial(f, x, idx, h=1e-6):
    """d f() / d x[idx] by centred differences; ``f`` reads ``x``, which is restored."""
    old = x[idx]
    x[idx] = old + h
    fp = f()
    x[idx] = old - h
    fm = f()
    x[idx] = old
    return (fp - fm) / (2 * h)


# ---------------------------------------------------------------------------- models and images
def random_biases(model, seed=1, scale=0.5):
    """Gives every bias of ``model`` values drawn uniformly from [-scale, scale)
    (initialized biases are zeros, which hide a bias added twice or not at all)."""
    rng = np.random.default_rng(seed)
    for key in model.params:
        if key.endswith(".bias"):
            model.params[key][...] = rng.uniform(-scale, scale, model.params[key].shape)
    return model


def small_net(seed=0, size=16, classes=5, class_names=False):
    """conv-bn-relu-pool-conv-relu-gap-fc on (3, size, size) with CS231n-style
    normalization and non-trivial batch-norm statistics, as a trained model has."""
    m = Model(input_shape=(3, size, size), mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0), seed=seed,
              class_names=[f"c{i}" for i in range(classes)] if class_names else None)
    m.add("conv1", Conv2d(3, 8, 3, padding=1))
    m.add("bn1", BatchNorm2d(8))
    m.add("relu1", ReLU())
    m.add("pool1", MaxPool2d(2))
    m.add("conv2", Conv2d(8, 12, 3, padding=1))
    m.add("relu2", ReLU())
    m.add("gap", GlobalAvgPool())
    m.add("flatten", Flatten())
    m.add("fc", Linear(12, classes))
    rng = np.random.default_rng(seed + 100)
    m.buffers["bn1.running_mean"] = (0.1 * rng.standard_normal(8)).astype(np.float32)
    m.buffers["bn1.running_var"] = (1 + 0.2 * rng.random(8)).astype(np.float32)
    return m


def tiny_net(seed=0, classes=5, class_names=True):
    """conv-relu-pool-gap-fc on (3, 8, 8), named classes: the cheapest whole classifier."""
    m = Model(input_shape=(3, 8, 8), seed=seed,
              class_names=[f"c{i}" for i in range(classes)] if class_names else None)
    m.add("conv1", Conv2d(3, 4, 3, padding=1)).add("relu1", ReLU())
    m.add("pool", MaxPool2d(2)).add("gap", GlobalAvgPool()).add("flat", Flatten())
    m.add("fc", Linear(4, classes))
    return m


def images(n, size=16, seed=1):
    """Images inside small_net's valid input range (about [-1.7, 2.2])."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.5, 1.5, (n, 3, size, size)).astype(np.float32)


def require_weights():
    """Skip without the bundled weights; under CI their absence fails."""
    if not DEFAULT_WEIGHTS.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the bundled weights {DEFAULT_WEIGHTS} are missing")
        pytest.skip(f"{DEFAULT_WEIGHTS} not trained yet")


def pretrained():
    require_weights()
    return gradvis.load_pretrained()


def held_out_data():
    """The TinyImageNet-100-A archive (its X_val: images 450-499 of each class)."""
    from gradvis.io.datasets import find_tiny_imagenet, load_tiny_imagenet
    try:
        find_tiny_imagenet()
    except FileNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("TinyImageNet archive not found")
    return load_tiny_imagenet()


# ---------------------------------------------------------------------------- the command line
def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``gradvis ARGV...`` run in this process."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err, pattern):
    """Exit code 2 and one line ``gradvis: error: ...`` matching ``pattern``, no traceback."""
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("gradvis: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


def sample(held_out, n, seed):
    """``n`` distinct indices into ``held_out.X_val``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.choice(len(held_out.X_val), n, replace=False)
