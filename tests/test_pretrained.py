"""The bundled default model: present, small, and >= 50% top-1 on the held-out images 450-499."""
import os

import numpy as np
import pytest

import gradvis
from gradvis.io.pretrained import DEFAULT_WEIGHTS


def _require_weights():
    if not DEFAULT_WEIGHTS.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the bundled weights {DEFAULT_WEIGHTS} are missing")
        pytest.skip(f"{DEFAULT_WEIGHTS} not trained yet")


def test_missing_weights_error_says_how_to_make_them(monkeypatch, tmp_path):
    import gradvis.io.pretrained as models
    monkeypatch.setattr(models, "DEFAULT_WEIGHTS", tmp_path / "default.npz")
    with pytest.raises(FileNotFoundError, match="gradvis.train"):
        gradvis.load_pretrained()


def test_pretrained_metadata():
    _require_weights()
    assert DEFAULT_WEIGHTS.stat().st_size <= 10 * 2 ** 20
    m = gradvis.load_pretrained()
    assert m.num_classes == 100 and len(m.class_names) == 100 and len(m.wnids) == 100
    assert m.input_shape == (3, 64, 64)
    img = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(m.deprocess(m.preprocess(img)), img)


@pytest.mark.data
def test_pretrained_held_out_accuracy():
    _require_weights()
    from gradvis.io.datasets import find_tiny_imagenet, load_tiny_imagenet
    try:
        find_tiny_imagenet()
    except FileNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("TinyImageNet archive not found")
    from gradvis.train import evaluate
    ds = load_tiny_imagenet()
    m = gradvis.load_pretrained()
    assert m.wnids == list(ds.wnids)
    acc = evaluate(m, ds.X_val, ds.y_val)
    assert acc >= 0.625, f"held-out top-1 {acc:.4f} < 0.625"
