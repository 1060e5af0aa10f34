"""The explorer's job queue: one compute thread per server, bounded memory.

Every computation runs on the queue's single worker thread, one at a time, so
the model is never used by two threads at once. Long jobs (methods that
stream) run in submission order; quick jobs (predictions, saliency) go ahead of
them and also run *between the steps* of a long job, so the page stays responsive
while a DeepDream runs. A job is cancelled within one step: its step callback
raises :class:`gradvis.explore.methods.Cancelled`.

Memory is bounded: at most ``max_queued`` jobs wait (more are refused), finished
jobs are kept for ``keep_s`` seconds, at most ``max_finished`` of them and
``max_bytes`` of their results (oldest dropped first), and a queued or running
job that nobody has asked about for ``abandon_s`` seconds (its client went away)
is cancelled.
"""
from __future__ import annotations

import collections
import itertools
import logging
import secrets
import threading
import time
from concurrent.futures import Future

from .methods import Cancelled

__all__ = ["Job", "JobQueue", "QueueFull"]

log = logging.getLogger("gradvis.explore")

QUEUED, RUNNING, DONE, FAILED, CANCELLED, ERROR = "queued", "running", "done", "failed", "cancelled", "error"
FINISHED = (DONE, FAILED, CANCELLED, ERROR)


def _nbytes(obj, depth=0):
    """The bytes held by the arrays and byte strings in ``obj`` (a result, its fields)."""
    import numpy as np
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if depth > 3:
        return 0
    if isinstance(obj, dict):
        return sum(_nbytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v, depth + 1) for v in obj)
    if hasattr(obj, "__dict__"):
        return _nbytes(vars(obj), depth + 1)
    return 0


class QueueFull(Exception):
    """Too many jobs are waiting."""


class Job:
    """One computation. ``func(job)`` runs on the worker; it may call
    ``job.report(step, total, preview)`` and should check ``job.cancelled()``
    (or pass it to a method's step callback).

    ``status`` moves from 'queued' to 'running' to one of 'done', 'failed' (the
    library refused its arguments: ``error`` holds its message), 'cancelled' or
    'error' (an unexpected exception)."""

    def __init__(self, func, kind="", long=False, meta=None):
        self.id = secrets.token_hex(8)
        self.func = func
        self.kind = kind
        self.long = long
        self.meta = dict(meta or {})
        self.status = QUEUED
        self.step = 0
        self.total = 0
        self.preview = None           # the latest preview (bytes), replaced in place
        self.preview_step = 0
        self.result = None
        self.error = None
        self.created = time.monotonic()
        self.started = None
        self.finished = None
        self.seen = self.created      # the last time a client asked about it
        self.nbytes = 0               # the memory its result holds, once finished
        self.version = 0              # bumped on every change, for event streams
        self._cancel = threading.Event()
        self._changed = threading.Condition()

    def cancelled(self):
        return self._cancel.is_set()

    def report(self, step, total, preview=None):
        self.step, self.total = int(step), int(total)
        if preview is not None:
            self.preview, self.preview_step = preview, int(step)
        self._touch()

    def _touch(self):
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_change(self, version, timeout):
        """Block until ``self.version != version`` or ``timeout`` seconds pass."""
        with self._changed:
            if self.version == version:
                self._changed.wait(timeout)
        return self.version

    @property
    def done(self):
        return self.status in FINISHED

    def elapsed(self):
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started


class JobQueue:
    """A queue of :class:`Job` run by one worker thread (see the module docstring)."""

    def __init__(self, max_queued=16, max_finished=64, keep_s=600.0, abandon_s=180.0, max_bytes=256 * 2 ** 20):
        self.max_queued = int(max_queued)
        self.max_finished = int(max_finished)
        self.max_bytes = int(max_bytes)
        self.keep_s = float(keep_s)
        self.abandon_s = float(abandon_s)
        self.jobs = collections.OrderedDict()
        self._quick = collections.deque()
        self._long = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._running = []           # the stack of jobs running (a quick one inside a long one)
        self._count = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="gradvis-explore-worker", daemon=True)
        self._thread.start()
        # finds abandoned jobs while the worker is busy with a long one
        self._reaper = threading.Thread(target=self._reap, name="gradvis-explore-reaper", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------------ client side
    def submit(self, func, kind="", long=False, meta=None):
        """Queue ``func(job)``; returns the :class:`Job`. Raises :class:`QueueFull`."""
        job = Job(func, kind, long, meta)
        with self._lock:
            self._cleanup_locked()
            waiting = sum(1 for j in self.jobs.values() if j.status == QUEUED)
            if waiting >= self.max_queued:
                raise QueueFull(f"{waiting} jobs are already waiting; cancel one or try again later")
            self.jobs[job.id] = job
            (self._long if long else self._quick).append(job)
            self._wake.notify_all()
        return job

    def call(self, func, kind=""):
        """Run ``func()`` on the worker as a quick job; returns a Future of its result."""
        fut = Future()

        def run(job):
            return func()
        job = self.submit(run, kind=kind, long=False, meta={"internal": True})
        job.meta["future"] = fut
        return fut

    def get(self, job_id, touch=True):
        """The job ``job_id`` or None (unknown, or cleaned up)."""
        with self._lock:
            job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is not None and touch:
            job.seen = time.monotonic()
        return job

    def cancel(self, job_id):
        """Cancel a job: a queued one at once, a running one at its next step.
        Returns the job, or None if unknown."""
        job = self.get(job_id)
        if job is None:
            return None
        job._cancel.set()
        with self._lock:
            if job.status == QUEUED:
                self._finish_locked(job, CANCELLED)
        return job

    def stats(self):
        with self._lock:
            c = collections.Counter(j.status for j in self.jobs.values())
        return dict(c)

    def close(self, timeout=5.0):
        """Cancel everything and stop the worker."""
        with self._lock:
            self._stop = True
            for j in self.jobs.values():
                j._cancel.set()
            self._wake.notify_all()
        self._thread.join(timeout)

    def _reap(self):
        period = min(1.0, max(0.05, self.abandon_s / 4))
        while True:
            with self._lock:
                if self._stop:
                    return
                self._cleanup_locked()
                self._wake.wait(timeout=period)

    # ------------------------------------------------------------------ worker side
    def _finish_locked(self, job, status, result=None, error=None):
        job.status, job.result, job.error = status, result, error
        job.finished = time.monotonic()
        job.nbytes = _nbytes(result) + _nbytes(job.meta) + len(job.preview or b"")
        job.func = None
        fut = job.meta.pop("future", None)
        if fut is not None and not fut.done():
            if status == DONE:
                fut.set_result(result)
            else:
                fut.set_exception(error if isinstance(error, BaseException) else Cancelled())
        if job.meta.get("internal"):
            self.jobs.pop(job.id, None)
        job._touch()

    def _cleanup_locked(self):
        now = time.monotonic()
        for job in list(self.jobs.values()):
            # a request waits on an internal job: never abandoned
            if not job.done and not job.meta.get("internal") and now - job.seen > self.abandon_s:
                job._cancel.set()
                if job.status == QUEUED:
                    self._finish_locked(job, CANCELLED)
                    job.error = "abandoned: no client asked about it"
        finished = [j for j in self.jobs.values() if j.done]
        for j in finished:
            if now - j.finished > self.keep_s:
                self.jobs.pop(j.id, None)
        finished = [j for j in self.jobs.values() if j.done]
        for j in finished[:max(0, len(finished) - self.max_finished)]:
            self.jobs.pop(j.id, None)
        finished = [j for j in self.jobs.values() if j.done]
        total = sum(j.nbytes for j in finished)
        for j in finished[:-1]:          # the newest result is kept whatever its size
            if total <= self.max_bytes:
                break
            total -= j.nbytes
            self.jobs.pop(j.id, None)

    def _next_locked(self, quick_only):
        q = self._quick
        while q:
            job = q.popleft()
            if job.status == QUEUED:
                return job
        if quick_only:
            return None
        q = self._long
        while q:
            job = q.popleft()
            if job.status == QUEUED:
                return job
        return None

    def _loop(self):
        while True:
            with self._lock:
                job = None
                while not self._stop:
                    job = self._next_locked(False)
                    if job is not None:
                        break
                    self._cleanup_locked()
                    self._wake.wait(timeout=1.0)
                if self._stop:
                    for j in list(self.jobs.values()):
                        if j.status == QUEUED:
                            self._finish_locked(j, CANCELLED)
                    return
            self._execute(job)

    def run_pending_quick(self):
        """Run the waiting quick jobs now (called between the steps of a long job,
        on the worker thread)."""
        if threading.current_thread() is not self._thread:
            return
        while True:
            with self._lock:
                job = self._next_locked(True)
                if job is None:
                    self._cleanup_locked()
                    return
            self._execute(job)

    def _execute(self, job):
        with self._lock:
            if job.status != QUEUED:
                return
            job.status = RUNNING
            job.started = time.monotonic()
        job._touch()
        self._running.append(job)
        try:
            if job.cancelled():
                raise Cancelled()
            result = job.func(job)
            status, error = DONE, None
        except Cancelled:
            status, result, error = CANCELLED, None, None
        except (ValueError, TypeError) as e:
            status, result, error = FAILED, None, e
        except MemoryError:
            status, result, error = FAILED, None, ValueError("out of memory; use a smaller image or fewer steps")
        except Exception as e:      # a bug: logged in full, reported as an error
            log.exception("job %s (%s) failed", job.id, job.kind)
            status, result, error = ERROR, None, e
        finally:
            self._running.pop()
        with self._lock:
            self._finish_locked(job, status, result, error)

    def current(self):
        """The job running now (the innermost), or None."""
        return self._running[-1] if self._running else None
