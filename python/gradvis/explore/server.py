"""The explorer's web server: the HTTP API and the page (docs/explore.md).

:func:`create_app` builds a Starlette application around one model; :func:`serve`
runs it with uvicorn. Both need the ``explore`` extra (``pip install
'gradvis[explore]'``). All computation goes through one
:class:`~gradvis.explore.jobs.JobQueue`; the methods come from
:mod:`gradvis.explore.methods`.

Security: requests need the token when one is set (query ``?token=``, header
``Authorization: token T`` or ``X-Gradvis-Token``, or the cookie the page gets);
without a token the server only answers requests addressed to a loopback host
name (DNS rebinding). Requests that change something (POST, DELETE) from a
browser must come from the server's own page (the Origin header), so another
web site cannot use it. Uploads are limited in bytes, pixels and type; files are
read only from the images directory's listing and the package's static files.
"""
from __future__ import annotations

import collections
import contextlib
import hmac
import io
import json
import logging
import math
import os
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from . import methods as M
from .jobs import CANCELLED, DONE, ERROR, FAILED, JobQueue, QueueFull

__all__ = ["create_app", "serve", "Explorer", "missing_extra_message", "LOOPBACK_HOSTS"]

log = logging.getLogger("gradvis.explore")

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "WEBP": "WebP"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_COOKIE = "gradvis_token"
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                  ".ico": "image/x-icon"}


def missing_extra_message(e):
    return (f"gradvis explore needs the web server packages of the 'explore' extra ({e}); install them with "
            f"pip install 'gradvis[explore]'  (starlette and uvicorn)")


class HTTPError(ValueError):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class _NamedBytes(io.BytesIO):
    """Upload bytes that name themselves in Pillow's and read_rgb's messages."""

    def __init__(self, data, name):
        super().__init__(data)
        self.name = name

    def __str__(self):
        return self.name

    __format__ = lambda self, spec: format(self.name, spec)   # noqa: E731


def png_bytes(rgb):
    """uint8 (H, W, 3) or (H, W, 4) -> PNG file bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


# Colour maps shared with the page (static/app.js keeps the same stops).
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float64)


def heat_rgb(m, signed=False):
    """A (H, W) map -> uint8 (H, W, 3), scaled by its own largest magnitude
    (signed maps: red positive, blue negative, white zero)."""
    m = np.asarray(m, np.float64)
    if signed:
        s = np.abs(m).max() or 1.0
        v = np.clip(m / s, -1, 1)[..., None]
        red, blue, white = np.array([178, 24, 43]), np.array([33, 102, 172]), np.array([247, 247, 247])
        out = np.where(v >= 0, white + v * (red - white), white - v * (blue - white))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    lo, hi = float(m.min()), float(m.max())
    v = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    x = v * (len(_HEAT) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(_HEAT) - 2)
    f = (x - i)[..., None]
    out = _HEAT[i] * (1 - f) + _HEAT[i + 1] * f
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class Explorer:
    """The server's state: the model, the images it knows, the job queue and limits.

    Args:
        model: a :class:`gradvis.Model` (a classifier for the class methods).
        model_path: the file it came from (None: the bundled model), for exported code.
        model_options: the keyword arguments it was loaded with (an ONNX file's
            ``mean``, ``std``, ``scale``, ``input_shape``), for exported code.
        images_dir: a directory whose image files the page may pick (None: none).
        token: the access token, or None for none (loopback only).
        max_upload_bytes: largest upload or image file.
        max_pixels: largest image (width x height) decoded.
        max_images: uploads kept (least recently used dropped first).
        max_image_bytes: the memory the kept images may take (the newest is kept whatever its size).
        queue: a :class:`JobQueue` (default: a new one).
    """

    def __init__(self, model, model_path=None, images_dir=None, token=None, model_options=None, max_upload_bytes=20 * 2 ** 20,
                 max_pixels=40_000_000, max_images=32, max_image_bytes=256 * 2 ** 20, queue=None):
        self.model = model
        self.model_path = None if model_path in (None, "default") else str(model_path)
        self.token = token or None
        self.model_options = dict(model_options or {})
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self.max_images = int(max_images)
        self.max_image_bytes = int(max_image_bytes)
        self.queue = queue or JobQueue()
        self.images = collections.OrderedDict()      # id -> ImageInput
        self._lock = threading.Lock()
        self.images_dir = Path(images_dir).resolve() if images_dir is not None else None
        self.listing = self._list_images()
        self.static = {p.name: p for p in sorted(STATIC_DIR.iterdir()) if p.is_file()} if STATIC_DIR.is_dir() else {}
        self._model_info = None

    # ------------------------------------------------------------------ images
    def _list_images(self):
        """id -> (name, path) of the images the page may pick: the samples that ship
        with gradvis's dependencies and the files under ``images_dir``."""
        out = collections.OrderedDict()
        try:
            import matplotlib
            p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
            if p.is_file():
                out["sample:grace_hopper"] = ("Grace Hopper (sample)", p)
        except ImportError:
            pass
        if self.images_dir is not None:
            if not self.images_dir.is_dir():
                raise ValueError(f"images_dir {self.images_dir} is not a directory")
            found = []
            for root, dirs, files in os.walk(self.images_dir):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."):
                        p = Path(root) / f
                        # a link may point outside the directory: left out
                        if p.is_file() and p.resolve().is_relative_to(self.images_dir):
                            found.append(p)
                if len(found) >= 2000:
                    break
            for p in found[:2000]:
                rel = p.relative_to(self.images_dir).as_posix()
                out["dir:" + rel] = (rel, p)
        return out

    def decode(self, data, name):
        """Image file bytes -> :class:`~gradvis.explore.methods.ImageInput`, or
        :class:`HTTPError` (413 too large, 415 not PNG/JPEG/BMP/WebP, 422 damaged)."""
        from PIL import Image, UnidentifiedImageError
        from ..io.images import fit_image, read_rgb
        if len(data) > self.max_upload_bytes:
            raise HTTPError(413, f"{name}: {len(data)} bytes is more than the {self.max_upload_bytes} allowed")
        if not data:
            raise HTTPError(422, f"{name}: empty file")
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
        except UnidentifiedImageError:
            raise HTTPError(415, f"{name}: not an image of a supported type (PNG, JPEG, BMP or WebP)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise HTTPError(413, f"{name}: the image has too many pixels to decode safely") from None
        except Exception as e:     # a damaged header
            raise HTTPError(422, f"{name}: cannot read image ({e})") from None
        if fmt not in IMAGE_FORMATS:
            raise HTTPError(415, f"{name}: {fmt} images are not accepted; use PNG, JPEG, BMP or WebP")
        if w * h > self.max_pixels:
            raise HTTPError(413, f"{name}: {w}x{h} is {w * h} pixels, more than the {self.max_pixels} allowed")
        try:
            rgb, mode = read_rgb(_NamedBytes(data, name))
        except ValueError as e:
            raise HTTPError(422, str(e)) from None
        size = tuple(self.model.input_shape[1:])
        fitted, what = fit_image(rgb, size)
        notes = []
        if what:
            notes.append(f"The model takes {size[1]}x{size[0]} images: the photo was {what}.")
            if max(rgb.shape[:2]) >= 4 * max(size):
                notes.append(f"The photo ({rgb.shape[1]}x{rgb.shape[0]}) is much larger than the "
                             f"{size[1]}x{size[0]} the model was made for; its fine detail is lost.")
        if mode not in ("RGB", "L"):
            notes.append(f"Converted from mode {mode} to RGB.")
        X = self.model.preprocess(fitted)
        return M.ImageInput(original=rgb, rgb=fitted, X=X, name=name, notes=notes)

    def add_image(self, image, image_id=None):
        import secrets
        image_id = image_id or "upload:" + secrets.token_hex(8)
        with self._lock:
            self.images[image_id] = image
            self.images.move_to_end(image_id)
            size = lambda im: im.original.nbytes + im.rgb.nbytes + im.X.nbytes   # noqa: E731
            total = sum(size(im) for im in self.images.values())
            while len(self.images) > 1 and (len(self.images) > self.max_images or total > self.max_image_bytes):
                _, old = self.images.popitem(last=False)
                total -= size(old)
        return image_id

    def image(self, image_id):
        """The image ``image_id`` (an upload, ``sample:...`` or ``dir:...``), or 404/422."""
        if not isinstance(image_id, str) or not image_id:
            raise HTTPError(422, "image must be the id of an uploaded image or of one from GET /api/images")
        with self._lock:
            im = self.images.get(image_id)
            if im is not None:
                self.images.move_to_end(image_id)
                return im
        entry = self.listing.get(image_id)
        if entry is None:
            raise HTTPError(404, f"unknown image {image_id!r}; upload it (POST /api/images) or pick one "
                                 f"from GET /api/images")
        name, path = entry
        try:
            size = path.stat().st_size
            if size > self.max_upload_bytes:
                raise HTTPError(413, f"{name}: {size} bytes is more than the {self.max_upload_bytes} allowed")
            data = path.read_bytes()
        except OSError as e:
            raise HTTPError(404, f"{name}: cannot read ({e.strerror or e})") from None
        im = self.decode(data, path.name)
        self.add_image(im, image_id)
        return im

    # ------------------------------------------------------------------ model
    def model_info(self):
        if self._model_info is None:
            m = self.model
            n = m.num_classes
            classes = []
            for i in range(n or 0):
                name = m.class_names[i] if m.class_names else f"class {i}"
                classes.append({"index": i, "name": name.split(",")[0].strip(), "full_name": name,
                                "wnid": m.wnids[i] if m.wnids else None})
            self._model_info = {
                "name": m.name, "path": self.model_path, "input_shape": list(m.input_shape),
                "input_size": [m.input_shape[2], m.input_shape[1]], "num_classes": n, "classes": classes,
                "layers": list(m.layer_names), "dtype": str(np.asarray(m.std).dtype),
                "methods": [M.describe(meth, m) for meth in M.METHODS.values()],
            }
        return self._model_info

    def class_label(self, i):
        m = self.model
        return (m.class_names[i].split(",")[0].strip() if m.class_names else f"class {i}")

    def check_target(self, method, target):
        if not method.needs_target:
            return None if target is None else self._target(target)
        if target is None:
            raise HTTPError(422, f"method {method.name!r} needs a target class")
        return self._target(target)

    def _target(self, target):
        n = self.model.num_classes
        if isinstance(target, bool) or not isinstance(target, (int, float)) or (
                isinstance(target, float) and (not math.isfinite(target) or target != int(target))):
            raise HTTPError(422, f"target must be a class index (an integer), got {target!r}")
        t = int(target)
        if n is None:
            raise HTTPError(422, "the model has no classes to target")
        if not 0 <= t < n:
            raise HTTPError(422, f"target class {t} is out of range: the model has {n} classes (0-{n - 1})")
        return t

    # ------------------------------------------------------------------ jobs
    def start(self, method, image, target, params):
        """Queue ``method`` on ``image``; returns the job."""
        model = self.model

        def work(job):
            def progress(step, total, X=None, info=None):
                preview = png_bytes(model.deprocess(X)[0]) if X is not None else None
                job.report(step, total, preview)
                self.queue.run_pending_quick()
            t0 = time.perf_counter()
            res = method.run(model, image, target, params, progress, job.cancelled)
            job.meta["compute_s"] = time.perf_counter() - t0
            return res

        meta = {"method": method.name, "target": target, "params": params, "image_name": image.name,
                "image_notes": list(image.notes) if method.uses_image else [], "image_rgb": image.rgb}
        return self.queue.submit(work, kind=method.name, long=method.streams, meta=meta)

    def job_json(self, job):
        meth = M.METHODS.get(job.meta.get("method"))
        d = {"id": job.id, "method": job.kind, "status": job.status, "step": job.step, "total": job.total,
             "target": job.meta.get("target"), "params": job.meta.get("params"),
             "elapsed_s": round(job.elapsed(), 4), "notes": list(job.meta.get("image_notes", []))}
        if job.meta.get("target") is not None:
            d["target_name"] = self.class_label(job.meta["target"])
        base = f"/api/jobs/{job.id}"
        if job.preview is not None:
            d["preview"] = f"{base}/preview.png?step={job.preview_step}"
        if job.status in (FAILED, ERROR):
            d["error"] = str(job.error) or type(job.error).__name__
        if job.status == CANCELLED and job.error:
            d["error"] = str(job.error)
        if job.status == DONE and job.result is not None and meth is not None:
            r = job.result
            d["output"] = r.output
            d["notes"] += r.notes
            d["stats"] = r.stats
            d["success"] = r.success
            d["signed"] = r.signed
            d["compute_s"] = round(job.meta.get("compute_s", 0.0), 4)
            d["shape"] = list(r.array.shape)
            d["dtype"] = str(r.array.dtype)
            d["urls"] = {"npy": f"{base}/result.npy"}
            if r.output in ("map", "image"):
                d["urls"]["png"] = f"{base}/result.png"
            if r.output == "map":
                d["urls"]["map"] = f"{base}/map.f32"
                d["urls"]["input"] = f"{base}/input.png"
                d["size"] = [int(r.map.shape[1]), int(r.map.shape[0])]
            if r.output == "classes":
                d["top"] = [{"class": t["class"], "name": self.class_label(t["class"]), "prob": t["prob"]}
                            for t in r.stats.get("top", [])]
            params = job.meta["params"]
            name = job.meta.get("image_name") or "photo.jpg"
            d["python"] = M.python_code(meth, params, job.meta.get("target"), self.model_path, name,
                                        self.model_options)
            d["cli"] = M.cli_command(meth, params, job.meta.get("target"), self.model_path, name,
                                     self.model_options)
        return d


# ---------------------------------------------------------------------------- the ASGI app
def create_app(model=None, model_path=None, images_dir=None, token=None, allowed_hosts=None, **limits):
    """The Starlette application of the explorer.

    Args:
        model: a :class:`gradvis.Model` (default: the bundled one).
        model_path: the model's file, shown in exported code.
        images_dir: a directory of images the page may pick.
        token: the access token (None: no token; then only requests addressed to
            ``allowed_hosts`` are answered, if given).
        allowed_hosts: host names (without port) the server answers to, or None for any.
        **limits: :class:`Explorer`'s ``model_options``, ``max_upload_bytes``, ``max_pixels``,
            ``max_images``, ``max_image_bytes``, ``queue``.

    Returns:
        a Starlette app; ``app.state.explorer`` is its :class:`Explorer`.
    """
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request  # noqa: F401
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as e:
        raise ImportError(missing_extra_message(e)) from None
    if model is None:
        from ..io.pretrained import load_pretrained
        model = load_pretrained()
    ex = Explorer(model, model_path=model_path, images_dir=images_dir, token=token, **limits)

    def error(status, message):
        return JSONResponse({"error": message, "status": status}, status_code=status)

    def guarded(handler):
        async def wrapped(request):
            try:
                return await handler(request)
            except HTTPError as e:
                return error(e.status, e.message)
        wrapped.__name__ = handler.__name__
        return wrapped

    async def read_body(request, limit):
        n = request.headers.get("content-length")
        if n is not None:
            try:
                n = int(n)
            except ValueError:
                raise HTTPError(400, "bad Content-Length header") from None
            if n > limit:
                raise HTTPError(413, f"the upload is {n} bytes, more than the {limit} allowed")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"the upload is more than the {limit} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_json(request):
        body = await read_body(request, 1 << 20)
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"the request body is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise HTTPError(422, "the request body must be a JSON object")
        return data

    async def in_worker(func):
        import asyncio
        try:
            fut = ex.queue.call(func)
        except QueueFull as e:
            raise HTTPError(503, str(e)) from None
        try:
            return await asyncio.wrap_future(fut)
        except HTTPError:
            raise
        except (ValueError, TypeError) as e:
            raise HTTPError(422, str(e)) from None
        except M.Cancelled:
            raise HTTPError(503, "the server is shutting down") from None

    async def upload(request):
        name = request.query_params.get("name") or "upload"
        name = os.path.basename(name.replace("\\", "/"))[:200] or "upload"
        data = await read_body(request, ex.max_upload_bytes)
        image = await in_worker(lambda: ex.decode(data, name))
        image_id = ex.add_image(image)
        return image, image_id

    def image_json(image_id, image):
        return {"id": image_id, "name": image.name, "width": int(image.original.shape[1]),
                "height": int(image.original.shape[0]), "input_url": f"/api/images/{image_id}/input.png",
                "notes": list(image.notes)}

    # -------------------------------------------------------------- routes
    async def index(request):
        page = ex.static.get("index.html")
        if page is None:
            return error(404, "the page's files are missing from this installation")
        resp = Response(page.read_bytes(), media_type=_CONTENT_TYPES[".html"],
                        headers={"Cache-Control": "no-store"})
        if ex.token:
            resp.set_cookie(TOKEN_COOKIE, ex.token, httponly=True, samesite="strict")
        return resp

    async def static(request):
        p = ex.static.get(request.path_params["name"])     # an exact name from the listing only
        if p is None:
            return error(404, "no such file")
        return Response(p.read_bytes(), media_type=_CONTENT_TYPES.get(p.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"})

    async def api_model(request):
        return JSONResponse(ex.model_info())

    async def api_methods(request):
        return JSONResponse(ex.model_info()["methods"])

    async def api_images(request):
        if request.method == "POST":
            image, image_id = await upload(request)
            return JSONResponse(image_json(image_id, image), status_code=201)
        return JSONResponse([{"id": k, "name": n} for k, (n, _) in ex.listing.items()])

    async def api_image_png(request):
        image = await in_worker(lambda: ex.image(request.path_params["image_id"]))
        return Response(png_bytes(image.rgb), media_type="image/png")

    async def api_predict(request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            data = await read_json(request)
            k = data.get("k", 5)
            image_id = data.get("image")
            image = await in_worker(lambda: ex.image(image_id))
        else:     # the image file itself
            k = request.query_params.get("k", 5)
            image, image_id = await upload(request)
        try:
            k = int(k)
            if not 1 <= k:
                raise ValueError
        except (TypeError, ValueError):
            raise HTTPError(422, f"k must be a positive integer, got {k!r}") from None
        top, _ = await in_worker(lambda: M.top_k(ex.model, image.X, k))
        return JSONResponse({"image": image_json(image_id, image),
                             "top": [{"class": i, "name": ex.class_label(i), "prob": p} for i, p in top],
                             "notes": list(image.notes)})

    async def api_run(request):
        data = await read_json(request)
        unknown = sorted(set(data) - {"method", "image", "target", "params"})
        if unknown:
            raise HTTPError(422, f"unknown field(s) {', '.join(unknown)}; a run takes method, image, target, params")
        try:
            method = M.get_method(data.get("method"))
            params = M.check_params(method, data.get("params"), ex.model)
        except ValueError as e:
            raise HTTPError(422, str(e)) from None
        target = ex.check_target(method, data.get("target"))
        image = await in_worker(lambda: ex.image(data.get("image")))
        try:
            job = ex.start(method, image, target, params)
        except QueueFull as e:
            raise HTTPError(503, str(e)) from None
        return JSONResponse(ex.job_json(job), status_code=202)

    def job_of(request):
        job = ex.queue.get(request.path_params["job_id"])
        if job is None or job.meta.get("internal"):
            raise HTTPError(404, "unknown job (finished jobs are kept for a while, then dropped)")
        return job

    def job_response(job):
        d = ex.job_json(job)
        status = {FAILED: 422, ERROR: 500}.get(job.status, 200)
        return JSONResponse(d, status_code=status)

    async def api_job(request):
        job = job_of(request)
        if request.method == "DELETE":
            ex.queue.cancel(job.id)
            return JSONResponse(ex.job_json(job))
        return job_response(job)

    async def api_job_events(request):
        import asyncio
        job = job_of(request)

        async def events():
            version = -1
            try:
                while True:
                    job.seen = time.monotonic()
                    if job.version != version:
                        version = job.version
                        # done read once: a job finishing while the event is sent would
                        # otherwise end the stream on a progress event, with no result
                        done = job.done
                        d = ex.job_json(job)
                        yield f"event: {'result' if done else 'progress'}\ndata: {json.dumps(d)}\n\n"
                        if done:
                            return
                    if await request.is_disconnected():
                        return
                    await asyncio.get_running_loop().run_in_executor(None, job.wait_change, version, 0.5)
            finally:
                if not job.done and job.meta.get("stream_owned", True):
                    ex.queue.cancel(job.id)      # the client went away: its job goes too
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def api_job_file(request):
        job = job_of(request)
        what = request.path_params["what"]
        if what == "preview.png":
            if job.preview is None:
                raise HTTPError(404, "no preview yet")
            return Response(job.preview, media_type="image/png", headers={"Cache-Control": "no-store"})
        if job.status != DONE or job.result is None:
            raise HTTPError(409, f"the job is {job.status}; its result is not available")
        r = job.result
        stem = f"{job.kind}_{job.meta.get('target') if job.meta.get('target') is not None else 'result'}"
        if what == "result.npy":
            return Response(npy_bytes(r.array), media_type="application/octet-stream",
                            headers={"Content-Disposition": f'attachment; filename="{stem}.npy"'})
        if what == "result.png" and r.output in ("map", "image"):
            rgb = heat_rgb(r.map, r.signed) if r.output == "map" else r.image
            data = await in_worker(lambda: png_bytes(rgb))
            return Response(data, media_type="image/png",
                            headers={"Content-Disposition": f'inline; filename="{stem}.png"'})
        if what == "map.f32" and r.output == "map":
            return Response(np.ascontiguousarray(r.map, "<f4").tobytes(), media_type="application/octet-stream",
                            headers={"X-Map-Shape": f"{r.map.shape[0]},{r.map.shape[1]}"})
        if what == "input.png" and "image_rgb" in job.meta:
            return Response(png_bytes(job.meta["image_rgb"]), media_type="image/png")
        raise HTTPError(404, f"no {what} for this job")

    async def api_jobs(request):
        return JSONResponse({"jobs": [ex.job_json(j) for j in list(ex.queue.jobs.values())
                                      if not j.meta.get("internal")], "counts": ex.queue.stats()})

    routes = [
        Route("/", guarded(index)),
        Route("/static/{name}", guarded(static)),
        Route("/api/model", guarded(api_model)),
        Route("/api/methods", guarded(api_methods)),
        Route("/api/images", guarded(api_images), methods=["GET", "POST"]),
        Route("/api/images/{image_id:str}/input.png", guarded(api_image_png)),
        Route("/api/predict", guarded(api_predict), methods=["POST"]),
        Route("/api/run", guarded(api_run), methods=["POST"]),
        Route("/api/jobs", guarded(api_jobs)),
        Route("/api/jobs/{job_id}", guarded(api_job), methods=["GET", "DELETE"]),
        Route("/api/jobs/{job_id}/events", guarded(api_job_events)),
        Route("/api/jobs/{job_id}/{what}", guarded(api_job_file)),
    ]

    async def on_404(request, exc):
        return error(getattr(exc, "status_code", 404), getattr(exc, "detail", "not found"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        ex.queue.close()

    app = Starlette(routes=routes, exception_handlers={404: on_404, 405: on_404}, lifespan=lifespan)
    app.state.explorer = ex
    return _Guard(app, ex.token, allowed_hosts)


class _Guard:
    """ASGI middleware: the token (when set) and the Host check (when hosts are given)."""

    def __init__(self, app, token, allowed_hosts):
        self.app = app
        self.state = app.state
        self.token = token
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    def _host_ok(self, headers):
        if self.allowed is None:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host.startswith("["):
            name = host[:host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return name in self.allowed

    @staticmethod
    def _same_origin(headers):
        """A request that changes something must come from the page itself: a
        browser names the page in Origin, which must be this server's address."""
        origin = headers.get(b"origin")
        if origin is None:          # not sent by a browser page (curl, scripts, notebooks)
            return True
        o = origin.decode("latin-1").lower()
        host = headers.get(b"host", b"").decode("latin-1").lower()
        return o in (f"http://{host}", f"https://{host}")

    def _token_ok(self, scope, headers):
        if not self.token:
            return True
        given = []
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given += q.get("token", [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith(("token ", "bearer ")):
            given.append(auth.split(None, 1)[1].strip())
        given.append(headers.get(b"x-gradvis-token", b"").decode("latin-1"))
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:
            pass
        if TOKEN_COOKIE in cookie:
            given.append(cookie[TOKEN_COOKIE].value)
        want = self.token.encode()
        return any(g and hmac.compare_digest(g.encode(), want) for g in given)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if not self._host_ok(headers):
                return await _deny(send, 403, "this server answers only requests addressed to its own "
                                              "loopback address (start it with --token to allow others)")
            if scope.get("method") not in ("GET", "HEAD", "OPTIONS") and not self._same_origin(headers):
                return await _deny(send, 403, "cross-origin requests are refused: another web page may not "
                                              "use this server")
            if not self._token_ok(scope, headers):
                return await _deny(send, 403, "a valid token is needed: open the URL the server printed "
                                              "(it ends with ?token=...) or send the header 'Authorization: token T'")
        return await self.app(scope, receive, send)


async def _deny(send, status, message):
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- running it
def serve(app, host="127.0.0.1", port=8765, open_browser=True, token=None, announce=print):
    """Run ``app`` (from :func:`create_app`) with uvicorn until interrupted.
    Port 0 picks a free port. Prints the page's address (with the token)."""
    import socket
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError(missing_extra_message(e)) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = host if host not in ("0.0.0.0", "::") else socket.gethostname()
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    announce(f"gradvis explore: serving on {url}")
    announce("(press Ctrl+C to stop)")
    if open_browser:
        import webbrowser
        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return url
