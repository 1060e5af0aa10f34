"""gradvis.plot: each figure function returns a Figure and writes a PNG; the
algorithms never import plot (compute is kept apart from display)."""
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from gradvis import plot

RNG = np.random.default_rng(0)


def imgs(n, h=32, w=32):
    return RNG.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _check(fig, path):
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saliency_figure(tmp_path):
    p = tmp_path / "s.png"
    fig = plot.saliency_figure(imgs(3), RNG.random((3, 32, 32)), titles=["a", "b", "c"], path=p)
    _check(fig, p)
    assert len(fig.axes) == 9   # image, map, overlay per image
    fig = plot.saliency_figure(imgs(2), np.zeros((2, 32, 32)), overlay=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    with pytest.raises(ValueError, match="saliency"):
        plot.saliency_figure(imgs(2), RNG.random((3, 32, 32)))


def test_fooling_figure(tmp_path):
    p = tmp_path / "f.png"
    a = imgs(1)[0]
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    fig = plot.fooling_figure(a, b, path=p)
    _check(fig, p)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and "10x" in titles[3].replace("\n", " ")
    # the difference panel is mid-gray plus the change
    diff = np.asarray(fig.axes[2].images[0].get_array())
    assert abs(int(np.median(diff)) - 131) <= 1


def test_snapshots_and_grid(tmp_path):
    p = tmp_path / "snap.png"
    fig = plot.snapshots_figure(list(imgs(4)), [f"t = {t}" for t in (1, 2, 3, 4)], title="x", path=p)
    _check(fig, p)
    assert len(fig.axes) == 4
    p2 = tmp_path / "grid.png"
    _check(plot.image_grid(imgs(5), ["a"] * 5, ncols=2, path=p2), p2)


def test_inversion_figure(tmp_path):
    orig = imgs(1)[0]
    p = tmp_path / "inv.png"
    fig = plot.inversion_figure(orig, {"relu2": imgs(1)[0], "relu6": imgs(1)[0]}, path=p)
    _check(fig, p)
    p = tmp_path / "inv_rows.png"
    fig = plot.inversion_figure(orig, {"relu2": [(im, f"t={i}") for i, im in enumerate(imgs(3))],
                                       "relu6": list(imgs(3))}, title="shallow vs deep", path=p)
    _check(fig, p)
    assert len(fig.axes) == 8


def test_predictions_figure_and_compact(tmp_path):
    p = tmp_path / "pred.png"
    fig = plot.predictions_figure(imgs(2), [[("cat", 0.7), ("dog", 0.2)], [("car", 0.9)]], path=p)
    _check(fig, p)
    big = p.stat().st_size
    plot.save_figure(fig, p, compact=True)
    from PIL import Image
    assert Image.open(p).mode == "P" and p.stat().st_size < big


def test_float_and_chw_images_accepted():
    assert plot.to_display(np.ones((3, 8, 8), np.float32) * 2).max() == 1.0
    assert plot.to_display(np.zeros((8, 8, 1), np.uint8)).shape == (8, 8)


def test_algorithms_do_not_import_plot_or_pyplot():
    code = ("import sys, gradvis; import gradvis.attribution, gradvis.attacks, gradvis.generation, "
            "gradvis.train; "
            "bad = [m for m in ('gradvis.plot', 'gradvis.cli', 'matplotlib.pyplot') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_plot_without_pyplot_imports_no_pyplot():
    code = ("import sys, numpy as np; from gradvis import plot; "
            "plot.image_grid(np.zeros((2, 8, 8, 3), np.uint8)); "
            "sys.exit(1 if 'matplotlib.pyplot' in sys.modules or 'gradvis.cli' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
