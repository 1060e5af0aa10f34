"""The optvis commands of the gradvis command line (features, render, classvis
--style lucid), end to end on the bundled model in a temporary directory."""
import numpy as np
import pytest

import gradvis
from gradvis import cli
from gradvis.cli.optvis import parse_channels
from gradvis.cli.common import UsageError

# The command runs beside other work: one OpenMP thread avoids oversubscription stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_features_writes_a_channel_atlas(tmp_path, capsys):
    code, out, err = run(capsys, "features", "--layer", "relu4", "--channels", "0-2,5", "-n", "12",
                         "-o", tmp_path, "-q", "--save-npy", "--batch", "3")
    assert code == 0, err
    assert (tmp_path / "features_relu4.png").stat().st_size > 1000
    X = np.load(tmp_path / "features_relu4.npy")
    assert X.shape == (4, 3, 64, 64)
    assert "relu4" in out and "x the layer's average" in out


def test_render_writes_the_image_and_snapshots(tmp_path, capsys):
    code, out, err = run(capsys, "render", "--objective", "channel:relu5:7 - 0.5*channel:relu5:3",
                         "-n", "6", "--thresholds", "2", "6", "-o", tmp_path, "-q", "--save-npy")
    assert code == 0, err
    stem = "render_channel_relu5_7_0_5_channel_relu5_3"
    for suffix in (".png", "_snapshots.png", ".npy"):
        assert (tmp_path / (stem + suffix)).is_file()
    assert "channel:relu5:7 - 0.5*channel:relu5:3" in out


def test_classvis_lucid_style(tmp_path, capsys):
    code, out, err = run(capsys, "classvis", "lemon", "--style", "lucid", "-n", "8", "--snapshots", "2",
                         "-o", tmp_path, "-q")
    assert code == 0, err
    assert (tmp_path / "classvis_n07749582_lemon.png").is_file()
    assert (tmp_path / "classvis_n07749582_lemon_snapshots.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["classvis", "0", "--size", "8", "8", "-n", "2"], "too small"),
    (["classvis", "0", "--size", "8", "8", "-n", "2", "--style", "lucid"], "too small"),
    (["features", "--layer", "relu9"], "no layer named 'relu9'"),
    (["features", "--layer", "fc"], "no spatial output"),
    (["features", "--layer", "relu5", "--channels", "250-256"], "out of range"),
    (["features", "--layer", "relu5", "--channels", "3-1"], "backwards"),
    (["render", "--objective", "channel:relu5:300", "-n", "2"], "out of range"),
    (["render", "--objective", "neuron:fc:7", "-n", "2"], "spatial"),
    (["render", "--objective", "chanel:relu5:1", "-n", "2"], "unknown objective"),
    (["render", "--objective", "channel:relu5:1", "-n", "4", "--thresholds", "5"], "beyond --steps"),
    (["render", "--objective", "channel:relu5:1", "-n", "0"], "must be >= 1"),
    (["render", "--objective", "diversity:relu5", "-n", "2"], "batch of 2"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, *argv, "-o", tmp_path, "-q")
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_parse_channels():
    assert parse_channels("0-3, 7,5", 10, "l") == [0, 1, 2, 3, 5, 7]
    with pytest.raises(UsageError):
        parse_channels("a", 10, "l")
