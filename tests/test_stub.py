"""python/gradvis/_core.pyi against the built gradvis._core.

mypy.stubtest checks that the two hold the same names. pybind11 functions carry
no introspectable signature, so the parameters (names, order, defaults) are
checked here against the signature pybind11 writes as each docstring's first line.
"""
import ast
import os
import re
import subprocess
import sys

import pytest

import gradvis
from gradvis import _core

STUB = os.path.join(os.path.dirname(gradvis.__file__), "_core.pyi")


def _stub_functions():
    tree = ast.parse(open(STUB).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            names = [p.arg for p in a.args]
            defaults = [None] * (len(names) - len(a.defaults)) + [ast.literal_eval(d) for d in a.defaults]
            out[node.name] = list(zip(names, defaults))
    return out


def _runtime_signature(fn):
    """[(name, default or None)] from pybind11's 'name(a: T, b: T = 1) -> R' line."""
    first = fn.__doc__.splitlines()[0]
    m = re.match(r"^\w+\((.*)\) -> .*$", first)
    assert m, f"no pybind11 signature in {first!r}"
    params = []
    depth, cur = 0, ""
    for ch in m.group(1):  # split on the top-level commas (types may hold brackets)
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        params.append(cur.strip())
    out = []
    for p in params:
        name = p.split(":")[0].strip()
        default = None
        if "=" in p:
            default = ast.literal_eval(p.split("=", 1)[1].strip())
        out.append((name, default))
    return out


def _public_runtime_names():
    return sorted(n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n)))


def test_stub_names_match_the_module():
    stub = _stub_functions()
    runtime = _public_runtime_names()
    assert sorted(stub) == runtime, (
        f"only in the module: {sorted(set(runtime) - set(stub))}; only in the stub: {sorted(set(stub) - set(runtime))}")


@pytest.mark.parametrize("name", _public_runtime_names())
def test_stub_parameters_match_the_module(name):
    stub = _stub_functions()
    assert name in stub, f"{name} is missing from _core.pyi"
    assert stub[name] == _runtime_signature(getattr(_core, name)), f"{name}: stub and module disagree"


def test_mypy_stubtest_passes(tmp_path):
    pytest.importorskip("mypy")
    pkg_parent = os.path.dirname(os.path.dirname(gradvis.__file__))
    env = dict(os.environ, PYTHONPATH=pkg_parent + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # mypy looks for the stub on MYPYPATH, then in the interpreter's site-packages
    # (which it refuses to see on MYPYPATH): name the source tree when testing one.
    if os.path.basename(pkg_parent) not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = pkg_parent
    # From an empty directory with a fresh cache, so that nothing but this package is seen.
    res = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "gradvis._core", "--concise",
         "--mypy-config-file", os.devnull],
        cwd=tmp_path, env=dict(env, MYPY_CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
