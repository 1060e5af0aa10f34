"""``gradvis attribute`` / ``gradvis sanity`` end to end on the bundled model and
a real photo, and the attribution figures' display scaling (Captum's)."""
import numpy as np
import pytest

import gradvis
from gradvis import cli
from gradvis import plot_attribution as pa
from gradvis.cli import common as cli_common
from gradvis.io.pretrained import DEFAULT_WEIGHTS


@pytest.fixture(scope="module")
def photo():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("bundled weights not trained yet")
    return str(cli_common.sample_photo_path())


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_attribute_one_method_writes_figure_and_raw_values(capsys, photo, tmp_path):
    code, out, err = run(capsys, "attribute", photo, "--method", "gradcam", "--layer", "relu6", "-o", tmp_path,
                         "--save-npy", "--class", "goldfish")
    assert code == 0, err
    assert (tmp_path / "grace_hopper_gradcam.png").stat().st_size > 1000
    cam = np.load(tmp_path / "grace_hopper_gradcam.npy")
    m = gradvis.load_pretrained()
    X = m.preprocess(cli_common.fit_image(cli_common.read_image(photo).rgb, m.input_shape[1:])[0])
    from gradvis.attribution import grad_cam
    np.testing.assert_allclose(cam, grad_cam(X, "goldfish", m, "relu6"), rtol=1e-5, atol=1e-7)


def test_attribute_all_writes_the_comparison_grid(capsys, photo, tmp_path):
    code, out, err = run(capsys, "attribute", photo, "--method", "all", "--steps", "8", "--samples", "4",
                         "-o", tmp_path, "-q")
    assert code == 0, err
    assert (tmp_path / "grace_hopper_all.png").is_file()


def test_sanity_command(capsys, photo, tmp_path):
    code, out, err = run(capsys, "sanity", photo, "--method", "saliency", "-o", tmp_path, "-q")
    assert code == 0, err
    assert "randomized down to conv1" in out
    assert (tmp_path / "grace_hopper_sanity_saliency.png").is_file()


@pytest.mark.parametrize("argv,pattern", [
    (["--method", "gradcam", "--layer", "fc"], "no spatial output"),
    (["--method", "gradcam", "--layer", "gap"], "not a spatial"),
    (["--method", "nope"], "invalid choice"),
    (["--method", "ig", "--class", "no-such-class"], "class"),
])
def test_attribute_user_errors(capsys, photo, tmp_path, argv, pattern):
    code, out, err = run(capsys, "attribute", photo, "-o", tmp_path, *argv)
    assert code == 2
    assert pattern in err and "Traceback" not in err


def test_normalize_attribution_is_captums():
    a = np.zeros((3, 4, 4))
    a[0, 0, 0], a[1, 1, 1], a[2, 2, 2] = 10.0, -5.0, 1.0
    # absolute value: the threshold is the value where 98% of the sorted mass is reached
    n = pa.normalize_attribution(a, "absolute_value", outlier_perc=2)
    assert n.max() == 1.0 and n[1, 1] == pytest.approx(0.5) and n[2, 2] == pytest.approx(0.1)
    n = pa.normalize_attribution(a, "all", outlier_perc=2)
    assert n[1, 1] == pytest.approx(-0.5)
    n = pa.normalize_attribution(a, "negative")
    assert n[1, 1] == pytest.approx(1.0) and n[0, 0] == 0
    n = pa.normalize_attribution(a, "positive")
    assert n[0, 0] == pytest.approx(1.0) and n[1, 1] == 0
    with pytest.raises(ValueError, match="sign must be one of"):
        pa.normalize_attribution(a, "both")


def test_display_modes_and_overlay():
    rng = np.random.default_rng(0)
    img = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    a = rng.standard_normal((3, 8, 8))
    for method in pa.DISPLAY_METHODS:
        out = pa.attribution_image(a, img, method, "absolute_value")
        assert out.shape == ((8, 8, 4) if method == "alpha_scaling" else (8, 8, 3))
        assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="needs a sign other than 'all'"):
        pa.attribution_image(a, img, "masked_image", "all")
    with pytest.raises(ValueError, match="needs the image"):
        pa.attribution_image(a, None, "blended_heat_map")
    raw = a.copy()
    pa.attribution_image(a, img, "blended_heat_map")
    np.testing.assert_array_equal(a, raw)      # display scaling never touches the raw values
    ov = pa.cam_overlay(img, rng.random((2, 2)))
    assert ov.shape == (8, 8, 3)
    fig = pa.comparison_figure(img[None], {"a": a[None], "cam": rng.random((1, 2, 2))})
    assert len(fig.axes) == 3
