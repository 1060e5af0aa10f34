"""load_onnx on hand-written graphs with the operators beyond the CS231n set, checked
against onnx's reference evaluator: shapes (Transpose, Reshape, Squeeze, Unsqueeze,
Slice with steps, Split, Gather, GatherND after a Transpose as adaptive pooling exports
it, Concat on any axis, Where with a constant condition), Resize / Upsample (nearest,
linear, cubic), Gemm with transA after a Transpose, in-graph Softmax / LogSoftmax,
reductions on any axes, Pow / Sqrt / Neg / Abs / Exp / Erf / Gelu, LayerNormalization,
MatMul by constants on any axis; constant subgraphs evaluated at import (shape
arithmetic, "same" pads with Ceil and Clip, weight standardization, position
embeddings); input
gradients against finite differences; and the errors (what cannot be evaluated,
complex initializers, a Conv bias that names no initializer)."""
import numpy as np
import pytest

import gradvis
from conftest import require, require_onnx, require_torch

F32 = np.float32


@pytest.fixture(scope="module")
def ox():
    onnx = require_onnx()
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    return onnx, helper, numpy_helper, ReferenceEvaluator


def make(ox, nodes, inits, in_shape=(1, 4, 6, 6), opset=17):
    onnx, helper, numpy_helper, _ = ox
    init = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in inits.items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def i64(*v):
    return np.array(v, np.int64)


def graphs(ox):
    """{name: (nodes, initializers, opset)}; every graph maps x (1, 4, 6, 6) to y."""
    _, helper, _, _ = ox
    n = helper.make_node
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.standard_normal(s) * 0.4).astype(F32)   # noqa: E731
    return {
        # ShuffleNet's channel shuffle, the batch read with Shape (constant-folded)
        "shuffle": ([n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b"], axis=0),
                     n("Unsqueeze", ["b", "ax0"], ["bu"]),
                     n("Concat", ["bu", "g"], ["shp"], axis=0),
                     n("Reshape", ["x", "shp"], ["r"]), n("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
                     n("Reshape", ["t", "flat"], ["y"])],
                    {"zero": np.array(0, np.int64), "ax0": i64(0), "g": i64(2, 2, 6, 6), "flat": i64(-1, 4, 6, 6)}, 17),
        # F.pad's export: pads computed from constants (ConstantOfShape, Slice, Concat, Cast...)
        "pad_subgraph": ([n("ConstantOfShape", ["four"], ["z"], value=helper.make_tensor("v", 7, [1], [0])),
                          n("Concat", ["p", "z"], ["pz"], axis=0),
                          n("Reshape", ["pz", "m12"], ["pr"]), n("Slice", ["pr", "st", "en", "a0", "stp"], ["ps"]),
                          n("Transpose", ["ps"], ["pt"], perm=[1, 0]), n("Reshape", ["pt", "m1"], ["pads"]),
                          n("Cast", ["pads"], ["pads64"], to=7),
                          n("Pad", ["x", "pads64", "cv"], ["y"], mode="constant")],
                         {"four": i64(4), "p": i64(1, 2, 0, 1), "m12": i64(-1, 2), "st": i64(-1), "en": i64(-9999),
                          "a0": i64(0), "stp": i64(-1), "m1": i64(-1), "cv": np.array(0.5, F32)}, 17),
        "range_expand_where": ([n("Range", ["r0", "r6", "r1"], ["rg"]), n("Equal", ["rg", "three"], ["eq"]),
                                n("Where", ["eq", "half", "one"], ["wv"]), n("Expand", ["wv", "shp"], ["we"]),
                                n("Mul", ["x", "we"], ["y"])],
                               {"r0": np.array(0, F32), "r6": np.array(6, F32), "r1": np.array(1, F32),
                                "three": np.array(3, F32), "half": np.array(0.5, F32), "one": np.array(1.0, F32),
                                "shp": i64(4, 6, 6)}, 17),
        "slices_split_gather": ([n("Slice", ["x", "s0", "e0", "a0", "st"], ["a"]),
                                 n("Split", ["x", "sp"], ["b1", "b2"], axis=1),
                                 n("Gather", ["b2", "gi"], ["c"], axis=1),
                                 n("Unsqueeze", ["c", "one"], ["cu"]),
                                 n("Concat", ["a", "b1", "cu"], ["cat"], axis=1),
                                 n("Slice", ["cat", "s1", "e1", "a1", "st1"], ["y"])],
                                {"s0": i64(3), "e0": i64(-100), "a0": i64(1), "st": i64(-2),
                                 "sp": i64(1, 3), "gi": np.array(2, np.int64), "one": i64(1),
                                 "s1": i64(5, 1), "e1": i64(-100, 5), "a1": i64(3, 2), "st1": i64(-2, 3)}, 13),
        "resize": ([n("Resize", ["x", "", "sc"], ["r1"], mode="linear", coordinate_transformation_mode="half_pixel"),
                    n("Resize", ["r1", "", "", "sz"], ["y"], mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                   {"sc": np.array([1, 1, 2, 1.5], F32), "sz": i64(1, 4, 7, 5)}, 13),
        "resize_cubic": ([n("Resize", ["x", "", "sc"], ["r1"], mode="cubic", cubic_coeff_a=-0.75,
                           coordinate_transformation_mode="half_pixel"),
                          n("Resize", ["r1", "", "", "sz"], ["r2"], mode="cubic", cubic_coeff_a=-0.5,
                            exclude_outside=1, coordinate_transformation_mode="align_corners"),
                          n("Resize", ["r2", "", "", "sz2"], ["y"], mode="cubic",
                            coordinate_transformation_mode="pytorch_half_pixel")],
                         {"sc": np.array([1, 1, 2, 2], F32), "sz": i64(1, 4, 7, 5), "sz2": i64(1, 4, 4, 2)}, 13),
        # AdaptiveAvgPool2d as the torch.export-based exporter writes it: the windows'
        # pixels gathered from (H, W, N, C), masked (Where), summed, divided; then a
        # Concat along a spatial axis
        "gathernd_where_concat": ([n("Transpose", ["x"], ["t"], perm=[2, 3, 0, 1]),
                                   n("GatherND", ["t", "gi"], ["g"]),
                                   n("Transpose", ["g"], ["gt"], perm=[3, 4, 0, 1, 2]),
                                   n("Where", ["m1", "zero", "gt"], ["w1"]),
                                   n("Where", ["m2", "gt", "fill"], ["w2"]),
                                   n("ReduceSum", ["w1", "ax4"], ["s1"], keepdims=0),
                                   n("Div", ["s1", "cnt"], ["a1"]),
                                   n("ReduceMax", ["w2"], ["a2"], axes=[4], keepdims=0),
                                   n("Concat", ["a1", "a2"], ["y"], axis=-1)],
                                  {"gi": np.array([[[0, 0], [0, 1], [1, 1]], [[2, 3], [3, 3], [3, 3]],
                                                   [[5, 5], [4, 1], [5, 0]]], np.int64)[:, None].repeat(2, 1),
                                   "m1": np.array([[False, False, True], [False, True, True],
                                                   [False, False, False]])[:, None],
                                   "m2": np.array([True, False, True]), "zero": np.array(0, F32),
                                   "fill": np.array(-2.5, F32), "ax4": i64(4),
                                   "cnt": np.array([[3], [1], [3]], F32)}, 13),
        "gathernd_batch_dims": ([n("GatherND", ["x", "gi"], ["g"], batch_dims=1), n("Reshape", ["g", "s"], ["y"])],
                                {"gi": np.array([[[3, 0], [1, 5], [3, 0], [0, 2]]], np.int64), "s": i64(1, 4, 2, 3)},
                                13),
        "gemm_transa": ([n("ReduceMean", ["x"], ["p"], axes=[2, 3], keepdims=0),
                         n("Transpose", ["p"], ["pt"], perm=[1, 0]),
                         n("Gemm", ["pt", "gw", "gb"], ["y"], transA=1, alpha=2.0)],
                        {"gw": w(4, 5), "gb": w(1, 5)}, 13),
        "upsample_opset9": ([n("Upsample", ["x", "sc"], ["y"], mode="nearest")],
                            {"sc": np.array([1, 1, 2, 2], F32)}, 9),
        "softmax_reductions": ([n("Softmax", ["x"], ["s"], axis=1), n("LogSoftmax", ["x"], ["l"], axis=-1),
                                n("ReduceSum", ["s", "ax"], ["rs"], keepdims=1),
                                n("ReduceMax", ["l"], ["rm"], axes=[1, 3], keepdims=1),
                                n("ReduceMean", ["x"], ["mm"], axes=[1], keepdims=1),
                                n("Add", ["rs", "rm"], ["t"]), n("Add", ["t", "mm"], ["y"])],
                               {"ax": i64(2)}, 13),
        "pointwise": ([n("Abs", ["x"], ["a"]), n("Sqrt", ["a"], ["b"]), n("Neg", ["b"], ["c"]), n("Exp", ["c"], ["d"]),
                       n("Pow", ["x", "three"], ["e"]), n("Erf", ["x"], ["f"]), n("Add", ["d", "e"], ["g"]),
                       n("Add", ["g", "f"], ["y"])], {"three": np.array(3.0, F32)}, 17),
        "gelu_opset20": ([n("Gelu", ["x"], ["a"]), n("Gelu", ["a"], ["y"], approximate="tanh")], {}, 20),
        # the activations of other networks, each on its own branch, summed
        "activations": ([n("Elu", ["x"], ["a1"]), n("Elu", ["x"], ["a2"], alpha=0.4), n("Selu", ["x"], ["a3"]),
                         n("Selu", ["x"], ["a4"], alpha=1.2, gamma=0.9), n("Celu", ["x"], ["a5"], alpha=0.6),
                         n("Softplus", ["x"], ["a6"]), n("Softsign", ["x"], ["a7"]), n("Mish", ["x"], ["a8"]),
                         n("ThresholdedRelu", ["x"], ["a9"], alpha=0.3), n("Log", ["a6"], ["a10"]),
                         n("Mul", ["x", "x"], ["xx"]), n("Add", ["xx", "one"], ["q"]), n("Reciprocal", ["q"], ["a11"]),
                         n("PRelu", ["x", "slope_c"], ["a12"]), n("PRelu", ["x", "slope_1"], ["a13"]),
                         n("Add", ["a1", "a2"], ["s0"])]
                        + [n("Add", [f"s{i}", f"a{i + 3}"], [f"s{i + 1}"]) for i in range(10)]
                        + [n("Add", ["s10", "a13"], ["y"])],
                        {"one": np.array(1.0, F32), "slope_c": w(4, 1, 1), "slope_1": np.array([0.2], F32)}, 18),
        # conditions on the activations: torch.where(x > t, ...) and its logic
        "conditions": ([n("Greater", ["x", "t"], ["g"]), n("Mul", ["x", "k"], ["xk"]), n("Where", ["g", "x", "xk"], ["a"]),
                        n("Less", ["t", "x"], ["l"]), n("Not", ["l"], ["nl"]), n("Where", ["nl", "one", "mone"], ["b"]),
                        n("Split", ["x"], ["h1", "h2"], axis=1, num_outputs=2),
                        n("GreaterOrEqual", ["h1", "h2"], ["ge"]), n("Where", ["ge", "h1", "h2"], ["c"]),
                        n("LessOrEqual", ["x", "lo"], ["le"]), n("Not", ["le"], ["eq"]),
                        n("Equal", ["h1", "h1"], ["same"]), n("Where", ["same", "h2", "zero"], ["e"]),
                        n("And", ["g", "eq"], ["an"]), n("Or", ["an", "l"], ["orr"]), n("Where", ["orr", "zero", "x"], ["d"]),
                        n("Concat", ["c", "e"], ["cc"], axis=1),
                        n("Add", ["a", "b"], ["ab"]), n("Add", ["ab", "cc"], ["abc"]), n("Add", ["abc", "d"], ["y"])],
                       {"t": np.array(0.2, F32), "k": np.array(0.1, F32), "one": np.array(1.0, F32),
                        "mone": np.array(-1.0, F32), "lo": w(4, 1, 1), "zero": np.array(0.0, F32)}, 18),
        # x.repeat and y.expand_as(x) of activations
        "tile_expand": ([n("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1), n("Expand", ["m", "shp"], ["e"]),
                         n("Mul", ["x", "e"], ["g"]), n("Tile", ["g", "reps"], ["t"]),
                         n("Slice", ["t", "s0", "s1", "ax"], ["y"])],
                        {"shp": i64(1, 4, 6, 6), "reps": i64(1, 2, 1, 3), "s0": i64(2), "s1": i64(10), "ax": i64(1)},
                        17),
        # weight standardization (NFNets' ScaledStdConv2d): a training-mode
        # BatchNormalization over the weights' rows, then a conv with TF-style "same"
        # pads computed with Ceil and Clip (tf_efficientnet), and Sigmoid / Tanh / Log
        # of constants
        "constant_weights_and_pads": ([n("Reshape", ["cw", "rows"], ["wr"]),
                                       n("BatchNormalization", ["wr", "bns", "bnb", "bnm", "bnv"], ["wn"],
                                         epsilon=1e-5, momentum=0.0, training_mode=1),
                                       n("Reshape", ["wn", "wshape"], ["wstd"]), n("Mul", ["wstd", "gain"], ["wg"]),
                                       n("Div", ["seven", "two"], ["half7"]), n("Ceil", ["half7"], ["c3"]),
                                       n("Sub", ["c3", "five"], ["neg"]), n("Clip", ["neg", "zero"], ["pz"]),
                                       n("Add", ["pz", "one"], ["pad1"]), n("Cast", ["pad1"], ["pi"], to=7),
                                       n("Concat", ["zz", "pi", "pi", "zz", "pi", "pi"], ["pads"], axis=0),
                                       n("Pad", ["x", "pads"], ["xp"]),
                                       n("Sigmoid", ["sb"], ["sg"]), n("Tanh", ["sg"], ["th"]), n("Log", ["th"], ["lg"]),
                                       n("Conv", ["xp", "wg", "lg"], ["y"])],
                                      {"cw": w(5, 4, 3, 3), "rows": i64(1, 5, -1), "bns": np.ones(5, F32),
                                       "bnb": np.zeros(5, F32), "bnm": np.zeros(5, F32), "bnv": np.ones(5, F32),
                                       "wshape": i64(5, 4, 3, 3), "gain": (np.abs(w(5, 1, 1, 1)) + 0.5) / 6,
                                       "seven": np.array([7.0], F32), "two": np.array(2.0, F32),
                                       "five": np.array(5.0, F32), "zero": np.array(0.0, F32),
                                       "one": np.array(1.0, F32), "zz": i64(0, 0), "sb": np.abs(w(5)) + 1}, 17),
        # a sinusoidal position embedding computed at import (EdgeNeXt's): CumSum of a
        # mask (one exclusive and reversed), Sin, Cos, a Conv projection, then added
        "position_embedding": ([n("CumSum", ["ones", "ax2"], ["ye"]),
                                n("CumSum", ["ones", "ax3"], ["xe"], exclusive=1, reverse=1),
                                n("Div", ["ye", "tau"], ["yd"]), n("Sin", ["yd"], ["ys"]), n("Cos", ["xe"], ["xc"]),
                                n("Atan", ["yd"], ["ya"]), n("Tan", ["ya"], ["yt"]), n("Round", ["xe"], ["xr"]),
                                n("Concat", ["ys", "xc", "yt", "xr"], ["pe"], axis=1),
                                n("Conv", ["pe", "pw", "pb"], ["pp"], pads=[1, 1, 1, 1]),
                                n("Add", ["x", "pp"], ["y"])],
                               {"ones": np.ones((1, 1, 6, 6), F32), "ax2": np.array(2, np.int64), "ax3": np.array(3, np.int32),
                                "tau": np.array(2.5, F32), "pw": w(4, 4, 3, 3), "pb": w(4)}, 17),
        # constant - x and constant / x
        "constant_first": ([n("Sub", ["c", "x"], ["a"]), n("Mul", ["x", "x"], ["xx"]), n("Add", ["xx", "one"], ["q"]),
                            n("Div", ["cc", "q"], ["b"]), n("Add", ["a", "b"], ["y"])],
                           {"c": np.array(0.7, F32), "one": np.array(1.0, F32), "cc": w(4, 1, 1)}, 17),
        "pad_modes": ([n("Pad", ["x", "p1"], ["a"], mode="reflect"), n("Pad", ["x", "p2"], ["b"], mode="edge"),
                       n("Pad", ["x", "p3"], ["c"], mode="wrap"), n("Add", ["a", "b"], ["ab"]), n("Add", ["ab", "c"], ["y"])],
                      {"p1": i64(0, 0, 2, 1, 0, 0, 1, 3), "p2": i64(0, 0, 1, 3, 0, 0, 2, 1),
                       "p3": i64(0, 0, 3, 2, 0, 0, 0, 2)}, 19),
        # InstanceNorm2d, and GroupNorm as PyTorch exports it
        "instance_and_group_norm": ([n("InstanceNormalization", ["x", "isc", "ib"], ["i"], epsilon=1e-4),
                                     n("Reshape", ["i", "gs"], ["g"]),
                                     n("InstanceNormalization", ["g", "one2", "zero2"], ["gn"]),
                                     n("Reshape", ["gn", "back"], ["r"]), n("Mul", ["r", "gw"], ["m"]),
                                     n("Add", ["m", "gb"], ["y"])],
                                    {"isc": w(4) + 1, "ib": w(4), "gs": i64(1, 2, -1),
                                     "one2": np.ones(2, F32), "zero2": np.zeros(2, F32), "back": i64(1, 4, 6, 6),
                                     "gw": w(4, 1, 1) + 1, "gb": w(4, 1, 1)}, 17),
        "extrema_and_global_max": ([n("Split", ["x"], ["h1", "h2"], axis=1, num_outputs=2),
                                    n("Max", ["h1", "h2"], ["mx"]), n("Min", ["h1", "h2"], ["mn"]),
                                    n("Max", ["mx", "c"], ["mc"]), n("Min", ["mn", "cfull"], ["nc"]),
                                    n("GlobalMaxPool", ["x"], ["gm"]), n("ReduceMin", ["x", "ax23"], ["rn"], keepdims=1),
                                    n("Concat", ["mc", "nc"], ["cc"], axis=1), n("Add", ["cc", "gm"], ["t"]),
                                    n("Sub", ["t", "rn"], ["y"])],
                                   {"c": np.array(0.1, F32), "cfull": np.full((1, 2, 6, 6), 0.1, F32),
                                    "ax23": i64(2, 3)}, 18),
        # ConvNeXt's LayerNorm2d and block, channels-last
        "convnext_block": ([n("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                            n("LayerNormalization", ["t", "lw", "lb"], ["ln"], axis=-1, epsilon=1e-6),
                            n("MatMul", ["ln", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["a1"]),
                            n("Div", ["a1", "sq2"], ["dv"]), n("Erf", ["dv"], ["er"]), n("Add", ["er", "one"], ["ep"]),
                            n("Mul", ["a1", "ep"], ["mu"]), n("Mul", ["mu", "half"], ["ge"]),
                            n("MatMul", ["ge", "w2"], ["m2"]), n("Add", ["b2", "m2"], ["a2"]),
                            n("Transpose", ["a2"], ["tb"], perm=[0, 3, 1, 2]), n("Mul", ["gamma", "tb"], ["sc"]),
                            n("Add", ["sc", "x"], ["y"])],
                           {"lw": w(4) + 1, "lb": w(4), "w1": w(4, 16), "b1": w(16), "sq2": np.array(1.4142135, F32),
                            "one": np.array(1.0, F32), "half": np.array(0.5, F32), "w2": w(16, 4), "b2": w(4),
                            "gamma": w(4, 1, 1)}, 17),
        "layernorm_trailing_and_matmuls": ([n("LayerNormalization", ["x", "lw"], ["ln"], axis=2),
                                            n("MatMul", ["ln", "w"], ["m"]), n("MatMul", ["wl", "m"], ["y"])],
                                           {"lw": w(6, 6) + 1, "w": w(6, 3), "wl": w(5, 6)}, 17),
        "flatten_squeeze_gemm": ([n("ReduceMean", ["x"], ["p"], axes=[3], keepdims=1),
                                  n("Squeeze", ["p", "a3"], ["q"]),
                                  n("Transpose", ["q"], ["ft"], perm=[0, 2, 1]), n("Flatten", ["ft"], ["ff"]),
                                  n("Gemm", ["ff", "gw", "gb"], ["y"], transB=1, alpha=0.5, beta=2.0)],
                                 {"a3": i64(3), "gw": w(7, 24), "gb": w(7)}, 13),
    }


@pytest.mark.parametrize("name", ["shuffle", "pad_subgraph", "range_expand_where", "slices_split_gather", "resize",
                                  "resize_cubic", "gathernd_where_concat", "gathernd_batch_dims", "gemm_transa", "upsample_opset9",
                                  "softmax_reductions", "pointwise", "gelu_opset20", "activations",
                                  "extrema_and_global_max", "instance_and_group_norm", "pad_modes",
                                  "constant_first", "constant_weights_and_pads", "position_embedding",
                                  "conditions", "tile_expand",
                                  "convnext_block", "layernorm_trailing_and_matmuls", "flatten_squeeze_gemm"])
def test_graph_matches_reference_and_finite_differences(ox, name):
    nodes, inits, opset = graphs(ox)[name]
    proto = make(ox, nodes, inits, opset=opset)
    model = gradvis.load_onnx(proto)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 4, 6, 6)).astype(F32)       # batch 3 for a batch-1 graph
    if name == "pointwise":
        X = X * 0.5
    ref = np.concatenate([ox[3](proto).run(None, {"x": X[i:i + 1]})[0] for i in range(3)])
    out = model.forward(X)[0]
    assert out.shape == ref.shape and rel_err(out, ref) < 2e-5, (name, rel_err(out, ref))
    # input gradient of sum(R * y) in float64 against central differences
    m64 = model.astype(np.float64)
    X64 = X[:1].astype(np.float64)
    y, cache = m64.forward(X64)
    R = rng.standard_normal(y.shape)
    dX = m64.backward(R, cache, param_grads=False)[0]
    flat = X64.reshape(-1)
    for i in rng.choice(flat.size, 8, replace=False):
        xp, xm = flat.copy(), flat.copy()
        xp[i] += 1e-6
        xm[i] -= 1e-6
        num = ((m64.forward(xp.reshape(X64.shape))[0] - m64.forward(xm.reshape(X64.shape))[0]) * R).sum() / 2e-6
        assert abs(num - dX.reshape(-1)[i]) <= 1e-5 * max(1.0, abs(num)), (name, num, dX.reshape(-1)[i])


def test_channels_last_region_runs_channels_first(ox):
    nodes, inits, opset = graphs(ox)["convnext_block"]
    model = gradvis.load_onnx(make(ox, nodes, inits, opset=opset))
    types = [n.layer.type for n in model.nodes]
    assert "Transpose" not in types and types.count("Conv2d") == 2 and "GELU" in types
    ln = next(n.layer for n in model.nodes if n.layer.type == "LayerNorm")
    assert ln.axes == (1,)
    assert any("into one GELU" in f for f in model.info["folded"])


def test_shape_arithmetic_on_the_image_values_names_the_node(ox):
    _, helper, _, _ = ox
    n = helper.make_node
    proto = make(ox, [n("ReduceMax", ["x"], ["mx"], axes=[1, 2, 3], keepdims=0, name="peak"),
                      n("Cast", ["mx"], ["mi"], to=7, name="to_int"),
                      n("Unsqueeze", ["mi", "z"], ["mu"], name="unsq"),
                      n("Concat", ["one", "mu"], ["shp"], axis=0, name="cat"),
                      n("Reshape", ["x", "shp"], ["y"], name="reshape")],
                 {"z": i64(0), "one": i64(1)})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError,
                       match=r"'reshape' \(Reshape\): the target shape.*'shp' must be known at import time.*"
                             r"through ONNX node 'peak' \(ReduceMax\).*onnxsim"):
        gradvis.load_onnx(proto)


def test_constant_operator_it_cannot_evaluate_suggests_folding(ox):
    _, helper, _, _ = ox
    n = helper.make_node
    proto = make(ox, [n("NonZero", ["c"], ["nz"], name="nonzero"), n("Cast", ["nz"], ["nzf"], to=1),
                      n("ReduceSum", ["nzf"], ["s"], keepdims=0), n("Mul", ["x", "s"], ["y"])],
                 {"c": np.array([1, 0, 2], F32)})
    with pytest.raises(gradvis.io.onnx_import.UnsupportedOperatorError,
                       match=r"'nonzero' \(NonZero\).*cannot evaluate 'NonZero'.*onnxsim"):
        gradvis.load_onnx(proto)


def test_constant_only_operator_on_activations_is_named_with_the_missing_ones(ox):
    """Floor of activations (evaluated on constants only) and an operator gradvis
    lacks: one UnsupportedOperatorError naming both, and how Floor's input depends on
    the image (not the advice to fold constants, which cannot help)."""
    _, helper, _, _ = ox
    n = helper.make_node
    proto = make(ox, [n("Relu", ["x"], ["r"], name="act"), n("Floor", ["r"], ["f"], name="fl"),
                      n("Acosh", ["f"], ["y"], name="sn")], {})
    with pytest.raises(gradvis.io.onnx_import.UnsupportedOperatorError) as e:
        gradvis.load_onnx(proto)
    msg = str(e.value)
    assert "unsupported ONNX operator 'Acosh' (node 'sn')" in msg
    assert ("'Floor' (node 'fl', input 'r', which depends on the image's values through ONNX node 'act' (Relu)) "
            "applied to values computed from the image, which gradvis evaluates on constants only") in msg
    assert "onnxsim" not in msg


def test_constant_baked_at_the_export_batch_is_taken_per_sample(ox):
    """An exporter evaluates constants built for the example (position embeddings of
    EdgeNeXt) at its batch: equal rows import as one sample's constant; rows that
    differ are refused."""
    _, helper, _, _ = ox
    rng = np.random.default_rng(3)
    row = rng.standard_normal((1, 4, 6, 6)).astype(F32)
    proto = make(ox, [helper.make_node("Add", ["x", "pe"], ["y"], name="add")], {"pe": np.concatenate([row, row])},
                 in_shape=(2, 4, 6, 6))
    X = rng.standard_normal((3, 4, 6, 6)).astype(F32)
    np.testing.assert_array_equal(gradvis.load_onnx(proto).forward(X)[0], X + row)
    proto = make(ox, [helper.make_node("Add", ["x", "pe"], ["y"], name="add")], {"pe": np.concatenate([row, -row])},
                 in_shape=(2, 4, 6, 6))
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match=r"'add'.*varies over the batch axis"):
        gradvis.load_onnx(proto)


def test_negative_pads_crop(ox):
    """ONNX Pad with negative pads removes cells (NASNet's one-pixel shift), beside
    positive pads on other sides; values and gradient against numpy (the reference
    evaluator pads with np.pad, which takes no negative pads)."""
    _, helper, _, _ = ox
    n = helper.make_node
    proto = make(ox, [n("Pad", ["x", "p1"], ["a"]), n("Pad", ["x", "p2", "cv"], ["b"]),
                      n("Mul", ["a", "b"], ["y"])],
                 {"p1": i64(0, 0, -1, 0, 0, 0, 1, 0), "p2": i64(0, 0, 1, -2, 0, 0, -1, 2), "cv": np.array(0.5, F32)})
    model = gradvis.load_onnx(proto).astype(np.float64)
    x = np.random.default_rng(6).standard_normal((2, 4, 6, 6))
    a = np.pad(x[:, :, 1:, :], ((0, 0), (0, 0), (0, 1), (0, 0)))
    b = np.pad(x[:, :, :-1, 2:], ((0, 0), (0, 0), (1, 0), (0, 2)), constant_values=0.5)
    y, cache = model.forward(x)
    np.testing.assert_array_equal(y, a * b)
    R = np.random.default_rng(7).standard_normal(y.shape)
    dx = model.backward(R, cache, param_grads=False)[0]
    want = np.zeros_like(x)
    want[:, :, 1:, :] += (R * b)[:, :, :-1, :]
    want[:, :, :-1, 2:] += (R * a)[:, :, 1:, :-2]
    np.testing.assert_allclose(dx, want, rtol=1e-14, atol=1e-14)
    reflect = make(ox, [n("Pad", ["x", "p"], ["y"], mode="reflect")], {"p": i64(0, 0, -1, 0, 0, 0, 1, 0)})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match="negative pads .* in mode 'reflect'"):
        gradvis.load_onnx(reflect)
    everything = make(ox, [n("Pad", ["x", "p"], ["y"], name="pad")], {"p": i64(0, 0, -3, 0, 0, 0, -3, 0)})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match="'pad'.*crop all of the 6x6 input"):
        gradvis.load_onnx(everything)


def test_complex_initializer_is_refused(ox):
    _, helper, numpy_helper, _ = ox
    proto = make(ox, [helper.make_node("Mul", ["x", "c"], ["y"])], {})
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1 + 2j], np.complex64), name="c"))
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match=r"initializer 'c' is a complex tensor"):
        gradvis.load_onnx(proto)


def test_conv_bias_naming_no_initializer_is_refused(ox):
    _, helper, _, _ = ox
    w = np.ones((2, 4, 3, 3), F32)
    proto = make(ox, [helper.make_node("Conv", ["x", "w", "b_missing"], ["y"], name="conv")], {"w": w})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match=r"'conv'.*'b_missing' names no initializer"):
        gradvis.load_onnx(proto)
    # a bias computed from the image is refused too, not dropped
    proto = make(ox, [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0, 2, 3], keepdims=0, name="mean"),
                      helper.make_node("Conv", ["x", "w", "m"], ["y"], name="conv")], {"w": w})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match=r"'conv'.*bias.*ReduceMean|mean"):
        gradvis.load_onnx(proto)


def test_refused_shapes_name_the_node(ox):
    _, helper, _, _ = ox
    n = helper.make_node
    cases = [
        ([n("Transpose", ["x"], ["y"], perm=[1, 0, 2, 3], name="tb")], {}, r"'tb'.*moves the batch axis"),
        ([n("Reshape", ["x", "s"], ["y"], name="rb")], {"s": i64(4, -1)}, r"'rb'.*changes the batch axis"),
        ([n("Flatten", ["x"], ["y"], axis=2, name="fb")], {}, r"'fb'.*merges the batch axis"),
        ([n("Slice", ["x", "a", "b", "c"], ["y"], name="sb")], {"a": i64(0), "b": i64(1), "c": i64(0)},
         r"'sb'.*slicing the batch axis"),
        ([n("Gather", ["x", "i"], ["y"], axis=1, name="gb")], {"i": i64(0, 3, 1)}, r"'gb'.*evenly spaced"),
        ([n("Resize", ["x", "", "s"], ["y"], mode="cubic", antialias=1, name="rc")],
         {"s": np.array([1, 1, 0.5, 0.5], F32)}, r"'rc'.*antialias"),
        ([n("Resize", ["x", "", "s"], ["y"], mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
            name="rt")], {"s": np.array([1, 1, 2, 2], F32)}, r"'rt'.*tf_crop_and_resize"),
        ([n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "w"], ["y"], transA=1, name="ga")],
         {"w": np.ones((2, 3), F32)}, r"'ga'.*transA=1"),
        ([n("GatherND", ["x", "i"], ["y"], name="gn")], {"i": i64(0, 1)}, r"'gn'.*GatherND on the batch axis"),
        ([n("Transpose", ["x"], ["t"], perm=[2, 3, 0, 1], name="tg"), n("GatherND", ["t", "i"], ["y"])],
         {"i": np.array([[0, 1]], np.int64)}, r"'tg'.*moves the batch axis"),
        ([n("Where", ["c", "x", "x"], ["y"], name="wh")], {"c": np.array([True, False]).reshape(2, 1, 1, 1)},
         r"'wh'.*condition of shape \(2, 1, 1, 1\) varies over the batch axis"),
        ([n("Concat", ["x", "x"], ["y"], axis=0, name="cb")], {}, r"'cb'.*batch axis"),
    ]
    for nodes, inits, match in cases:
        with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match=match):
            gradvis.load_onnx(make(ox, nodes, inits, in_shape=(2, 4, 6, 6), opset=13))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_pad_and_shuffle_export(exporter):
    """What the issue saw: F.pad not into a convolution (a constant subgraph in the
    TorchScript export) and a channel shuffle that reads x.size(0), through both exporters."""
    torch = require_torch()
    require_onnx()
    if exporter == "dynamo":
        require("onnxscript")
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.fc = nn.Linear(8 * 4 * 5, 6)

        def forward(self, x):
            x = F.pad(torch.relu(self.conv(x)), (1, 2, 0, 1), value=0.25)
            b, c, h, w = x.size()
            x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
            x = F.max_pool2d(x, 2)
            x1, x2 = x.chunk(2, dim=1)
            x = torch.cat([x2[:, :, :, ::1], F.gelu(x1)], 1)
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    model = gradvis.from_torch(net, torch.zeros(1, 3, 10, 10), exporter=exporter)
    X = np.random.default_rng(1).standard_normal((3, 3, 10, 10)).astype(F32)
    x = torch.from_numpy(X).requires_grad_(True)
    out = net(x)
    R = np.random.default_rng(2).standard_normal(tuple(out.shape)).astype(F32)
    (dx,) = torch.autograd.grad((out * torch.from_numpy(R)).sum(), [x])
    scores, cache = model.forward(X)
    dX = model.backward(R, cache, param_grads=False)[0]
    assert rel_err(scores, out.detach().numpy()) < 1e-5 and rel_err(dX, dx.numpy()) < 1e-5
