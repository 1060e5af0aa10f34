"""The CS231n layer functions (``conv_forward``, ``max_pool_backward``, ...), for course code.

``from gradvis import layers`` / ``from gradvis.layers import conv_forward`` work as the
course's ``layers.py`` and ``fast_layers.py`` do; the functions live in
:mod:`gradvis.nn.functional`, whose docstrings give their shapes.
"""
from .nn.functional import *  # noqa: F401,F403  (exactly the names of its __all__)
from .nn.functional import __all__  # noqa: F401
