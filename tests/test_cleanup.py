"""Cleanup after pruning: every removal is exact, and what cannot be removed is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.analysis.cost import model_cost
from onnxprune.options import WeightOptions
from onnxprune.passes.base import PassReport
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.passes.weights import WeightPruningPass
from tests.conftest import make_model as _make_model
from tests.conftest import run_onnx


def _clean(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    model = irx.from_proto(proto)
    report = CleanupPass()(model).report
    cleaned = irx.to_proto(model)
    onnx.checker.check_model(cleaned, full_check=True)
    return cleaned, report


def _assert_same_outputs(original: onnx.ModelProto, cleaned: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    assert [output.name for output in cleaned.graph.output] == [output.name for output in original.graph.output]
    for expected, actual in zip(run_onnx(original, feeds), run_onnx(cleaned, feeds)):
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        # Removing "+ 0", "* 1" or a zero weight changes no bit of a finite result.
        np.testing.assert_array_equal(actual, expected)


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _conv_net(bias: np.ndarray, weight_scale: float = 1.0, batch: int | str = "N") -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    return _make_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        {"w": (rng.standard_normal((6, 3, 3, 3)) * weight_scale).astype(np.float32), "b": bias},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 6, 5, 5])],
    )


def test_zero_conv_bias_is_dropped() -> None:
    original = _conv_net(np.zeros(6, dtype=np.float32))
    cleaned, report = _clean(original)
    (conv,) = [node for node in cleaned.graph.node if node.op_type == "Conv"]
    assert list(conv.input) == ["x", "w"]
    assert [tensor.name for tensor in cleaned.graph.initializer] == ["w"]
    assert report.changes == [{"action": "zero_bias_dropped", "node": "Conv 'conv'", "bias": "b"}]
    _assert_same_outputs(original, cleaned, {"x": _x((2, 3, 5, 5))})


def test_nonzero_conv_bias_is_kept() -> None:
    original = _conv_net(np.array([0, 0, 0, 1e-30, 0, 0], dtype=np.float32))
    cleaned, report = _clean(original)
    assert cleaned.SerializeToString() == irx.to_proto(irx.from_proto(original)).SerializeToString()
    assert not report.changes


def _gemm(bias: np.ndarray | None, opset: int = 17, weight: np.ndarray | None = None, **attributes) -> onnx.ModelProto:
    weight = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32) if weight is None else weight
    initializers = {"w": weight} if bias is None else {"w": weight, "c": bias}
    inputs = ["x", "w"] if bias is None else ["x", "w", "c"]
    return _make_model(
        [helper.make_node("Gemm", inputs, ["y"], name="fc", **attributes)],
        initializers,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        opset=opset,
    )


def test_zero_gemm_c_is_dropped_from_opset_11_and_kept_before() -> None:
    original = _gemm(np.zeros((1, 3), dtype=np.float32), beta=2.0)
    cleaned, _ = _clean(original)
    assert list(cleaned.graph.node[0].input) == ["x", "w"] and len(cleaned.graph.initializer) == 1
    _assert_same_outputs(original, cleaned, {"x": _x((4, 5))})

    old = _gemm(np.zeros((1, 3), dtype=np.float32), opset=9)
    kept, report = _clean(old)
    assert list(kept.graph.node[0].input) == ["x", "w", "c"]
    assert report.skipped[0].target == "Gemm 'fc'" and "opset 11" in report.skipped[0].reason


NEUTRAL_CASES = [
    ("Add", ["h", "k"], np.zeros((1, 4), np.float32)),
    ("Add", ["k", "h"], np.zeros((), np.float32)),
    ("Sub", ["h", "k"], np.zeros((4,), np.float32)),
    ("Mul", ["h", "k"], np.ones((3, 4), np.float32)),
    ("Mul", ["k", "h"], np.ones((1,), np.float32)),
    ("Div", ["h", "k"], np.ones((), np.float32)),
]


@pytest.mark.parametrize(
    ("op_type", "operands", "constant"), NEUTRAL_CASES, ids=[f"{case[0]}{case[1]}" for case in NEUTRAL_CASES]
)
def test_neutral_arithmetic_is_bypassed(op_type: str, operands: list[str], constant: np.ndarray) -> None:
    original = _make_model(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu"),
            helper.make_node(op_type, operands, ["a"], name="neutral"),
            helper.make_node("Tanh", ["a"], ["y"], name="tanh"),
        ],
        {"k": constant},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    cleaned, report = _clean(original)
    assert [node.op_type for node in cleaned.graph.node] == ["Relu", "Tanh"]
    assert not cleaned.graph.initializer
    assert report.changes[0]["action"] == "neutral_bypassed"
    assert report.summary["nodes_before"] == 3 and report.summary["nodes_after"] == 2
    _assert_same_outputs(original, cleaned, {"x": _x((3, 4))})


@pytest.mark.parametrize(
    ("op_type", "operands", "constant"),
    [
        ("Sub", ["k", "h"], np.zeros((), np.float32)),  # 0 - x is -x
        ("Div", ["k", "h"], np.ones((), np.float32)),  # 1 / x
        ("Add", ["h", "k"], np.array([0, 0, 0, 1e-7], np.float32)),
        ("Mul", ["h", "k"], np.zeros((), np.float32)),
    ],
)
def test_non_neutral_arithmetic_is_left_alone(op_type: str, operands: list[str], constant: np.ndarray) -> None:
    original = _make_model(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node(op_type, operands, ["y"])],
        {"k": constant},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    cleaned, report = _clean(original)
    assert len(cleaned.graph.node) == 2 and not report.changes


def test_broadcasting_neutral_constant_is_kept_with_a_reason() -> None:
    original = _make_model(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Add", ["h", "k"], ["y"], name="widen")],
        {"k": np.zeros((2, 3, 4), np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
    )
    cleaned, report = _clean(original)
    assert len(cleaned.graph.node) == 2
    assert report.skipped[0].target == "Add 'widen'" and "rank" in report.skipped[0].reason
    _assert_same_outputs(original, cleaned, {"x": _x((3, 4))})


def _bypass_expected(data_shape: list[int], constant_shape: list[int], symbolic_first: bool) -> bool:
    """Bypass is safe when the result keeps x's shape; a symbolic dim facing a constant dim > 1 might be 1."""
    if np.broadcast_shapes(tuple(data_shape), tuple(constant_shape)) != tuple(data_shape):
        return False
    facing = len(constant_shape) - len(data_shape)
    return not (symbolic_first and data_shape and facing >= 0 and constant_shape[facing] != 1)


@settings(max_examples=40, deadline=None)
@given(
    data_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    constant_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    op_type=st.sampled_from(["Add", "Sub", "Mul", "Div"]),
    symbolic_first=st.booleans(),
)
def test_neutral_bypass_never_changes_result_shape_or_values(
    data_shape: list[int], constant_shape: list[int], op_type: str, symbolic_first: bool
) -> None:
    try:
        result_shape = np.broadcast_shapes(tuple(data_shape), tuple(constant_shape))
    except ValueError:
        return  # shapes that do not broadcast make no valid model
    neutral = np.zeros if op_type in ("Add", "Sub") else np.ones
    declared = [("B" if symbolic_first and index == 0 else dim) for index, dim in enumerate(data_shape)]
    original = _make_model(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node(op_type, ["h", "k"], ["y"], name="neutral")],
        {"k": neutral(constant_shape, dtype=np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, declared)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{axis}" for axis in range(len(result_shape))])],
    )
    cleaned, report = _clean(original)
    bypassed = len(cleaned.graph.node) == 1
    assert bypassed == _bypass_expected(data_shape, constant_shape, symbolic_first)
    assert bypassed or len(report.skipped) == 1
    _assert_same_outputs(original, cleaned, {"x": _x(tuple(data_shape))})


def test_bypass_feeding_a_graph_output_keeps_the_output_name() -> None:
    original = _make_model(
        [helper.make_node("Relu", ["x"], ["h"], name="relu"), helper.make_node("Mul", ["h", "one"], ["y"], name="mul")],
        {"one": np.ones((), np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    cleaned, _ = _clean(original)
    assert [(node.op_type, list(node.output)) for node in cleaned.graph.node] == [("Relu", ["y"])]
    _assert_same_outputs(original, cleaned, {"x": _x((2, 3))})


@pytest.mark.parametrize("second_output", [False, True], ids=["from-input", "already-output"])
def test_bypass_that_would_rename_an_input_or_duplicate_an_output_is_declined(second_output: bool) -> None:
    nodes = [helper.make_node("Add", ["x", "zero"], ["y"], name="add")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    if second_output:
        nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Add", ["h", "zero"], ["y"], name="add")]
        outputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 3]))
    original = _make_model(
        nodes,
        {"zero": np.zeros((), np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        outputs,
    )
    cleaned, report = _clean(original)
    assert len(cleaned.graph.node) == len(nodes)
    assert report.skipped[0].target == "Add 'add'"
    assert ("already a graph output" if second_output else "graph input") in report.skipped[0].reason
    _assert_same_outputs(original, cleaned, {"x": _x((2, 3))})


@pytest.mark.parametrize("batch", [2, "N"], ids=["static", "symbolic-batch"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_all_zero_conv_becomes_its_broadcast_bias(batch: int | str, with_bias: bool) -> None:
    bias = np.arange(6, dtype=np.float32) - 2.5 if with_bias else np.zeros(6, np.float32)
    original = _conv_net(bias, weight_scale=0.0, batch=batch)
    cleaned, report = _clean(original)
    ops = [node.op_type for node in cleaned.graph.node]
    assert "Conv" not in ops and "Expand" in ops
    assert ("Shape" in ops) == (batch == "N")
    assert report.changes[0]["action"] == "zero_weight_replaced"
    assert "w" not in {tensor.name for tensor in cleaned.graph.initializer}
    if batch == 2:  # the cost model counts MACs on static shapes only
        assert model_cost(irx.from_proto(cleaned)).macs == 0 < model_cost(irx.from_proto(original)).macs
    for rows in ([2] if batch == 2 else [1, 3]):
        _assert_same_outputs(original, cleaned, {"x": _x((rows, 3, 5, 5), seed=rows)})


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_all_zero_gemm_becomes_beta_times_c(beta: float) -> None:
    original = _gemm(np.arange(3, dtype=np.float32) + 1, weight=np.zeros((5, 3), np.float32), beta=beta, alpha=3.0)
    cleaned, _ = _clean(original)
    assert "Gemm" not in [node.op_type for node in cleaned.graph.node]
    _assert_same_outputs(original, cleaned, {"x": _x((4, 5))})


@pytest.mark.parametrize("weight_first", [False, True], ids=["x@W", "W@x"])
def test_all_zero_matmul_becomes_zeros_of_the_output_shape(weight_first: bool) -> None:
    operands = ["w", "x"] if weight_first else ["x", "w"]
    # W[2, 5] @ x[N, 5, 3] -> [N, 2, 3];  x[N, 5, 3] @ W[3, 2] -> [N, 5, 2]
    weight_shape, out_shape = ((2, 5), ["N", 2, 3]) if weight_first else ((3, 2), ["N", 5, 2])
    data_shape = ["N", 5, 3]
    original = _make_model(
        [helper.make_node("MatMul", operands, ["y"], name="mm")],
        {"w": np.zeros(weight_shape, np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, data_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    cleaned, _ = _clean(original)
    assert "MatMul" not in [node.op_type for node in cleaned.graph.node]
    assert [output.name for output in cleaned.graph.output] == ["y"]
    for rows in (1, 4):
        _assert_same_outputs(original, cleaned, {"x": _x((rows, 5, 3), seed=rows)})


def test_all_zero_conv_transpose_becomes_its_broadcast_bias() -> None:
    original = _make_model(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], name="up")],
        {"w": np.zeros((3, 2, 2, 2), np.float32), "b": np.array([0.5, -1.0], np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])],
    )
    cleaned, _ = _clean(original)
    assert "ConvTranspose" not in [node.op_type for node in cleaned.graph.node]
    _assert_same_outputs(original, cleaned, {"x": _x((2, 3, 4, 4))})


def test_all_zero_conv_with_symbolic_spatial_dims_is_kept_with_a_reason() -> None:
    original = _make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        {"w": np.zeros((2, 3, 1, 1), np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "H", "W"])],
    )
    cleaned, report = _clean(original)
    assert [node.op_type for node in cleaned.graph.node] == ["Conv"]
    assert report.skipped[0].target == "Conv 'conv'"
    assert "symbolic and not copied from the input" in report.skipped[0].reason


def test_dead_nodes_and_initializers_are_removed() -> None:
    original = _make_model(
        [
            helper.make_node("Relu", ["x"], ["y"], name="live"),
            helper.make_node("MatMul", ["x", "unused_w"], ["dead"], name="dead"),
        ],
        {"unused_w": np.ones((3, 3), np.float32), "orphan": np.ones(2, np.float32)},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    cleaned, report = _clean(original)
    assert [node.name for node in cleaned.graph.node] == ["live"] and not cleaned.graph.initializer
    summary = report.summary
    assert (summary["nodes_before"], summary["nodes_after"]) == (2, 1)
    assert (summary["initializers_before"], summary["initializers_after"]) == (2, 0)


def test_clean_model_is_reported_unmodified() -> None:
    model = irx.from_proto(_conv_net(np.ones(6, np.float32)))
    assert not CleanupPass()(model).modified


def test_subgraphs_are_reported_as_not_cleaned() -> None:
    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "zero"], ["inner"])],
        "branch",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.zeros(2, np.float32), "zero")],
    )
    original = _make_model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="choose")],
        {},
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    _, report = _clean(original)
    assert {skip.target for skip in report.skipped} == {"If 'choose'"}
    assert all("main graph only" in skip.reason for skip in report.skipped)


def test_cleanup_after_emptying_weights_is_exact_on_sample_models(sample_model: Path) -> None:
    model = irx.load(sample_model)
    feeds = runtime.random_inputs(runtime.input_specs(model), seed=1)
    # High global sparsity with allow_empty wipes the layers whose weights are all small.
    WeightPruningPass(WeightOptions(sparsity=0.95, scope="global", allow_empty=True))(model)
    pruned = irx.to_proto(model)
    CleanupPass()(model)
    cleaned = irx.to_proto(model)
    onnx.checker.check_model(cleaned, full_check=True)
    _assert_same_outputs(pruned, cleaned, feeds)
