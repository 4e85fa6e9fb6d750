"""Graph-level reliability: run-time inputs stay read, generated names stay unique, the interface stays as declared.

* A constant channel removed exactly is folded into the next layer's bias;
  a bias the caller feeds (a graph input, or an initializer also listed as
  one) must never be replaced by a constant, so that fold is skipped with a
  reason, and other constants that are graph inputs lock their group.
* Every node and value name a pass makes is unique in the whole model,
  subgraphs included: onnxruntime refuses two nodes of one name, and ONNX
  refuses a subgraph that redefines an outer name.
* Graph inputs and outputs keep their declared dims (symbolic names,
  unknown dims) through a run, whatever shape inference or onnxsim found.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import ir as irx
from onnxprune.options import ChannelOptions
from onnxprune.passes.channels import ChannelPruningPass, DeadChannelPass
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.simplify import simplify
from tests.conftest import feeds_for, run_onnx

RTOL, ATOL = 1e-4, 1e-5
FLOAT = TensorProto.FLOAT


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from onnxprune.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    return code, capsys.readouterr().err


def _arrays(seed: int) -> dict[str, np.ndarray]:
    """conv1 (3 -> 4 channels) whose filter 1 is zero with bias 1.5: after Relu a constant channel."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    w1[1], b1[1] = 0.0, 1.5
    return {"w1": w1, "b1": b1}


def _declare_bias(graph: onnx.GraphProto, array: np.ndarray, bias_kind: str) -> None:
    """``b2`` as a plain graph input, or as an initializer that is also listed as a graph input."""
    graph.input.append(helper.make_tensor_value_info("b2", FLOAT, list(array.shape)))
    if bias_kind == "initializer_input":
        graph.initializer.append(numpy_helper.from_array(array, "b2"))


def _run_time_bias_model(op: str, bias_kind: str) -> onnx.ModelProto:
    """The constant channel reaches a layer that could fold it (1x1 Conv, or Gemm), whose bias ``b2`` is fed at run time."""
    arrays = _arrays(0)
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    ]
    if op == "Conv":
        arrays["w2"] = rng.standard_normal((5, 4, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"))
        output = helper.make_tensor_value_info("y", FLOAT, [1, 5, 6, 6])
    else:
        arrays["w2"] = rng.standard_normal((4, 5)).astype(np.float32)
        nodes += [
            helper.make_node("GlobalAveragePool", ["r1"], ["pool"], name="pool"),
            helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "w2", "b2"], ["y"], name="fc"),
        ]
        output = helper.make_tensor_value_info("y", FLOAT, [1, 5])
    graph = helper.make_graph(
        nodes,
        "run_time_bias",
        [helper.make_tensor_value_info("x", FLOAT, [1, 3, 6, 6])],
        [output],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()],
    )
    _declare_bias(graph, rng.standard_normal(5).astype(np.float32), bias_kind)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds_with_bias(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs, ``b2`` included: a caller overriding an initializer-input must see its value used."""
    feeds = feeds_for(model, seed)
    feeds["b2"] = np.random.default_rng(100 + seed).standard_normal(5).astype(np.float32)
    return feeds


def _skip_reasons(report_path: Path, step: str) -> list[str]:
    report = json.loads(report_path.read_text())
    (found,) = [entry for entry in report["passes"] if entry["name"] == step]
    return [f"{skip['target']}: {skip['reason']}" for skip in found["skipped"]]


@pytest.mark.parametrize("bias_kind", ["graph_input", "initializer_input"])
@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_exact_dead_channel_removal_never_replaces_a_run_time_bias(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], op: str, bias_kind: str
) -> None:
    model = _run_time_bias_model(op, bias_kind)
    source, output, report = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, source)
    argv = ["prune", str(source), "-o", str(output), "--channel-ratio", "0", "--round-to", "1"]
    code, err = _cli([*argv, "--no-bench", "--no-simplify", "--report", str(report)], capsys)
    assert code == 0, err
    written = onnx.load(output)
    assert [value.name for value in written.graph.input] == [value.name for value in model.graph.input]
    assert any("b2" in node.input for node in written.graph.node), "the declared bias input is no longer read"
    for seed in (0, 1, 2):
        feeds = _feeds_with_bias(model, seed)
        np.testing.assert_allclose(run_onnx(written, feeds)[0], run_onnx(model, feeds)[0], rtol=RTOL, atol=ATOL)
    reasons = [reason for reason in _skip_reasons(report, "channels") if "no constant can be folded" in reason]
    assert reasons and "bias 'b2'" in reasons[0] and "callers may feed at run time" in reasons[0], reasons


def test_dead_channel_pass_stays_exact_with_a_run_time_bias() -> None:
    model = _run_time_bias_model("Conv", "graph_input")
    ir_model = irx.from_proto(model)
    result = DeadChannelPass(round_to=1)(ir_model)
    assert result.exact and not result.modified
    assert any("no constant can be folded" in skip.reason for skip in result.report.skipped)


def test_simplify_keeps_initializers_listed_as_graph_inputs() -> None:
    model = _run_time_bias_model("Conv", "initializer_input")
    simplified, warning = simplify(irx.from_proto(model))
    assert [value.name for value in simplified.graph.inputs] == ["x", "b2"]
    assert warning is None  # nothing to fold: onnxsim is not run, so nothing can drop 'b2'


def _bn_mul_model(listed: str) -> onnx.ModelProto:
    """conv1 -> BN -> Mul by a per-channel constant -> Relu -> conv2; ``listed`` names the initializer also listed as a graph input."""
    rng = np.random.default_rng(2)
    arrays = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "shift": rng.standard_normal(8).astype(np.float32),
        "mean": rng.standard_normal(8).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "gain": rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype(np.float32),
        "w2": rng.standard_normal((4, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Mul", ["bn", "gain"], ["scaled"], name="gain_mul"),
        helper.make_node("Relu", ["scaled"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "listed_constants",
        [helper.make_tensor_value_info("x", FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()],
    )
    graph.input.append(helper.make_tensor_value_info(listed, FLOAT, list(arrays[listed].shape)))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("listed", ["w1", "b1", "scale", "mean", "gain", "w2"])
def test_a_constant_listed_as_graph_input_is_never_sliced(listed: str) -> None:
    model = _bn_mul_model(listed)
    ir_model = irx.from_proto(model)
    result = ChannelPruningPass(ChannelOptions(ratio=0.5, round_to=1))(ir_model)
    pruned = irx.to_proto(ir_model)
    onnx.checker.check_model(pruned, full_check=True)
    before = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    after = {tensor.name: numpy_helper.to_array(tensor) for tensor in pruned.graph.initializer}
    np.testing.assert_array_equal(after[listed], before[listed])
    assert any(listed in node.input for node in pruned.graph.node)
    # Overriding the listed input with its declared shape still runs: the channels it meets were kept.
    feeds = {**feeds_for(model), listed: before[listed] * 2}
    assert run_onnx(pruned, feeds)[0].shape == (1, 4, 6, 6)
    reasons = [reason for group in result.plan.groups for reason in group.lock_reasons] + [skip.reason for skip in result.report.skipped]
    assert any(f"'{listed}'" in reason and "graph input" in reason for reason in reasons), reasons


# --------------------------------------------------------------------------- unique names


def _zero_conv_model(names: tuple[str, str], extra: list[onnx.NodeProto], batch: int | str = 1) -> onnx.ModelProto:
    """Two convs with all-zero weights (cleanup replaces each by its broadcast bias), named ``names``."""
    rng = np.random.default_rng(3)
    arrays = {
        "wa": np.zeros((4, 3, 1, 1), np.float32),
        "ba": rng.standard_normal(4).astype(np.float32),
        "wb": np.zeros((4, 3, 1, 1), np.float32),
        "bb": rng.standard_normal(4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["ca"], name=names[0]),
        helper.make_node("Relu", ["x"], ["rx"], name="relu_x"),
        helper.make_node("Conv", ["rx", "wb", "bb"], ["cb"], name=names[1]),
        *extra,
    ]
    outputs = [helper.make_tensor_value_info(name, FLOAT, [batch, 4, 5, 5]) for name in ("ca", "cb")]
    outputs += [helper.make_tensor_value_info(node.output[0], FLOAT, [batch, 3, 5, 5]) for node in extra]
    graph = helper.make_graph(
        nodes,
        "zero_convs",
        [helper.make_tensor_value_info("x", FLOAT, [batch, 3, 5, 5])],
        outputs,
        [numpy_helper.from_array(array, name) for name, array in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _assert_unique_names(model: onnx.ModelProto) -> None:
    nodes = [node.name for node in model.graph.node if node.name]
    assert len(nodes) == len(set(nodes)), sorted(nodes)
    defined = [value for node in model.graph.node for value in node.output] + [tensor.name for tensor in model.graph.initializer]
    assert len(defined) == len(set(defined)), sorted(defined)


@pytest.mark.parametrize(
    ("names", "extra", "batch"),
    [
        (("conv", "other"), [helper.make_node("Neg", ["x"], ["neg"], name="conv_zero_weight")], 1),
        (("", ""), [], 1),
        (("", ""), [], "N"),
        (("conv", "conv2"), [helper.make_node("Neg", ["x"], ["ca_fill"], name="n")], 1),
    ],
    ids=["derived_name_taken", "unnamed_nodes", "unnamed_nodes_symbolic_batch", "derived_value_taken"],
)
def test_cleanup_generates_unique_names(names: tuple[str, str], extra: list[onnx.NodeProto], batch: int | str) -> None:
    model = _zero_conv_model(names, extra, batch)
    ir_model = irx.from_proto(model)
    report = CleanupPass()(ir_model).report
    assert sum(change["action"] == "zero_weight_replaced" for change in report.changes) == 2
    cleaned = irx.to_proto(ir_model)
    onnx.checker.check_model(cleaned, full_check=True)
    _assert_unique_names(cleaned)
    feeds = feeds_for(model, shapes={"x": [2, 3, 5, 5]} if batch == "N" else None)
    for expected, actual in zip(run_onnx(model, feeds), run_onnx(cleaned, feeds)):
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def _with_subgraph_defining(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Add an If whose branches define a value called ``name`` (and a graph output reading the If)."""
    shape = [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim]
    then_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], [name], name="then_neg")], "then", [], [helper.make_tensor_value_info(name, FLOAT, shape)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["else_out"], name="else_abs")], "else", [], [helper.make_tensor_value_info("else_out", FLOAT, shape)]
    )
    model.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    model.graph.node.append(helper.make_node("If", ["flag"], ["branch"], name="branch_if", then_branch=then_branch, else_branch=else_branch))
    model.graph.output.append(helper.make_tensor_value_info("branch", FLOAT, shape))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_cleanup_names_avoid_names_defined_in_subgraphs() -> None:
    model = _with_subgraph_defining(_zero_conv_model(("conv", "conv2"), []), "ca_fill")
    ir_model = irx.from_proto(model)
    CleanupPass()(ir_model)
    cleaned = irx.to_proto(ir_model)
    onnx.checker.check_model(cleaned, full_check=True)
    feeds = feeds_for(model)
    for expected, actual in zip(run_onnx(model, feeds), run_onnx(cleaned, feeds)):
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_channel_fold_bias_name_avoids_names_defined_in_subgraphs() -> None:
    """A new bias for a layer that had none is named after the layer; a subgraph already defines that name."""
    model = _run_time_bias_model("Conv", "graph_input")
    conv2 = next(node for node in model.graph.node if node.name == "conv2")
    del conv2.input[2]
    del model.graph.input[1]
    model = _with_subgraph_defining(model, "conv2_bias")
    ir_model = irx.from_proto(model)
    result = DeadChannelPass(round_to=1)(ir_model)
    assert result.modified, [skip.reason for skip in result.report.skipped]
    pruned = irx.to_proto(ir_model)
    onnx.checker.check_model(pruned, full_check=True)
    for seed in (0, 1):
        feeds = feeds_for(model, seed)
        for expected, actual in zip(run_onnx(model, feeds), run_onnx(pruned, feeds)):
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- declared interface


def _symbolic_model() -> onnx.ModelProto:
    """Input ``['N', 3, 8, 8]``; outputs ``['N', 'classes']`` and ``['N', ?, 8, 8]`` (one dim unknown)."""
    rng = np.random.default_rng(4)
    arrays = {
        "w1": rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(16).astype(np.float32),
        "w2": rng.standard_normal((16, 16, 3, 3)).astype(np.float32),
        "w3": rng.standard_normal((4, 16, 1, 1)).astype(np.float32),
        "fc": rng.standard_normal((10, 16)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["side"], name="side_conv"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="head", transB=1),
    ]
    side = helper.make_tensor_value_info("side", FLOAT, ["N", None, 8, 8])
    graph = helper.make_graph(
        nodes,
        "symbolic_outputs",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", FLOAT, ["N", "classes"]), side],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _declared(values) -> list[tuple[str, int, list[str]]]:
    """Name, element type and dims (``'N'``, ``'8'``, ``'?'``) of declared graph inputs or outputs."""
    return [
        (
            value.name,
            value.type.tensor_type.elem_type,
            [dim.dim_param or (str(dim.dim_value) if dim.HasField("dim_value") else "?") for dim in value.type.tensor_type.shape.dim],
        )
        for value in values
    ]


@pytest.mark.parametrize(
    "options",
    [
        ["--channel-ratio", "0"],
        ["--channel-ratio", "0", "--no-simplify"],
        ["--channel-ratio", "0.5", "--round-to", "1"],
        ["--weight-sparsity", "0.5", "--bypass-auto", "1"],
    ],
    ids=["exact", "exact_unsimplified", "channels", "weights_and_bypass"],
)
def test_declared_input_and_output_dims_survive_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]) -> None:
    model = _symbolic_model()
    source, output = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(model, source)
    code, err = _cli(["prune", str(source), "-o", str(output), "--no-bench", "--no-validate", *options], capsys)
    assert code == 0, err
    written = onnx.load(output)
    assert _declared(written.graph.output) == _declared(model.graph.output)
    assert _declared(written.graph.input) == _declared(model.graph.input)
    feeds = feeds_for(model, shapes={"x": [3, 3, 8, 8]})
    assert run_onnx(written, feeds)[0].shape == (3, 10)
