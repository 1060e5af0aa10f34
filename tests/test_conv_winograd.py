"""Winograd F(4x4, 3x3) and F(2x2, 3x3) convolutions (float32, 3x3 stride-1
ungrouped layers): forward, input gradient and weight/bias gradient against the
float64 reference on shapes that cross their tile, block and gemm edges, both
block schedules, thread counts and every SIMD path; the algorithm switch and the
cost model's choices."""
import numpy as np
import pytest

import gradvis
from gradvis import _core
import reference_conv as ref
from conftest import run_at_simd_level

# Winograd's transforms scale values by up to ~10 and back, so float32 rounding
# errors are ~1e-6 of the output's largest value instead of ~1e-7; an indexing
# error would be of order 1.
TOL = 5e-5


@pytest.fixture
def algorithm():
    """Set the algorithm for one test and restore the previous one after it."""
    old = gradvis.get_conv_algorithm()
    yield gradvis.set_conv_algorithm
    gradvis.set_conv_algorithm(old)


@pytest.fixture
def cache_limit():
    """Restore the Winograd filter cache's limit after a test."""
    old = gradvis.winograd_cache_info()["limit"]
    yield gradvis.set_winograd_cache_limit
    gradvis.set_winograd_cache_limit(old)


def _check(x, w, b, padding, reference="numpy"):
    out = _core.conv2d_forward(x, w, b, padding=padding)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    dx = _core.conv2d_backward_input(dout, w, x.shape[2:], padding=padding)
    dw, db = _core.conv2d_backward_weight(dout, x, (3, 3), padding=padding)
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    if reference == "numpy":
        rout = ref.conv2d_forward(x64, w64, b64, padding=padding)
        rdx, rdw, rdb = ref.conv2d_backward(d64, x64, w64, padding=padding)
    else:  # the float64 core (direct; itself checked against numpy elsewhere)
        rout = _core.conv2d_forward(x64, w64, b64, padding=padding)
        rdx = _core.conv2d_backward_input(d64, w64, x.shape[2:], padding=padding)
        rdw, rdb = _core.conv2d_backward_weight(d64, x64, (3, 3), padding=padding)
    assert out.shape == rout.shape and dx.shape == rdx.shape and dw.shape == rdw.shape
    assert np.abs(out - rout).max() <= TOL * np.abs(rout).max(), "forward"
    assert np.abs(dx - rdx).max() <= TOL * np.abs(rdx).max(), "input gradient"
    assert np.abs(dw - rdw).max() <= TOL * np.abs(rdw).max(), "weight gradient"
    assert np.abs(db - rdb).max() <= TOL * np.abs(rdb).max(), "bias gradient"
    return out, dx, dw, db


def _inputs(N, C, H, W, F, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, H, W)).astype(np.float32),
            rng.standard_normal((F, C, 3, 3)).astype(np.float32),
            rng.standard_normal(F).astype(np.float32))


# (N, C, H, W, F, padding): maps that are and are not multiples of the 4x4 tile,
# smaller than a tile, no / asymmetric / 2-cell padding, filters not a multiple of
# the micro-kernel's rows, several K blocks (C > 256, and 333 filters for the
# flipped input gradient), tile counts that straddle the 32-wide gemm columns.
SHAPES = [
    (1, 1, 4, 4, 1, 1),
    (1, 3, 5, 7, 2, 0),
    (2, 5, 8, 8, 7, 1),
    (3, 16, 9, 11, 17, (0, 2, 1, 0)),
    (1, 8, 3, 3, 9, 2),
    (2, 20, 13, 6, 24, (2, 1, 0, 2)),
    (1, 300, 10, 10, 40, 1),
    (2, 40, 7, 5, 333, 1),
    (5, 32, 16, 16, 33, 1),
]


VARIANTS = ["winograd", "winograd2x2"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_matches_reference(shape, threads, variant, algorithm):
    algorithm(variant)
    N, C, H, W, F, pad = shape
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        _check(*_inputs(N, C, H, W, F), pad)
    finally:
        gradvis.set_num_threads(old)


@pytest.mark.parametrize("shape", [(48, 16, 32, 32, 16, 1), (6, 64, 40, 40, 64, 1), (1, 64, 64, 64, 32, 1)],
                         ids=["private-blocks", "several-blocks", "batch1-wide"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_block_schedules_and_threads_agree(shape, variant, algorithm):
    # Many tile rows give each thread its own blocks; fewer share blocks across the
    # team. The arithmetic per output does not depend on the schedule: one and two
    # threads give bit-identical results.
    algorithm(variant)
    N, C, H, W, F, pad = shape
    x, w, b = _inputs(N, C, H, W, F, seed=3)
    old = gradvis.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            gradvis.set_num_threads(threads)
            results.append(_check(x, w, b, pad, reference="core"))
    finally:
        gradvis.set_num_threads(old)
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


def test_auto_uses_it_where_it_applies(algorithm):
    # Large 3x3 stride-1 layers: auto equals winograd bit for bit; direct differs
    # in rounding. Ineligible layers (stride 2, float64) are never affected.
    x, w, b = _inputs(4, 32, 32, 32, 32, seed=4)
    got = {}
    for name in ("auto", "winograd", "direct"):
        algorithm(name)
        got[name] = (_core.conv2d_forward(x, w, b, padding=1),
                     _core.conv2d_forward(x, w, b, stride=2, padding=1),
                     _core.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, padding=1))
    np.testing.assert_array_equal(got["auto"][0], got["winograd"][0])
    assert not np.array_equal(got["auto"][0], got["direct"][0])
    for i in (1, 2):
        np.testing.assert_array_equal(got["winograd"][i], got["direct"][i])


def _passes(x, w, b):
    out = _core.conv2d_forward(x, w, b, padding=1)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    return (out, _core.conv2d_backward_input(dout, w, x.shape[2:], padding=1),
            _core.conv2d_backward_weight(dout, x, (3, 3), padding=1)[0])


@pytest.mark.parametrize("case", [
    # (N, C, H, F), expected variant of (forward and input gradient, weight gradient)
    ((1, 32, 8, 32), ("winograd2x2", "direct")),       # 4 F(4x4) tiles, 16 F(2x2) tiles
    ((1, 32, 14, 32), ("winograd", "winograd")),       # 16 F(4x4) tiles, filters cached
    ((1, 32, 4, 32), ("direct", "direct")),            # 4 F(2x2) tiles
    ((4, 32, 4, 32), ("winograd2x2", "direct")),       # 16 F(2x2) tiles
    ((8, 32, 4, 32), ("winograd2x2", "winograd2x2")),  # 8 F(4x4) tiles, 32 F(2x2) tiles
    ((32, 32, 4, 32), ("winograd", "winograd")),       # 32 F(4x4) tiles
    ((1, 8, 8, 32), ("direct", "direct")),             # too few channels
    # 16 F(2x2) tiles, transformed filters of 9.4 MB streamed from memory: within the
    # machine's stream limit F(2x2), else direct, whose forward takes the AMX tile unit
    # where there is one ("tiles")
    ((1, 384, 7, 384), (("winograd2x2", "tiles"), "direct")),
    ((8, 384, 4, 384), ("winograd2x2", "winograd2x2")),  # 32 F(2x2) tiles: the gemms amortize them
    # 16 F(4x4) tiles whose 9.4 MB of transformed filters stream: within the limit
    # F(4x4), else F(2x2) with its 49 tiles
    ((1, 256, 14, 256), (("winograd", "winograd2x2"), "winograd")),
], ids=["b1-8x8", "b1-14x14", "b1-4x4", "b4-4x4", "b8-4x4", "b32-4x4", "few-channels", "b1-7x7-large",
        "b8-4x4-large", "b1-14x14-large"])
def test_auto_picks_the_variant(case, algorithm):
    # auto is bit-identical to the variant its cost model picks, pass by pass.
    (N, C, H, F), (fwd, wgrad) = case
    if isinstance(fwd, tuple):  # (within the stream limit, beyond it)
        limit = _core.winograd_cache_info()["stream_limit"]
        streamed = (36 if fwd[0] == "winograd" else 16) * C * F * 4  # bytes of transformed filters
        fwd = fwd[0] if limit is None or limit >= streamed else fwd[1]
    x, w, b = _inputs(N, C, H, H, F, seed=7)
    got = {}
    for name in ("auto", "direct", "winograd", "winograd2x2"):
        algorithm(name)
        got[name] = _passes(x, w, b)
    # "tiles": not Winograd; the forward is the tile unit's where there is one (the
    # vector kernels' accuracy, other rounding), else the vector kernels' bits; the
    # input gradient is never tiled
    tiled = fwd == "tiles" and _core.amx_enabled()
    fwd = "direct" if fwd == "tiles" else fwd
    if tiled:
        for v in ("winograd", "winograd2x2"):
            assert not np.array_equal(got["auto"][0], got[v][0])
        scale = np.abs(got["direct"][0]).max()
        np.testing.assert_allclose(got["auto"][0], got["direct"][0], rtol=0, atol=1e-5 * scale)
    else:
        np.testing.assert_array_equal(got["auto"][0], got[fwd][0])
    np.testing.assert_array_equal(got["auto"][1], got[fwd][1])
    np.testing.assert_array_equal(got["auto"][2], got[wgrad][2])
    # the three algorithms really differ in rounding, so the checks above can fail
    assert not np.array_equal(got["direct"][0], got["winograd"][0])
    assert not np.array_equal(got["direct"][0], got["winograd2x2"][0])
    assert not np.array_equal(got["winograd"][0], got["winograd2x2"][0])


def test_switch_validates_and_reports(algorithm):
    for name in ("direct", "winograd", "winograd2x2", "auto"):
        algorithm(name)
        assert gradvis.get_conv_algorithm() == name
    with pytest.raises(ValueError, match="'auto', 'direct', 'winograd' or 'winograd2x2'"):
        gradvis.set_conv_algorithm("fft")
    assert gradvis.get_conv_algorithm() == "auto"


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_finite_inputs_propagate(variant, algorithm):
    # A NaN or inf reaches exactly the outputs whose window holds it (here via the
    # transforms, which mix a whole input tile) and the rest stay finite.
    algorithm(variant)
    x, w, b = _inputs(1, 16, 12, 12, 16, seed=5)
    x[0, 3, 5, 6] = np.nan
    out = _core.conv2d_forward(x, w, b, padding=1)
    bad = ~np.isfinite(out[0, 0])
    expect = np.zeros((12, 12), bool)
    expect[4:7, 5:8] = True
    # the tile holding the NaN also poisons its other outputs (0 * NaN = NaN)
    assert bad[expect].all()
    assert np.isfinite(out[0, :, :, :4]).all() and np.isfinite(out[0, :, :, 12:]).all()


SIMD_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import gradvis
from test_conv_winograd import _check, _inputs
assert gradvis.simd_level() == {level!r}, gradvis.simd_level()
for variant in ("winograd", "winograd2x2"):
    gradvis.set_conv_algorithm(variant)
    for shape in [(2, 20, 13, 6, 24, (2, 1, 0, 2)), (1, 300, 10, 10, 40, 1), (3, 16, 9, 11, 17, 0)]:
        N, C, H, W, F, pad = shape
        _check(*_inputs(N, C, H, W, F), pad)
print("ok")
"""


@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_simd_paths(level):
    run_at_simd_level(level, SIMD_SCRIPT)


def test_transformed_filters_follow_the_weights(algorithm):
    # Transformed filters are kept across calls and matched by the weights' bytes:
    # weights changed in place (an optimizer step) must be transformed again, equal
    # weights in another array reuse them with bit-identical results.
    algorithm("winograd")
    x, w, b = _inputs(2, 32, 12, 12, 24, seed=6)
    first = _check(x, w, b, 1)
    again = _check(x, w.copy(), b, 1)
    for a, c in zip(first, again):
        np.testing.assert_array_equal(a, c)
    w *= 0.5
    w[3, 7, 1, 1] += 2.0
    _check(x, w, b, 1)               # against the float64 reference of the new weights
    w2 = w.copy()
    w2[0, 0, 0, 0] = np.nextafter(w2[0, 0, 0, 0], np.float32(np.inf))  # one ulp
    out = _core.conv2d_forward(x, w2, b, padding=1)
    ref64 = ref.conv2d_forward(*(a.astype(np.float64) for a in (x, w2, b)), padding=1)
    assert np.abs(out - ref64).max() <= TOL * np.abs(ref64).max()
    # the other variant's transformed filters of the same weights are its own
    algorithm("winograd2x2")
    _check(x, w2, b, 1)
    algorithm("winograd")
    _check(x, w2, b, 1)


def test_many_layers_and_threads_share_the_filter_cache(algorithm, cache_limit):
    # More distinct filter banks than the cache keeps, called from several Python
    # threads at once (the kernels release the GIL): every result stays right.
    import threading

    algorithm("winograd")
    cache_limit(64 << 20)
    # 12 banks of 256 filters x 192-368 channels: 7-13 MB of transformed filters each,
    # about 120 MB in all, so entries are evicted while others are in use
    layers = [_inputs(1, 192 + 16 * i, 16, 16, 256, seed=10 + i) for i in range(12)]
    want = [ref.conv2d_forward(*(a.astype(np.float64) for a in layer), padding=1) for layer in layers]
    errors = []

    def work(order):
        try:
            for i in order:
                out = _core.conv2d_forward(*layers[i], padding=1)
                if np.abs(out - want[i]).max() > TOL * np.abs(want[i]).max():
                    errors.append(i)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(list(range(12))[::s],)) for s in (1, -1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_filter_cache_limit_and_fallback(algorithm, cache_limit):
    # Small-map forward passes use F(2x2) only with their transformed filters kept;
    # with no room for them they run the direct gemm (bit-identical to 'direct').
    algorithm("auto")
    x, w, b = _inputs(1, 32, 8, 8, 48, seed=8)
    cache_limit(0)
    info = gradvis.winograd_cache_info()
    assert info["limit"] == 0 and info["bytes"] == 0 and info["entries"] == 0
    without = _check(x, w, b, 1)
    cache_limit(64 << 20)
    with_cache = _check(x, w, b, 1)
    assert gradvis.winograd_cache_info()["entries"] >= 2       # forward and flipped filters
    algorithm("direct")
    direct = _check(x, w, b, 1)
    algorithm("winograd2x2")
    f2 = _check(x, w, b, 1)
    for i in (0, 1):  # forward and input gradient
        np.testing.assert_array_equal(without[i], direct[i])
        np.testing.assert_array_equal(with_cache[i], f2[i])
    with pytest.raises(ValueError, match=r"nbytes must be in \[0, "):
        gradvis.set_winograd_cache_limit(-1)


def test_filter_cache_replaces_weights_updated_in_place(algorithm, cache_limit):
    # A training loop updates the same array: each update replaces that array's
    # entry instead of piling up entries until they go stale.
    algorithm("auto")
    cache_limit(0)
    cache_limit(64 << 20)
    x, w, b = _inputs(1, 32, 8, 8, 48, seed=9)
    for step in range(5):
        w *= np.float32(0.9)
        _check(x, w, b, 1)
        assert gradvis.winograd_cache_info()["entries"] == 2, step


# In-place changes the filter cache must notice (entries are matched by a digest
# of the weights' bytes): each keeps the weights' shape and array.
def _bump(flat, i):
    flat[i] += np.float32(0.25)  # small, yet it shows in the float32 output


WEIGHT_CHANGES = {
    "first word": lambda f: _bump(f, 0),
    "last word": lambda f: _bump(f, f.size - 1),
    "middle of a later chunk": lambda f: _bump(f, 5 * 65536 + 12345),
    "lowest mantissa bits of 16 words": lambda f: f.view(np.uint32).__setitem__(
        slice(1000, 1016), f.view(np.uint32)[1000:1016] ^ np.uint32(0x7f)),
    "two signs 64 words apart": lambda f: f.__setitem__([100, 164], -f[[100, 164]]),
    "swap of words 64 apart": lambda f: f.__setitem__([7, 71], f[[71, 7]]),
    "swap of neighbours": lambda f: f.__setitem__([7, 8], f[[8, 7]]),
    "swap across chunks": lambda f: f.__setitem__([3, 65536 + 3], f[[65536 + 3, 3]]),
    "every weight scaled": lambda f: f.__imul__(np.float32(0.999)),
    "a zero set to -0.0": lambda f: f.__setitem__(9, np.float32(-0.0)),  # word 9 is made +0.0 first
}


def check_cache_follows_changes(change):
    """The forward pass and input gradient after `change` (in place) equal those
    computed with no cache at all, bit for bit (run with 'winograd2x2' forced)."""
    x, w, b = _inputs(1, 256, 8, 8, 256, seed=3)
    dout = np.random.default_rng(4).standard_normal((1, 256, 8, 8)).astype(np.float32)
    flat = w.reshape(-1)
    if change == "a zero set to -0.0":
        flat[9] = 0.0
    limit = gradvis.winograd_cache_info()["limit"]
    gradvis.set_winograd_cache_limit(0)
    gradvis.set_winograd_cache_limit(256 << 20)
    before = _core.conv2d_forward(x, w, b, padding=1)  # cached now
    _core.conv2d_backward_input(dout, w, (8, 8), padding=1)
    assert gradvis.winograd_cache_info()["entries"] == 2
    WEIGHT_CHANGES[change](flat)
    got = (_core.conv2d_forward(x, w, b, padding=1), _core.conv2d_backward_input(dout, w, (8, 8), padding=1))
    gradvis.set_winograd_cache_limit(0)
    want = (_core.conv2d_forward(x, w, b, padding=1), _core.conv2d_backward_input(dout, w, (8, 8), padding=1))
    gradvis.set_winograd_cache_limit(limit)
    if change != "a zero set to -0.0":  # -0.0 * x == 0.0 * x: the output may not move
        assert not np.array_equal(want[0], before), "the change should show in the output"
    for g, r in zip(got, want):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("change", sorted(WEIGHT_CHANGES))
def test_filter_cache_notices_every_in_place_change(change, algorithm, cache_limit):
    algorithm("winograd2x2")
    check_cache_follows_changes(change)


CHANGES_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import gradvis
from test_conv_winograd import check_cache_follows_changes, WEIGHT_CHANGES
assert gradvis.simd_level() == {level!r}, gradvis.simd_level()
gradvis.set_conv_algorithm("winograd2x2")
for change in sorted(WEIGHT_CHANGES):
    check_cache_follows_changes(change)
print("ok")
"""


@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_filter_cache_notices_changes_on_every_simd_path(level):
    run_at_simd_level(level, CHANGES_SCRIPT)
