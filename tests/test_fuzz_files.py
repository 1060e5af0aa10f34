"""Mutated model files (.npz and .onnx) load cleanly or fail cleanly, within
bounded time and memory.

Each file is made from a small seeded model by one seeded mutation (bit flips,
truncation, zeroed runs, zip bombs declared as extra, state or parameter members,
unknown and duplicate members, lying sizes, hostile values in the JSON header,
damaged .npy headers; for ONNX, damaged attributes and initializers), then
loaded and run forward once in a sandbox worker limited to ``GRADVIS_FUZZ_MEMORY_GB``
(default 1.5) GiB of address space. It must end in a model whose output is
finite, or a ValueError/TypeError (FileNotFoundError never: the file exists),
within the time bound; zip bombs must be refused.

About 50 files run by default; the long run:

    GRADVIS_FUZZ_FILES=500 python -m pytest tests/test_fuzz_files.py -q
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import require
from fuzz_file_cases import GEOMETRY_MUTATIONS, NPZ_MUTATIONS, ONNX_MUTATIONS
from fuzz_sandbox import Sandbox

COUNT = int(os.environ.get("GRADVIS_FUZZ_FILES", 50))
SEED = int(os.environ.get("GRADVIS_FUZZ_SEED", 0))
TIMEOUT = float(os.environ.get("GRADVIS_FUZZ_TIMEOUT", 30))
MEMORY = int(float(os.environ.get("GRADVIS_FUZZ_MEMORY_GB", 1.5)) * (1 << 30))
BOMBS = ("bomb_member", "bomb_state", "bomb_param")


def cases(kind, mutations, count, tmp):
    rng = np.random.default_rng([SEED, len(kind)])
    return [{"kind": kind, "mutation": str(rng.choice(mutations)), "seed": SEED * 100003 + i, "dir": str(tmp)}
            for i in range(count)]


def check(outcomes, cases_):
    bad = []
    for case, out in zip(cases_, outcomes):
        status = out["status"]
        if status in ("crash", "hang", "harness"):
            bad.append(f"{status}: {out} for {case}")
        elif status == "error":
            if not ("ValueError" in out["mro"] or "TypeError" in out["mro"]):
                bad.append(f"{out['type']}: {out['message']} for {case}")
        elif case["mutation"] in BOMBS:
            bad.append(f"a zip bomb was accepted: {case}")
        elif not out["finite"]:
            bad.append(f"loaded, but the output is not finite: {case}")
    assert not bad, f"{len(bad)} of {len(cases_)} files:\n" + "\n".join(bad[:20])


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox("fuzz_file_cases", workers=2, timeout=TIMEOUT, memory=MEMORY) as sb:
        yield sb


def test_mutated_npz_files(sandbox, tmp_path):
    # every run: a real (64 MiB) bomb of each kind, besides the drawn files
    cs = [{"kind": "npz", "mutation": m, "seed": k, "dir": str(tmp_path), "bomb_size": 64 << 20}
          for k, m in enumerate(BOMBS)]
    cs += cases("npz", NPZ_MUTATIONS, COUNT - COUNT // 3, tmp_path)
    check(sandbox.map(cs), cs)


def test_mutated_onnx_files(sandbox, tmp_path):
    require("onnx")
    cs = cases("onnx", ONNX_MUTATIONS, max(1, COUNT // 3), tmp_path)
    check(sandbox.map(cs), cs)


@pytest.mark.parametrize("mutation", GEOMETRY_MUTATIONS)
def test_edited_geometry_is_refused_not_run(sandbox, tmp_path, mutation):
    if mutation.startswith("onnx"):
        require("onnx")
    cs = [{"kind": mutation, "mutation": mutation, "seed": SEED * 7 + k, "dir": str(tmp_path)} for k in range(2)]
    outs = sandbox.map(cs, timeout=10)
    check(outs, cs)
    assert all(o["status"] == "error" for o in outs), outs
