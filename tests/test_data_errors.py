"""Bad data given to the loaders and to training: wrong paths, damaged archives,
odd images, bad training sizes and checkpoints. Tiny fake TinyImageNet archives
are built in tmp_path; the decoded-archive cache always lives in tmp_path too."""
import gzip
import io
import os
import re
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from gradvis.io import datasets as data
from gradvis.cli import common as cli_common
from gradvis.cli import training as cli_training
from gradvis.train import trainer as T
from gradvis.nn.architectures import default_net
from helpers import assert_usage_error, run_cli

WNIDS = ["n01443537", "n01629819"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's cache (nor find the real archive through the environment)."""
    monkeypatch.setenv("GRADVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GRADVIS_TINY_IMAGENET", raising=False)
    return tmp_path / "cache"


def _jpeg(rng, size=(16, 16)):
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(b, "JPEG")
    return b.getvalue()


def _tar_bytes(per=4, wnids=WNIDS, image_wnids=None, wnids_text=None, val=True, extra=(), size=(16, 16),
               replace=None, seed=0):
    """A TinyImageNet-like tar (uncompressed bytes): ``per`` training and (with ``val``)
    ``per`` held-out images for each class; ``replace`` maps a member name to new data."""
    rng = np.random.default_rng(seed)
    members = [("a/wnids.txt", ("\n".join(wnids) + "\n").encode() if wnids_text is None else wnids_text),
               ("a/words.txt", b"n01443537\tgoldfish\nn01629819\tsalamander\n")]
    for w in (image_wnids or wnids):
        for k in list(range(per)) + (list(range(450, 450 + per)) if val else []):
            members.append((f"a/train/{w}/images/{w}_{k}.JPEG", _jpeg(rng, size)))
    members += list(extra)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, payload in members:
            payload = (replace or {}).get(name, payload)
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            t.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


def _archive(path, **kw):
    path.write_bytes(gzip.compress(_tar_bytes(**kw), mtime=0))
    return path


def _npz_files(folder):
    return sorted(p.name for p in folder.glob("*.npz")) if folder.is_dir() else []






# ----------------------------------------------------------------------------- finding the archive
def test_explicit_path_never_falls_back(tmp_path, monkeypatch):
    good = _archive(tmp_path / "good.tar.gz")
    monkeypatch.setenv("GRADVIS_TINY_IMAGENET", str(good))
    assert data.find_tiny_imagenet() == good
    with pytest.raises(FileNotFoundError, match="typo.tar.gz"):
        data.find_tiny_imagenet(tmp_path / "typo.tar.gz")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path)) + ".*is a directory"):
        data.load_tiny_imagenet(tmp_path)


def test_wrong_environment_path_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADVIS_TINY_IMAGENET", str(tmp_path / "gone.tar.gz"))
    with pytest.raises(FileNotFoundError, match="GRADVIS_TINY_IMAGENET=.*gone.tar.gz"):
        data.find_tiny_imagenet()


# ----------------------------------------------------------------------------- damaged archives
def test_good_archive_loads_and_plain_tar_too(tmp_path):
    ds = data.load_tiny_imagenet(_archive(tmp_path / "good.tar.gz"), use_cache=False)
    assert ds.X_train.shape == (8, 16, 16, 3) and ds.X_val.shape == (8, 16, 16, 3)
    assert ds.class_names == ["goldfish", "salamander"]
    plain = tmp_path / "plain.tar"
    plain.write_bytes(_tar_bytes())
    ds2 = data.load_tiny_imagenet(plain, use_cache=False)
    np.testing.assert_array_equal(ds2.X_val, ds.X_val)


def test_damaged_gzip_is_refused_and_not_cached(tmp_path, private_cache):
    good = _archive(tmp_path / "good.tar.gz", per=6)
    raw = bytearray(good.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(64)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        data.load_tiny_imagenet(bad)
    assert _npz_files(private_cache) == []


def test_unreadable_tar_header_is_not_taken_for_the_end(tmp_path, private_cache):
    # a valid gzip stream around a tar with one garbage header: tarfile alone stops there silently
    name = "a/train/n01629819/images/n01629819_0.JPEG"
    tar = bytearray(_tar_bytes())
    at = tar.index(name.encode())
    tar[at:at + 512] = b"\x7f" * 512
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(bytes(tar)))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*damaged"):
        data.load_tiny_imagenet(bad)
    assert _npz_files(private_cache) == []


def test_class_without_images_is_refused(tmp_path):
    no_val = _archive(tmp_path / "noval.tar.gz", val=False)
    with pytest.raises(ValueError, match=r"noval\.tar\.gz: 2 of the 2 classes .* no held-out images.*n01443537"):
        data.load_tiny_imagenet(no_val, use_cache=False)
    one = _archive(tmp_path / "one.tar.gz", image_wnids=WNIDS[:1])
    with pytest.raises(ValueError, match=r"one\.tar\.gz: 1 of the 2 classes .* no training images.*n01629819"):
        data.load_tiny_imagenet(one, use_cache=False)


@pytest.mark.parametrize("content, what", [
    (lambda good: good[:len(good) // 2], "truncated"),
    (lambda good: b"", "empty"),
    (lambda good: b"<html>404 not found</html>", "not a tar archive"),
])
def test_broken_archive_files_are_named(tmp_path, content, what):
    good = _archive(tmp_path / "good.tar.gz").read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(content(good))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + f".*{what}"):
        data.load_tiny_imagenet(bad)


def test_bad_members_are_named(tmp_path):
    img = "a/train/n01443537/images/n01443537_2.JPEG"
    rng = np.random.default_rng(1)
    cases = [
        (dict(replace={img: b"\xff\xd8junk"}), f"member {img}: not an image file"),
        (dict(replace={img: _jpeg(rng, (24, 8))}), f"member {img}: image is 24x8, but the others are 16x16"),
        (dict(image_wnids=["n09999999"]),
         "member a/train/n09999999/images/n09999999_0.JPEG: class n09999999 is not in wnids.txt"),
        (dict(wnids_text=b"\xff\xfe\x00bad"), "member a/wnids.txt: not UTF-8"),
        (dict(wnids_text=b"\n"), "member a/wnids.txt: no class ids"),
        (dict(extra=[("a/train/n01443537/n01443537_boxes.txt", b"n01443537_0.JPEG\t-5\t-5\t999\t999\n")]),
         "member a/train/n01443537/n01443537_boxes.txt, line 1: box .* is outside the 16x16 image"),
    ]
    for i, (kw, pattern) in enumerate(cases):
        bad = _archive(tmp_path / f"bad{i}.tar.gz", **kw)
        with pytest.raises(ValueError, match=re.escape(str(bad)) + ": " + pattern):
            data.load_tiny_imagenet(bad, use_cache=False)


@pytest.mark.parametrize("content", [lambda good: good[:len(good) // 2], lambda good: b"",
                                     lambda good: b"<html>404</html>"])
def test_evaluate_on_broken_archive_is_one_line(capsys, tmp_path, content):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(content(_archive(tmp_path / "good.tar.gz").read_bytes()))
    code, out, err = run_cli(capsys, "evaluate", bad, "-q")
    assert_usage_error(code, err, re.escape(str(bad)))
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- the decode cache
def test_cache_keeps_one_entry_per_archive_path(tmp_path, private_cache, monkeypatch):
    a = _archive(tmp_path / "a.tar.gz")
    private_cache.mkdir()
    (private_cache / "notes.npz").write_bytes(b"not ours")
    for i in range(3):                      # touched (re-downloaded) archives
        t = time.time() + 10 * i
        os.utime(a, (t, t))
        data.load_tiny_imagenet(a)
    assert len(_npz_files(private_cache)) == 2      # the newest entry and the file that is not ours
    b = tmp_path / "b.tar.gz"
    b.write_bytes(a.read_bytes())
    data.load_tiny_imagenet(b)
    names = _npz_files(private_cache)
    assert len(names) == 3 and "notes.npz" in names
    first = data.load_tiny_imagenet(a)      # served from the cache
    assert first.X_train.shape == (8, 16, 16, 3) and _npz_files(private_cache) == names
    # an entry named as before the path tag was added is used (and renamed), not decoded again
    (entry,) = [private_cache / n for n in names if n.startswith(f"tiny-imagenet-100-A-{data._source_tag(a)}-")]
    legacy = private_cache / f"tiny-imagenet-100-A-{data._cache_key(a)}.npz"
    entry.rename(legacy)

    def no_decoding(archive):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_read_archive", no_decoding)
    again = data.load_tiny_imagenet(a)
    np.testing.assert_array_equal(again.X_train, first.X_train)
    assert _npz_files(private_cache) == names


# ----------------------------------------------------------------------------- image folders
def test_image_folder_rescales_16_bit_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "data" / "cls"
    d.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 65535, (20, 24)).astype(np.uint16)).save(d / "i16.png")
    Image.fromarray(rng.random((20, 24)).astype(np.float32), "F").save(d / "f.tif")
    ds = data.load_image_folder(tmp_path / "data", size=(20, 24), val_fraction=0)
    means = ds.X_train.reshape(2, -1).mean(axis=1)
    assert np.all((means > 90) & (means < 170)), means


def test_image_folder_names_unreadable_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    d = tmp_path / "data" / "cls"
    d.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / "b.png")
    whole = (d / "b.png").read_bytes()
    (d / "b.png").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match=r"b\.png: cannot read image .*truncated"):
        data.load_image_folder(tmp_path / "data", size=(16, 16))
    (d / "b.png").write_bytes(whole)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"b\.png: image too large"):
        data.load_image_folder(tmp_path / "data", size=(16, 16))


@pytest.mark.parametrize("frac", [float("nan"), -0.1, 1.5, float("inf")])
def test_image_folder_val_fraction_is_checked(tmp_path, frac):
    (tmp_path / "cls").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cls" / "a.png")
    with pytest.raises(ValueError, match="val_fraction"):
        data.load_image_folder(tmp_path, size=(8, 8), val_fraction=frac)


def test_evaluate_folder_with_truncated_image_is_one_line(capsys, tmp_path):
    d = tmp_path / "data" / WNIDS[0]
    d.mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(d / "a.png")
    (d / "b.png").write_bytes((d / "a.png").read_bytes()[:60])
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "data", "-q")
    assert_usage_error(code, err, r"b\.png")


# ----------------------------------------------------------------------------- training
def _toy(n=8, size=32, classes=2):
    import types
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = np.arange(n) % classes
    return types.SimpleNamespace(X_train=X, y_train=y, X_val=X[:4], y_val=y[:4])


def _net(size=32):
    return default_net(num_classes=2, widths=(2,) * 7, input_size=size, seed=0)


@pytest.mark.parametrize("size, crop, pattern", [(32, 36, "crop 36 is larger than the 32x32 images"),
                                                 (32, 12, "crop 12: too small for the model"),
                                                 (12, 0, "the 12x12 images: too small for the model")])
def test_train_refuses_bad_sizes_before_any_step(tmp_path, size, crop, pattern):
    steps = []
    cfg = T.TrainConfig(epochs=1, batch_size=4, crop=crop, pad=4, eval_every=0)
    with pytest.raises(ValueError, match=pattern):
        T.train(_net(size), _toy(size=size), cfg, run_dir=tmp_path, log=None,
                on_step=lambda s, l: steps.append(s))
    assert steps == [] and list(tmp_path.iterdir()) == []


def test_final_model_is_saved_before_the_centre_crop_evaluation(tmp_path, monkeypatch):
    real = T.evaluate

    def failing(model, X, y, batch_size=500, crop=None):
        if crop:
            raise RuntimeError("centre-crop evaluation failed")
        return real(model, X, y, batch_size)

    monkeypatch.setattr(T, "evaluate", failing)
    cfg = T.TrainConfig(epochs=1, batch_size=4, crop=28, pad=2, eval_every=0)
    with pytest.raises(RuntimeError):
        T.train(_net(), _toy(), cfg, run_dir=tmp_path, log=None)
    assert (tmp_path / "final.npz").is_file()


def test_resume_from_files_that_are_not_checkpoints(tmp_path):
    model_file = _net().save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match=r"model\.npz is not a training checkpoint"):
        T.read_checkpoint(model_file)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"garbage")
    cfg = T.TrainConfig(epochs=1, batch_size=4, crop=28, pad=2, eval_every=0)
    with pytest.raises(ValueError, match=r"checkpoint\.npz"):
        T.train(_net(), _toy(), cfg, run_dir=run, resume=True, log=None)


def test_bool_options_refuse_unknown_words():
    import argparse
    p = argparse.ArgumentParser()
    T.add_config_arguments(p)
    assert p.parse_args(["--flip", "off"]).flip is False and p.parse_args(["--flip", "Yes"]).flip is True
    with pytest.raises(SystemExit):
        p.parse_args(["--flip", "maybe"])


# ----------------------------------------------------------------------------- gradvis train
@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for w in WNIDS:
        (tmp_path / "data" / w).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "data" / w / f"{i}.png")
    return tmp_path / "data"


@pytest.mark.parametrize("argv, pattern", [
    (["--image-size", 16, "--crop", 20, "--pad", 4], r"--crop 20 is larger than --image-size 16"),
    (["--image-size", 16], r"the crop 14 \(7/8 of --image-size\) is too small for the net"),
    (["--image-size", 12, "--crop", 0], r"--image-size 12 is too small for the net"),
    (["--image-size", 4096], r"--image-size: must be <= 1024"),
    (["--pad", 1000000], r"--pad 1000000 is larger than --image-size 64"),
    (["--flip", "maybe"], r"--flip: expected true/false"),
    (["--val-fraction", 1], r"--val-fraction 1.0 leaves no training images"),
    (["--val-fraction", 2], r"--val-fraction: must be <= 1"),
    (["--model", "x.npz"], r"unrecognized arguments: --model"),
])
def test_train_refuses_bad_options_up_front(capsys, tmp_path, folder, argv, pattern):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", folder, "--out", out, "-q", *argv)
    assert_usage_error(code, err, pattern)
    assert not out.exists()


@pytest.mark.parametrize("content", ["garbage", "model"])
def test_train_resume_with_a_bad_checkpoint(capsys, tmp_path, folder, content):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "checkpoint.npz"
    if content == "garbage":
        ckpt.write_bytes(b"garbage")
    else:
        _net(64).save(ckpt)
    code, _, err = run_cli(capsys, "train", folder, "--out", out, "--resume", "-q")
    assert_usage_error(code, err, re.escape(str(ckpt)) + ".*(not a gradvis model file|not a training checkpoint)")


def test_train_threads_option_wins(capsys, tmp_path, folder, monkeypatch):
    seen = {}

    def fake_train(model, ds, cfg, **kw):
        seen["threads"] = cfg.num_threads
        return model, {}

    monkeypatch.setattr(T, "train", fake_train)
    monkeypatch.setattr(cli_training, "setup", lambda args: cli_common.Run(args))   # leave the process's threads alone
    code, _, err = run_cli(capsys, "train", folder, "--out", tmp_path / "run", "-q", "--threads", 1,
                        "--batch-size", 4, "--image-size", 32)
    assert code == 0, err
    assert seen["threads"] == 1
