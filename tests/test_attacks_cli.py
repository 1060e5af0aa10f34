"""The command line's attack commands: 'fool' (quantized by default; its figure
names the target and says when the attack failed) and 'robustness' (a table, its
JSON and the security curve) on the bundled model."""
import csv
import json

import numpy as np
import pytest

import gradvis
from gradvis.cli import common as cli_common
from helpers import assert_usage_error, require_weights, run_cli

# The command runs beside other work: one OpenMP thread avoids oversubscription stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    require_weights()
    return gradvis.load_pretrained()


@pytest.fixture
def titles(monkeypatch):
    """The titles the fool command gives its figure."""
    from gradvis import plot
    seen = []
    original = plot.fooling_figure

    def spy(*a, **kw):
        seen.extend(kw.get("titles") or [])
        return original(*a, **kw)
    monkeypatch.setattr(plot, "fooling_figure", spy)
    return seen


def test_fool_saves_a_png_that_fools(capsys, model, tmp_path, titles):
    from gradvis.io.images import read_rgb
    photo = str(cli_common.sample_photo_path())
    code, out, err = run_cli(capsys, "fool", photo, "--target", "n01443537", "--eps", 8, "--confidence", 0.5,
                             "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "fooled: yes" in out and "target p >= 0.5" in out, out
    assert "the saved PNG is the image the attack ended on" in out
    back = model.preprocess(read_rgb(tmp_path / "grace_hopper_fooled.png")[0])
    probs = gradvis.nn.losses.softmax(model.predict(back))[0]
    target = model.wnids.index("n01443537")
    assert probs.argmax() == target and probs[target] >= 0.5
    (orig, second), = titles
    assert second.startswith("fooled -> ") and model.class_names[target].split(",")[0] in second


def test_fool_figure_says_when_the_attack_failed(capsys, model, tmp_path, titles):
    photo = str(cli_common.sample_photo_path())
    code, out, err = run_cli(capsys, "fool", photo, "--target", "goldfish", "--eps", 0.5, "--max-iter", 3,
                             "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "fooled: no" in out, out
    (orig, second), = titles
    assert second.startswith("FAILED: target goldfish"), second
    assert "model says" in second


def test_fool_bad_new_options(capsys, tmp_path):
    photo = str(cli_common.sample_photo_path())
    code, _, err = run_cli(capsys, "fool", photo, "--target", "gold", "--confidence", "1.5", "--out", tmp_path)
    assert_usage_error(code, err, "--confidence")
    code, _, err = run_cli(capsys, "fool", photo, "--target", "gold", "--margin", "-1", "--out", tmp_path)
    assert_usage_error(code, err, "--margin")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, model):
    """Two classes of the bundled model (by wnid), three photo crops each."""
    from PIL import Image
    root = tmp_path_factory.mktemp("robust_data")
    photo = cli_common.read_image(cli_common.sample_photo_path()).rgb
    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / model.wnids[c]
        d.mkdir()
        for i in range(3):
            y0, x0 = rng.integers(0, min(photo.shape[:2]) - 200, 2)
            Image.fromarray(photo[y0:y0 + 200, x0:x0 + 200]).resize((64, 64)).save(d / f"{i}.png")
    return root


def test_robustness_writes_table_json_and_curve(capsys, folder, tmp_path):
    code, out, err = run_cli(capsys, "robustness", folder, "--attack", "fgsm", "pgd", "noise", "--eps", 1, 4,
                             "--steps", 3, "--limit", 4, "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "4 images" in out and "robust accuracy" in out
    with open(tmp_path / "robustness.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["eps", "fgsm", "pgd", "noise", "worst_case", "success_rate", "success_rate_correct"]
    assert [float(r[0]) for r in rows[1:]] == [0.0, 1.0, 4.0]
    table = json.loads((tmp_path / "robustness.json").read_text())
    assert table["n_images"] == 4 and table["eps"] == [1.0, 4.0]
    worst = table["worst_case"]
    assert worst[1] <= worst[0] <= table["clean_accuracy"]
    for name in ("fgsm", "pgd", "noise"):
        assert all(w <= a for w, a in zip(worst, table["accuracy"][name]))
    assert (tmp_path / "robustness.png").stat().st_size > 1000


@pytest.mark.parametrize("argv,pattern", [
    (["--eps", "-1"], "--eps.*must be >= 0"),
    (["--attack", "magic"], "--attack.*invalid choice"),
    (["--attack", "pgd", "pgd"], "names an attack twice"),
    (["--limit", "0"], "--limit"),
])
def test_robustness_usage_errors(capsys, folder, tmp_path, argv, pattern):
    code, _, err = run_cli(capsys, "robustness", folder, *argv, "--out", tmp_path)
    assert_usage_error(code, err, pattern)


def test_robustness_missing_data(capsys, tmp_path):
    code, _, err = run_cli(capsys, "robustness", tmp_path / "nothing", "--out", tmp_path)
    assert_usage_error(code, err, "no such file")
