"""The base class of a graph node's computation, and the error for unknown layer names."""
from __future__ import annotations

import numpy as np

__all__ = ["INPUT", "Layer", "LayerNotFoundError"]

# The name of the model input, as a node's input.
INPUT = "input"


class LayerNotFoundError(KeyError, ValueError):
    """An unknown layer name; both a KeyError (a lookup) and a ValueError (a bad argument)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Layer:
    """Base class of a node's computation.

    Subclasses set ``type`` (the name used in saved files), ``param_shapes``
    (local parameter name -> shape) and ``buffer_shapes`` (non-trained state,
    e.g. batch-norm running statistics), and implement ``forward(inputs, params,
    buffers, mode, rng) -> (out, cache)`` and ``backward(dout, cache) ->
    (dinputs, dparams)`` with ``inputs``/``dinputs`` lists (one entry per input
    tensor) and ``params``/``dparams`` dicts keyed by local name. ``config()``
    returns the JSON-able constructor arguments.
    """
    type = "Layer"
    num_inputs = 1          # None: any number >= 1
    # True for layers whose forward takes relu=True (a ReLU that only reads their output
    # is then applied as the output is written) and whose backward does not read their output
    fuses_relu = False

    def config(self):
        return {}

    @property
    def param_shapes(self):
        return {}

    @property
    def buffer_shapes(self):
        return {}

    def check_arrays(self, params, buffers):
        """Raise ValueError if stored ``params``/``buffers`` (by local name) are values the
        layer cannot use; shapes and finiteness are checked by the caller."""

    def init_params(self, rng, dtype):
        return {k: np.zeros(s, dtype) for k, s in self.param_shapes.items()}

    def init_buffers(self, dtype):
        return {k: np.zeros(s, dtype) for k, s in self.buffer_shapes.items()}

    def backward_inputs(self, dout, cache):
        """Only the input gradients (a list); layers whose parameter gradients
        cost real work override it. Used for gradients with respect to images."""
        return self.backward(dout, cache)[0]

    def backward_params(self, dout, cache):
        """Only the parameter gradients (a dict): the first layer of a training
        pass needs no input gradient."""
        return self.backward(dout, cache)[1]

    def output_shape(self, input_shapes):
        """Shape (without the batch axis) of the output, or raise ValueError."""
        return input_shapes[0]

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.type}({args})"

    def describe(self):
        """A short one-line description for :meth:`Model.summary`."""
        return self.type
