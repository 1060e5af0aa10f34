"""The ONNX operators that move values between axes: Flatten, Reshape, Squeeze,
Unsqueeze, Transpose, Slice, Split, Gather, GatherND, Resize / Upsample and Cast. The
batch axis is never sliced or merged, and moved only by a Transpose that the next
nodes undo (the GatherND of adaptive pooling, a Gemm with transA=1)."""
from __future__ import annotations

import math

import numpy as np

from ...nn import Bias, Flatten, Scale
from ...nn.tensor import GatherND, Reshape, Resize, Slice, Tile, Transpose
from .constants import slice_bounds
from .reader import ONNXImportError

__all__ = ["ShapeOps"]


def _fmt(s):
    return f"(N, {', '.join(map(str, s))})"


class ShapeOps:
    """Handlers ``op_<Type>(node)`` of the shape operators, mixed into the importer."""

    # ------------------------------------------------------------------ shapes
    def op_Flatten(self, node):
        src = self.activation(node, node.inputs[0])
        s = self.shape[src]
        rank = len(s) + 1
        axis = int(node.attr("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis != 1:     # ONNX Flatten's output is 2-D: (d0 * ... * d_{axis-1}, the rest)
            if axis == rank - 1 and self._merged_batch_norm(node, src):
                return
            raise self.unsupported(node, f"Flatten with axis={node.attr('axis')} merges the batch axis "
                                         "with others (only axis 1 keeps it)")
        if rank == 2:
            self.alias(node, node.outputs[0], src)
            return
        self.emit(node, Flatten(), [src])

    def _reshape_to(self, node, src, shape, out=None, name=None):
        shape = tuple(int(v) for v in shape)
        if shape == tuple(self.shape[src]):
            self.alias(node, out or node.outputs[0], src)
        elif len(shape) == 1:
            self.emit(node, Flatten(), [src], out=out, name=name)
        else:
            self.emit(node, Reshape(shape), [src], out=out, name=name)

    def _tile(self, node, src, repeats):
        if all(r == 1 for r in repeats):
            self.alias(node, node.outputs[0], src)
        else:
            self.emit(node, Tile(repeats), [src])

    def op_Tile(self, node):
        """Tile of activations (``x.repeat``), the batch axis repeated once."""
        src = self.activation(node, node.inputs[0])
        reps = [int(v) for v in np.asarray(self.constant(node, 1, "repeats")).reshape(-1)]
        if len(reps) != len(self.shape[src]) + 1 or min(reps) < 1:
            raise ONNXImportError(f"{node.where()}: repeats {reps} for a {len(self.shape[src]) + 1}-D input")
        if reps[0] != 1:
            raise self.unsupported(node, f"Tile along the batch axis (repeats {reps})")
        self._tile(node, src, reps[1:])

    def op_Expand(self, node):
        """Expand of activations to a shape (``y.expand_as(x)``): their size-1 axes
        repeated; the batch axis stays the input's."""
        src = self.activation(node, node.inputs[0])
        sample = tuple(self.shape[src])
        shape = tuple(int(v) for v in np.asarray(self.constant(node, 1, "the shape")).reshape(-1))
        if len(shape) > len(sample) + 1:
            raise self.unsupported(node, f"Expand of an input (N, {', '.join(map(str, sample))}) to more axes "
                                         f"{shape}")
        try:
            full = np.broadcast_shapes((1,) + sample, shape)
        except ValueError:
            raise ONNXImportError(f"{node.where()}: shape {shape} does not broadcast with the input "
                                  f"(N, {', '.join(map(str, sample))})") from None
        self._tile(node, src, [t // d for t, d in zip(full[1:], sample)])

    def op_Reshape(self, node):
        src = self.activation(node, node.inputs[0])
        target = [int(v) for v in np.asarray(self.constant(node, 1, "the target shape")).reshape(-1)]
        s = self.shape[src]
        size = int(np.prod(s, dtype=np.int64))
        allowzero = int(node.attr("allowzero", 0))
        if len(target) == 1 and target[0] in (-1, size * self.batch):
            self._flat_then_gather(node, src, target)   # the batch merged in: a batch-1 export
            return
        if not target or target[0] not in (0, -1, self.batch) or (target[0] == 0 and allowzero):
            if len(target) == 2 and target[1] == s[-1] and self._merged_batch_norm(node, src):
                return
            raise self.unsupported(node, f"Reshape of {_fmt(s)} to {target} changes the batch axis "
                                         f"(its first entry must be 0, -1 or the exported batch size {self.batch})")
        rest = [s[i - 1] if (d == 0 and not allowzero and i - 1 < len(s)) else d
                for i, d in enumerate(target)][1:]
        if target[0] == -1 and -1 in rest:
            raise self.unsupported(node, f"Reshape of {_fmt(s)} to {target}: two inferred dimensions")
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
            if rest.count(-1) > 1 or known == 0 or size % known:
                raise ONNXImportError(f"{node.where()}: cannot reshape {_fmt(s)} to {target}")
            rest[rest.index(-1)] = size // known
        n = int(np.prod(rest, dtype=np.int64))
        if target[0] == -1 and all(d > 0 for d in rest) and n < size and size % n == 0:
            # (Swin's window partition: (N, h, w, 7, 7, C) -> (N * h * w, 7, 7, C))
            raise self.unsupported(node, f"Reshape of {_fmt(s)} to {target} merges the batch axis with others "
                                         f"(its first entry would hold N x {size // n})")
        if any(d <= 0 for d in rest) or n != size:
            raise ONNXImportError(f"{node.where()}: cannot reshape {_fmt(s)} ({size} values a sample) "
                                  f"to {target}")
        self._reshape_to(node, src, rest)

    def _merged_batch_norm(self, node, src):
        """(N, ..., C) merged to (N * ..., C) by ``node``, read only by an inference
        BatchNormalization of the C channels whose only reader reshapes the result
        back to (N, ..., C) (LeViT's BatchNorm1d over its tokens): a per-channel
        Scale and Bias on the last axis of ``src``. False if not this."""
        bn = self.sole_consumer(node.outputs[0])
        if bn is None or bn.op != "BatchNormalization" or int(bn.attr("training_mode", 0)) or \
                not all(t in self.const for t in bn.inputs[1:5]) or \
                any(self.consumers.get(o) for o in bn.outputs[1:] if o):
            return False
        back = self.sole_consumer(bn.outputs[0])
        if back is None or back.op != "Reshape":
            return False
        full = (self.batch,) + tuple(self.shape[src])
        shape_of = self.producer.get(back.inputs[1])
        if back.inputs[1] in self.const:
            target = [int(v) for v in np.asarray(self.const[back.inputs[1]]).reshape(-1)]
        elif shape_of is not None and shape_of.op == "Shape" and shape_of.inputs[0] == node.inputs[0] and \
                shape_of.attr("start") is None and shape_of.attr("end") is None:
            target = list(full)          # reshape_as(x): the Shape of the tensor merged
        else:
            return False
        if len(target) != len(full) or any(t not in (f, -1) and not (t == 0 and i < 2) for i, (t, f) in
                                           enumerate(zip(target, full))) or target.count(-1) > 1:
            return False
        gamma, beta, mean, var = (np.asarray(self.const[t], np.float64).reshape(-1) for t in bn.inputs[1:5])
        c = full[-1]
        if not all(v.size == c for v in (gamma, beta, mean, var)):
            return False
        if (var < 0).any():
            raise ONNXImportError(f"{bn.where()}: running variance has negative entries (min {var.min():g})")
        scale = gamma / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
        self.skip.update((bn.index, back.index))
        tmp = back.outputs[0] + "#scale"
        self.emit(bn, Scale((c,)), [src], {"scale": scale}, out=tmp, name=self.fresh_name(self.names[bn.index] + ".scale"))
        self.emit(bn, Bias((c,)), [self.tensor[tmp]], {"bias": beta - mean * scale}, out=back.outputs[0])
        self.alias(node, node.outputs[0], None)
        self.alias(bn, bn.outputs[0], None)
        self.info["folded"].append(f"{node.name} ({node.op}), {bn.name} (BatchNormalization) and {back.name} "
                                   "(Reshape back) into a per-channel Scale and Bias on the last axis")
        return True

    def _flat_then_gather(self, node, src, target):
        """A Reshape to 1-D (batch and features merged, as a batch-1 export writes
        ``as_strided``) is supported when a Gather on axis 0 by indices (B, ...) that
        enumerate the values in order (a plain reshape) is its only reader."""
        g = self.sole_consumer(node.outputs[0])
        idx = self.const.get(g.inputs[1]) if g is not None and g.op == "Gather" else None
        size = int(np.prod(self.shape[src], dtype=np.int64))
        if (idx is None or int(g.attr("axis", 0)) != 0 or np.ndim(idx) < 2 or np.shape(idx)[0] != self.batch
                or not np.array_equal(np.asarray(idx).reshape(-1), np.arange(size * self.batch))):
            raise self.unsupported(node, f"Reshape of {_fmt(self.shape[src])} to {target} merges the batch "
                                         "axis into the features")
        self.skip.add(g.index)
        self.info["folded"].append(f"{node.name} (Reshape to 1-D) and {g.name} (Gather in order) into one Reshape")
        self._reshape_to(node, src, np.shape(idx)[1:], out=g.outputs[0])
        self.alias(node, node.outputs[0], None)

    def op_Squeeze(self, node):
        src = self.activation(node, node.inputs[0])
        s = self.shape[src]
        axes = self.optional_constant(node, 1, "axes") if len(node.inputs) > 1 else node.attr("axes")
        if axes is None:
            axes = [i + 1 for i, d in enumerate(s) if d == 1]
        axes = self._axes(node, np.asarray(axes).reshape(-1), len(s) + 1)
        if any(s[a - 1] != 1 for a in axes):
            raise ONNXImportError(f"{node.where()}: cannot squeeze axes {axes} of {_fmt(s)}")
        self._reshape_to(node, src, [d for i, d in enumerate(s) if i + 1 not in axes])

    def op_Unsqueeze(self, node):
        src = self.activation(node, node.inputs[0])
        s = list(self.shape[src])
        axes = self.optional_constant(node, 1, "axes") if len(node.inputs) > 1 else node.attr("axes")
        if axes is None:
            raise ONNXImportError(f"{node.where()}: Unsqueeze without axes")
        rank = len(s) + 1 + int(np.size(axes))
        full = ["N"] + s
        for a in sorted(int(a) % rank for a in np.asarray(axes).reshape(-1)):
            if a == 0:
                raise self.unsupported(node, "Unsqueeze before the batch axis")
            full.insert(a, 1)
        self._reshape_to(node, src, full[1:])

    def op_Transpose(self, node):
        if node.index in self.nhwc_edges:
            self.pass_transpose(node)
            return
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        perm = node.attr("perm")
        perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
        if sorted(perm) != list(range(rank)):
            raise ONNXImportError(f"{node.where()}: perm {perm} is not a permutation of {rank} axes")
        if perm[0] != 0:
            if (self._transpose_into_gathernd(node, src, perm) or self._transpose_into_gemm(node, src, perm)
                    or self._transpose_into_unbind(node, src, perm)):
                return
            raise self.unsupported(node, f"Transpose {perm} moves the batch axis (supported only where the "
                                         "next nodes move it back: a GatherND of other axes then a Transpose, "
                                         "as adaptive pooling exports, a Gemm with transA=1, or an unbind of "
                                         "the new first axis, as attention's q, k, v)")
        if perm == list(range(rank)):
            self.alias(node, node.outputs[0], src)
            return
        self.emit(node, Transpose(perm), [src])

    def _transpose_into_gathernd(self, node, src, perm):
        """Transpose(perm) -> GatherND(constant indices of the leading, non-batch axes)
        -> Transpose putting the batch first again (the torch.export-based exporter's
        AdaptiveAvgPool2d): one :class:`~gradvis.nn.GatherND` layer, then a Transpose
        layer if the axes after it are not in gradvis's order. False if not this."""
        g = self.sole_consumer(node.outputs[0])
        if g is None or g.op != "GatherND" or g.inputs[0] != node.outputs[0] or int(g.attr("batch_dims", 0)):
            return False
        t2 = self.sole_consumer(g.outputs[0])
        if t2 is None or t2.op != "Transpose" or g.inputs[1] not in self.const:
            return False
        idx = np.asarray(self.const[g.inputs[1]]).astype(np.int64)
        r = idx.shape[-1] if idx.ndim else 0
        if not 1 <= r < len(perm) or 0 in perm[:r]:
            return False
        full = (self.batch,) + tuple(self.shape[src])
        sizes = np.array([full[a] for a in perm[:r]])
        if ((idx < -sizes) | (idx >= sizes)).any():
            raise ONNXImportError(f"{g.where()}: indices out of range for axes of sizes {sizes.tolist()}")
        idx = np.where(idx < 0, idx + sizes, idx)
        # axes of GatherND's output: the index axes, then the axes perm[r:] of the input;
        # where each sits in the GatherND layer's output (batch, index axes, the rest in order)
        k = idx.ndim - 1
        rest = sorted(a for a in perm[r:] if a != 0)
        pos = list(range(1, k + 1)) + [0 if a == 0 else 1 + k + rest.index(a) for a in perm[r:]]
        q = t2.attr("perm")
        q = list(range(len(pos)))[::-1] if q is None else [int(v) % len(pos) for v in q]
        if sorted(q) != list(range(len(pos))) or pos[q[0]] != 0:
            return False
        after = [pos[j] for j in q]
        self.skip.update((g.index, t2.index))
        names = [node.name, g.name, t2.name]
        if after == list(range(len(after))):
            self.emit(node, GatherND(perm[:r], idx), [src], out=t2.outputs[0])
        else:
            tmp = t2.outputs[0] + "#gather"
            self.emit(node, GatherND(perm[:r], idx), [src], out=tmp,
                      name=self.fresh_name(self.names[node.index] + ".gather"))
            self.emit(node, Transpose(after), [self.tensor[tmp]], out=t2.outputs[0])
        self.info["folded"].append(f"{', '.join(names)} (Transpose, GatherND, Transpose) into one GatherND")
        self.alias(node, node.outputs[0], None)
        self.alias(node, g.outputs[0], None)
        return True

    def _const_ints(self, node, i, attr=None):
        """Input ``i`` of ``node`` (or its attribute ``attr`` when that input is absent)
        as a list of ints if it is a constant, else None."""
        v = self.const.get(node.inputs[i]) if len(node.inputs) > i and node.inputs[i] else \
            (node.attr(attr) if attr else None)
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]

    def _squeezed_first(self, t):
        """The Squeeze of axis 0 that alone reads ``t``, or None."""
        users = self.readers(t) if t else []
        sq = users[0] if len(users) == 1 else None
        return sq if sq is not None and sq.op == "Squeeze" and self._const_ints(sq, 1, "axes") == [0] else None

    def _unbind_pieces(self, t):
        """[(index, output tensor, nodes)] of the pieces of ``t`` taken along axis 0
        one at a time (``unbind(0)``, ``x[i]``): by Split into ones (TorchScript
        exporter) or a Slice of one index (torch.export-based), each then squeezed,
        or by Gather of one index; None if ``t`` has other readers."""
        pieces = []
        for r in self.readers(t):
            if r.inputs[0] != t:
                return None
            if r.op == "Gather" and int(r.attr("axis", 0)) == 0 and r.inputs[1] in self.const \
                    and np.ndim(self.const[r.inputs[1]]) == 0:
                pieces.append((int(self.const[r.inputs[1]]), r.outputs[0], [r]))
            elif r.op == "Slice" and len(r.inputs) >= 4:
                starts, ends = self._const_ints(r, 1), self._const_ints(r, 2)
                axes, steps = self._const_ints(r, 3), self._const_ints(r, 4) or [1]
                sq = self._squeezed_first(r.outputs[0])
                # (a negative start with end start + 1 would be an empty slice)
                if axes != [0] or steps != [1] or starts is None or starts[0] < 0 or ends != [starts[0] + 1] \
                        or sq is None:
                    return None
                pieces.append((starts[0], sq.outputs[0], [r, sq]))
            elif r.op == "Split" and int(r.attr("axis", 0)) == 0:
                given = len(r.inputs) > 1 and r.inputs[1] or r.attr("split") is not None
                sizes = self._const_ints(r, 1, "split") if given else [1] * len(r.outputs)
                if sizes is None:
                    return None
                if len(sizes) != len(r.outputs) or any(v != 1 for v in sizes):
                    return None
                for j, o in enumerate(r.outputs):
                    if not (o and self.readers(o)):
                        continue
                    sq = self._squeezed_first(o)
                    if sq is None:
                        return None
                    pieces.append((j, sq.outputs[0], [r, sq]))
            else:
                return None
        return pieces or None

    def _transpose_into_unbind(self, node, src, perm):
        """Transpose moving axis a first and the batch second, read only by pieces of
        that axis (attention's ``qkv.permute(2, 0, 3, 1, 4).unbind(0)``): each piece
        is a Slice of axis a of ``src``, reshaped without it, then transposed (the
        batch first). False if not this."""
        if len(perm) < 3 or perm[1] != 0:
            return False
        pieces = self._unbind_pieces(node.outputs[0])
        if pieces is None:
            return False
        a, s = perm[0], self.shape[src]
        if any(not -s[a - 1] <= i < s[a - 1] for i, _, _ in pieces):
            raise ONNXImportError(f"{node.where()}: an index past axis {a} of {_fmt(s)}")
        pieces = [(i % s[a - 1], out, nodes) for i, out, nodes in pieces]
        rest = [k for k in range(len(perm)) if k != a]          # the axes left after the slice
        q = [rest.index(k) for k in [0] + perm[2:]]
        base = self.names[node.index]
        for i, out, nodes in pieces:
            self.skip.update(n.index for n in nodes)
            for n in nodes:
                for o in n.outputs:
                    if o and o != out:
                        self.alias(node, o, None)
            cut, flat = out + "#slice", out + "#flat"
            self._slice_layer(node, src, [a], [i], [i + 1], [1], cut, name=self.fresh_name(f"{base}.{i}"))
            shape = [d for k, d in enumerate(s) if k + 1 != a]
            if q == list(range(len(q))):
                self._reshape_to(node, self.tensor[cut], shape, out=out, name=self.fresh_name(f"{base}.{i}.squeeze"))
            else:
                self._reshape_to(node, self.tensor[cut], shape, out=flat, name=self.fresh_name(f"{base}.{i}.squeeze"))
                self.emit(node, Transpose(q), [self.tensor[flat]], out=out,
                          name=self.fresh_name(f"{base}.{i}.transpose"))
        self.alias(node, node.outputs[0], None)
        self.info["folded"].append(f"{node.name} (Transpose {perm}) and the unbind of its first axis into "
                                   f"{len(pieces)} slices of axis {a}")
        return True

    def _transpose_into_gemm(self, node, src, perm):
        """Transpose (1, 0) of (N, D) read only by a Gemm with transA=1 (A^T is the
        activations again): nothing, and the Gemm reads ``src``. False if not this."""
        g = self.sole_consumer(node.outputs[0])
        if (perm != [1, 0] or g is None or g.op != "Gemm" or g.inputs[0] != node.outputs[0]
                or not int(g.attr("transA", 0))):
            return False
        self.transposed[node.outputs[0]] = src
        self.alias(node, node.outputs[0], None)
        self.info["folded"].append(f"{node.name} (Transpose [1, 0]) into {g.name} (Gemm with transA=1)")
        return True

    def op_GatherND(self, node):
        src = self.activation(node, node.inputs[0])
        b = int(node.attr("batch_dims", 0))
        idx = np.asarray(self.constant(node, 1, "the indices")).astype(np.int64)
        if b != 1 or idx.ndim < 2 or idx.shape[0] not in (1, self.batch) or \
                (idx.shape[0] != 1 and not (idx == idx[:1]).all()):
            raise self.unsupported(node, "GatherND on the batch axis (supported: batch_dims=1 with the same "
                                         "indices for every sample, or the indexed axes moved before the "
                                         "batch by a Transpose that a later Transpose undoes)")
        r = idx.shape[-1]
        axes = list(range(1, 1 + r))
        if r > len(self.shape[src]):
            raise ONNXImportError(f"{node.where()}: indices of {r} axes for {_fmt(self.shape[src])}")
        sizes = np.array(self.shape[src][:r])
        idx = idx[0]
        if ((idx < -sizes) | (idx >= sizes)).any():
            raise ONNXImportError(f"{node.where()}: indices out of range for axes of sizes {sizes.tolist()}")
        self.emit(node, GatherND(axes, np.where(idx < 0, idx + sizes, idx)), [src])

    def _slice_layer(self, node, src, axes, starts, ends, steps, out, name=None):
        """A Slice layer (or nothing, for a slice that keeps everything) for ONNX's
        clamped bounds on per-sample ``axes`` (>= 1)."""
        full = (self.batch,) + tuple(self.shape[src])
        keep = []
        for ax, s, e, st in zip(axes, starts, ends, steps):
            sl = slice_bounds(full[ax], s, e, st)
            if ax == 0:
                if sl.indices(full[0]) != (0, full[0], 1):
                    raise self.unsupported(node, "slicing the batch axis")
                continue
            if sl.indices(full[ax]) == (0, full[ax], 1):
                continue
            keep.append((ax, sl.start, sl.stop, sl.step))
        if not keep:
            self.alias(node, out, src)
            return
        ax, st, sp, sd = zip(*keep)
        self.emit(node, Slice(ax, st, sp, sd), [src], out=out, name=name)

    def op_Slice(self, node):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        if len(node.inputs) > 1:
            starts = np.asarray(self.constant(node, 1, "starts")).reshape(-1).tolist()
            ends = np.asarray(self.constant(node, 2, "ends")).reshape(-1).tolist()
            axes = self.optional_constant(node, 3, "axes")
            steps = self.optional_constant(node, 4, "steps")
        else:
            starts, ends = list(node.attr("starts")), list(node.attr("ends"))
            axes, steps = node.attr("axes"), None
        axes = list(range(len(starts))) if axes is None else np.asarray(axes).reshape(-1).tolist()
        steps = [1] * len(starts) if steps is None else np.asarray(steps).reshape(-1).tolist()
        if not len(axes) == len(starts) == len(ends) == len(steps):
            raise ONNXImportError(f"{node.where()}: starts, ends, axes and steps differ in length")
        axes = [int(a) % rank if -rank <= int(a) < rank else None for a in axes]
        if None in axes:
            raise ONNXImportError(f"{node.where()}: axes out of range for a {rank}-D tensor")
        self._slice_layer(node, src, axes, starts, ends, steps, node.outputs[0])

    def op_Split(self, node):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        axis = int(node.attr("axis", 0)) % rank
        n = (self.batch,) + tuple(self.shape[src])
        split = self.optional_constant(node, 1, "split") if len(node.inputs) > 1 else node.attr("split")
        k = len(node.outputs)
        if split is None:
            size = -(-n[axis] // int(node.attr("num_outputs", k)))
            split = [min(size, n[axis] - i * size) for i in range(k)]
        split = [int(v) for v in np.asarray(split).reshape(-1)]
        if len(split) != k or sum(split) != n[axis] or min(split) < 0:
            raise ONNXImportError(f"{node.where()}: split {split} of an axis of length {n[axis]} into {k} outputs")
        start = 0
        base = self.names[node.index]
        for j, (t, m) in enumerate(zip(node.outputs, split)):
            if t and self.readers(t) or t == self.output:
                self._slice_layer(node, src, [axis], [start], [start + m], [1], t,
                                  name=self.fresh_name(f"{base}.{j}") if j else base)
            start += m

    def op_Gather(self, node):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        axis = int(node.attr("axis", 0)) % rank
        idx = np.asarray(self.constant(node, 1, "the indices")).astype(np.int64)
        if axis == 0:
            raise self.unsupported(node, "Gather along the batch axis")
        n = self.shape[src][axis - 1]
        flat = np.where(idx < 0, idx + n, idx).reshape(-1)
        if flat.size == 0 or flat.min() < 0 or flat.max() >= n:
            raise ONNXImportError(f"{node.where()}: indices out of range for an axis of length {n}")
        step = int(flat[1] - flat[0]) if flat.size > 1 else 1
        if step == 0 or not np.array_equal(flat, flat[0] + step * np.arange(flat.size)):
            raise self.unsupported(node, "Gather by indices that are not evenly spaced (a Slice)")
        stop = int(flat[-1]) + step
        keep = list(self.shape[src])
        keep[axis - 1] = flat.size
        out_shape = keep[:axis - 1] + list(idx.shape) + keep[axis:]
        if out_shape == keep:
            self._slice_layer(node, src, [axis], [int(flat[0])], [stop if stop >= 0 else -n - 1], [step],
                              node.outputs[0])
            return
        # a scalar index drops the axis: slice, then reshape
        tmp = node.outputs[0] + "#slice"
        self._slice_layer(node, src, [axis], [int(flat[0])], [stop if stop >= 0 else -n - 1], [step], tmp,
                          name=self.fresh_name(self.names[node.index] + ".slice"))
        self._reshape_to(node, self.tensor[tmp], out_shape)

    def op_Resize(self, node):
        src = self._input4(node, node.inputs[0])
        mode = node.attr("mode", "nearest")
        if mode not in ("nearest", "linear", "cubic"):
            raise self.unsupported(node, f"Resize mode {mode!r} (nearest, linear and cubic are supported)")
        if int(node.attr("antialias", 0)):
            raise self.unsupported(node, "Resize with antialias=1")
        if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise self.unsupported(node, f"Resize with keep_aspect_ratio_policy="
                                         f"{node.attr('keep_aspect_ratio_policy')!r} (only 'stretch')")
        if node.op == "Upsample":
            coord, nearest = "asymmetric", "floor"
            scales = node.attr("scales") if len(node.inputs) < 2 else self.constant(node, 1, "scales")
            sizes = None
        else:
            coord = node.attr("coordinate_transformation_mode", "half_pixel")
            nearest = node.attr("nearest_mode", "round_prefer_floor")
            if coord == "tf_crop_and_resize":
                raise self.unsupported(node, "Resize with coordinate_transformation_mode 'tf_crop_and_resize'")
            if self.opset is not None and self.opset < 11:
                scales, sizes = self.constant(node, 1, "scales"), None
            else:
                scales = self.optional_constant(node, 2, "scales")
                sizes = self.optional_constant(node, 3, "sizes")
            if node.attr("axes") is not None:
                raise self.unsupported(node, "Resize with an axes attribute")
        c, h, w = self.shape[src]
        if sizes is not None and np.size(sizes):
            out = [int(v) for v in np.asarray(sizes).reshape(-1)]
            if len(out) != 4 or out[1] != c:
                raise self.unsupported(node, f"Resize to sizes {out} (only H and W may change)")
            hw = tuple(out[2:])
            factors = None
        elif scales is not None and np.size(scales):
            sc = [float(v) for v in np.asarray(scales).reshape(-1)]
            if len(sc) != 4 or sc[0] != 1 or sc[1] != 1:
                raise self.unsupported(node, f"Resize by scales {sc} (only H and W may change)")
            hw = (int(math.floor(h * sc[2])), int(math.floor(w * sc[3])))
            # the coordinates follow the given scales, not size / input size
            factors = None if (hw[0] == h * sc[2] and hw[1] == w * sc[3]) else (sc[2], sc[3])
        else:
            raise ONNXImportError(f"{node.where()}: neither scales nor sizes are given")
        try:
            layer = Resize(hw, mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest,
                           cubic_coeff_a=float(node.attr("cubic_coeff_a", -0.75)),
                           exclude_outside=bool(int(node.attr("exclude_outside", 0))), scales=factors)
        except ValueError as e:
            raise self.unsupported(node, str(e).replace("Resize: ", "")) from None
        self.emit(node, layer, [src])

    def op_Upsample(self, node):
        self.op_Resize(node)

    def op_Cast(self, node):
        from onnx import helper
        to = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attr("to"))))
        if to.kind != "f":
            raise self.unsupported(node, f"Cast of activations to {to} (only to floating point)")
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))
