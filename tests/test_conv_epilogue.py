"""The epilogues a convolution applies as it writes its output (bias, ReLU, a
clamp, a residual sum with or without its ReLU) give the bits of the same steps
taken one by one in numpy after a plain convolution: each is one rounding of
the same float operation, in the same order, whichever kernel writes the output
(on the transposed path for small maps, in registers on their way out)."""
import numpy as np
import pytest

from gradvis import _core
from conftest import simd_paths_test

# (x shape, w shape, geometry): layers whose positions fill the transposed
# path's row tiles, and others, with rows and filters not multiples of the
# vector length, runs that end at image boundaries, maps under 16 positions
CASES = [
    ((1, 64, 14, 14), (45, 64, 1, 1), {}),            # 196 rows, a partial sliver
    ((1, 96, 14, 14), (576, 96, 1, 1), {}),           # MobileNetV2's expansion at 14x14
    ((1, 300, 7, 7), (96, 300, 1, 1), {}),            # 49 rows, two K blocks
    ((2, 192, 7, 7), (200, 192, 1, 1), {}),           # two images, a partial sliver
    ((8, 48, 3, 3), (64, 48, 1, 1), {}),              # 9-row runs across row tiles
    ((1, 40, 4, 5), (19, 40, 1, 1), {}),              # 20 positions
    ((1, 520, 10, 10), (70, 520, 1, 1), {}),          # three K blocks
    ((1, 64, 14, 14), (96, 64, 3, 3), {"padding": 1, "stride": 2}),
    ((1, 40, 7, 7), (124, 40, 5, 5), {"padding": 2}),
    ((1, 16, 28, 28), (24, 16, 1, 1), {}),            # a larger map (positions in the vectors)
    # filters that leave a last sliver of 2 or 4 rows (AVX2's are 6 high): an RGB
    # layer read from its split image, a packed one, one with two K blocks
    ((1, 3, 40, 40), (32, 3, 3, 3), {"padding": 1, "stride": 2}),
    ((1, 24, 24, 24), (16, 24, 3, 3), {"padding": 1}),
    ((1, 40, 18, 18), (20, 40, 3, 3), {"padding": 1}),
]


def _geometry(g):
    return (g.get("stride", 1), g.get("padding", 0), g.get("dilation", 1), 1)


def check_epilogue_bits(case, dtype=np.float32, seed=3):
    xs, ws, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal(ws) / np.sqrt(ws[1] * ws[2] * ws[3])).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    args = _geometry(g)
    y0 = _core.conv2d_forward(x, w, None, *args, False)
    v = y0 + b[:, None, None]
    eq = np.testing.assert_array_equal
    eq(_core.conv2d_forward(x, w, b, *args, False), v)
    eq(_core.conv2d_forward(x, w, b, *args, True), np.where(v < 0, dtype(0), v))
    z = y0 + dtype(0)   # a ReLU without a bias adds zeros first (-0 becomes +0)
    eq(_core.conv2d_forward(x, w, None, *args, True), np.where(z < 0, dtype(0), z))
    for lo, hi in ((0.0, 6.0), (-0.5, 0.25)):
        u = np.where(v < dtype(lo), dtype(lo), v)
        eq(_core.conv2d_forward_act(x, w, b, *args, "clamp", lo, hi, False), np.where(u > dtype(hi), dtype(hi), u))
    u = np.where(y0 < 0, dtype(0), y0)
    eq(_core.conv2d_forward_act(x, w, None, *args, "clamp", 0.0, 6.0, False), np.where(u > 6, dtype(6), u))
    r = rng.standard_normal(y0.shape).astype(dtype)
    r.flat[:: max(1, r.size // 7)] = np.nan   # NaN falls through the sum and its ReLU
    s = v + r
    eq(_core.conv2d_forward_add(x, w, b, r, *args, False), s)
    eq(_core.conv2d_forward_add(x, w, b, r, *args, True), np.where(s < 0, dtype(0), s))
    s = y0 + r
    eq(_core.conv2d_forward_add(x, w, None, r, *args, True), np.where(s < 0, dtype(0), s))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_epilogue_bits(case, dtype, threads):
    import gradvis

    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        check_epilogue_bits(case, dtype)
    finally:
        gradvis.set_num_threads(old)


test_epilogue_bits_simd_paths = simd_paths_test("""
import gradvis
from test_conv_epilogue import CASES, check_epilogue_bits
for threads in (1, 2):
    gradvis.set_num_threads(threads)
    for case in CASES:
        check_epilogue_bits(case)
""")
