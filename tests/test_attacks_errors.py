"""Bad input to the attacks gets a clear error naming the argument, before any work."""
import numpy as np
import pytest

from gradvis.attacks import (apgd, cw_l2, deepfool, fgsm, make_fooling_image, min_norm, pgd,
                             random_noise, robust_accuracy)
from helpers import images

EPS_ATTACKS = [fgsm, pgd, apgd, random_noise]
ALL = EPS_ATTACKS + [cw_l2, deepfool]


@pytest.fixture
def xy(net):
    X = images(3, seed=4)
    return X, net.forward(X)[0].argmax(1)


@pytest.mark.parametrize("attack", ALL)
def test_negative_eps(net, xy, attack):
    X, y = xy
    with pytest.raises(ValueError, match="eps must be >= 0"):
        attack(X, y, net, eps=-1.0)
    with pytest.raises(ValueError, match="eps must be one number or one per image"):
        attack(X, y, net, eps=[1.0, 2.0])
    with pytest.raises(TypeError, match="eps"):
        attack(X, y, net, eps="8")


def test_negative_eps_max_and_bad_bisection(net, xy):
    X, y = xy
    with pytest.raises(ValueError, match="eps_max"):
        min_norm(X, y, net, eps_max=-2.0)
    with pytest.raises(ValueError, match="eps_max must be > 0"):
        min_norm(X, y, net, eps_max=0.0)
    with pytest.raises(ValueError, match="bisection_steps"):
        min_norm(X, y, net, bisection_steps=0)
    with pytest.raises(ValueError, match="attack must be one of"):
        min_norm(X, y, net, attack="magic")


@pytest.mark.parametrize("attack", [fgsm, pgd, apgd, random_noise, deepfool])
def test_unknown_norm(net, xy, attack):
    X, y = xy
    for bad in ("l3", 3, "", None, True):
        with pytest.raises(ValueError, match="norm must be one of"):
            attack(X, y, net, eps=1.0, norm=bad)


def test_norm_an_attack_does_not_support(net, xy):
    X, y = xy
    with pytest.raises(ValueError, match="apgd supports norm 'inf' or '2'"):
        apgd(X, y, net, eps=1.0, norm="1")
    with pytest.raises(ValueError, match="deepfool supports norm"):
        deepfool(X, y, net, norm=1)
    with pytest.raises(ValueError, match="norm"):
        robust_accuracy(X, y, net, ["pgd"], [1], norm="l7")


@pytest.mark.parametrize("attack", ALL)
def test_target_equal_to_true_class(net, xy, attack):
    X, y = xy
    with pytest.raises(ValueError, match="target equals the true class"):
        attack(X, y, net, eps=1.0, targeted=True, target=y)
    with pytest.raises(ValueError, match="target has class indices out of range"):
        attack(X, y, net, eps=1.0, targeted=True, target=99)


@pytest.mark.parametrize("attack,arg", [(pgd, "steps"), (apgd, "steps"), (cw_l2, "steps"),
                                        (deepfool, "steps"), (pgd, "restarts"), (apgd, "restarts"),
                                        (cw_l2, "binary_steps")])
def test_steps_below_one(net, xy, attack, arg):
    X, y = xy
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"{arg} must be > 0"):
            attack(X, y, net, eps=1.0, **{arg: bad})
    with pytest.raises(TypeError, match=arg):
        attack(X, y, net, eps=1.0, **{arg: 2.5})


def test_robust_accuracy_needs_labels(net, xy):
    X, y = xy
    with pytest.raises(ValueError, match="needs the true labels"):
        robust_accuracy(X, None, net, ["pgd"], [1.0])
    with pytest.raises(ValueError, match="y must have shape"):
        robust_accuracy(X, y[:2], net, ["pgd"], [1.0])
    with pytest.raises(ValueError, match="unknown attack 'pgdd'"):
        robust_accuracy(X, y, net, ["pgdd"], [1.0])
    with pytest.raises(ValueError, match="eps_list must increase"):
        robust_accuracy(X, y, net, ["fgsm"], [4, 2])
    with pytest.raises(ValueError, match="every eps must be a finite number >= 0"):
        robust_accuracy(X, y, net, ["fgsm"], [-1, 2])
    with pytest.raises(ValueError, match="attacks is empty"):
        robust_accuracy(X, y, net, [], [1])


def test_other_bad_arguments(net, xy):
    X, y = xy
    with pytest.raises(ValueError, match="loss must be one of"):
        pgd(X, y, net, eps=1.0, loss="hinge")
    with pytest.raises(ValueError, match="loss must be one of"):
        apgd(X, y, net, eps=1.0, loss="margin")
    with pytest.raises(TypeError, match="targeted must be True or False"):
        pgd(X, y, net, eps=1.0, targeted="yes")
    with pytest.raises(ValueError, match="c must be a finite number > 0"):
        cw_l2(X, y, net, c=0)
    with pytest.raises(TypeError, match="X must be a float array"):
        pgd(np.zeros((1, 3, 16, 16), np.uint8), 0, net, eps=1.0)
    with pytest.raises(ValueError, match="rho"):
        apgd(X, y, net, eps=1.0, rho=1.5)


def test_fooling_image_new_arguments(net, xy):
    X, y = xy
    with pytest.raises(ValueError, match="confidence must be a probability in"):
        make_fooling_image(X, 1, net, confidence=1.0)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        make_fooling_image(X, 1, net, margin=-1)
    with pytest.raises(TypeError, match="quantize must be True or False"):
        make_fooling_image(X, 1, net, quantize="yes")
