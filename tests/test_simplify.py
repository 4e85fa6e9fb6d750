"""Simplification before pruning: onnxsim only when there is something to fold, the onnxscript folder for
external data (and initializers listed as graph inputs), and a report of what simplification changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import onnxprune
from onnxprune import ir as irx
from onnxprune.report import render_passes
from onnxprune.simplify import fold_candidates, simplify, simplify_step
from tests import hostile_models as hm
from tests.conftest import MODELS_DIR, REPO, SAMPLE_MODELS, feeds_for, run_onnx

FLOAT = TensorProto.FLOAT
node = helper.make_node
# The shipped models onnxsim leaves unchanged, which simplification therefore skips.
NOTHING_TO_FOLD = {"convnet2", "densenet_mini", "digits_cnn", "resnet_mini", "resnet_mini_dynamo", "vgg_mini"}


@pytest.fixture
def onnxsim_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call of ``onnxsim.simplify`` (which still runs)."""
    import onnxsim

    calls: list[Any] = []
    real = onnxsim.simplify

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxsim, "simplify", spy)
    return calls


def _graph_signature(model: onnx.ModelProto) -> tuple[Any, ...]:
    """What pruning sees of a model: nodes (op, inputs, outputs, attributes), initializers with contents, interface."""
    nodes = [
        (n.op_type, n.domain, list(n.input), list(n.output), sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute))
        for n in model.graph.node
    ]
    initializers = sorted((init.name, numpy_helper.to_array(init).tobytes()) for init in model.graph.initializer)
    interface = [(v.name, v.type.SerializeToString()) for v in (*model.graph.input, *model.graph.output)]
    return nodes, initializers, interface


def _onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    import contextlib
    import io

    import onnxsim

    with contextlib.redirect_stdout(io.StringIO()):
        simplified, ok = onnxsim.simplify(model, check_n=0)
    assert ok
    return simplified


def _model(nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray], inputs: list[Any], outputs: list[Any]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(array, name) for name, array in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- 1. onnxsim only when there is something to fold


def test_a_model_with_nothing_to_fold_is_not_given_to_onnxsim(onnxsim_calls: list[Any]) -> None:
    model = irx.load(MODELS_DIR / "resnet_mini.onnx")
    result = simplify_step(model)
    assert onnxsim_calls == []
    assert result.model is model and result.tool == "none" and result.warning is None
    assert result.step["changes"] == []
    [skip] = result.step["skipped"]
    assert skip["target"] == "onnxsim" and skip["reason"].startswith("nothing to fold (ops Add, Conv, Flatten, Gemm, GlobalAveragePool, Relu;")


def test_constant_node_weights_are_still_simplified_with_onnxsim(onnxsim_calls: list[Any]) -> None:
    model = hm.constant_node_weights()
    result = simplify_step(irx.from_proto(model))
    assert len(onnxsim_calls) == 1 and result.tool == "onnxsim"
    assert not [n for n in result.model.graph if n.op_type == "Constant"]
    assert set(result.model.graph.initializers) == {n.output[0] for n in model.graph.node if n.op_type == "Constant"}


def test_pruning_a_plain_model_never_imports_onnxsim() -> None:
    """The cost the user saw: importing onnxsim takes a second or two (it imports torch when installed)."""
    code = (
        "import sys, onnxprune\n"
        "result = onnxprune.prune('models/resnet_mini.onnx', channel_ratio=0.5, bench=False, validate=False)\n"
        "print('onnxsim' in sys.modules, 'torch' in sys.modules, result.report['passes'][0]['name'])\n"
    )
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False", "simplify"]


@pytest.mark.parametrize("path", SAMPLE_MODELS, ids=[path.stem for path in SAMPLE_MODELS])
def test_skipping_is_exact_on_the_shipped_models(path: Path) -> None:
    """Where simplification finds nothing to fold, onnxsim would have changed nothing pruning sees; elsewhere it does."""
    model = onnx.load(path)
    candidates = fold_candidates(irx.from_proto(model))
    assert (not candidates) == (path.stem in NOTHING_TO_FOLD), candidates
    same = _graph_signature(_onnxsim(model)) == _graph_signature(model)
    assert same == (path.stem in NOTHING_TO_FOLD)


def _x(channels: int = 8) -> Any:
    return helper.make_tensor_value_info("x", FLOAT, [1, channels, 8, 8])


def _y(shape: list[int]) -> Any:
    return helper.make_tensor_value_info("y", FLOAT, shape)


def _patterns() -> dict[str, onnx.ModelProto]:
    """Small models each with one thing onnxsim changes although every op in it is plain."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
    same = [1, 8, 8, 8]
    return {
        "Relu after Relu": _model([node("Relu", ["x"], ["a"]), node("Relu", ["a"], ["y"])], {}, [_x()], [_y(same)]),
        "Concat after Concat": _model([node("Concat", ["x", "x"], ["a"], axis=1), node("Concat", ["a", "x"], ["y"], axis=1)], {}, [_x()], [_y([1, 24, 8, 8])]),
        "ReduceMean after a global pool": _model(
            [node("GlobalAveragePool", ["x"], ["a"]), node("ReduceMean", ["a"], ["y"], axes=[2, 3], keepdims=1)], {}, [_x()], [_y([1, 8, 1, 1])]
        ),
        "repeated node (same op, inputs and attributes)": _model(
            [node("Relu", ["x"], ["a"]), node("Relu", ["x"], ["b"]), node("Add", ["a", "b"], ["y"])], {}, [_x()], [_y(same)]
        ),
        "duplicate initializer": _model(
            [node("Conv", ["x", "wa"], ["a"]), node("Relu", ["a"], ["b"]), node("Conv", ["b", "wb"], ["y"])], {"wa": w, "wb": w.copy()}, [_x()], [_y(same)]
        ),
        "Add with a constant operand": _model(
            [node("Conv", ["x", "wa"], ["a"]), node("Add", ["a", "bias"], ["y"])],
            {"wa": w, "bias": rng.standard_normal((8, 1, 1)).astype(np.float32)},
            [_x()],
            [_y(same)],
        ),
    }


@pytest.mark.parametrize("kind", list(_patterns()))
def test_what_onnxsim_changes_among_plain_ops_counts_as_something_to_fold(kind: str) -> None:
    model = _patterns()[kind]
    assert _graph_signature(_onnxsim(model)) != _graph_signature(model)
    assert kind in fold_candidates(irx.from_proto(model))


def test_plain_ops_in_shapes_onnxsim_leaves_alone_count_as_nothing_to_fold() -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 8, 1, 1)).astype(np.float32),
        "slope": rng.uniform(0, 0.3, (8, 1, 1)).astype(np.float32),
        "lo": np.array(0, np.float32),
        "hi": np.array(6, np.float32),
        "wm": rng.standard_normal((16, 10)).astype(np.float32),
        "wg": rng.standard_normal((10, 4)).astype(np.float32),
        "bg": rng.standard_normal(4).astype(np.float32),
        "shape": np.array([1, -1], np.int64),
    }
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        node("LeakyRelu", ["c1"], ["l1"], alpha=0.1),
        node("PRelu", ["l1", "slope"], ["p1"]),
        node("Clip", ["p1", "lo", "hi"], ["k1"]),
        node("HardSwish", ["k1"], ["h1"]),
        node("Conv", ["h1", "w2"], ["c2"]),
        node("Sigmoid", ["c2"], ["s2"]),
        node("Tanh", ["c2"], ["t2"]),
        node("HardSigmoid", ["c2"], ["hs2"]),
        node("Sum", ["s2", "t2", "hs2"], ["sum"]),
        node("Add", ["sum", "c2"], ["add"]),
        node("Relu", ["add"], ["r"]),
        node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        node("AveragePool", ["r"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Concat", ["mp", "ap"], ["cat"], axis=1),
        node("GlobalMaxPool", ["cat"], ["gmp"]),
        node("ReduceMean", ["cat"], ["rm"], axes=[2, 3], keepdims=1),
        node("Add", ["gmp", "rm"], ["g"]),
        node("Reshape", ["g", "shape"], ["flat"]),
        node("MatMul", ["flat", "wm"], ["mm"]),
        node("Relu", ["mm"], ["mr"]),
        node("Gemm", ["mr", "wg", "bg"], ["gm"]),
        node("Softmax", ["gm"], ["y"], axis=1),
    ]
    model = _model(nodes, arrays, [_x(3)], [_y([1, 4])])
    assert fold_candidates(irx.from_proto(model)) == {}
    assert _graph_signature(_onnxsim(model)) == _graph_signature(model)


# --------------------------------------------------------------------------- 2. external data: the onnxscript folder


def _external_weights_model() -> onnx.ModelProto:
    """Three convs: w1 stored HWIO behind a Transpose, b1 a Constant node, w2 computed as Mul(w2_raw, scale); w3 plain."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, (16, 1, 1, 1)).astype(np.float32)
    arrays = {"w1_hwio": w1.transpose(2, 3, 1, 0).copy(), "w2_raw": w2 / scale, "w2_scale": scale, "w3": rng.standard_normal((8, 16, 1, 1)).astype(np.float32)}
    bias = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32))
    nodes = [
        node("Transpose", ["w1_hwio"], ["w1"], perm=[3, 2, 0, 1], name="w1_t"),
        node("Constant", [], ["b1"], value=bias, name="b1_const"),
        node("Mul", ["w2_raw", "w2_scale"], ["w2"], name="w2_mul"),
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        node("Relu", ["c2"], ["r2"], name="relu2"),
        node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    inputs = [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 12, 12])]
    return _model(nodes, arrays, inputs, [helper.make_tensor_value_info("y", FLOAT, ["N", 8, 12, 12])])


def _save_external(model: onnx.ModelProto, path: Path) -> Path:
    model = onnx.ModelProto.FromString(model.SerializeToString())  # onnx.save rewrites the proto it writes
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0, location=path.name + ".data")
    return path


def _outputs_of(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with irx.temporary_file(model) as path:
        return run_onnx(path, feeds)


@pytest.mark.parametrize("build", [_external_weights_model, hm.constant_of_shape_weights], ids=["transpose_constant_mul", "constant_of_shape"])
def test_external_data_weights_are_folded_without_onnxsim(build: Any, tmp_path: Path, onnxsim_calls: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    proto = build()
    # check=False: onnx.checker cannot infer a Reshape whose shape tensor is external data (a loader matter, not simplification's).
    model = irx.load(_save_external(proto, tmp_path / "model.onnx"), check=False)
    assert irx.has_external_tensors(model)
    loaded: list[str | None] = []
    real_load = ir.ExternalTensor._load

    def spy(tensor: ir.ExternalTensor) -> None:
        loaded.append(tensor.name)
        real_load(tensor)

    monkeypatch.setattr(ir.ExternalTensor, "_load", spy)
    result = simplify_step(model)
    monkeypatch.setattr(ir.ExternalTensor, "_load", real_load)

    assert onnxsim_calls == [] and result.tool == "onnxscript" and result.warning is None
    assert {n.op_type for n in result.model.graph} <= {"Conv", "Relu"}
    # Only the tensors the folded nodes read came off the disk; the plain weights stay lazily loaded.
    folded_from = {name for change in result.step["changes"] for name in change.get("folded_from", [])}
    stored = {init.name for init in proto.graph.initializer}
    assert set(loaded) == folded_from & stored
    plain = stored - folded_from
    assert plain and all(isinstance(result.model.graph.initializers[name].const_value, ir.ExternalTensor) for name in plain)
    # The interface is declared exactly as before (symbolic dims included) and the function is unchanged.
    assert [(v.name, str(v.shape)) for v in result.model.graph.inputs] == [(v.name, str(v.shape)) for v in model.graph.inputs]
    assert [(v.name, str(v.shape)) for v in result.model.graph.outputs] == [(v.name, str(v.shape)) for v in model.graph.outputs]
    for seed in range(3):
        feeds = feeds_for(proto, seed)
        for got, want in zip(_outputs_of(result.model, feeds), run_onnx(proto, feeds), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert {n.op_type for n in model.graph} & {"Transpose", "Mul"}  # the input model is untouched


def test_external_data_model_is_channel_pruned_once_folded(tmp_path: Path) -> None:
    path = _save_external(_external_weights_model(), tmp_path / "model.onnx")
    options = {"channel_ratio": 0.5, "round_to": 1, "min_cosine": -1, "bench": False}
    unsimplified = onnxprune.prune(path, simplify=False, **options)
    unsimplified_channels = unsimplified.report["passes"][0]
    assert unsimplified_channels["name"] == "channels" and not unsimplified_channels["changes"]  # weights computed: nothing to prune
    result = onnxprune.prune(path, **options)
    simplify_report, channels = result.report["passes"][:2]
    assert simplify_report["name"] == "simplify" and simplify_report["summary"]["tool"] == "onnxscript"
    assert channels["name"] == "channels" and channels["changes"]
    shapes = {value.name: list(value.shape) for value in result.model.graph.initializers.values()}
    assert shapes["w1"] == [8, 3, 3, 3] and shapes["w2"] == [8, 8, 3, 3] and shapes["w3"] == [8, 8, 1, 1]


def test_initializers_listed_as_inputs_keep_their_place_while_constants_fold() -> None:
    """onnxsim would drop 'b2' from the inputs (and be declined); the onnxscript folder keeps it and folds the rest."""
    rng = np.random.default_rng(4)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    arrays = {"w2": rng.standard_normal((5, 4, 1, 1)).astype(np.float32), "b2": rng.standard_normal(5).astype(np.float32)}
    nodes = [
        node("Constant", [], ["w1"], value=weight, name="w1_const"),
        node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"),
    ]
    inputs = [helper.make_tensor_value_info("x", FLOAT, [1, 3, 6, 6]), helper.make_tensor_value_info("b2", FLOAT, [5])]
    proto = _model(nodes, arrays, inputs, [_y([1, 5, 6, 6])])
    result = simplify_step(irx.from_proto(proto))
    assert result.tool == "onnxscript" and result.warning is None
    assert [v.name for v in result.model.graph.inputs] == ["x", "b2"] and result.model.graph.inputs[1].is_initializer()
    assert "Constant" not in {n.op_type for n in result.model.graph}
    feeds = {**feeds_for(proto), "b2": rng.standard_normal(5).astype(np.float32)}
    for got, want in zip(run_onnx(irx.to_proto(result.model), feeds), run_onnx(proto, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_an_onnxsim_failure_falls_back_to_the_onnxscript_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] boom\nsecond line")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    model, warning = simplify(irx.from_proto(hm.constant_node_weights()))
    assert warning is None and not [n for n in model.graph if n.op_type == "Constant"]
    result = simplify_step(irx.from_proto(hm.constant_node_weights()))
    assert result.tool == "onnxscript"
    assert result.step["skipped"] == [
        {"target": "onnxsim", "reason": "onnxsim could not simplify the model ([ONNXRuntimeError] boom); folding with the onnxscript optimizer instead"}
    ]


# --------------------------------------------------------------------------- 3. the report says what simplification changed


def test_the_simplify_step_reports_node_and_initializer_counts_and_the_op_histogram() -> None:
    result = simplify_step(irx.load(MODELS_DIR / "mobilenetv2_mini.onnx"))
    summary = result.step["summary"]
    assert summary["tool"] == "onnxsim"
    # 38 Constant nodes (19 Clips' min and max): onnxsim merges the repeated ones, the other two become initializers.
    assert (summary["nodes_before"], summary["nodes_after"]) == (92, 54)
    assert (summary["initializers_before"], summary["initializers_after"]) == (58, 60)
    assert summary["ops_removed"] == {"Constant": 38} and summary["ops_added"] == {}
    assert summary["ops"] == "-38 Constant" and summary["foldable"] == {"Constant node": 38}
    changes = result.step["changes"]
    removed = [change for change in changes if change["action"] == "node_removed"]
    assert len(removed) == 38 and {change["op_type"] for change in removed} == {"Constant"}
    assert [change["action"] for change in changes[38:]] == ["initializer_added"] * 2
    # onnxsim's own bookkeeping stays out of the model: the report carries it.
    assert not [key for key in result.model.metadata_props if key.startswith("onnxsim.")]


def test_the_pipeline_report_and_terminal_show_what_simplification_changed() -> None:
    result = onnxprune.prune(MODELS_DIR / "resnet_mini_bn.onnx", channel_ratio=0.5, bench=False, validate=False)
    step = result.report["passes"][0]
    assert step["name"] == "simplify"
    assert {key: step["summary"][key] for key in ("tool", "nodes_before", "nodes_after", "ops")} == {
        "tool": "onnxsim",
        "nodes_before": 68,
        "nodes_after": 48,
        "ops": "-20 BatchNormalization",
    }
    actions = {change["action"] for change in step["changes"]}
    assert actions == {"node_removed", "initializer_removed", "initializer_added"}
    console = Console(record=True, width=400)
    render_passes(console, result.report["passes"])
    text = console.export_text()
    assert f"simplify: {len(step['changes'])} change(s); tool=onnxsim, nodes_before=68, nodes_after=48, initializers_before=102" in text
    assert "ops=-20 BatchNormalization" in text and "note: to fold: 20 BatchNormalization node" in text


def test_a_skipped_simplification_says_why_on_the_terminal() -> None:
    result = onnxprune.prune(MODELS_DIR / "vgg_mini.onnx", channel_ratio=0.5, bench=False, validate=False)
    console = Console(record=True, width=400)
    render_passes(console, result.report["passes"][:1])
    text = console.export_text()
    assert "simplify: 0 change(s); tool=none, nodes_before=24, nodes_after=24, initializers_before=20, initializers_after=20, ops=unchanged" in text
    assert "skipped onnxsim: nothing to fold (ops Conv, Flatten, Gemm, MaxPool, Relu;" in text
