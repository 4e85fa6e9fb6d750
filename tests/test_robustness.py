"""Real-world and hostile models: onnxprune never crashes on them and never writes a broken model.

Every model goes through the three commands a build step uses (``inspect``,
``validate``, ``prune`` with all pruning families on).  A refusal must be exit
code 2 with one line that says why -- and not the command line's last-resort
"cannot process this model" line, which means some code path crashed -- and
it must leave no output file.  A success must write a model that passes the
full checker, runs in onnxruntime and keeps the original's interface.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from onnxprune import ir as irx
from onnxprune.cli import main
from tests import hostile_models as hm
from tests.conftest import REPO, feeds_for, run_onnx

ACCEPT_DRIFT = ["--min-cosine", "-1"]
"""Replaces the default quality floor where a test prunes random weights for its mechanics, not its accuracy."""
# Every family at once on random weights: these tests judge robustness, not accuracy, so any drift is accepted.
ALL_FAMILIES = ["--weight-sparsity", "0.5", "--bypass-auto", "1", "--no-bench", "--channel-ratio", "0.5", *ACCEPT_DRIFT]
EXACT_ONLY = ["--channel-ratio", "0", "--no-bench"]
"""Only exact steps: simplification, dead-channel removal, cleanup."""
CRASH_MARKER = "cannot process this model"
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear", "MatMulInteger"}


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in-process; usage errors (SystemExit) count as their exit code."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, output: Path | None = None) -> None:
    """Exit 2, one line naming the problem, no traceback, no crash, nothing written."""
    assert code == 2, err
    # Progress lines may precede it; the error itself is one line, the last.
    errors = [line for line in err.splitlines() if line.startswith("onnxprune: error:")]
    assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    assert "Traceback" not in err
    assert CRASH_MARKER not in err, f"a code path crashed instead of refusing: {err}"
    if output is not None:
        assert not output.exists()
        assert not list(output.parent.glob(f".{output.name}.*")), "temporary file left behind"


def interface(model: onnx.ModelProto) -> list[tuple[str, str, int, list]]:
    """Names, element types and declared dims of the graph's real inputs and its outputs."""
    initializers = {init.name for init in model.graph.initializer}

    def dims(value: onnx.ValueInfoProto) -> list:
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    rows = [("input", value.name, value.type.tensor_type.elem_type, dims(value)) for value in model.graph.input if value.name not in initializers]
    return rows + [("output", value.name, value.type.tensor_type.elem_type, dims(value)) for value in model.graph.output]


def assert_valid_output(path: Path, original: onnx.ModelProto, shapes: dict[str, list[int]] | None = None) -> onnx.ModelProto:
    """The written model passes the full checker, keeps the interface and runs with output shapes unchanged."""
    onnx.checker.check_model(str(path), full_check=True)
    written = onnx.load(str(path))
    assert interface(written) == interface(original)
    feeds = feeds_for(original, shapes=shapes)
    expected = run_onnx(original, feeds)
    actual = run_onnx(path, feeds)
    assert [a.shape for a in actual] == [e.shape for e in expected]
    assert all(np.isfinite(a).all() for a in actual if np.issubdtype(a.dtype, np.floating))
    return written


def prune_model(
    model: onnx.ModelProto, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]
) -> tuple[int, str, Path, dict]:
    """Save ``model``, prune it through the CLI; return exit code, stderr, output path and JSON report."""
    source, output, report = tmp_path / "model.onnx", tmp_path / "pruned.onnx", tmp_path / "report.json"
    onnx.save(model, str(source))
    code, _, err = cli(["prune", str(source), "-o", str(output), "--report", str(report), "--json", *options], capsys)
    return code, err, output, json.loads(report.read_text()) if report.exists() else {}


def pass_report(report: dict, name: str) -> dict:
    return next(step for step in report["passes"] if step["name"] == name)


# --------------------------------------------------------------------------- not a model


@pytest.fixture
def not_models(tmp_path: Path) -> dict[str, Path]:
    directory = tmp_path / "bad"
    directory.mkdir()
    return hm.write_not_models(directory, hm.conv_chain())


NOT_MODELS = [
    "tensor_proto",
    "graph_proto",
    "node_proto",
    "text_file",
    "truncated_tail",
    "dangling_input",
    "unknown_op",
    "no_opset",
    "cycle",
    "duplicate_output_name",
]


@pytest.mark.parametrize("kind", NOT_MODELS)
@pytest.mark.parametrize("command", ["inspect", "validate", "bench", "prune"])
def test_not_a_model_is_refused_with_exit_2(
    kind: str, command: str, not_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = str(not_models[kind])
    good = tmp_path / "good.onnx"
    onnx.save(hm.conv_chain(), str(good))
    output = tmp_path / "out.onnx"
    argv = {
        "inspect": ["inspect", bad],
        "validate": ["validate", bad, str(good)],
        "bench": ["bench", bad, "--runs", "1", "--warmup", "0"],
        "prune": ["prune", bad, "-o", str(output), *ALL_FAMILIES],
    }[command]
    code, _, err = cli(argv, capsys)
    assert_refused(code, err, output)
    assert bad in err  # the message names the file


def test_model_onnxruntime_cannot_run_is_refused_by_commands_that_run_it(
    not_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conv weight whose input channels do not match passes onnx.checker (Conv inference does not compare
    channels) but onnxruntime rejects it: inspect still describes it, everything that runs it says why it can't."""
    bad = str(not_models["wrong_weight_shape"])
    good = tmp_path / "good.onnx"
    onnx.save(hm.conv_chain(), str(good))
    code, _, err = cli(["inspect", bad], capsys)
    assert code == 0, err
    output = tmp_path / "out.onnx"
    for argv in (["validate", bad, str(good)], ["bench", bad, "--runs", "1", "--warmup", "0"], ["prune", bad, "-o", str(output), *ALL_FAMILIES]):
        code, _, err = cli(argv, capsys)
        assert_refused(code, err, output)
        assert "onnxruntime" in err and "channels" in err
    # As the candidate, it is a failed validation (exit 1), not bad input.
    code, out, err = cli(["validate", str(good), bad, "--json"], capsys)
    assert code == 1, err
    assert any("onnxruntime" in problem for problem in json.loads(out)["problems"])


def test_candidate_failing_the_checker_is_a_validation_failure(not_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken *candidate* is what validate exists to catch: exit 1 with the checker's reason, not a refusal."""
    good = tmp_path / "good.onnx"
    onnx.save(hm.conv_chain(), str(good))
    code, out, err = cli(["validate", str(good), str(not_models["dangling_input"]), "--json"], capsys)
    assert code == 1, err
    result = json.loads(out)
    assert not result["passed"] and result["checker_error"]


# --------------------------------------------------------------------------- unusual but valid

VALID_BUILDERS = {
    "constant_node_weights": hm.constant_node_weights,
    "constant_of_shape_weights": hm.constant_of_shape_weights,
    "weights_as_graph_inputs": hm.weights_as_graph_inputs,
    "shared_initializer": hm.shared_initializer,
    "float16_model": hm.float16_model,
    "float16_weights_cast": hm.float16_weights_cast,
    "multiple_inputs_outputs": hm.multiple_inputs_outputs,
    "sum_residual": hm.sum_residual,
    "nhwc_transposed_convs": hm.nhwc_transposed_convs,
    "if_model": hm.if_model,
    "loop_model": hm.loop_model,
    "scan_model": hm.scan_model,
    "qlinearconv_model": hm.qlinearconv_model,
    "convinteger_model": hm.convinteger_model,
    "qdq_weights_model": hm.qdq_weights_model,
}


@pytest.mark.parametrize("name", sorted(VALID_BUILDERS))
def test_inspect_and_validate_accept_unusual_models(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = VALID_BUILDERS[name]()
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    code, out, err = cli(["inspect", str(path), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    nodes = sum(1 for _ in irx.iter_nodes(irx.from_proto(model)))
    assert data["nodes"] == nodes  # subgraph nodes are counted too
    code, out, err = cli(["validate", str(path), str(path), "--json"], capsys)
    assert code == 0, err
    assert all(output["max_abs_diff"] == 0.0 for output in json.loads(out)["outputs"])


@pytest.mark.parametrize("name", sorted(VALID_BUILDERS))
def test_prune_with_all_families_writes_a_valid_model(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = VALID_BUILDERS[name]()
    code, err, output, report = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    assert_valid_output(output, model)
    assert report["lossy"] is True or all(not step["changes"] for step in report["passes"])
    for step in report["passes"]:
        assert all(skip["reason"].strip() for skip in step["skipped"]), f"{step['name']}: empty skip reason"


@pytest.mark.parametrize("name", sorted(VALID_BUILDERS))
def test_prune_with_exact_steps_only_keeps_outputs(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Simplification and cleanup alone must not change what the model computes."""
    model = VALID_BUILDERS[name]()
    code, err, output, report = prune_model(model, tmp_path, capsys, EXACT_ONLY)
    assert code == 0, err
    assert report["lossy"] is False
    assert_valid_output(output, model)
    for seed in range(2):
        feeds = feeds_for(model, seed)
        for expected, actual in zip(run_onnx(model, feeds), run_onnx(output, feeds)):
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_weights_in_constant_nodes_are_pruned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Paddle-style weights (no initializers at all) are reached through simplification."""
    code, err, output, report = prune_model(hm.constant_node_weights(), tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    changed = {change["tensor"] for change in pass_report(report, "weights")["changes"]}
    assert {"w1", "w2", "w3", "fc_w"} <= changed
    weights = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(output)).graph.initializer}
    assert np.mean(weights["w3"] == 0) == pytest.approx(0.5, abs=1 / weights["w3"].size)


def test_weights_in_constant_nodes_without_simplify_are_pruned_or_skipped_with_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.constant_node_weights()
    code, err, output, report = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, "--no-simplify", *EXACT_ONLY])
    assert code == 0, err
    weights = pass_report(report, "weights")
    handled = {change["tensor"] for change in weights["changes"]} | {skip["target"] for skip in weights["skipped"]}
    assert {"w1", "w2", "w3", "fc_w"} <= {name for name in handled if name in {"w1", "w2", "w3", "fc_w"}} | {
        name for name in ("w1", "w2", "w3", "fc_w") if any(name in target for target in handled)
    }
    assert_valid_output(output, model)


def test_computed_weights_are_folded_then_pruned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reshape*Mul weights and a ConstantOfShape bias become initializers that the weight pass can see."""
    model = hm.constant_of_shape_weights()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    written = onnx.load(str(output))
    conv1 = next(node for node in written.graph.node if node.name == "conv1")
    weight = next(init for init in written.graph.initializer if init.name == conv1.input[1])
    assert np.mean(numpy_helper.to_array(weight) == 0) == pytest.approx(0.5, abs=1 / 216)
    assert not any(node.op_type in ("ConstantOfShape", "Reshape", "Mul") for node in written.graph.node)


def test_weights_listed_as_graph_inputs_are_not_pruned_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without simplification the old-IR weights stay overridable inputs: skipped with a reason, values untouched."""
    model = hm.weights_as_graph_inputs()
    code, err, output, report = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, "--no-simplify", *EXACT_ONLY])
    assert code == 0, err
    weights = pass_report(report, "weights")
    assert not weights["changes"]
    assert {"w1", "w2", "w3", "fc_w"} <= {skip["target"] for skip in weights["skipped"]}
    assert all("graph input" in skip["reason"] for skip in weights["skipped"])
    written = onnx.load(str(output))
    assert written.ir_version == 3 and [value.name for value in written.graph.input] == [value.name for value in model.graph.input]
    original = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for init in written.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(init), original[init.name])


def test_shared_initializer_stays_shared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.shared_initializer()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    written = onnx.load(str(output))
    convs = {node.name: node for node in written.graph.node if node.op_type == "Conv"}
    assert convs["conv_a"].input[1] == convs["conv_b"].input[1]
    assert convs["conv_a"].input[2] == convs["conv_b"].input[2]
    assert len(written.graph.initializer) == len(model.graph.initializer)
    assert_valid_output(output, model)


def test_shared_initializer_survives_all_families(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever is pruned, the convs that shared a weight still agree on its shape (checked by running it)."""
    model = hm.shared_initializer()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    written = assert_valid_output(output, model)
    weights = {init.name: init for init in written.graph.initializer}
    shapes = {tuple(weights[node.input[1]].dims) for node in written.graph.node if node.name in ("conv_a", "conv_b")}
    assert len(shapes) <= 1


def test_float16_model_stays_float16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.float16_model()
    code, err, output, report = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    written = assert_valid_output(output, model)
    assert {init.data_type for init in written.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert pass_report(report, "weights")["changes"]


def test_float16_weights_behind_cast_are_pruned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.float16_weights_cast()
    code, err, output, report = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    assert_valid_output(output, model)
    assert pass_report(report, "weights")["changes"]


def test_symbolic_height_and_width_need_input_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.symbolic_dims()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert_refused(code, err, output)
    assert "height" in err and "--input-shape" in err
    code, err, output, _ = prune_model(model, tmp_path, capsys, [*ALL_FAMILIES, "--input-shape", "input=2,3,12,12"])
    assert code == 0, err
    written = assert_valid_output(output, model, shapes={"input": [2, 3, 12, 12]})
    assert interface(written)[0][3] == ["batch", 3, "height", "width"]
    # The pruned model still takes other sizes, as the original did.
    feeds = feeds_for(model, shapes={"input": [3, 3, 20, 16]})
    assert run_onnx(output, feeds)[0].shape == (3, 10)


def test_symbolic_batch_alone_is_set_to_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.conv_chain()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    assert_valid_output(output, model)


def test_multiple_inputs_and_outputs_keep_names_and_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.multiple_inputs_outputs()
    code, err, output, report = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    written = assert_valid_output(output, model)
    assert [value.name for value in written.graph.output] == ["head", "side", "features"]
    assert len(report["validation"]["outputs"]) == 3


@pytest.mark.parametrize("opset", range(9, onnx.defs.onnx_opset_version() + 1))
def test_every_opset_from_9_to_newest(opset: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.conv_chain(opset=opset)
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    if code == 2:
        # The only acceptable refusal: onnxruntime does not implement this opset yet -- and it must say so.
        assert "opset" in err.lower() and CRASH_MARKER not in err, err
        assert not output.exists()
        return
    assert code == 0, err
    written = assert_valid_output(output, model)
    assert written.opset_import[0].version == opset


def test_newest_opset_supported_by_onnxruntime_prunes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """At least opset 9..21 must fully work: those are what exporters in use write today."""
    for opset in (9, 13, 17, 21):
        code, err, _, _ = prune_model(hm.conv_chain(opset=opset), tmp_path, capsys, ALL_FAMILIES)
        assert code == 0, f"opset {opset}: {err}"


def test_sum_residual_merges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.sum_residual()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    written = assert_valid_output(output, model)
    # Every remaining Sum still adds tensors of one shape (channels pruned together or not at all).
    inferred = onnx.shape_inference.infer_shapes(written, strict_mode=True)
    shapes = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in list(inferred.graph.value_info) + list(inferred.graph.input)}
    for node in written.graph.node:
        if node.op_type == "Sum":
            assert len({tuple(shapes[name]) for name in node.input}) == 1


def test_nhwc_transposed_convs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.nhwc_transposed_convs()
    code, err, output, report = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    assert_valid_output(output, model)
    channels = pass_report(report, "channels")
    assert channels["changes"] or channels["skipped"], "channel pass neither pruned nor explained the NHWC convs"


# --------------------------------------------------------------------------- control flow

SUBGRAPH_MODELS = {"if_model": hm.if_model, "loop_model": hm.loop_model, "scan_model": hm.scan_model}


def _subgraphs(model: onnx.ModelProto) -> dict[str, onnx.GraphProto]:
    return {
        f"{node.name}.{attribute.name}": attribute.g
        for node in model.graph.node
        for attribute in node.attribute
        if attribute.type == onnx.AttributeProto.GRAPH
    }


def _outer_names_read_inside(graph: onnx.GraphProto) -> set[str]:
    local = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    local |= {output for node in graph.node for output in node.output}
    return {name for node in graph.node for name in node.input if name and name not in local}


@pytest.mark.parametrize("name", sorted(SUBGRAPH_MODELS))
def test_values_read_by_subgraphs_are_not_pruned(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = SUBGRAPH_MODELS[name]()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    written = assert_valid_output(output, model)
    original_weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    written_weights = {init.name: numpy_helper.to_array(init) for init in written.graph.initializer}
    for key, body in _subgraphs(model).items():
        written_body = _subgraphs(written)[key]
        # The bodies are untouched (no pass rewrites them) ...
        assert [(n.op_type, list(n.input), list(n.output)) for n in written_body.node] == [
            (n.op_type, list(n.input), list(n.output)) for n in body.node
        ]
        for init in body.initializer:
            np.testing.assert_array_equal(numpy_helper.to_array(next(i for i in written_body.initializer if i.name == init.name)), numpy_helper.to_array(init))
        # ... so every outer weight they read keeps its exact value.
        for outer in _outer_names_read_inside(body) & set(original_weights):
            np.testing.assert_array_equal(written_weights[outer], original_weights[outer])


def test_if_model_runs_both_branches_after_pruning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.if_model()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    for flag in (True, False):
        feeds = {"input": np.random.default_rng(1).standard_normal((1, 3, 10, 10)).astype(np.float32), "flag": np.array(flag)}
        assert run_onnx(output, feeds)[0].shape == (1, 8, 10, 10)


# --------------------------------------------------------------------------- quantized

QUANTIZED_MODELS = {"qlinearconv_model": hm.qlinearconv_model, "convinteger_model": hm.convinteger_model, "qdq_weights_model": hm.qdq_weights_model}


def _quantized_part(model: onnx.ModelProto) -> list:
    """Each quantized node as (op, its constant inputs' dtypes, shapes and bytes, attributes).

    Constants are compared by value, not name: simplification may merge
    identical zero points into one initializer, which changes nothing.
    """
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    rows = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        inputs = [
            (str(constants[name].dtype), constants[name].shape, constants[name].tobytes()) if name in constants else "activation"
            for name in node.input
        ]
        rows.append((node.op_type, inputs, sorted(onnx.helper.printable_attribute(a) for a in node.attribute)))
    return sorted(rows, key=repr)


@pytest.mark.parametrize("name", sorted(QUANTIZED_MODELS))
def test_quantized_parts_are_left_intact(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = QUANTIZED_MODELS[name]()
    code, err, output, _ = prune_model(model, tmp_path, capsys, ALL_FAMILIES)
    assert code == 0, err
    written = assert_valid_output(output, model)
    assert _quantized_part(written) == _quantized_part(model)


def test_dequantized_weights_are_skipped_not_pruned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Float convs fed by DequantizeLinear weights keep their int8 weights; the weight pass says it skipped them."""
    model = hm.qdq_weights_model()
    code, err, output, report = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    weights = pass_report(report, "weights")
    assert not weights["changes"]
    assert {skip["target"] for skip in weights["skipped"]} >= {"Conv 'conv1'", "Conv 'conv2'"}
    written = onnx.load(str(output))
    assert sum(node.op_type == "DequantizeLinear" for node in written.graph.node) == 3


def test_dequantized_weight_skip_reason_says_quantized(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.qdq_weights_model()
    code, err, _, report = prune_model(model, tmp_path, capsys, ["--weight-sparsity", "0.5", *ACCEPT_DRIFT, *EXACT_ONLY])
    assert code == 0, err
    reasons = [skip["reason"] for skip in pass_report(report, "weights")["skipped"]]
    assert reasons and all("quantiz" in reason.lower() for reason in reasons)


# --------------------------------------------------------------------------- sample models


def test_sample_model_survives_all_families(sample_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "pruned.onnx"
    options = [*ALL_FAMILIES, "--bypass-auto", "1"]
    if sample_model.stem == "digits_cnn":
        options += ["--calibration", str(REPO / "models" / "digits_test.npz")]
    code, _, err = cli(["prune", str(sample_model), "-o", str(output), *options], capsys)
    assert code == 0, err
    assert_valid_output(output, onnx.load(str(sample_model)))


# --------------------------------------------------------------------------- files


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(hm.conv_chain(), str(path))
    return path


def test_interrupted_save_leaves_no_partial_output(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in the middle of writing: OUT keeps its old content (here: absent), no temporary file stays."""
    output = tmp_path / "pruned.onnx"
    previous = tmp_path / "previous.onnx"
    real_save = ir.save

    def interrupted_save(model: ir.Model, path: str | os.PathLike, **kwargs: object) -> None:
        real_save(model, path, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(ir, "save", interrupted_save)
    code, _, err = cli(["prune", str(model_file), "-o", str(output), *EXACT_ONLY], capsys)
    assert code == 130 and "nothing was written" in err
    assert not output.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]

    # An existing OUT survives an interrupted overwrite unchanged.
    onnx.save(hm.conv_chain(opset=13), str(previous))
    before = previous.read_bytes()
    code, _, _ = cli(["prune", str(model_file), "-o", str(previous), *EXACT_ONLY], capsys)
    assert code == 130 and previous.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "previous.onnx"]


def test_failed_save_leaves_no_partial_output(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A write error (disk full) is a one-line exit 2, no partial file."""
    output = tmp_path / "pruned.onnx"

    def disk_full(model: ir.Model, path: str | os.PathLike, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x08\x07")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ir, "save", disk_full)
    code, _, err = cli(["prune", str(model_file), "-o", str(output), *EXACT_ONLY], capsys)
    assert_refused(code, err, output)
    assert "No space left" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_output_equal_to_input_is_refused(spelling: str, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = model_file.read_bytes()
    if spelling == "same":
        output = model_file
    elif spelling == "dotted":
        (tmp_path / "sub").mkdir()
        output = tmp_path / "sub" / ".." / model_file.name
    else:
        output = tmp_path / "link.onnx"
        output.symlink_to(model_file)
    code, _, err = cli(["prune", str(model_file), "-o", str(output), *ALL_FAMILIES], capsys)
    assert_refused(code, err)
    assert "input" in err
    assert model_file.read_bytes() == before


def _external_data_model(directory: Path, data_name: str = "model.onnx.data") -> tuple[Path, Path]:
    model = irx.from_proto(hm.conv_chain())
    path = directory / "model.onnx"
    ir.save(model, path, external_data=data_name, size_threshold_bytes=0)
    return path, directory / data_name


@pytest.mark.parametrize("options", [EXACT_ONLY, ALL_FAMILIES], ids=["exact", "all_families"])
def test_output_equal_to_input_external_data_is_refused(options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, data = _external_data_model(tmp_path)
    before = data.read_bytes()
    code, _, err = cli(["prune", str(path), "-o", str(data), *options], capsys)
    assert_refused(code, err)
    assert data.read_bytes() == before


@pytest.mark.parametrize("options", [EXACT_ONLY, ALL_FAMILIES], ids=["exact", "all_families"])
def test_output_whose_data_file_is_the_inputs_data_is_refused(options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """model.onnx keeps its weights in other.onnx.data; writing other.onnx (with external data) would overwrite them."""
    path, data = _external_data_model(tmp_path, "other.onnx.data")
    before = data.read_bytes()
    output = tmp_path / "other.onnx"
    code, _, err = cli(["prune", str(path), "-o", str(output), "--external-data", *options], capsys)
    assert_refused(code, err, output)
    assert data.read_bytes() == before


def test_external_data_input_prunes_to_external_data_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, data = _external_data_model(tmp_path)
    before = data.read_bytes()
    output = tmp_path / "out" / "pruned.onnx"
    output.parent.mkdir()
    code, _, err = cli(["prune", str(path), "-o", str(output), *ALL_FAMILIES], capsys)
    assert code == 0, err
    assert data.read_bytes() == before
    (written_data,) = irx.owned_data_files(output)
    assert written_data.parent == output.parent.resolve()
    assert_valid_output(output, onnx.load(str(path)))


def test_output_under_a_regular_file_is_refused(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A parent 'directory' that is a file cannot be written into, even by root."""
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("x")
    output = blocker / "pruned.onnx"
    code, _, err = cli(["prune", str(model_file), "-o", str(output), *ALL_FAMILIES], capsys)
    assert_refused(code, err)
    assert "not_a_directory" in err


def test_output_in_missing_directory_is_refused(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "missing" / "pruned.onnx"
    code, _, err = cli(["prune", str(model_file), "-o", str(output), *ALL_FAMILIES], capsys)
    assert_refused(code, err)
    assert not output.parent.exists()


def test_read_only_output_directory_is_refused(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory nobody may write into, root included.

    Tests often run as root, for whom permission bits do not stop writes, so
    as root the directory is made immutable (``chattr +i``), which the kernel
    enforces for root too; as any other user, ``chmod 555`` does the same.
    """
    locked = tmp_path / "locked"
    locked.mkdir()
    root = os.geteuid() == 0
    if root:
        made = subprocess.run(["chattr", "+i", str(locked)], capture_output=True, text=True, check=False) if shutil.which("chattr") else None
        if made is None or made.returncode != 0:
            why = made.stderr.strip() if made else "no chattr"
            pytest.skip(f"running as root and cannot make a directory immutable here ({why}), so no directory is read-only for this process")
    else:
        locked.chmod(0o555)
    try:
        output = locked / "pruned.onnx"
        code, _, err = cli(["prune", str(model_file), "-o", str(output), *ALL_FAMILIES], capsys)
        assert_refused(code, err)
        assert "not writable" in err
        assert not any(locked.iterdir())
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        else:
            locked.chmod(0o755)


# --------------------------------------------------------------------------- large


LARGE_TENSORS = 4
LARGE_ELEMENTS = 137_500_000  # x4 tensors x4 bytes = 2.2 GB, over protobuf's 2 GiB limit


@pytest.mark.large
def test_model_over_2gb_loads_lazily_prunes_and_saves_external_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A >2 GB model (external data) is loaded without reading its weights, pruned, and saved with external data.

    The prune bypasses one layer by name, without validation: scoring or
    validating would run both 2.2 GB models in onnxruntime, which takes
    minutes; tools/measure_large_model_memory.py measures those runs.
    """
    needed = 3 * LARGE_TENSORS * LARGE_ELEMENTS * 4 // 2  # input, output (3/4 of it), headroom
    free = shutil.disk_usage(tmp_path).free
    if free < needed:
        pytest.skip(f"needs {needed / 1e9:.1f} GB free disk for a >2 GB model and its pruned copy; {tmp_path} has {free / 1e9:.1f} GB")
    source = tmp_path / "large.onnx"
    weight_bytes = hm.write_large_model(source, LARGE_ELEMENTS, LARGE_TENSORS)
    assert weight_bytes > 2**31

    model = irx.load(source)
    assert all(isinstance(value.const_value, ir.ExternalTensor) for value in model.graph.initializers.values())
    code, out, err = cli(["inspect", str(source), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["params"] == LARGE_TENSORS * int(np.sqrt(LARGE_ELEMENTS)) ** 2

    output = tmp_path / "pruned.onnx"
    code, _, err = cli(["prune", str(source), "-o", str(output), "--bypass", "matmul1", "--no-validate", "--no-bench"], capsys)
    assert code == 0, err
    (data,) = irx.owned_data_files(output)
    assert output.stat().st_size < 10_000 and data.stat().st_size == weight_bytes // LARGE_TENSORS * (LARGE_TENSORS - 1)
    onnx.checker.check_model(str(output), full_check=True)
    written = onnx.load(str(output), load_external_data=False)
    assert [node.name for node in written.graph.node] == ["matmul0", "matmul2", "matmul3"]
    assert all(init.data_location == onnx.TensorProto.EXTERNAL for init in written.graph.initializer)
    # The kept weights are the original bytes (compare one, read lazily from both files).
    pruned_model = irx.load(output)
    kept = pruned_model.graph.initializers["w3"].const_value.numpy()
    np.testing.assert_array_equal(kept[:2], model.graph.initializers["w3"].const_value.numpy()[:2])
