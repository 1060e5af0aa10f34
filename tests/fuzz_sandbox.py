"""Run test cases in child processes, so that a crash or a hang fails a test
instead of killing the test run.

A :class:`Sandbox` keeps worker processes alive between cases (importing gradvis
once per worker, not once per case). Each case is a picklable recipe, handed to
a function ``run_case(case) -> dict`` of a module the worker imports; the
worker runs it under an address-space limit (``RLIMIT_AS``) and one OpenMP
thread, and sends the dict back. A worker that dies (a signal, an abort) or
does not answer within the time bound is replaced, and the case's outcome says
so: ``{"status": "crash", "signal": ...}`` or ``{"status": "hang"}``.

Used by test_fuzz_api.py and test_fuzz_files.py.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The worker: read length-prefixed pickled cases on stdin, answer on stdout. The
# limits are set before gradvis is imported, so they hold for everything after.
_WORKER = r"""
import os, pickle, resource, struct, sys, traceback
limit = int(sys.argv[2])
if limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path.insert(0, sys.argv[3])
inp, out = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr          # stray prints must not corrupt the protocol
import importlib
mod = importlib.import_module(sys.argv[1])
out.write(b"R"); out.flush()     # ready
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    case = pickle.loads(inp.read(struct.unpack("<I", head)[0]))
    try:
        result = mod.run_case(case)
    except MemoryError:
        result = {"status": "error", "type": "MemoryError", "message": "MemoryError"}
    except BaseException as e:   # the harness itself failed: report it, keep serving
        result = {"status": "harness", "type": type(e).__name__,
                  "message": "".join(traceback.format_exception(e))[-2000:]}
    data = pickle.dumps(result)
    out.write(struct.pack("<I", len(data)) + data); out.flush()
"""


class _Worker:
    def __init__(self, module, memory, env):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, module, str(memory), HERE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._read(1, 120.0)     # the ready byte (importing gradvis)

    def _read(self, n, timeout):
        buf = b""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while len(buf) < n:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def run(self, case, timeout):
        data = pickle.dumps(case)
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
            n = struct.unpack("<I", self._read(4, timeout))[0]
            return pickle.loads(self._read(n, timeout))
        except TimeoutError:
            self.kill()
            return {"status": "hang", "timeout": timeout}
        except (EOFError, BrokenPipeError):
            rc = self.proc.wait()
            return {"status": "crash", "returncode": rc,
                    "signal": signal.Signals(-rc).name if rc < 0 and -rc in signal.valid_signals() else None}

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


class Sandbox:
    """A pool of ``workers`` child processes running ``module.run_case``.

    Args:
        module: name of a module in tests/ with ``run_case(case) -> dict``.
        workers: processes kept alive (cases run in parallel in :meth:`map`).
        timeout: seconds a case may take before its worker is killed.
        memory: bytes of address space a worker may map (RLIMIT_AS); 0: no limit.
    """

    def __init__(self, module, workers=1, timeout=30.0, memory=4 << 30, threads=1):
        self.module, self.timeout, self.memory = module, float(timeout), int(memory)
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1",
                        MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
        if "GRADVIS_FUZZ_SIMD" in os.environ:      # fuzz one SIMD level of the kernels
            self.env["GRADVIS_SIMD"] = os.environ["GRADVIS_FUZZ_SIMD"]
        self.workers = [None] * int(workers)

    def _worker(self, i):
        w = self.workers[i]
        if w is None or not w.alive():
            w = self.workers[i] = _Worker(self.module, self.memory, self.env)
        return w

    def run(self, case, timeout=None):
        """The outcome dict of one case (in worker 0)."""
        out = self._worker(0).run(case, self.timeout if timeout is None else timeout)
        if out["status"] in ("hang", "crash"):
            self.workers[0] = None
        return out

    def map(self, cases, timeout=None):
        """Outcomes of ``cases``, in order, spread over the workers."""
        timeout = self.timeout if timeout is None else timeout
        results = [None] * len(cases)
        pending = list(enumerate(cases))
        busy = {}     # worker index -> (case index, start time)
        while pending or busy:
            for i in range(len(self.workers)):
                if i not in busy and pending:
                    k, case = pending.pop(0)
                    w = self._worker(i)
                    data = pickle.dumps(case)
                    try:
                        w.proc.stdin.write(struct.pack("<I", len(data)) + data)
                        w.proc.stdin.flush()
                    except BrokenPipeError:
                        pass
                    busy[i] = (k, time.monotonic())
            fds = {self.workers[i].proc.stdout.fileno(): i for i in busy}
            wait = min(s + timeout for _, s in busy.values()) - time.monotonic()
            ready, _, _ = select.select(list(fds), [], [], max(0.0, wait))
            for fd in ready:
                i = fds[fd]
                k, _ = busy.pop(i)
                w = self.workers[i]
                try:
                    n = struct.unpack("<I", w._read(4, timeout))[0]
                    results[k] = pickle.loads(w._read(n, timeout))
                except TimeoutError:
                    w.kill()
                    self.workers[i] = None
                    results[k] = {"status": "hang", "timeout": timeout}
                except EOFError:
                    rc = w.proc.wait()
                    self.workers[i] = None
                    results[k] = {"status": "crash", "returncode": rc,
                                  "signal": signal.Signals(-rc).name
                                  if rc < 0 and -rc in signal.valid_signals() else None}
            now = time.monotonic()
            for i, (k, s) in list(busy.items()):
                if now - s > timeout:
                    self.workers[i].kill()
                    self.workers[i] = None
                    busy.pop(i)
                    results[k] = {"status": "hang", "timeout": timeout}
        return results

    def close(self):
        for w in self.workers:
            if w is not None:
                w.close()
        self.workers = [None] * len(self.workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
