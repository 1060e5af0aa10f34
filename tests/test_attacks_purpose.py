"""The attacks do what they are for, on a small trained CNN (attack_models):
robust accuracy falls with the budget, min_norm brackets the boundary, CW finds
smaller changes than PGD, a quantized fooling image still fools once saved as a
PNG, and every budget and the valid pixel box hold."""
import numpy as np
import pytest

from conftest import require
from attack_models import synthetic_images, trained_pair

require("torch")

from gradvis.attacks import (apgd, cw_l2, deepfool, fgsm, gradient_masking_signs,  # noqa: E402
                             make_fooling_image, min_norm, pgd, random_noise, robust_accuracy)


@pytest.fixture(scope="module")
def model():
    return trained_pair()[0]


@pytest.fixture(scope="module")
def data(model):
    u8, y = synthetic_images(32, 21)
    return u8, y, model.preprocess(u8)


def _box_holds(model, X_adv):
    lo, hi = model.input_range()
    return np.all(X_adv >= lo - 1e-5) and np.all(X_adv <= hi + 1e-5)


def test_robust_accuracy_falls_with_eps(model, data):
    _, y, X = data
    eps = [1, 2, 4, 8, 16]
    table = robust_accuracy(X, y, model, ["fgsm", "pgd", "noise"], eps, steps=10)
    clean = table["clean_accuracy"]
    assert clean > 0.5
    pgd_raw = table["accuracy_raw"]["pgd"]
    # the attack itself (not the table's accumulation) gets stronger with eps
    assert all(b <= a for a, b in zip(pgd_raw, pgd_raw[1:])), pgd_raw
    worst = table["worst_case"]
    assert all(b <= a for a, b in zip(worst, worst[1:])) and worst[0] <= clean
    assert worst[-1] < 0.5 * clean
    for name in ("fgsm", "pgd", "noise"):
        assert all(w <= a + 1e-12 for w, a in zip(worst, table["accuracy"][name]))
    # iterated PGD at least as strong as one step; noise far weaker than gradients
    assert all(p <= f for p, f in zip(pgd_raw, table["accuracy_raw"]["fgsm"]))
    assert table["accuracy_raw"]["noise"][-1] > pgd_raw[-1]
    assert table["robust"].shape == (5, len(y))
    sr = table["success_rate_correct"]
    assert all(b >= a for a, b in zip(sr, sr[1:]))
    assert table["warnings"] == []


def test_min_norm_lies_within_one_bisection_step_of_the_boundary(model, data):
    _, y, X = data
    X, y = X[:12], y[:12]
    eps_max, rounds = 32.0, 5
    X_adv, rep = min_norm(X, y, model, "pgd", eps_max=eps_max, bisection_steps=rounds, steps=10)
    found = rep["success"] & (rep["eps"] > 0)
    assert found.sum() >= 6
    width = eps_max / 2 ** rounds
    assert np.allclose(rep["eps"][found] - rep["eps_lower"][found], width)
    # the attack succeeds at eps and fails one bisection step below it
    _, at = pgd(X[found], y[found], model, eps=rep["eps"][found], steps=10)
    _, below = pgd(X[found], y[found], model, eps=rep["eps_lower"][found], steps=10)
    assert at["success"].all() and not below["success"].any()
    assert np.all(rep["linf"][found] <= rep["eps"][found] + 1e-3)
    assert np.all(model.predict(X_adv[found]).argmax(1) != y[found])


def test_quantized_fooling_image_saved_as_png_still_fools(model, data, tmp_path):
    from PIL import Image
    from gradvis.io.images import read_rgb
    _, y, X = data
    X, y = X[:8], y[:8]
    target = (y + 3) % 10
    X_fool, rep = make_fooling_image(X, target, model, quantize=True, return_report=True, max_iter=150)
    assert rep["success"].mean() >= 0.75
    for i in np.flatnonzero(rep["success"]):
        path = tmp_path / f"fool{i}.png"
        Image.fromarray(model.deprocess(X_fool[i])).save(path)
        back = model.preprocess(read_rgb(path)[0])
        assert np.array_equal(back[0], X_fool[i])          # the PNG is the fooling image
        assert model.predict(back).argmax(1)[0] == target[i]
    # without quantize the first flip is too close to the boundary to survive rounding
    X_cont, rep_c = make_fooling_image(X, target, model, return_report=True, max_iter=150)
    survived = model.predict(model.preprocess(model.deprocess(X_cont))).argmax(1) == target
    assert survived[rep_c["success"]].mean() < 1.0


def test_fooling_confidence_and_margin_are_reached(model, data):
    _, y, X = data
    X, y = X[:8], y[:8]
    target = (y + 5) % 10
    _, rep = make_fooling_image(X, target, model, confidence=0.9, return_report=True, max_iter=200)
    assert rep["success"].mean() >= 0.75
    assert np.all(rep["target_prob"][rep["success"]] >= 0.9)
    _, rep0 = make_fooling_image(X, target, model, return_report=True, max_iter=200)
    assert np.median(rep["iterations"]) > np.median(rep0["iterations"])
    _, rep = make_fooling_image(X, target, model, margin=3.0, quantize=True, return_report=True, max_iter=200)
    assert np.all(rep["margin"][rep["success"]] >= 3.0) and rep["success"].mean() >= 0.75


def test_cw_l2_norms_are_smaller_than_pgd_l2_at_equal_success(model, data):
    _, y, X = data
    X, y = X[:16], y[:16]
    clean = model.predict(X).argmax(1) == y
    X, y = X[clean], y[clean]
    X_cw, cw = cw_l2(X, y, model, steps=60, binary_steps=4, c=0.1)
    _, pg = pgd(X, y, model, eps=400.0, norm="2", steps=20)
    both = cw["success"] & pg["success"]
    assert both.sum() >= 0.7 * len(y)
    assert np.median(cw["l2"][both]) < np.median(pg["l2"][both])
    assert np.all(model.predict(X_cw[cw["success"]]).argmax(1) != y[cw["success"]])
    assert _box_holds(model, X_cw)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_deepfool_crosses_the_boundary_with_small_changes(model, data, norm):
    _, y, X = data
    X_adv, rep = deepfool(X, y, model, norm=norm)
    clean = model.predict(X).argmax(1) == y
    assert rep["success"][clean].mean() >= 0.9
    assert np.all(model.predict(X_adv[rep["success"]]).argmax(1) != y[rep["success"]])
    key = "l2" if norm == "2" else "linf"
    # pgd at half deepfool's norm fails on most images: deepfool's change is near minimal
    ok = rep["success"] & clean
    _, half = pgd(X[ok], y[ok], model, eps=rep[key][ok] / 4, norm=norm, steps=10)
    assert half["success"].mean() < 0.5


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
def test_pgd_keeps_budget_and_box(model, data, norm):
    _, y, X = data
    eps = {"inf": 6.0, "2": 250.0, "1": 4000.0}[norm]
    X_adv, rep = pgd(X, y, model, eps=eps, norm=norm, steps=8, restarts=2, seed=5)
    key = {"inf": "linf", "2": "l2", "1": "l1"}[norm]
    assert np.all(rep[key] <= eps * (1 + 1e-5))
    assert _box_holds(model, X_adv)
    assert rep["success"].mean() > 0.4
    pred = model.predict(X_adv).argmax(1)
    assert np.array_equal(pred != y, rep["success"])
    assert np.all(rep["margin"][rep["success"]] > 0) and np.all(rep["margin"][~rep["success"]] <= 0)
    # a fresh seed draws other random starts; the same seed repeats
    X2, _ = pgd(X, y, model, eps=eps, norm=norm, steps=8, restarts=2, seed=5)
    assert np.array_equal(X_adv, X2)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_targeted_reaches_the_target(model, data, loss):
    _, y, X = data
    target = (y + 1) % 10
    X_adv, rep = apgd(X, y, model, eps=16.0, target=target, steps=30, loss=loss)
    assert rep["success"].mean() > 0.5
    assert np.all(model.predict(X_adv[rep["success"]]).argmax(1) == target[rep["success"]])
    # APGD-T: the most likely other classes in turn
    X_t, rep_t = apgd(X, y, model, eps=8.0, targeted=True, n_target_classes=3, steps=20)
    _, rep_u = apgd(X, y, model, eps=8.0, steps=20)
    assert rep_t["success"].mean() >= rep_u["success"].mean() - 0.1
    assert np.array_equal(model.predict(X_t).argmax(1) != y, rep_t["success"])
    assert np.all(rep_t["target"] != y)


def test_fgsm_and_noise_are_weaker_than_pgd(model, data):
    _, y, X = data
    _, f = fgsm(X, y, model, eps=6.0)
    _, p = pgd(X, y, model, eps=6.0, steps=20)
    _, r = random_noise(X, y, model, eps=6.0, samples=5)
    assert f["success"].sum() <= p["success"].sum() and r["success"].sum() < p["success"].sum()
    assert np.allclose(f["linf"], 6.0, atol=1e-3) or np.all(f["linf"] <= 6.0 + 1e-3)


def test_gradient_masking_signs_name_what_they_see():
    base = {"eps": [1, 2, 4, 64], "norm": "inf", "worst_case": [0.6, 0.3, 0.1, 0.0],
            "accuracy_raw": {"fgsm": [0.7, 0.5, 0.3, 0.1], "pgd": [0.6, 0.3, 0.1, 0.0],
                             "noise": [0.9, 0.9, 0.8, 0.7]}}
    assert gradient_masking_signs(base) == []
    masked = dict(base, worst_case=[0.6, 0.5, 0.5, 0.5],
                  accuracy_raw={"fgsm": [0.5, 0.4, 0.3, 0.3], "pgd": [0.6, 0.5, 0.5, 0.5],
                                "noise": [0.55, 0.45, 0.5, 0.5]})
    signs = gradient_masking_signs(masked)
    text = " | ".join(signs)
    assert "does not reach 0" in text and "eps 64" in text
    assert "one-step fgsm beats the iterated pgd" in text
    assert "random noise beats the gradient attack pgd" in text
