"""gradvis.plot and gradvis.image: saving (file objects, failed saves leave the
target as it was) and clear errors for bad images, maps, titles and arguments."""
import io
import os

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from gradvis import plot
from gradvis.nn import imageops as image

matplotlib.use("Agg")

RNG = np.random.default_rng(1)
PNG = b"\x89PNG\r\n\x1a\n"


def imgs(n, h=16, w=16):
    return RNG.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def small_fig():
    return plot.image_grid(imgs(2))


# ----------------------------------------------------------------------------- saving
@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # anything written by name lands in tmp_path


def test_save_into_bytesio(tmp_path):
    buf = io.BytesIO()
    assert plot.save_figure(small_fig(), buf) is buf
    assert buf.getvalue()[:8] == PNG
    buf2 = io.BytesIO()
    plot.image_grid(imgs(1), path=buf2)
    assert buf2.getvalue()[:8] == PNG
    assert os.listdir(tmp_path) == []          # no stray file named after the object


def test_save_compact_into_bytesio():
    buf = io.BytesIO()
    plot.save_figure(small_fig(), buf, compact=True)
    from PIL import Image
    buf.seek(0)
    assert Image.open(buf).mode == "P"


def test_save_text_file_or_wrong_type_refused(tmp_path):
    with pytest.raises(TypeError, match="binary"):
        plot.save_figure(small_fig(), io.StringIO())
    with pytest.raises(TypeError, match="path"):
        plot.save_figure(small_fig(), 123)
    with pytest.raises(TypeError, match="fig"):
        plot.save_figure(np.zeros((4, 4)), tmp_path / "x.png")


def test_compact_jpg_refused_and_file_kept(tmp_path):
    p = tmp_path / "keep.jpg"
    p.write_bytes(b"user data")
    with pytest.raises(ValueError, match="compact"):
        plot.save_figure(small_fig(), p, compact=True)
    assert p.read_bytes() == b"user data"


def test_unknown_extension_refused_and_file_kept(tmp_path):
    p = tmp_path / "keep.notaformat"
    p.write_bytes(b"user data")
    with pytest.raises(ValueError, match="notaformat"):
        plot.save_figure(small_fig(), p)
    assert p.read_bytes() == b"user data"
    assert sorted(os.listdir(tmp_path)) == ["keep.notaformat"]


def test_no_extension_writes_png_compact_and_overwrites(tmp_path):
    p = tmp_path / "figure"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    plot.save_figure(small_fig(), p, compact=True)    # overwrites, keeping the file's mode
    assert p.read_bytes()[:8] == PNG
    assert (p.stat().st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["figure"]
    from PIL import Image
    assert Image.open(p).mode == "P"


def test_extension_picks_format(tmp_path):
    p = tmp_path / "f.jpg"
    plot.save_figure(small_fig(), p)
    assert p.read_bytes()[:2] == b"\xff\xd8"      # a JPEG, not PNG bytes under a .jpg name
    p = tmp_path / "f.svg"
    plot.save_figure(small_fig(), p)
    assert b"<svg" in p.read_bytes()[:500]


def test_failed_compact_save_leaves_existing_file(tmp_path, monkeypatch):
    from PIL import Image
    p = tmp_path / "mine.png"
    p.write_bytes(b"precious")

    def broken(*a, **k):
        raise RuntimeError("quantize failed")
    monkeypatch.setattr(Image.Image, "quantize", broken)
    with pytest.raises(RuntimeError, match="quantize failed"):
        plot.save_figure(small_fig(), p, compact=True)
    assert p.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["mine.png"]      # no temporary file left behind


def test_save_into_directory_or_missing_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        plot.save_figure(small_fig(), tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot.save_figure(small_fig(), tmp_path / "no" / "x.png")


def test_bad_dpi():
    with pytest.raises(ValueError, match="dpi"):
        plot.save_figure(small_fig(), io.BytesIO(), dpi=0)
    with pytest.raises(TypeError, match="dpi"):
        plot.save_figure(small_fig(), io.BytesIO(), dpi="high")


# ----------------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_saliency(bad):
    sal = np.zeros((1, 16, 16))
    sal[0, 3, 3] = bad
    with pytest.raises(ValueError, match="saliency contains NaN or infinite"):
        plot.saliency_figure(imgs(1), sal)


def test_nonfinite_image():
    img = np.zeros((16, 16, 3), np.float32)
    img[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"images\[1\] contains NaN"):
        plot.image_grid([np.zeros((16, 16, 3), np.float32), img])
    with pytest.raises(ValueError, match="original contains NaN"):
        plot.fooling_figure(img, img)


# ----------------------------------------------------------------------------- titles, empties, types
def test_titles_count_checked():
    with pytest.raises(ValueError, match="titles has 1 entry for 2 images"):
        plot.saliency_figure(imgs(2), np.zeros((2, 16, 16)), titles=["only one"])
    with pytest.raises(ValueError, match="titles has 3 entries for 2 images"):
        plot.predictions_figure(imgs(2), [[("a", 0.5)], [("b", 0.5)]], titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="titles"):
        plot.fooling_figure(imgs(2), imgs(2), titles=[("a", "b")])
    with pytest.raises(ValueError, match="labels has 1 entry for 2"):
        plot.snapshots_figure(list(imgs(2)), ["t = 1"])
    with pytest.raises(TypeError, match="titles"):
        plot.saliency_figure(imgs(1), np.zeros((1, 16, 16)), titles="cat")


def test_fooling_titles_pairs():
    a = imgs(1)[0]
    with pytest.raises(ValueError, match=r"titles=\[\(orig, fool\)\]"):
        plot.fooling_figure(a, a, titles=("orig", "fool"))
    with pytest.raises(ValueError, match=r"titles\[0\] must be a pair"):
        plot.fooling_figure(a, a, titles=[("only",)])
    fig = plot.fooling_figure(a, a, titles=[("o", "f")])
    assert [ax.get_title() for ax in fig.axes][:2] == ["o", "f"]


def test_empty_inputs():
    with pytest.raises(ValueError, match="original is empty"):
        plot.fooling_figure([], [])
    with pytest.raises(ValueError, match="images is empty"):
        plot.saliency_figure(np.zeros((0, 16, 16, 3), np.uint8), np.zeros((0, 16, 16)))
    with pytest.raises(ValueError, match=r"images\[0\] is empty"):
        plot.image_grid([np.zeros((0, 0, 3), np.uint8)])
    with pytest.raises(ValueError, match="saliency is empty"):
        plot.saliency_figure([np.zeros((16, 16, 3), np.uint8)], np.zeros((1, 0, 0)))


def test_wrong_types():
    img = imgs(1)[0]
    with pytest.raises(TypeError, match="reconstructions must be a dict"):
        plot.inversion_figure(img, [img])
    with pytest.raises(ValueError, match=r"predictions\[0\]\[0\] must be a \(class name, probability\) pair"):
        plot.predictions_figure([img], [["cat"]])
    with pytest.raises(TypeError, match=r"predictions\[0\]\[0\] probability"):
        plot.predictions_figure([img], [[("cat", "high")]])
    with pytest.raises(TypeError, match="images"):
        plot.image_grid(None)
    with pytest.raises(TypeError, match=r"images\[0\] must be a numeric"):
        plot.image_grid(["not an image"])
    with pytest.raises(TypeError, match="saliency must be a numeric"):
        plot.saliency_figure([img], "map")
    with pytest.raises(TypeError, match="ncols"):
        plot.image_grid(imgs(2), ncols="2")
    with pytest.raises(ValueError, match="ncols"):
        plot.image_grid(imgs(2), ncols=0)
    with pytest.raises(TypeError, match="magnify"):
        plot.fooling_figure(img, img, magnify="10")
    # what is valid still works
    assert isinstance(plot.inversion_figure(img, {"r": [(img, "t=1"), img]}), Figure)
    assert isinstance(plot.predictions_figure(imgs(1), [[("cat", np.float32(0.7))]]), Figure)
    assert isinstance(plot.image_grid(imgs(3), ncols=2.0), Figure)


def test_bad_shapes_named():
    with pytest.raises(ValueError, match=r"images\[0\] must be an image"):
        plot.image_grid([np.zeros((8, 8, 5), np.uint8)])
    with pytest.raises(ValueError, match="original and fooling differ in shape"):
        plot.fooling_figure(imgs(1, 16, 16)[0], imgs(1, 8, 8)[0])
    with pytest.raises(ValueError, match="mixes"):
        plot.inversion_figure(imgs(1)[0], {"a": imgs(1)[0], "b": [imgs(1)[0]]})
    with pytest.raises(ValueError, match=r"reconstructions\['a'\] is an empty list"):
        plot.inversion_figure(imgs(1)[0], {"a": []})


# ----------------------------------------------------------------------------- layouts
def test_single_chw_image_is_one_panel():
    chw = RNG.random((3, 16, 16)).astype(np.float32)
    fig = plot.image_grid(chw)
    assert len(fig.axes) == 1
    assert fig.axes[0].images[0].get_array().shape == (16, 16, 3)
    assert len(plot.image_grid(np.zeros((1, 16, 16), np.float32)).axes) == 1
    fig = plot.saliency_figure(chw, np.zeros((16, 16)))
    assert len(fig.axes) == 3
    fig = plot.fooling_figure(chw, chw)
    assert len(fig.axes) == 4
    # stacks are still stacks
    assert len(plot.image_grid(RNG.random((2, 3, 16, 16))).axes) == 2
    assert len(plot.image_grid(np.zeros((5, 16, 16), np.uint8)).axes) == 5   # (N, H, W) grayscale
    assert len(plot.image_grid([np.zeros((16, 16))] * 3).axes) == 3          # 3 grayscale as a list


# ----------------------------------------------------------------------------- image.resize
def test_resize_errors():
    with pytest.raises(ValueError, match="no pixels"):
        image.resize(np.zeros((1, 3, 0, 4), np.float32), (4, 4))
    with pytest.raises(TypeError, match="size must be a pair"):
        image.resize(np.zeros((1, 3, 4, 4), np.float32), 4)
    with pytest.raises(TypeError, match="size must be an integer"):      # floats and strings are
        image.resize(np.zeros((1, 3, 4, 4), np.float32), (np.nan, 2))   # not taken for ints
    with pytest.raises(TypeError, match="size must be an integer"):
        image.resize(np.zeros((1, 3, 4, 4), np.float32), ("4", 2))
    assert image.resize(np.ones((1, 3, 4, 4), np.float32), (np.int64(2), 6)).shape == (1, 3, 2, 6)
