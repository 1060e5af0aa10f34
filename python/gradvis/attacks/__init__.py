"""Adversarial examples: inputs changed imperceptibly so that the network's answer
changes, and robustness evaluation. Budgets, step sizes and reported norms are in
0-255 grey levels of the model's pixel units (converted through ``model.std``); the
valid pixel box is ``model.input_range()``.

- :func:`make_fooling_image` (CS231n's targeted fooling image; Szegedy et al. 2014),
  with ``confidence=``/``margin=`` and ``quantize=True`` (an 8-bit image that fools);
- :func:`fgsm`, :func:`pgd` (L-inf, L2, L1), :func:`apgd` (APGD-CE, APGD-DLR, APGD-T),
  :func:`cw_l2`, :func:`deepfool`, :func:`random_noise`;
- :func:`min_norm`: the smallest budget that succeeds, per image, by bisection;
- :func:`robust_accuracy`: accuracy per budget, per attack and in the worst case,
  and :func:`gradient_masking_signs`.

Every attack takes ``(X, y, model, eps=..., targeted=False, target=None, seed=0,
...)`` and returns ``(X_adv, report)``, report a dict of (N,) arrays: 'success',
'margin', 'predicted', 'iterations', 'linf', 'l2', 'l1'.
"""
from .apgd import apgd
from .common import adversarial_margin
from .cw import cw_l2
from .deepfool import deepfool
from .evaluation import ATTACKS, gradient_masking_signs, robust_accuracy
from .fooling import make_fooling_image
from .gradient import fgsm, pgd
from .search import min_norm, random_noise

__all__ = ["make_fooling_image", "fgsm", "pgd", "apgd", "cw_l2", "deepfool", "min_norm", "random_noise",
           "robust_accuracy", "gradient_masking_signs", "adversarial_margin", "ATTACKS"]
