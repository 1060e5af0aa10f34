"""Random convolution geometries (tests/fuzz_conv.py) through every entry point of the
compiled convolution, against the float64 reference, at every SIMD level.

The engine picks among many kernels by shape (depthwise planes and lanes, grouped
lanes, the implicit gemm with its packings, 1x1 layers transposed, strided 1x1
copies, Winograd F(2x2) and F(4x4), col2im, patch layers, vector products), by
SIMD level and by thread count; these cases draw shapes around each choice's
boundaries. The CI subset runs ``CI_SEEDS`` (those of 0-159 that draw a case) at the CPU's level and a part of them
at AVX2 and the scalar level; ``pytest -m slow tests/test_fuzz_conv.py`` sweeps
``SWEEP_SEEDS``. A failure prints the case; rerun it with
``pytest 'tests/test_fuzz_conv.py::test_ci[SEED]'`` or ``fuzz_conv.check(fuzz_conv.draw(SEED))``.
"""
import numpy as np
import pytest

import fuzz_conv
from conftest import simd_paths_test

def _seeds(seeds):
    """The seeds that draw a case (the others' geometry has no output or is too
    large for the reference)."""
    return [s for s in seeds if fuzz_conv.draw(s) is not None]


CI_SEEDS = _seeds(range(0, 160))
SIMD_SEEDS = _seeds(range(0, 60))
SWEEP_SEEDS = _seeds(range(1000, 4000))


def run(seed):
    case = fuzz_conv.draw(seed)
    errors = fuzz_conv.check(case)
    assert not errors, f"{case}\n" + "\n".join(errors)


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_ci(seed):
    run(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SWEEP_SEEDS)
def test_sweep(seed):
    run(seed)


@pytest.mark.parametrize("team", [3, 4, 5, 8])
def test_larger_teams(team):
    # the splits of a machine with more cores (here oversubscribed): the reference's
    # values and 1 thread's bits
    for seed in SIMD_SEEDS[team::4]:
        case = fuzz_conv.draw(seed)
        errors = fuzz_conv.check(case, team=team)
        assert not errors, f"team {team}: {case}\n" + "\n".join(errors)


test_simd_levels = simd_paths_test(r"""
import fuzz_conv
from test_fuzz_conv import SIMD_SEEDS
for seed in SIMD_SEEDS:
    case = fuzz_conv.draw(seed)
    errors = fuzz_conv.check(case)
    assert not errors, f"{case}\n" + "\n".join(errors)
""")


def test_ci_seeds_cover_the_generator():
    cases = [fuzz_conv.draw(s) for s in CI_SEEDS]
    assert len(cases) >= 120
    for key, values in [("kind", fuzz_conv.KINDS), ("act", fuzz_conv.ACTS), ("mask", fuzz_conv.MASKS),
                        ("algo", fuzz_conv.ALGOS), ("dtype", ("float32", "float64")), ("threads", (1, 2)),
                        ("relu", (False, True)), ("bias", (False, True))]:
        assert {c[key] for c in cases} == set(values), key
    simd = [fuzz_conv.draw(s) for s in SIMD_SEEDS]
    assert {c["kind"] for c in simd} == set(fuzz_conv.KINDS)
    # batches above 1, strides above 1, dilations, asymmetric pads, odd widths
    assert any(c["x"][0] > 1 for c in cases) and any(c["stride"][0] > 1 for c in cases)
    assert any(c["dilation"][0] > 1 for c in cases)
    assert any(len(set(c["padding"])) > 1 for c in cases)
    assert any(c["x"][3] % 16 not in (0, 8) for c in cases)


class _Broken:
    """_core with one entry point made wrong by a single term."""
    def __init__(self, core, name, fn):
        self._core, self._name, self._fn = core, name, fn

    def __getattr__(self, name):
        f = getattr(self._core, name)
        return (lambda *a, **k: self._fn(f, *a, **k)) if name == self._name else f


def _drop_last_tap(f, x, w, *a, **k):
    w = np.array(w, copy=True)
    w[..., -1, -1] = 0
    return f(x, w, *a, **k)


def _shift_gradient(f, *a, **k):
    return np.roll(f(*a, **k), 1, axis=-1)


def _off_weight_gradient(f, *a, **k):
    gw, gb = f(*a, **k)
    gw = np.array(gw, copy=True)
    gw.reshape(-1)[0] += 0.01 * np.abs(gw).max()
    return gw, gb


@pytest.mark.parametrize("name, fn, what", [
    ("conv2d_forward", _drop_last_tap, "forward"),
    ("conv2d_backward_input", _shift_gradient, "input gradient"),
    ("conv2d_backward_weight", _off_weight_gradient, "weight gradient"),
])
def test_a_wrong_kernel_fails(monkeypatch, name, fn, what):
    # the checks catch a kernel that misses a tap or a position, or is off by a
    # hundredth of the largest entry in one
    monkeypatch.setattr(fuzz_conv, "_core", _Broken(fuzz_conv._core, name, fn))
    caught = 0
    for seed in range(40):
        case = fuzz_conv.draw(seed)
        if case is None or (what == "input gradient" and case["x"][3] == 1):
            continue
        caught += any(e.startswith(what) for e in fuzz_conv.check(case))
    assert caught >= 30
