"""``gradvis explore``: a local web page that runs every method of the package on
one model and compares the results (docs/explore.md).

:mod:`gradvis.explore.methods` is the registry of methods (no web framework
needed); :mod:`gradvis.explore.jobs` the compute queue;
:mod:`gradvis.explore.server` the HTTP API and page, which need the ``explore``
extra (``pip install 'gradvis[explore]'``).
"""
from .methods import METHODS, Method, MethodResult, Param, register

__all__ = ["METHODS", "Method", "MethodResult", "Param", "register", "create_app"]


def create_app(*args, **kwargs):
    """See :func:`gradvis.explore.server.create_app` (imports the web framework)."""
    from .server import create_app as _create_app
    return _create_app(*args, **kwargs)
