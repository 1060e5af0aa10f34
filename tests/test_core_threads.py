"""The kernels' thread count is one setting for the whole process, and equal
calls give equal bits on any thread: the count is not OpenMP's per-thread one
(which other Python threads and torch.set_num_threads would see or change), and
the convolution algorithm does not depend on what the Winograd filter cache holds."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from gradvis import _core

F32 = np.float32


@pytest.fixture
def threads():
    old = _core.get_num_threads()
    yield
    _core.set_num_threads(old)


def _in_thread(fn):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the worker thread did not finish"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_thread_count_holds_for_other_python_threads(threads):
    n = _core.get_num_threads() + 1
    _core.set_num_threads(n)
    assert _in_thread(_core.get_num_threads) == n
    _in_thread(lambda: _core.set_num_threads(1))
    assert _core.get_num_threads() == 1


def _weight_gradient(seed=3):
    # Many positions: the weight gradient sums per-thread partials, so its rounding
    # depends on the team's size (not on which thread calls).
    # (5x5: the implicit gemm, whose partials are per thread; Winograd's are not.)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 16, 24, 24)).astype(F32)
    dout = rng.standard_normal((8, 16, 24, 24)).astype(F32)
    return lambda: _core.conv2d_backward_weight(dout, x, (5, 5), 1, 2)[0]


def test_worker_threads_use_the_set_count(threads):
    if not _core.has_openmp():
        pytest.skip("built without OpenMP")
    grad = _weight_gradient()
    _core.set_num_threads(3)
    main = grad()
    np.testing.assert_array_equal(_in_thread(grad), main)


def test_thread_count_survives_torch_set_num_threads(tmp_path):
    """torch shares gradvis's OpenMP runtime; its thread count must not become gradvis's."""
    try:
        import torch  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("torch is required when CI is set")
        pytest.skip("torch is not installed")
    # The weight gradient's rounding depends on the size of the team that ran it
    # (per-thread partial sums), so its bits tell which count a convolution used.
    code = textwrap.dedent("""
        import numpy as np
        import torch
        from gradvis import _core
        rng = np.random.default_rng(3)
        x = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
        dout = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
        grad = lambda: _core.conv2d_backward_weight(dout, x, (5, 5), 1, 2)[0]
        _core.set_num_threads(1)
        one = grad()
        _core.set_num_threads(3)
        three = grad()
        torch.set_num_threads(1)  # omp_set_num_threads(1) on this thread
        torch.ones(64, 64) @ torch.ones(64, 64)
        torch.nn.functional.conv2d(torch.ones(1, 3, 16, 16), torch.ones(4, 3, 3, 3))
        print("count", _core.get_num_threads())
        after = grad()
        print("same as 3 threads", np.array_equal(after, three))
        print("differs from 1 thread", not np.array_equal(three, one))
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "count 3" in res.stdout, res.stdout
    assert "same as 3 threads True" in res.stdout, res.stdout
    if _core.has_openmp():
        assert "differs from 1 thread True" in res.stdout, res.stdout


def test_winograd_result_does_not_depend_on_the_filter_cache():
    # 16 tiles at batch 1 on a 16x16 map: Winograd is chosen where its transformed
    # filters can be cached. With the cache full of other weights they are
    # transformed every call; the bits must be those of the cached run.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 32, 16, 16)).astype(F32)
    ws = [rng.standard_normal((32, 32, 3, 3)).astype(F32) for _ in range(3)]
    old = _core.winograd_cache_info()["limit"]
    algo = _core.get_conv_algorithm()
    try:
        _core.set_conv_algorithm("auto")
        _core.set_winograd_cache_limit(0)
        _core.set_winograd_cache_limit(old)
        cached = _core.conv2d_forward(x, ws[2], None, 1, 1)
        assert _core.winograd_cache_info()["entries"] >= 1
        # Room for two entries of this layer: the third call finds the cache full.
        _core.set_winograd_cache_limit(0)
        _core.set_winograd_cache_limit(2 * 36 * 32 * 32 * 4)
        _core.conv2d_forward(x, ws[0], None, 1, 1)
        _core.conv2d_forward(x, ws[1], None, 1, 1)
        np.testing.assert_array_equal(_core.conv2d_forward(x, ws[2], None, 1, 1), cached)
    finally:
        _core.set_winograd_cache_limit(old)
        _core.set_conv_algorithm(algo)


def test_equal_calls_from_two_threads_give_equal_bits(threads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 32, 16, 16)).astype(F32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(F32)
    dout = rng.standard_normal((1, 32, 16, 16)).astype(F32)
    # a weight gradient whose per-thread sums round differently on 1 and 2 threads:
    # calls that meet must still each get the whole team
    grad = _weight_gradient()
    _core.set_num_threads(1)
    one = grad()
    _core.set_num_threads(2)
    expected = (_core.conv2d_forward(x, w, None, 1, 1), _core.conv2d_backward_input(dout, w, (16, 16), 1, 1),
                _core.conv2d_backward_weight(dout, x, (3, 3), 1, 1)[0], grad())
    if _core.has_openmp():
        assert not np.array_equal(expected[3], one)
    results = [None] * 4
    barrier = threading.Barrier(len(results))

    def work(i):
        barrier.wait()
        out = []
        for _ in range(5):
            out.append((_core.conv2d_forward(x, w, None, 1, 1), _core.conv2d_backward_input(dout, w, (16, 16), 1, 1),
                        _core.conv2d_backward_weight(dout, x, (3, 3), 1, 1)[0], grad()))
        results[i] = out

    pool = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for t in pool:
        t.start()
    for t in pool:
        t.join(300)
    for out in results:
        assert out is not None
        for triple in out:
            for got, want in zip(triple, expected):
                np.testing.assert_array_equal(got, want)


_TEAM_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from gradvis import _core
    _core.set_num_threads(2)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 24, 20, 20)).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    dw = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    dout = rng.standard_normal((4, 40, 20, 20)).astype(np.float32)

    def passes():
        return [_core.conv2d_forward(x, w, None, 1, 1), _core.conv2d_backward_input(dout, w, (20, 20), 1, 1),
                _core.conv2d_backward_weight(dout, x, (3, 3), 1, 1)[0],
                _core.conv2d_forward(x, dw, None, 2, 2, 1, 24), _core.conv2d_backward_weight(
                    rng.standard_normal((4, 24, 10, 10)).astype(np.float32), x, (5, 5), 2, 2, 1, 24)[0]]

    rng = np.random.default_rng(8)
    first = passes()
    if sys.argv[1] == "fork":
        pid = os.fork()
        if pid == 0:   # the child's regions need workers of its own
            rng = np.random.default_rng(8)
            again = passes()
            os._exit(0 if all(np.array_equal(a, b) for a, b in zip(first, again)) else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    else:
        np.savez(sys.argv[2], *first)
    """)


def _run_team_script(tmp_path, *args, env=None):
    res = subprocess.run([sys.executable, "-c", _TEAM_SCRIPT, *args], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=dict(os.environ, **(env or {})))
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_forked_child_runs_parallel_regions(tmp_path):
    # the parent's workers do not come along into a child: it must start its own
    # rather than wait for them
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    assert "child 0" in _run_team_script(tmp_path, "fork")


def test_openmp_team_gives_the_pools_bits(tmp_path):
    # GRADVIS_TEAM=openmp runs the same regions on OpenMP's threads: the same team
    # size, so the same bits (the weight gradients' per-thread sums included)
    if not _core.has_openmp():
        pytest.skip("built without OpenMP")
    _run_team_script(tmp_path, "save", str(tmp_path / "pool.npz"))
    _run_team_script(tmp_path, "save", str(tmp_path / "omp.npz"), env={"GRADVIS_TEAM": "openmp"})
    pool, omp = np.load(tmp_path / "pool.npz"), np.load(tmp_path / "omp.npz")
    assert len(pool.files) == 5
    for k in pool.files:
        np.testing.assert_array_equal(pool[k], omp[k])
