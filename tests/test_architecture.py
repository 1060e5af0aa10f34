"""The package's shape: imports run one way (import-linter's contracts in
pyproject.toml), no module reaches into another's private names, modules stay
small enough to read, and the old public names still work."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gradvis

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(gradvis.__file__).resolve().parent
MAX_LINES = 800
# what a module may take from the root package itself
ROOT_NAMES = {"_core", "_checks", "__version__"}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(path, node):
    """The absolute module an ImportFrom names."""
    if node.level == 0:
        return node.module or ""
    base = _module_name(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed (it is in the test extra: pip install '.[test]')")
    r = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _resolve(path, node)
            if not target.startswith("gradvis"):
                continue
            for alias in node.names:
                name = alias.name
                if target == "gradvis":
                    if name not in ROOT_NAMES and not (PACKAGE / name).is_dir() \
                            and not (PACKAGE / f"{name}.py").is_file():
                        bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno} takes {name!r} from the root")
                    continue
                is_module = (PACKAGE.parent / (target.replace(".", "/") + f"/{name}.py")).is_file() or \
                    (PACKAGE.parent / (target.replace(".", "/") + f"/{name}")).is_dir()
                if name.startswith("_") and not name.startswith("__") and not is_module:
                    bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {target}.{name}")
    assert not bad, "\n".join(bad)


def test_modules_are_small_or_say_why():
    long = []
    for path in _modules():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if "Kept as one module" not in doc:
                long.append(f"{path.relative_to(PACKAGE)}: {n} lines")
    assert not long, ("modules over %d lines must be split, or say in their docstring why they are "
                      "one piece ('Kept as one module: ...'):\n" % MAX_LINES) + "\n".join(long)


def test_public_names_keep_working():
    for name in gradvis.__all__:
        assert getattr(gradvis, name) is not None, name
    from gradvis.layers import conv_forward, max_pool_backward, softmax_loss   # the CS231n drop-in
    from gradvis.train import TrainConfig, main, train                         # documented paths
    from gradvis.cli import main as cli_main
    assert callable(conv_forward) and callable(max_pool_backward) and callable(softmax_loss)
    assert callable(train) and callable(main) and callable(cli_main) and TrainConfig().epochs > 0
    r = subprocess.run([sys.executable, "-m", "gradvis.train", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--epochs" in r.stdout, r.stderr[-2000:]


def test_models_saved_by_earlier_versions_still_load():
    # the bundled weights were written before the package had subpackages
    m = gradvis.load_pretrained()
    assert m.num_classes == 100 and type(m.nodes[0].layer) is gradvis.Conv2d
