"""Conditions computed from the activations: comparisons, their logic, and Where on
them (``torch.where(x > t, a, b)``, hand-written leaky ReLUs and thresholds). A
condition is a 0/1 mask in the activations' dtype (:class:`~gradvis.nn.Compare`);
Where on it is a :class:`~gradvis.nn.Select`, as is a Where whose condition is a
constant and whose branches are both activations. A Where with a constant condition
and a constant branch (``masked_fill``) is in :mod:`.ops`."""
from __future__ import annotations

import numpy as np

from ...nn import Compare, Maximum, Mul, Select
from .reader import ONNXImportError

__all__ = ["MaskOps"]

_COMPARE = {"Greater": "greater", "Less": "less", "GreaterOrEqual": "greater_equal", "LessOrEqual": "less_equal",
            "Equal": "equal"}


class MaskOps:
    """Operator handlers mixed into the importer (see :mod:`.ops`)."""

    def _per_sample(self, node, c, src, what):
        """Constant ``c`` as a parameter broadcast against one sample of ``src``."""
        rank = len(self.shape[src]) + 1
        if c.ndim == rank:
            c = self.one_sample(node, c, what)
        elif c.ndim > rank:
            raise ONNXImportError(f"{node.where()}: {what} of shape {c.shape} has more axes than the input")
        return c.reshape(c.shape or (1,))

    def _compare(self, node, op):
        a, b = node.inputs[:2]
        const = [t in self.static for t in (a, b)]
        if not any(const):
            self.emit(node, Compare(op), [self.activation(node, a), self.activation(node, b)])
            return
        if const[0]:   # c > x is x < c
            op = {"greater": "less", "less": "greater", "greater_equal": "less_equal",
                  "less_equal": "greater_equal"}.get(op, op)
            a, b = b, a
        src = self.activation(node, a)
        c = self._per_sample(node, np.asarray(self.constant(node, node.inputs.index(b), "the constant operand"),
                                              np.float64), src, "the constant operand")
        self.emit(node, Compare(op, c.shape), [src], {"value": c})

    def op_Greater(self, node):
        self._compare(node, "greater")

    def op_Less(self, node):
        self._compare(node, "less")

    def op_GreaterOrEqual(self, node):
        self._compare(node, "greater_equal")

    def op_LessOrEqual(self, node):
        self._compare(node, "less_equal")

    def op_Equal(self, node):
        self._compare(node, "equal")

    def op_Not(self, node):
        """not m = (m == 0) of a 0/1 mask."""
        src = self.activation(node, node.inputs[0])
        self.emit(node, Compare("equal", (1,)), [src], {"value": np.zeros(1)})

    def op_And(self, node):
        self._logic(node, Mul())

    def op_Or(self, node):
        self._logic(node, Maximum())

    def _logic(self, node, layer):
        if any(t in self.static for t in node.inputs[:2]):
            raise self.unsupported(node, f"{node.op} of a condition and a constant")
        self.emit(node, layer, [self.activation(node, t) for t in node.inputs[:2]])

    def where_on_constant_condition(self, node, cond):
        """Where(constant condition, X, Y), X and Y activations: a Select whose
        condition is a constant 0/1 mask, broadcast against one sample."""
        a, b = (self.activation(node, t) for t in node.inputs[1:3])
        mask = self._per_sample(node, np.asarray(cond, np.float64), a, "the condition")
        self.emit(node, Select(cond_shape=mask.shape), [a, b], buffers={"cond": mask})

    def where_on_activations(self, node):
        """Where(condition computed from the activations, X, Y), X and Y activations or
        constants: a Select."""
        cond = self.activation(node, node.inputs[0])
        ins, params, shapes = [cond], {}, {}
        for key, t in (("a", node.inputs[1]), ("b", node.inputs[2])):
            if t in self.static:
                c = self._per_sample(node, np.asarray(self.constant(node, node.inputs.index(t), f"branch {key}"),
                                                      np.float64), cond, f"branch {key}")
                params[key], shapes[key] = c, c.shape
            else:
                ins.append(self.activation(node, t))
        self.emit(node, Select(shapes.get("a"), shapes.get("b")), ins, params)
