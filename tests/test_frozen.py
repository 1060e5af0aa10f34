"""Frozen weights (nn/frozen.py, csrc/cpu/weight_cache.h): which arrays the kernels
take as immutable, the packed and transformed weights they keep for them, and
Model.freeze / unfreeze. Kept weights must give the same bits as weights packed
on every call, whether the entry is being filled or found, at every SIMD level."""
import gc
import pickle

import numpy as np
import pytest

import gradvis
from gradvis import _core
from gradvis.nn.frozen import immutable, is_immutable
from conftest import simd_paths_test
from helpers import small_net


def frozen_copy(a):
    return np.frombuffer(np.asarray(a).tobytes(), a.dtype).reshape(a.shape)


# ---------------------------------------------------------------------------- which arrays
def test_weight_token_only_for_arrays_over_bytes(tmp_path):
    a = frozen_copy(np.arange(12, dtype=np.float32).reshape(3, 4))
    t = _core.weight_token(a)
    assert t != 0
    assert _core.weight_token(a[1:]) == t and _core.weight_token(a.reshape(4, 3)) == t   # views share it
    assert _core.weight_token(np.ones(3, np.float32)) == 0            # writeable
    ro = np.ones(3, np.float32)
    ro.flags.writeable = False                                       # can be made writeable again
    assert _core.weight_token(ro) == 0
    ba = np.frombuffer(bytearray(16), np.float32)                    # a buffer that can change
    ba.flags.writeable = False
    assert _core.weight_token(ba) == 0
    np.save(tmp_path / "w.npy", np.ones(4, np.float32))
    assert _core.weight_token(np.load(tmp_path / "w.npy", mmap_mode="r")) == 0   # the file can change
    with pytest.raises(ValueError):
        a.flags.writeable = True


def test_tokens_are_never_given_twice():
    seen = set()
    for i in range(20):
        a = frozen_copy(np.full(64, i, np.float32))
        t = _core.weight_token(a)
        assert t not in seen
        seen.add(t)
        del a   # freed here: frozen_copy's arrays hold no reference cycle


# ---------------------------------------------------------------------------- the kernels
# (x shape, w shape, stride, padding, dilation, groups): a layer for each path that
# keeps weights: Winograd F(2x2) and F(4x4) on small maps, the implicit gemm's
# packed filters (stride 2, dilation, groups, a 1x1 layer on a large map), and the
# transposed 1x1 path on 7x7 and 14x14 maps (partial slivers, two K blocks) and
# its padded-copy form for other kernels (3x3 stride 2, 2x2 stride 2, 5x5 on 7x7)
LAYERS = [
    ((1, 64, 14, 14), (96, 64, 3, 3), 2, 1, 1, 1),
    ((1, 48, 14, 14), (160, 48, 2, 2), 2, 0, 1, 1),
    ((1, 40, 7, 7), (64, 40, 5, 5), 1, 2, 1, 1),
    ((1, 32, 8, 8), (32, 32, 3, 3), 1, 1, 1, 1),
    ((1, 64, 14, 14), (48, 64, 3, 3), 1, 1, 1, 1),
    ((1, 40, 28, 28), (36, 40, 3, 3), 1, 1, 1, 1),
    ((1, 24, 57, 57), (40, 24, 3, 3), 2, 1, 1, 1),
    ((1, 16, 40, 40), (36, 8, 3, 3), 1, 2, 2, 2),
    ((1, 20, 34, 34), (44, 20, 1, 1), 1, 0, 1, 1),
    ((1, 72, 7, 7), (155, 72, 1, 1), 1, 0, 1, 1),
    ((1, 300, 14, 14), (250, 300, 1, 1), 1, 0, 1, 1),
    ((2, 96, 7, 7), (160, 96, 1, 1), 1, 0, 1, 1),
]


def _entry_points(x, w, b, r, dout, geo):
    stride, pad, dil, groups = geo
    yield "forward", lambda w: _core.conv2d_forward(x, w, b, stride, pad, dil, groups, True)
    yield "forward_act", lambda w: _core.conv2d_forward_act(x, w, b, stride, pad, dil, groups, "silu", 0, 0,
                                                            True)
    yield "forward_add", lambda w: _core.conv2d_forward_add(x, w, b, r, stride, pad, dil, groups, True)
    yield "backward_input", lambda w: _core.conv2d_backward_input(dout, w, x.shape, stride, pad, dil, groups)
    yield "backward_input_act", lambda w: _core.conv2d_backward_input_act(dout, w, x, stride, pad, dil, groups,
                                                                          "clamp", 0.0, 0.5)


def kept_entries():
    return _core.packed_cache_info()["entries"], _core.winograd_cache_info()["entries"]


def clear_kept():
    """Empty both caches (their limits kept): a cache making room may also drop the
    stale entries of arrays that are still alive, so counts are compared from empty."""
    for limit, info in ((_core.set_packed_cache_limit, _core.packed_cache_info),
                        (_core.set_winograd_cache_limit, _core.winograd_cache_info)):
        old = info()["limit"]
        limit(0)
        limit(old)


def check_kernels(threads=(1, 2), algorithms=("auto", "direct")):
    """Every entry point on every LAYERS geometry: frozen weights give the bits of a
    writeable copy, on the call that fills the kept entry and on the two that find
    it; and the entries are made."""
    rng = np.random.default_rng(0)
    old_threads, old_algo = _core.get_num_threads(), _core.get_conv_algorithm()
    try:
        for algo in algorithms:
            _core.set_conv_algorithm(algo)
            for nt in threads:
                _core.set_num_threads(nt)
                for xs, ws, stride, pad, dil, groups in LAYERS:
                    x = rng.standard_normal(xs).astype(np.float32)
                    w = rng.standard_normal(ws).astype(np.float32)
                    b = rng.standard_normal(ws[0]).astype(np.float32)
                    y = _core.conv2d_forward(x, w, b, stride, pad, dil, groups)
                    r = rng.standard_normal(y.shape).astype(np.float32)
                    dout = rng.standard_normal(y.shape).astype(np.float32)
                    for name, f in _entry_points(x, w, b, r, dout, (stride, pad, dil, groups)):
                        want = f(w.copy())
                        clear_kept()
                        wf = frozen_copy(w)
                        for call in range(3):
                            got = f(wf)
                            for g, e in zip(got if isinstance(got, tuple) else (got,),
                                            want if isinstance(want, tuple) else (want,)):
                                assert np.array_equal(g, e), (algo, nt, xs, ws, name, call)
                        del wf   # and with it what was kept of it
                        assert kept_entries() == (0, 0), (algo, nt, xs, ws, name)
    finally:
        _core.set_num_threads(old_threads)
        _core.set_conv_algorithm(old_algo)


def test_kept_weights_give_the_same_bits():
    check_kernels()


test_kept_weights_at_other_simd_levels = simd_paths_test(
    "from test_frozen import check_kernels\ncheck_kernels(threads=(1, 2), algorithms=('auto',))")


def test_entries_are_made_and_dropped_with_the_array():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 20, 34, 34)).astype(np.float32)
    w = frozen_copy(rng.standard_normal((44, 20, 1, 1)).astype(np.float32))
    clear_kept()
    _core.conv2d_forward(x, w)                                       # the filters packed
    _core.conv2d_backward_input(x[:, :1].repeat(44, 1), w, x.shape)  # and flipped
    info = _core.packed_cache_info()
    assert info["entries"] == 2 and info["bytes"] >= 2 * w.nbytes
    del w
    gc.collect()
    assert _core.packed_cache_info()["entries"] == 0


def test_entries_of_megabytes_are_kept_and_released():
    # Entries of 2 MiB and more are mapped on their own (with huge pages asked
    # for): a 1x1 layer's packed filters (2.4 MB, the length not a multiple of 4
    # KiB), its flipped ones, and a Winograd layer's transformed filters (9.4 MB).
    rng = np.random.default_rng(3)
    cases = [((1, 1000, 7, 7), (613, 1000, 1, 1), 0), ((1, 256, 14, 14), (256, 256, 3, 3), 1)]
    old_algo = _core.get_conv_algorithm()
    try:
        _core.set_conv_algorithm("auto")
        for xs, ws, pad in cases:
            x = rng.standard_normal(xs).astype(np.float32)
            w = rng.standard_normal(ws).astype(np.float32)
            y = _core.conv2d_forward(x, w, None, 1, pad)
            dout = rng.standard_normal(y.shape).astype(np.float32)
            dx = _core.conv2d_backward_input(dout, w, x.shape, 1, pad)
            clear_kept()
            wf = frozen_copy(w)
            for _ in range(3):
                assert np.array_equal(_core.conv2d_forward(x, wf, None, 1, pad), y)
                assert np.array_equal(_core.conv2d_backward_input(dout, wf, x.shape, 1, pad), dx)
            held = _core.packed_cache_info()["bytes"] + _core.winograd_cache_info()["bytes"]
            if _core.simd_level() != "scalar":   # (the scalar kernels keep nothing of these layers)
                assert sum(kept_entries()) == 2 and held >= 2 * w.nbytes > 4 << 20, (ws, kept_entries(), held)
            del wf
            gc.collect()
            assert kept_entries() == (0, 0)
    finally:
        _core.set_conv_algorithm(old_algo)


def test_a_new_array_at_a_freed_address_is_not_taken_for_the_old_one():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 72, 7, 7)).astype(np.float32)
    for i in range(10):
        w = rng.standard_normal((100, 72, 1, 1)).astype(np.float32)
        wf = frozen_copy(w)
        assert np.array_equal(_core.conv2d_forward(x, wf), _core.conv2d_forward(x, w))
        del wf   # (freed here, as in test_tokens_are_never_given_twice)


def test_threads_share_the_kept_weights():
    """Python threads calling the same frozen layer (the kernels run without the GIL)
    all get the bits of a writeable copy, while the entries are made and found."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 96, 7, 7)).astype(np.float32)
    w = rng.standard_normal((160, 96, 1, 1)).astype(np.float32)
    x3 = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)
    w3 = rng.standard_normal((48, 64, 3, 3)).astype(np.float32)
    want = (_core.conv2d_forward(x, w), _core.conv2d_forward(x3, w3, None, 1, 1))
    for _ in range(3):
        wf, w3f = frozen_copy(w), frozen_copy(w3)

        def call(i):
            return (_core.conv2d_forward(x, wf), _core.conv2d_forward(x3, w3f, None, 1, 1))

        with ThreadPoolExecutor(4) as pool:
            for got in pool.map(call, range(32)):
                assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        del wf, w3f


def test_packed_cache_limit():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 72, 7, 7)).astype(np.float32)
    w = rng.standard_normal((100, 72, 1, 1)).astype(np.float32)
    wf = frozen_copy(w)
    old = _core.packed_cache_info()["limit"]
    try:
        _core.conv2d_forward(x, wf)
        _core.set_packed_cache_limit(0)
        assert _core.packed_cache_info()["bytes"] == 0
        assert np.array_equal(_core.conv2d_forward(x, wf), _core.conv2d_forward(x, w))   # packed each call
        assert _core.packed_cache_info()["entries"] == 0
    finally:
        _core.set_packed_cache_limit(old)
    assert _core.packed_cache_info()["limit"] == old
    with pytest.raises(ValueError, match="nbytes"):
        _core.set_packed_cache_limit(-1)


# ---------------------------------------------------------------------------- models
def test_freeze_unfreeze_and_what_they_change():
    m = small_net()
    X = np.random.default_rng(4).standard_normal((2, 3, 16, 16)).astype(np.float32)
    want, c = m.forward(X)
    dX_want, g_want = m.backward(np.ones_like(want), c)
    assert not m.frozen
    assert m.freeze() is m and m.frozen
    assert all(is_immutable(v) for v in [*m.params.values(), *m.buffers.values()])
    for _ in range(2):   # the folded batch norm is made once, then found
        got, c = m.forward(X)
        assert np.array_equal(got, want)
    dX, g = m.backward(np.ones_like(want), c)
    assert np.array_equal(dX, dX_want) and all(np.array_equal(g[k], g_want[k]) for k in g_want)
    kept = m._folded[("conv1", "<f4")]
    assert isinstance(kept, tuple) and is_immutable(kept[1])
    m.forward(X)
    assert m._folded[("conv1", "<f4")] is kept
    with pytest.raises(ValueError, match="read-only"):
        m.params["conv1.weight"][0] = 0
    # a new array replaces a frozen one, and the fold follows it
    m.params["bn1.gamma"] = m.params["bn1.gamma"] * 2
    assert not m.frozen
    m2 = small_net()
    m2.params["bn1.gamma"] = m2.params["bn1.gamma"] * 2
    assert np.array_equal(m.forward(X)[0], m2.forward(X)[0])
    assert m.unfreeze() is m and not any(is_immutable(v) for v in m.params.values())
    m.params["conv1.weight"][0] = 0   # writeable again


def test_copies_pickles_and_dtypes_keep_frozen():
    m = small_net().freeze()
    c = m.copy()
    assert c.frozen and c.params["conv1.weight"] is m.params["conv1.weight"]   # nothing to copy
    assert not small_net().copy().frozen
    p = pickle.loads(pickle.dumps(m))
    assert p.frozen
    X = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert np.array_equal(p.forward(X)[0], m.forward(X)[0])
    assert not pickle.loads(pickle.dumps(small_net())).frozen
    d = m.astype(np.float64)
    assert d.frozen and d.params["conv1.weight"].dtype == np.float64


def test_immutable_keeps_shape_dtype_and_values():
    for a in (np.float32(3.5) * np.ones(()), np.arange(6.0).reshape(2, 3).T, np.zeros((0, 4), np.float32)):
        f = immutable(a)
        assert f.shape == a.shape and f.dtype == a.dtype and np.array_equal(f, a) and is_immutable(f)
        assert immutable(f) is f


def test_loaders_return_frozen_models(tmp_path):
    m = small_net()
    path = tmp_path / "m.npz"
    m.save(path)
    loaded = gradvis.load_model(path)
    assert loaded.frozen
    X = np.random.default_rng(6).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert np.array_equal(loaded.forward(X)[0], m.forward(X)[0])
    loaded.save(tmp_path / "again.npz")   # a frozen model saves as any other
    assert np.array_equal(gradvis.load_model(tmp_path / "again.npz").forward(X)[0], m.forward(X)[0])


def test_training_unfreezes_the_model():
    from gradvis.train import TrainConfig, train
    from types import SimpleNamespace
    rng = np.random.default_rng(7)
    data = SimpleNamespace(X_train=rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), y_train=np.arange(8) % 5,
                           X_val=rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), y_val=np.arange(4) % 5)
    m = small_net().freeze()
    before = m.params["conv1.weight"].copy()
    cfg = TrainConfig(epochs=1, batch_size=4, crop=0, pad=0, flip=False, num_threads=1, schedule="constant")
    trained, _ = train(m, data, cfg, log=None)
    assert not trained.frozen and not np.array_equal(trained.params["conv1.weight"], before)
