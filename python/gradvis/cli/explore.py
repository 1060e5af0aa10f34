"""``gradvis explore``: the local web explorer (gradvis.explore; docs/explore.md)."""
from __future__ import annotations

import secrets
from pathlib import Path

from .common import UsageError, add_command, add_model_options, model_from_args, number

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_explore(args):
    try:
        from ..explore.server import create_app, serve
        import uvicorn  # noqa: F401
    except ImportError as e:
        from ..explore.server import missing_extra_message
        raise UsageError(missing_extra_message(e)) from None
    host = args.host
    token = args.token
    loopback = host in LOOPBACK
    if not loopback and not token:
        token = secrets.token_urlsafe(24)
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise UsageError("--token must be at least 8 printable characters without spaces")
    if args.images is not None and not Path(args.images).is_dir():
        raise UsageError(f"--images {args.images}: not a directory")
    model = model_from_args(args)     # with --labels / --labels-offset
    if args.threads:
        from .. import _core
        _core.set_num_threads(int(args.threads))
    allowed = None if token else ["127.0.0.1", "localhost", "[::1]", "::1"]
    pre = {k: getattr(args, k) for k in ("mean", "std", "scale", "input_shape") if getattr(args, k) is not None}
    app = create_app(model, model_path=args.model, images_dir=args.images, token=token, allowed_hosts=allowed,
                     model_options=pre)
    try:
        serve(app, host=host, port=args.port, open_browser=not args.no_browser, token=token,
              announce=lambda m: print(m, flush=True))
    except OSError as e:
        raise UsageError(str(e)) from None
    return 0


def register(sub):
    """Add ``gradvis explore`` to the ``gradvis`` parser's subparsers."""
    sp = add_command(sub, "explore", "a local web page to run and compare every method on photos "
                     "(needs the 'explore' extra)", cmd_explore)
    add_model_options(sp)
    sp.add_argument("--images", metavar="DIR", default=None,
                    help="a directory of photos the page can pick from (nothing outside it is read)")
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1; any other needs a token)")
    sp.add_argument("--port", type=number(int, 0, hi=65535), default=8765,
                    help="port (default: 8765; 0 picks a free one)")
    sp.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    sp.add_argument("--token", default=None, metavar="T",
                    help="access token the page and API require (generated and printed when --host is "
                         "not a loopback address)")
    sp.add_argument("--threads", type=number(int, 1, hi=1024), default=None, metavar="N",
                    help="kernel threads (default: OMP_NUM_THREADS or all cores)")
