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
# what stubtest may not check: the metaclass of pybind11's classes (with some
# builds of pybind11 it is pybind11_type, which no stub can name; with others the
# entry goes unused); test_stub_methods_match_the_module checks their methods
ALLOWLIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubtest_allowlist.txt")


def _stub_functions():
    tree = ast.parse(open(STUB).read())
    out = {}
    for node in tree.body:
        fn = node
        if isinstance(node, ast.ClassDef):   # a class: its constructor's parameters, self left out
            fn = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        if isinstance(fn, ast.FunctionDef):
            a = fn.args
            names = [p.arg for p in a.args]
            defaults = [None] * (len(names) - len(a.defaults)) + [ast.literal_eval(d) for d in a.defaults]
            out[node.name] = [p for p in zip(names, defaults) if fn is node or p[0] != "self"]
    return out


def _runtime_signature(fn):
    """[(name, default or None)] from pybind11's 'name(a: T, b: T = 1) -> R' line
    (a class's: its constructor's, self left out)."""
    is_class = isinstance(fn, type)
    first = (fn.__init__ if is_class else fn).__doc__.splitlines()[0]
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
        if not (is_class and name == "self"):
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


def test_stub_methods_match_the_module():
    """The methods of the module's classes (stubtest reads no signature from them),
    self included, and their properties."""
    tree = ast.parse(open(STUB).read())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes
    for cls in classes:
        runtime = getattr(_core, cls.name)
        methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name != "__init__"}
        public = {n for n in vars(runtime) if not n.startswith("_")} | {n for n in methods if n.startswith("__")}
        assert set(methods) == public, f"{cls.name}: stub {sorted(methods)}, module {sorted(public)}"
        for name, f in methods.items():
            attr = getattr(runtime, name)
            if isinstance(attr, property) or not callable(attr):
                assert any(isinstance(d, ast.Name) and d.id == "property" for d in f.decorator_list), name
                continue
            names = [p.arg for p in f.args.args]
            defaults = [None] * (len(names) - len(f.args.defaults)) + [ast.literal_eval(d) for d in f.args.defaults]
            if attr.__doc__ and re.match(r"^\w+\(", attr.__doc__):
                assert list(zip(names, defaults)) == _runtime_signature(attr), f"{cls.name}.{name}"


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
         "--mypy-config-file", os.devnull, "--allowlist", ALLOWLIST, "--ignore-unused-allowlist"],
        cwd=tmp_path, env=dict(env, MYPY_CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
