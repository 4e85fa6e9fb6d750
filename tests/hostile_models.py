"""Builders of unusual and hostile models, the way real exporters and real accidents make them.

Each builder returns an ``onnx.ModelProto`` (or writes a file) that is small
enough for a test to prune in well under a second.  Weights are seeded, so
every build is identical.  The models mimic what shows up in the wild:
Paddle (weights in ``Constant`` nodes), tf2onnx (Transposes around every
conv), old exporters (``Sum`` residuals, weights listed as graph inputs),
quantized graphs and control flow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _weight(rng: np.random.Generator, *shape: int, dtype: type = np.float32) -> np.ndarray:
    """Kaiming-like scale so activations stay O(1) through a few layers."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _model(graph: onnx.GraphProto, opset: int = 18, extra_opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    """A model with the IR version that matches the opset (what an exporter of that era writes)."""
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = helper.make_model_gen_version(graph, opset_imports=imports, producer_name="onnxprune-tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(name: str, x: str, w: str, b: str | None, out: str, pads: int = 1, group: int = 1) -> onnx.NodeProto:
    inputs = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", inputs, [out], name=name, pads=[pads] * 4, group=group)


# --------------------------------------------------------------------------- plain baselines


def conv_chain(opset: int = 18, channels: int = 8, size: int = 12) -> onnx.ModelProto:
    """Conv-Relu x3, a bypassable 3x3 conv in the middle, pool, Flatten, Gemm.

    Every op exists unchanged since opset 1 (Gemm keeps its C input, required
    before opset 11), so the same graph is valid at every opset.
    """
    rng = _rng(1)
    c = channels
    inits = [
        _init("w1", _weight(rng, c, 3, 3, 3)),
        _init("b1", _weight(rng, c)),
        _init("w2", _weight(rng, c, c, 3, 3)),
        _init("b2", _weight(rng, c)),
        _init("w3", _weight(rng, 2 * c, c, 3, 3)),
        _init("b3", _weight(rng, 2 * c)),
        _init("fc_w", _weight(rng, 10, 2 * c)),
        _init("fc_b", _weight(rng, 10)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", "b1", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _conv("conv2", "r1", "w2", "b2", "c2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        _conv("conv3", "r2", "w3", "b3", "c3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_chain",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", FLOAT, [1, 10])],
        inits,
    )
    return _model(graph, opset)


# --------------------------------------------------------------------------- unusual but valid


def constant_node_weights() -> onnx.ModelProto:
    """Paddle style: every weight is the output of a ``Constant`` node; the graph has no initializers."""
    model = conv_chain()
    graph = model.graph
    constants = [
        helper.make_node("Constant", [], [init.name], name=f"const_{init.name}", value=init) for init in graph.initializer
    ]
    nodes = constants + list(graph.node)
    del graph.initializer[:]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


def constant_of_shape_weights() -> onnx.ModelProto:
    """Weights computed at run time: a ``ConstantOfShape`` bias and a weight built by Reshape and Mul."""
    rng = _rng(2)
    flat = _weight(rng, 8, 3, 3, 3).ravel()
    inits = [
        _init("w1_flat", flat),
        _init("w1_shape", np.array([8, 3, 3, 3], np.int64)),
        _init("w1_scale", np.array(0.5, np.float32)),
        _init("b1_shape", np.array([8], np.int64)),
        _init("w2", _weight(rng, 8, 8, 3, 3)),
    ]
    nodes = [
        helper.make_node("Reshape", ["w1_flat", "w1_shape"], ["w1_raw"], name="w1_reshape"),
        helper.make_node("Mul", ["w1_raw", "w1_scale"], ["w1"], name="w1_mul"),
        helper.make_node(
            "ConstantOfShape", ["b1_shape"], ["b1"], name="b1_fill", value=numpy_helper.from_array(np.array([0.1], np.float32))
        ),
        _conv("conv1", "input", "w1", "b1", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _conv("conv2", "r1", "w2", None, "output"),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_of_shape",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 8, 10, 10])],
        inits,
    )
    return _model(graph)


def weights_as_graph_inputs() -> onnx.ModelProto:
    """Old exporters (IR version 3, opset 9) list every initializer as a graph input too."""
    model = conv_chain(opset=9)
    graph = model.graph
    for init in graph.initializer:
        graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    model.ir_version = 3
    onnx.checker.check_model(model, full_check=True)
    return model


def shared_initializer() -> onnx.ModelProto:
    """One weight and one bias initializer used by two convs (tied weights)."""
    rng = _rng(3)
    inits = [
        _init("w_in", _weight(rng, 8, 3, 3, 3)),
        _init("w_shared", _weight(rng, 8, 8, 3, 3)),
        _init("b_shared", _weight(rng, 8)),
        _init("w_out", _weight(rng, 4, 8, 1, 1)),
    ]
    nodes = [
        _conv("conv_in", "input", "w_in", None, "c0"),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        _conv("conv_a", "r0", "w_shared", "b_shared", "ca"),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        _conv("conv_b", "ra", "w_shared", "b_shared", "cb"),
        helper.make_node("Relu", ["cb"], ["rb"], name="relu_b"),
        _conv("conv_out", "rb", "w_out", None, "output", pads=0),
    ]
    graph = helper.make_graph(
        nodes,
        "shared_initializer",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 4, 10, 10])],
        inits,
    )
    return _model(graph)


def float16_model() -> onnx.ModelProto:
    """A model computed entirely in float16, input and output included."""
    model = conv_chain()
    graph = model.graph
    for init in graph.initializer:
        init.CopyFrom(_init(init.name, numpy_helper.to_array(init).astype(np.float16)))
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model, full_check=True)
    return model


def float16_weights_cast() -> onnx.ModelProto:
    """float16 weights stored to halve the file, cast to float32 where used (a common export)."""
    model = conv_chain()
    graph = model.graph
    casts = []
    for init in graph.initializer:
        half = _init(f"{init.name}_fp16", numpy_helper.to_array(init).astype(np.float16))
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"cast_{init.name}", to=FLOAT))
        init.CopyFrom(half)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


def symbolic_dims() -> onnx.ModelProto:
    """Batch, height and width all symbolic; the global pool makes the output [batch, 10]."""
    model = conv_chain()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "batch", "height", "width"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model, full_check=True)
    return model


def multiple_inputs_outputs() -> onnx.ModelProto:
    """Two image inputs and a mask, merged by Add; two outputs, one of them an intermediate value."""
    rng = _rng(4)
    inits = [
        _init("wa", _weight(rng, 8, 3, 3, 3)),
        _init("wb", _weight(rng, 8, 3, 3, 3)),
        _init("w_head", _weight(rng, 8, 8, 3, 3)),
        _init("b_head", _weight(rng, 8)),
        _init("w_side", _weight(rng, 4, 8, 1, 1)),
    ]
    nodes = [
        _conv("conv_a", "image_a", "wa", None, "ca"),
        _conv("conv_b", "image_b", "wb", None, "cb"),
        helper.make_node("Add", ["ca", "cb"], ["merged"], name="merge"),
        helper.make_node("Mul", ["merged", "mask"], ["masked"], name="apply_mask"),
        helper.make_node("Relu", ["masked"], ["features"], name="relu"),
        _conv("conv_head", "features", "w_head", "b_head", "head"),
        _conv("conv_side", "features", "w_side", None, "side", pads=0),
    ]
    shape = [1, 3, 10, 10]
    graph = helper.make_graph(
        nodes,
        "multiple_io",
        [
            helper.make_tensor_value_info("image_a", FLOAT, shape),
            helper.make_tensor_value_info("image_b", FLOAT, shape),
            helper.make_tensor_value_info("mask", FLOAT, [1, 1, 10, 10]),
        ],
        [
            helper.make_tensor_value_info("head", FLOAT, [1, 8, 10, 10]),
            helper.make_tensor_value_info("side", FLOAT, [1, 4, 10, 10]),
            helper.make_tensor_value_info("features", FLOAT, [1, 8, 10, 10]),
        ],
        inits,
    )
    return _model(graph)


def sum_residual(opset: int = 11) -> onnx.ModelProto:
    """Old-style residual merges with ``Sum``: two branches, then three, over the same stem."""
    rng = _rng(5)
    c = 8
    inits = [
        _init("w_stem", _weight(rng, c, 3, 3, 3)),
        _init("w_a", _weight(rng, c, c, 3, 3)),
        _init("w_b", _weight(rng, c, c, 3, 3)),
        _init("w_c", _weight(rng, c, c, 1, 1)),
        _init("w_d", _weight(rng, c, c, 3, 3)),
        _init("w_head", _weight(rng, 6, c, 1, 1)),
    ]
    nodes = [
        _conv("stem", "input", "w_stem", None, "s"),
        helper.make_node("Relu", ["s"], ["x0"], name="stem_relu"),
        _conv("branch_a", "x0", "w_a", None, "a"),
        helper.make_node("Relu", ["a"], ["ar"], name="branch_a_relu"),
        _conv("branch_b", "ar", "w_b", None, "b"),
        helper.make_node("Sum", ["x0", "b"], ["x1"], name="residual1"),
        _conv("branch_c", "x1", "w_c", None, "cc", pads=0),
        _conv("branch_d", "x1", "w_d", None, "d"),
        helper.make_node("Sum", ["x1", "cc", "d"], ["x2"], name="residual2"),
        helper.make_node("Relu", ["x2"], ["x3"], name="relu"),
        _conv("head", "x3", "w_head", None, "output", pads=0),
    ]
    graph = helper.make_graph(
        nodes,
        "sum_residual",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 6, 10, 10])],
        inits,
    )
    return _model(graph, opset)


def nhwc_transposed_convs() -> onnx.ModelProto:
    """tf2onnx style: NHWC input and output, a Transpose pair around every conv."""
    rng = _rng(6)
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]
    inits = [
        _init("w1", _weight(rng, 8, 3, 3, 3)),
        _init("b1", _weight(rng, 8)),
        _init("w2", _weight(rng, 8, 8, 3, 3)),
        _init("b2", _weight(rng, 8)),
        _init("w3", _weight(rng, 5, 8, 1, 1)),
    ]
    nodes = [
        helper.make_node("Transpose", ["input"], ["t1"], name="to_nchw1", perm=to_nchw),
        _conv("conv1", "t1", "w1", "b1", "c1"),
        helper.make_node("Transpose", ["c1"], ["h1"], name="to_nhwc1", perm=to_nhwc),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Transpose", ["r1"], ["t2"], name="to_nchw2", perm=to_nchw),
        _conv("conv2", "t2", "w2", "b2", "c2"),
        helper.make_node("Transpose", ["c2"], ["h2"], name="to_nhwc2", perm=to_nhwc),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("Transpose", ["r2"], ["t3"], name="to_nchw3", perm=to_nchw),
        _conv("conv3", "t3", "w3", None, "c3", pads=0),
        helper.make_node("Transpose", ["c3"], ["output"], name="to_nhwc3", perm=to_nhwc),
    ]
    graph = helper.make_graph(
        nodes,
        "nhwc",
        [helper.make_tensor_value_info("input", FLOAT, [1, 10, 10, 3])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 10, 10, 5])],
        inits,
    )
    return _model(graph)


def dead_channels() -> onnx.ModelProto:
    """Channels of known constant value (an all-zero filter with a positive bias, then Relu) that the next layer can fold.

    Two conv1 channels reach a 1x1 conv without padding, one conv2 channel
    reaches a Gemm through the global pool: exact dead-channel removal folds
    each constant into that layer's bias.
    """
    rng = _rng(7)
    w1, b1 = _weight(rng, 8, 3, 3, 3), _weight(rng, 8)
    w1[[2, 5]], b1[[2, 5]] = 0.0, [0.8, 0.3]
    w2, b2 = _weight(rng, 8, 8, 1, 1), _weight(rng, 8)
    w2[1], b2[1] = 0.0, 0.5
    inits = [
        _init("w1", w1),
        _init("b1", b1),
        _init("w2", w2),
        _init("b2", b2),
        _init("fc_w", _weight(rng, 10, 8)),
        _init("fc_b", _weight(rng, 10)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", "b1", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _conv("conv2", "r1", "w2", "b2", "c2", pads=0),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "dead_channels",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("logits", FLOAT, [1, 10])],
        inits,
    )
    return _model(graph)


# --------------------------------------------------------------------------- control flow


def _branch_graph(name: str, nodes: list[onnx.NodeProto], output: str, shape: list[int], inits=()) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, FLOAT, shape)], list(inits))


def if_model() -> onnx.ModelProto:
    """An outer conv whose output and an outer weight are read inside both branches of an ``If``."""
    rng = _rng(7)
    shape = [1, 8, 10, 10]
    then_branch = _branch_graph(
        "then", [_conv("then_conv", "r1", "w_outer", "b_outer", "then_out")], "then_out", shape
    )
    else_branch = _branch_graph(
        "else",
        [_conv("else_conv", "r1", "w_inner", None, "else_out"), ],
        "else_out",
        shape,
        [_init("w_inner", _weight(rng, 8, 8, 3, 3))],
    )
    inits = [
        _init("w1", _weight(rng, 8, 3, 3, 3)),
        _init("b1", _weight(rng, 8)),
        _init("w_outer", _weight(rng, 8, 8, 3, 3)),
        _init("b_outer", _weight(rng, 8)),
        _init("w_after", _weight(rng, 8, 8, 3, 3)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", "b1", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("If", ["flag"], ["branch"], name="choose", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Relu", ["branch"], ["rb"], name="relu2"),
        _conv("conv_after", "rb", "w_after", None, "output"),
    ]
    graph = helper.make_graph(
        nodes,
        "if_model",
        [
            helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("output", FLOAT, shape)],
        inits,
    )
    return _model(graph)


def loop_model() -> onnx.ModelProto:
    """A ``Loop`` applies an outer conv weight to its carried state twice."""
    rng = _rng(8)
    shape = [1, 8, 10, 10]
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            _conv("body_conv", "state_in", "w_loop", "b_loop", "bc"),
            helper.make_node("Relu", ["bc"], ["state_out"], name="body_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [1]),
            helper.make_tensor_value_info("state_in", FLOAT, shape),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [1]),
            helper.make_tensor_value_info("state_out", FLOAT, shape),
        ],
    )
    inits = [
        _init("w1", _weight(rng, 8, 3, 3, 3)),
        _init("w_loop", _weight(rng, 8, 8, 3, 3)),
        _init("b_loop", _weight(rng, 8)),
        _init("w_after", _weight(rng, 4, 8, 3, 3)),
        _init("trips", np.array(2, np.int64)),
        _init("always", np.array(True)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", None, "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Loop", ["trips", "always", "r1"], ["looped"], name="loop", body=body),
        _conv("conv_after", "looped", "w_after", None, "output"),
    ]
    graph = helper.make_graph(
        nodes,
        "loop_model",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 4, 10, 10])],
        inits,
    )
    return _model(graph)


def scan_model() -> onnx.ModelProto:
    """A ``Scan`` runs a conv with an outer weight over each image of the batch (as a sequence)."""
    rng = _rng(9)
    body = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["item", "axis0"], ["batched"], name="add_batch"),
            _conv("scan_conv", "batched", "w_scan", None, "sc"),
            helper.make_node("Relu", ["sc"], ["sr"], name="scan_relu"),
            helper.make_node("Squeeze", ["sr", "axis0"], ["item_out"], name="drop_batch"),
        ],
        "scan_body",
        [helper.make_tensor_value_info("item", FLOAT, [8, 8, 8])],
        [helper.make_tensor_value_info("item_out", FLOAT, [8, 8, 8])],
    )
    inits = [
        _init("w1", _weight(rng, 8, 3, 3, 3)),
        _init("w_scan", _weight(rng, 8, 8, 3, 3)),
        _init("axis0", np.array([0], np.int64)),
        _init("w_after", _weight(rng, 4, 8, 3, 3)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", None, "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Scan", ["r1"], ["scanned"], name="scan", body=body, num_scan_inputs=1),
        _conv("conv_after", "scanned", "w_after", None, "output"),
    ]
    graph = helper.make_graph(
        nodes,
        "scan_model",
        [helper.make_tensor_value_info("input", FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("output", FLOAT, [2, 4, 8, 8])],
        inits,
    )
    return _model(graph)


# --------------------------------------------------------------------------- quantized


def qlinearconv_model() -> onnx.ModelProto:
    """A float conv feeding a fully quantized QLinearConv (int8 weights), then back to float."""
    rng = _rng(10)
    inits = [
        _init("w1", _weight(rng, 8, 3, 3, 3)),
        _init("b1", _weight(rng, 8)),
        _init("x_scale", np.array(0.05, np.float32)),
        _init("x_zero", np.array(0, np.int8)),
        _init("wq", rng.integers(-100, 100, (8, 8, 3, 3)).astype(np.int8)),
        _init("w_scale", np.array(0.01, np.float32)),
        _init("w_zero", np.array(0, np.int8)),
        _init("y_scale", np.array(0.1, np.float32)),
        _init("y_zero", np.array(0, np.int8)),
        _init("bq", rng.integers(-50, 50, 8).astype(np.int32)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", "b1", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("QuantizeLinear", ["r1", "x_scale", "x_zero"], ["rq"], name="quantize"),
        helper.make_node(
            "QLinearConv",
            ["rq", "x_scale", "x_zero", "wq", "w_scale", "w_zero", "y_scale", "y_zero", "bq"],
            ["yq"],
            name="qconv",
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["output"], name="dequantize"),
    ]
    graph = helper.make_graph(
        nodes,
        "qlinearconv",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 8, 10, 10])],
        inits,
    )
    return _model(graph)


def convinteger_model() -> onnx.ModelProto:
    """Dynamic quantization: DynamicQuantizeLinear on the activation, ConvInteger with uint8 weights, rescale."""
    rng = _rng(11)
    inits = [
        _init("w1", _weight(rng, 8, 3, 3, 3)),
        _init("wq", rng.integers(0, 255, (8, 8, 3, 3)).astype(np.uint8)),
        _init("w_zero", np.array(128, np.uint8)),
        _init("w_scale", np.array(0.01, np.float32)),
    ]
    nodes = [
        _conv("conv1", "input", "w1", None, "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("DynamicQuantizeLinear", ["r1"], ["rq", "r_scale", "r_zero"], name="dyn_quantize"),
        helper.make_node("ConvInteger", ["rq", "wq", "r_zero", "w_zero"], ["acc"], name="conv_integer", pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["acc"], ["acc_f"], name="to_float", to=FLOAT),
        helper.make_node("Mul", ["r_scale", "w_scale"], ["scale"], name="combined_scale"),
        helper.make_node("Mul", ["acc_f", "scale"], ["output"], name="rescale"),
    ]
    graph = helper.make_graph(
        nodes,
        "convinteger",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 8, 10, 10])],
        inits,
    )
    return _model(graph)


def qdq_weights_model() -> onnx.ModelProto:
    """QDQ format: int8 weights dequantized right before each float Conv, activations fake-quantized."""
    rng = _rng(12)
    inits = [
        _init("w1q", rng.integers(-120, 120, (8, 3, 3, 3)).astype(np.int8)),
        _init("w1_scale", np.array(0.01, np.float32)),
        _init("w2q", rng.integers(-120, 120, (8, 8, 3, 3)).astype(np.int8)),
        _init("w2_scale", np.array(0.005, np.float32)),
        _init("b2", _weight(rng, 8)),
        _init("a_scale", np.array(0.05, np.float32)),
        _init("a_zero", np.array(0, np.int8)),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w1q", "w1_scale"], ["w1"], name="dq_w1"),
        _conv("conv1", "input", "w1", None, "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("QuantizeLinear", ["r1", "a_scale", "a_zero"], ["r1q"], name="q_act"),
        helper.make_node("DequantizeLinear", ["r1q", "a_scale", "a_zero"], ["r1dq"], name="dq_act"),
        helper.make_node("DequantizeLinear", ["w2q", "w2_scale"], ["w2"], name="dq_w2"),
        _conv("conv2", "r1dq", "w2", "b2", "output"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("input", FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("output", FLOAT, [1, 8, 10, 10])],
        inits,
    )
    return _model(graph)


# --------------------------------------------------------------------------- not a model


def write_not_models(directory: Path, valid: onnx.ModelProto) -> dict[str, Path]:
    """Files that are not (valid) ONNX models, each a different way of failing."""
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = directory / f"{name}.onnx"
        files[name].write_bytes(data)

    put("tensor_proto", numpy_helper.from_array(np.arange(64, dtype=np.float32), "t").SerializeToString())
    put("graph_proto", valid.graph.SerializeToString())
    put("node_proto", valid.graph.node[0].SerializeToString())
    put("text_file", b"ir_version: 8\nthis is not a protobuf\n")
    put("truncated_tail", valid.SerializeToString()[:-7])

    dangling = onnx.ModelProto()
    dangling.CopyFrom(valid)
    dangling.graph.node[0].input[0] = "no_such_value"
    put("dangling_input", dangling.SerializeToString())

    unknown_op = onnx.ModelProto()
    unknown_op.CopyFrom(valid)
    unknown_op.graph.node[1].op_type = "NoSuchOp"
    put("unknown_op", unknown_op.SerializeToString())

    bad_shape = onnx.ModelProto()
    bad_shape.CopyFrom(valid)
    weight = bad_shape.graph.initializer[0]
    weight.CopyFrom(_init(weight.name, np.zeros((5, 2, 2, 2), np.float32)))
    put("wrong_weight_shape", bad_shape.SerializeToString())

    no_opset = onnx.ModelProto()
    no_opset.CopyFrom(valid)
    del no_opset.opset_import[:]
    put("no_opset", no_opset.SerializeToString())

    cycle = onnx.ModelProto()
    cycle.CopyFrom(valid)
    cycle.graph.node[0].input[0] = cycle.graph.node[1].output[0]
    put("cycle", cycle.SerializeToString())

    duplicate = onnx.ModelProto()
    duplicate.CopyFrom(valid)
    duplicate.graph.node[2].output[0] = duplicate.graph.node[0].output[0]
    put("duplicate_output_name", duplicate.SerializeToString())
    return files


# --------------------------------------------------------------------------- large


def write_large_model(path: Path, tensor_elements: int, tensors: int, seed: int = 0) -> int:
    """A MatMul chain whose square weights sum to ``tensors * tensor_elements`` float32 values, saved with external data.

    Weights are generated and written one tensor at a time through onnx-ir's
    lazy tensors, so building the file needs one tensor's worth of memory,
    not the whole model's.  Returns the weight bytes.
    """
    import onnx_ir as ir

    side = int(np.sqrt(tensor_elements))
    x = ir.Value(name="input", shape=ir.Shape([1, side]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], name="large", opset_imports={"": 18})
    current = x
    for index in range(tensors):
        weight = ir.Value(name=f"w{index}", shape=ir.Shape([side, side]), type=ir.TensorType(ir.DataType.FLOAT))
        weight.const_value = ir.LazyTensor(
            lambda index=index: ir.tensor(
                np.random.default_rng(seed + index).standard_normal((side, side), np.float32) / np.float32(np.sqrt(side))
            ),
            dtype=ir.DataType.FLOAT,
            shape=ir.Shape([side, side]),
            name=f"w{index}",
        )
        graph.register_initializer(weight)
        node = ir.node("MatMul", [current, weight], name=f"matmul{index}", num_outputs=1)
        node.outputs[0].name = f"h{index}"
        graph.append(node)
        current = node.outputs[0]
    current.name = "output"
    current.shape = ir.Shape([1, side])
    current.type = ir.TensorType(ir.DataType.FLOAT)
    graph.outputs.append(current)
    model = ir.Model(graph, ir_version=10, producer_name="onnxprune-tests")
    ir.save(model, path, external_data=f"{path.name}.data")
    return tensors * side * side * 4
