"""Property-based fuzzing of the public API (hypothesis), every case in a child process.

Every case ends in one of two ways: a result that matches the naive float64
reference (tests/reference_ops.py, reference_conv.py; the tiny model's
scores and saliency by central differences), or a ValueError/TypeError whose
message names an argument. A crash, a hang (past the time bound), another
exception type, or a wrong result fails the test; the worker is replaced and the
run goes on. Each family below has its own test:

- valid calls: shapes with zeros and ones, float16/32/64, contiguous, Fortran,
  strided, reversed and transposed views, read-only arrays, nested lists;
- hostile calls: every dtype, NaN/Inf/huge/tiny values, wrong ranks and shapes,
  numeric strings, bools, None, NaN and huge numbers for the scalar arguments;
- huge geometry (outputs far beyond memory), misaligned buffers and 0-d arrays.

A few hundred examples run by default (derandomized: the same ones every run).
The long run:

    GRADVIS_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz_api.py -q -p no:cacheprovider

(the examples are spread over the tests in proportion to their default counts;
``GRADVIS_FUZZ_SEED=<int>`` draws another set instead of the fixed one).
"""
from __future__ import annotations

import math
import os

import pytest

hypothesis = pytest.importorskip("hypothesis") if not os.environ.get("CI") else __import__("hypothesis")
from hypothesis import HealthCheck, Phase, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz_api_cases import DTYPES, FILLS, array  # noqa: E402
from fuzz_sandbox import Sandbox  # noqa: E402

DEFAULT_TOTAL = 250          # examples over all the tests below, in CI
_WEIGHTS = {}                # test name -> share of the examples


def budget(name, share):
    """Hypothesis settings giving test ``name`` its ``share`` of the examples."""
    _WEIGHTS[name] = share
    total = int(os.environ.get("GRADVIS_FUZZ_EXAMPLES", DEFAULT_TOTAL))
    n = max(1, int(round(total * share)))
    seed = os.environ.get("GRADVIS_FUZZ_SEED")
    return settings(max_examples=n, deadline=None, derandomize=seed is None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True,
                    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink])


def _no_shrink(s):
    """Cases whose failure is a hang: shrinking would wait out the time bound many times."""
    return settings(s, phases=[Phase.explicit, Phase.generate])


if os.environ.get("GRADVIS_FUZZ_SEED"):
    _SEED = int(os.environ["GRADVIS_FUZZ_SEED"])
    given_seeded = lambda *a, **k: (lambda f: hypothesis.seed(_SEED)(given(*a, **k)(f)))  # noqa: E731
else:
    given_seeded = given

TIMEOUT = float(os.environ.get("GRADVIS_FUZZ_TIMEOUT", 30))
MEMORY = int(float(os.environ.get("GRADVIS_FUZZ_MEMORY_GB", 3)) * (1 << 30))


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox("fuzz_api_cases", workers=1, timeout=TIMEOUT, memory=MEMORY) as sb:
        yield sb


def _has_empty(args):
    for v in args.values():
        if isinstance(v, dict) and v.get("__array__") and 0 in v["shape"]:
            return True
        if isinstance(v, dict) and not v.get("__array__") and _has_empty(v):
            return True
    return False


def check(sb, case, names, valid, timeout=None):
    """Run ``case`` and assert the contract; ``names``: the arguments an error may name."""
    out = sb.run(case, timeout)
    status = out["status"]
    if valid and _has_empty(case["args"]):
        valid = False        # an empty array may be refused (ValueError naming it) or computed
    assert status not in ("crash", "hang", "harness"), f"{status}: {out} for {case}"
    if status == "error":
        kind = out["type"]
        assert not valid, f"a valid call raised {kind}: {out['message']} for {case}"
        if kind == "MemoryError" and out["message"].startswith("Unable to allocate"):
            return out      # numpy's up-front refusal of an array beyond memory, naming its shape
        assert "ValueError" in out["mro"] or "TypeError" in out["mro"], \
            f"{kind} (not a ValueError/TypeError): {out['message']} for {case}"
        msg = out["message"]
        assert any(n in msg for n in names), f"{kind} names none of {names}: {msg!r} for {case}"
        return out
    if "error" in out:
        assert out["error"] <= 1.0, f"result differs from the float64 reference " \
                                    f"({out['error']:.3g} x tolerance {out['why']}) for {case}"
    return out


# ---------------------------------------------------------------------------- strategies
seeds = st.integers(0, 2**32 - 1)
VALID_DTYPES = ["float16", "float32", "float64"]
VALID_LAYOUTS = ["c", "f", "strided", "reversed", "transposed", "readonly", "list"]
dims = st.integers(0, 4) | st.just(1)


def arrays(shape, dtypes=VALID_DTYPES, layouts=VALID_LAYOUTS, fills=("normal",), scale=1.0):
    return st.builds(lambda dt, lay, fill, s: array(shape, dt, lay, fill, s, scale),
                     st.sampled_from(list(dtypes)), st.sampled_from(list(layouts)),
                     st.sampled_from(list(fills)), seeds)


def hostile_arrays(shape):
    """Any dtype, layout and values; also a wrong rank now and then."""
    return st.one_of(
        arrays(shape, DTYPES, VALID_LAYOUTS, FILLS),
        arrays(shape[:-1] if shape else (2,), VALID_DTYPES, VALID_LAYOUTS, FILLS),
        arrays(tuple(shape) + (1,), VALID_DTYPES, ["c"], FILLS),
        st.sampled_from([None, "x", [[1.0, 2.0], [3.0]], b"ab"]),
    )


# A hostile scalar: numeric strings, bools, None, NaN/Inf, huge and negative numbers, containers.
hostile_scalars = st.sampled_from(
    ["4", "0.5", "", "nan", True, False, None, math.nan, math.inf, -math.inf, -1, -0.5, 0, 0.0,
     2**31, 2**63, 1e300, -1e300, 1e-320, [1.0], (1, 2, 3), {"a": 1}, b"1", 1j])

ACTIVATIONS = ["relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hardsigmoid", "hardswish", "silu"]
ACT_SCALARS = {"leaky_relu": ("alpha",), "hardsigmoid": ("alpha", "beta")}


@st.composite
def activation_cases(draw, valid=True):
    name = draw(st.sampled_from(ACTIVATIONS))
    shape = tuple(draw(st.lists(dims, min_size=1, max_size=4)))
    mk = arrays if valid else hostile_arrays
    args = {"x": draw(mk(shape, fills=("normal",)) if valid else mk(shape))}
    if draw(st.booleans()):
        args["dout"] = draw(mk(shape) if valid else hostile_arrays(shape))
    for p in ACT_SCALARS.get(name, ()):
        if draw(st.booleans()):
            args[p] = draw(st.floats(-3, 3, allow_nan=False) if valid else hostile_scalars)
    names = ["x", "dout", "cache", "alpha", "beta"]
    return {"op": name, "args": args}, names


@st.composite
def conv_cases(draw, valid=True):
    n, groups = draw(st.integers(0, 2)), draw(st.integers(1, 2))
    c, f = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pad = draw(st.tuples(*[st.integers(0, 2)] * 4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pad[0] - pad[1]), 7))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pad[2] - pad[3]), 7))
    cp = {"stride": (sh, sw), "pad": pad, "dilation": (dh, dw), "groups": groups}
    args = {"x": draw(arrays((n, c, h, w))), "w": draw(arrays((f, c // groups, kh, kw))),
            "b": draw(st.none() | arrays((f,))), "conv_param": cp}
    oh = (h + pad[0] + pad[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pad[2] + pad[3] - dw * (kw - 1) - 1) // sw + 1
    if draw(st.booleans()):
        args["dout"] = draw(arrays((n, f, oh, ow)))
    if not valid:
        key = draw(st.sampled_from(["x", "w", "b", "dout", "stride", "pad", "dilation", "groups", "extra"]))
        if key in ("x", "w", "b", "dout"):
            shape = args[key]["shape"] if isinstance(args.get(key), dict) else (f,)
            args[key] = draw(hostile_arrays(shape))
        elif key == "extra":
            cp["padding"] = 1
        else:
            cp[key] = draw(hostile_scalars)
    return {"op": "conv", "args": args}, ["x", "w", "b", "dout", "conv_param", "cache"]


@st.composite
def pool_cases(draw, valid=True):
    kind = draw(st.sampled_from(["max_pool", "avg_pool", "global_avg_pool"]))
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    if kind == "global_avg_pool":
        shape = (n, c, draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        args = {"x": draw(arrays(shape) if valid else hostile_arrays(shape))}
        if draw(st.booleans()):
            args["dout"] = draw(arrays((n, c, 1, 1)) if valid else hostile_arrays((n, c, 1, 1)))
        return {"op": kind, "args": args}, ["x", "dout", "cache"]
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pp = {"pool_height": kh, "pool_width": kw, "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3)))}
    if draw(st.booleans()):
        pp["pad"] = (min(kh // 2, draw(st.integers(0, 1))),) * 2 + (min(kw // 2, draw(st.integers(0, 1))),) * 2
    shape = (n, c, draw(st.integers(kh, 7)), draw(st.integers(kw, 7)))
    args = {"x": draw(arrays(shape)), "pool_param": pp}
    if not valid:
        key = draw(st.sampled_from(["x", "pool_height", "pool_width", "stride", "pad", "ceil_mode"]))
        if key == "x":
            args["x"] = draw(hostile_arrays(shape))
        else:
            pp[key] = draw(hostile_scalars)
    return {"op": kind, "args": args}, ["x", "pool_param", "pool_height", "pool_width", "stride", "pad"]


@st.composite
def affine_cases(draw, valid=True):
    n, d, m = draw(st.integers(0, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    xshape = (n, d) if draw(st.booleans()) else (n, 1, d, 1)
    args = {"x": draw(arrays(xshape)), "w": draw(arrays((d, m))), "b": draw(st.none() | arrays((m,)))}
    if draw(st.booleans()):
        args["dout"] = draw(arrays((n, m)))
    if not valid:
        key = draw(st.sampled_from(["x", "w", "b", "dout"]))
        shape = {"x": xshape, "w": (d, m), "b": (m,), "dout": (n, m)}[key]
        args[key] = draw(hostile_arrays(shape))
    return {"op": "affine", "args": args}, ["x", "w", "b", "dout", "cache"]


@st.composite
def batchnorm_cases(draw, valid=True):
    n, c = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    shape = (n, c) if draw(st.booleans()) else (n, c, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    mode = draw(st.sampled_from(["train", "test"]))
    bn = {"mode": mode}
    if mode == "test":
        bn["running_mean"] = draw(arrays((c,), ["float32", "float64"], ["c"]))
        bn["running_var"] = draw(arrays((c,), ["float32", "float64"], ["c"], ("ones",)))
    if draw(st.booleans()):
        bn["eps"] = draw(st.floats(1e-6, 1e-2))
    args = {"x": draw(arrays(shape)), "gamma": draw(arrays((c,))), "beta": draw(arrays((c,))), "bn_param": bn}
    if not valid:
        key = draw(st.sampled_from(["x", "gamma", "beta", "eps", "momentum", "mode"]))
        if key in ("x", "gamma", "beta"):
            args[key] = draw(hostile_arrays(shape if key == "x" else (c,)))
        else:
            bn[key] = draw(hostile_scalars)
    return {"op": "batchnorm", "args": args}, ["x", "gamma", "beta", "bn_param", "eps", "momentum",
                                               "mode", "running_mean", "running_var"]


@st.composite
def blur_cases(draw, valid=True):
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    args = {"x": draw(arrays(shape)), "sigma": draw(st.floats(0, 3) | st.tuples(st.floats(0, 3), st.floats(0, 3)))}
    if draw(st.booleans()):
        args["truncate"] = draw(st.floats(0.5, 5))
    if not valid:
        key = draw(st.sampled_from(["x", "sigma", "truncate"]))
        args[key] = draw(hostile_arrays(shape) if key == "x" else hostile_scalars)
    return {"op": "gaussian_blur", "args": args}, ["x", "sigma", "truncate"]


@st.composite
def softmax_cases(draw, valid=True):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    args = {"x": draw(arrays((n, c), scale=3.0)),
            "y": draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))}
    if not valid:
        key = draw(st.sampled_from(["x", "y"]))
        args[key] = draw(hostile_arrays((n, c)) if key == "x" else
                         st.sampled_from([[c] * n, [-1] * n, [0.5] * n, ["0"] * n, [0] * (n + 1), None, "0"]))
    return {"op": "softmax_loss", "args": args}, ["x", "y"]


@st.composite
def model_cases(draw, valid=True):
    """Model.forward and compute_saliency_maps on the tiny model (3x8x8 inputs, 5 classes)."""
    n = draw(st.integers(1, 2))
    X = draw(arrays((n, 3, 8, 8), ["float32", "float64"], ["c", "f", "strided", "readonly"]))
    if draw(st.booleans()):
        args = {"X": X}
        if not valid:
            key = draw(st.sampled_from(["X", "end", "start"]))
            if key == "X":
                args["X"] = draw(hostile_arrays((n, 3, 8, 8)))
            else:
                args[key] = draw(st.sampled_from([99, -99, "nope", 2.0, None, True, "conv1", 3]))
        return {"op": "forward", "args": args}, ["X", "end", "start", "layer"]
    y = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    args = {"X": X, "y": y}
    if draw(st.booleans()):
        args["y"] = [f"c{v}" for v in y]          # class names, as the CLI takes them
    if not valid:
        key = draw(st.sampled_from(["X", "y"]))
        args[key] = draw(hostile_arrays((n, 3, 8, 8)) if key == "X" else
                         st.sampled_from([[5] * n, [-1] * n, [0.5] * n, ["0"] * n, ["nope"] * n, None, [[0]]]))
    return {"op": "saliency", "args": args}, ["X", "y"]


@st.composite
def algorithm_cases(draw):
    """The iterative algorithms with hostile hyper-parameters (a few iterations)."""
    name = draw(st.sampled_from(["make_fooling_image", "create_class_visualization", "invert_features",
                                 "deepdream"]))
    n = draw(st.integers(1, 2))
    X = draw(arrays((n, 3, 8, 8), ["float32", "float64"], ["c"]))
    args = {"algorithm": name}
    if name == "make_fooling_image":
        args.update(X=X, target_y=draw(st.integers(0, 4) | st.sampled_from(["c1", "nope", 5, -1, 1.5])),
                    max_iter=draw(st.integers(0, 3)))
        extra = ["learning_rate", "eps", "norm"]
    elif name == "create_class_visualization":
        args.update(target_y=draw(st.integers(0, 4) | st.sampled_from(["c2", ["c0", 1], "nope", 5, 1.5])),
                    num_iterations=draw(st.integers(0, 3)))
        extra = ["learning_rate", "l2_reg", "blur_every", "blur_sigma", "max_jitter", "image_size",
                 "init_scale", "seed"]
    elif name == "invert_features":
        args.update(target_feats=array((n, 4, 8, 8), "float32", "c", "normal", draw(seeds)),
                    layer=draw(st.sampled_from(["relu1", 1, 99, -99, "nope", 1.0])),
                    num_iterations=draw(st.integers(0, 3)))
        extra = ["learning_rate", "l2_reg", "tv_reg", "tv_beta", "blur_every", "blur_sigma", "init_scale",
                 "image_size", "seed"]
    else:
        args.update(X=X, layer=draw(st.sampled_from(["relu1", "conv2", 1, 99, "nope"])),
                    num_iterations=draw(st.integers(0, 3)))
        extra = ["learning_rate", "max_jitter", "octaves", "octave_scale", "channel", "seed"]
    for p in draw(st.lists(st.sampled_from(extra), max_size=2, unique=True)):
        args[p] = draw(hostile_scalars | st.floats(0.1, 5) | st.integers(0, 3))
    names = ["X", "target_y", "target_feats", "layer", "model", "image_size", "init"] + extra + \
        ["max_iter", "num_iterations"]
    return {"op": "algorithm", "args": args}, names


@st.composite
def misc_cases(draw, valid=True):
    """The settings, the model's conversions and batch scoring, SmoothGrad and resize."""
    call = draw(st.sampled_from(["set_num_threads", "set_conv_algorithm", "set_winograd_cache_limit",
                                 "set_array_pool_limit", "preprocess", "deprocess", "predict", "smoothgrad",
                                 "resize"]))
    n = draw(st.integers(1, 2))
    X = draw(arrays((n, 3, 8, 8), ["float32", "float64"], ["c", "f", "strided"]))
    counts = st.integers(1, 4)     # huge counts take time in proportion: not a hang, not fuzzed
    if call == "set_num_threads":
        args = {"value": draw(counts if valid else hostile_scalars)}
    elif call == "set_conv_algorithm":
        args = {"value": draw(st.sampled_from(["auto", "direct", "winograd"]) if valid else
                              st.sampled_from(["nope", "", 3, None, "AUTO"]))}
    elif call.startswith("set_"):
        args = {"value": draw(st.integers(0, 1 << 30) if valid else hostile_scalars)}
    elif call == "preprocess":
        shape = draw(st.sampled_from([(8, 8, 3), (n, 8, 8, 3), (n, 5, 7, 3)]))
        args = {"images": draw(arrays(shape, ["uint8"], VALID_LAYOUTS) if valid else hostile_arrays(shape))}
    elif call == "deprocess":
        args = {"X": X if valid else draw(hostile_arrays((n, 3, 8, 8)))}
    elif call == "predict":
        args = {"X": X, "batch_size": draw(counts if valid else hostile_scalars)}
    elif call == "smoothgrad":
        args = {"X": X, "y": [0] * n, "num_samples": draw(counts), "seed": draw(seeds)}
        if not valid:
            key = draw(st.sampled_from(["X", "y", "noise_level", "batch_size", "seed"]))
            args[key] = draw(hostile_arrays((n, 3, 8, 8)) if key == "X" else hostile_scalars)
            if key == "batch_size" and isinstance(args[key], int) and args[key] > 4:
                args[key] = 4
    else:
        args = {"X": X, "size": draw(st.tuples(counts, counts) if valid else
                                     st.sampled_from([(0, 4), ("4", 4), (4,), (4.5, 4), None, "44", (2**62, 1)]))}
    args["call"] = call
    names = [call, "value", "n", "name", "nbytes", "images", "X", "y", "batch_size", "num_samples",
             "noise_level", "seed", "size", "algorithm"]
    return {"op": "misc", "args": args}, names


FAMILIES = [activation_cases, conv_cases, pool_cases, affine_cases, batchnorm_cases, blur_cases,
            softmax_cases, model_cases, misc_cases]


# ---------------------------------------------------------------------------- the tests
VALID_EXAMPLES = [
    # class names where the model has them, as the command line takes them
    ({"op": "saliency", "args": {"X": array((2, 3, 8, 8)), "y": ["c1", "c4"]}}, ["X", "y"]),
    ({"op": "affine", "args": {"x": array((2, 3), "float64", "f"), "w": array((3, 2), "float16", "strided"),
                               "b": None, "dout": array((2, 2), "float32", "list")}}, ["x", "w", "b", "dout"]),
]
HOSTILE_EXAMPLES = [
    ({"op": "relu", "args": {"x": [[1.0, 2.0], [3.0]]}}, ["x"]),                 # a ragged list
    ({"op": "forward", "args": {"X": array((1, 3, 8, 8)), "end": 99}}, ["end"]),
    ({"op": "forward", "args": {"X": array((1, 3, 8, 8)), "start": "nope"}}, ["start"]),
    ({"op": "algorithm", "args": {"algorithm": "invert_features", "target_feats": array((1, 4, 8, 8)),
                                  "layer": 99, "num_iterations": 1}}, ["layer"]),
    ({"op": "algorithm", "args": {"algorithm": "invert_features", "target_feats": array((1, 4, 8, 8)),
                                  "layer": "relu1", "num_iterations": 2, "tv_beta": 1e30}}, ["tv_beta"]),
    ({"op": "gaussian_blur", "args": {"x": array((1, 1, 4, 4)), "sigma": 1.0, "truncate": "4"}}, ["truncate"]),
    ({"op": "max_pool", "args": {"x": array((1, 1, 4, 4)), "pool_param": {
        "pool_height": 2, "pool_width": 2, "stride": 2, "ceil_mode": float("nan")}}}, ["ceil_mode"]),
]


def examples(cases):
    def deco(f):
        for c in reversed(cases):
            f = example(c)(f)
        return f
    return deco


@budget("valid", 0.30)
@examples(VALID_EXAMPLES)
@given_seeded(st.one_of(*[f(valid=True) for f in FAMILIES]))
def test_valid_calls_match_the_float64_reference(sandbox, case_names):
    case, names = case_names
    check(sandbox, case, names, valid=True)


@budget("hostile", 0.45)
@examples(HOSTILE_EXAMPLES)
@given_seeded(st.one_of(*[f(valid=False) for f in FAMILIES]))
def test_hostile_calls_give_a_clean_error_or_the_right_result(sandbox, case_names):
    case, names = case_names
    check(sandbox, case, names, valid=False)


@budget("algorithms", 0.10)
@given_seeded(algorithm_cases())
def test_algorithm_arguments_give_a_clean_error(sandbox, case_names):
    case, names = case_names
    check(sandbox, case, names, valid=False)


STRING_SCALARS = [("gaussian_blur", {"x": array((1, 1, 4, 4)), "sigma": 1.0, "truncate": "4"}, "truncate"),
                  ("gaussian_blur", {"x": array((1, 1, 4, 4)), "sigma": "1"}, "sigma"),
                  ("leaky_relu", {"x": array((3,)), "alpha": "0.1"}, "alpha"),
                  ("hardsigmoid", {"x": array((3,)), "alpha": "0.2"}, "alpha"),
                  ("hardsigmoid", {"x": array((3,)), "beta": "0.5"}, "beta"),
                  ("batchnorm", {"x": array((2, 3)), "gamma": array((3,)), "beta": array((3,)),
                                 "bn_param": {"mode": "train", "eps": "1e-5"}}, "eps"),
                  ("batchnorm", {"x": array((2, 3)), "gamma": array((3,)), "beta": array((3,)),
                                 "bn_param": {"mode": "train", "momentum": "0.9"}}, "momentum"),
                  ("max_pool", {"x": array((1, 1, 4, 4)), "pool_param": {"pool_height": 2, "pool_width": 2,
                                                                          "stride": 2, "ceil_mode": "no"}},
                   "ceil_mode")]


@pytest.mark.parametrize("op,args,name", STRING_SCALARS, ids=[f"{o}-{n}" for o, _, n in STRING_SCALARS])
def test_numeric_strings_are_not_numbers(sandbox, op, args, name):
    out = sandbox.run({"op": op, "args": args})
    assert out["status"] == "error" and out["type"] == "TypeError" and name in out["message"], out


# ---- the cases that need the core's own checks: overflow-checked sizes and a memory limit,
# ---- misaligned buffers copied to aligned ones, 0-d arrays kept 0-d.
@_no_shrink(budget("huge", 0.05))
@given_seeded(st.sampled_from([
    ("conv", {"x": array((1, 1, 1, 1)), "w": array((1, 1, 1, 1)), "b": None,
              "conv_param": {"pad": (0, 2**31 - 1, 0, 2**30 - 1)}}),
    ("conv", {"x": array((1, 1, 1, 1)), "w": array((1, 1, 1, 1)), "b": None,
              "conv_param": {"pad": (0, 2**20, 0, 2**20)}}),
    ("max_pool", {"x": array((1, 1, 1, 1)), "pool_param": {"pool_height": 1, "pool_width": 1, "stride": 1,
                                                           "pad": (0, 0, 0, 0)}}),
    ("avg_pool", {"x": array((1, 1, 2, 2)), "pool_param": {"pool_height": 2**31 - 1, "pool_width": 1,
                                                           "stride": 1, "pad": (0, 2**31 - 1, 0, 0)}}),
    ("gaussian_blur", {"x": array((1, 1, 2, 2)), "sigma": 1e9}),
]), st.integers(0, 3))
def test_huge_geometry_is_refused_up_front(sandbox, op_args, _):
    op, args = op_args
    out = check(sandbox, {"op": op, "args": args}, ["pad", "pool", "sigma", "shape", "memory", "size", "x"],
                valid=False, timeout=10)
    assert out["status"] == "error" or out.get("error", 0) <= 1


@budget("misaligned", 0.05)
@given_seeded(st.one_of(*[f(valid=True) for f in FAMILIES[:6]]), st.data())
def test_misaligned_buffers_match_the_reference(sandbox, case_names, data):
    case, names = case_names
    for k, v in case["args"].items():
        if isinstance(v, dict) and v.get("__array__") and v["dtype"] in ("float32", "float64"):
            case["args"][k] = dict(v, layout="misaligned")
    check(sandbox, case, names, valid=True)


@budget("zero_d", 0.05)
@given_seeded(st.sampled_from(ACTIVATIONS), st.sampled_from(["float32", "float64"]),
              st.sampled_from(["c", "list", "scalar"]), seeds, st.booleans())
def test_zero_d_arrays_stay_zero_d(sandbox, name, dtype, layout, seed, backward):
    """0-d arrays, Python floats and numpy scalars come back 0-d, and a 0-d dout is taken."""
    args = {"x": array((), dtype, layout, "normal", seed)}
    if backward:
        args["dout"] = array((), dtype, layout, "normal", seed + 1)
    out = check(sandbox, {"op": name, "args": args}, ["x", "dout"], valid=True)
    assert out.get("shape") == (), out
