"""Loading and saving through the IR, with no pass applied, keeps a model intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune import ir as irx
from onnxprune.errors import InputError
from tests.conftest import feeds_for, run_onnx


def _assert_round_trip(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.onnx"
    onnxprune.save(onnxprune.load(source), target)
    original, copy = onnx.load(str(source)), onnx.load(str(target))
    onnx.checker.check_model(copy, full_check=True)
    assert {(o.domain, o.version) for o in copy.opset_import} == {(o.domain, o.version) for o in original.opset_import}
    assert {p.key: p.value for p in copy.metadata_props} == {p.key: p.value for p in original.metadata_props}
    assert copy.doc_string == original.doc_string
    assert [v.name for v in copy.graph.input] == [v.name for v in original.graph.input]
    assert [v.name for v in copy.graph.output] == [v.name for v in original.graph.output]
    assert sorted(n.name for n in copy.graph.node) == sorted(n.name for n in original.graph.node)
    feeds = feeds_for(original)
    for expected, actual in zip(run_onnx(source, feeds), run_onnx(target, feeds)):
        np.testing.assert_array_equal(actual, expected)


def test_round_trip_keeps_every_sample_model(sample_model: Path, tmp_path: Path) -> None:
    _assert_round_trip(sample_model, tmp_path)


def test_sample_models_carry_metadata() -> None:
    # Round trips are only meaningful on metadata if the samples have some.
    from tests.conftest import SAMPLE_MODELS

    assert SAMPLE_MODELS, "models/ holds no sample models"
    assert all(onnx.load(str(path)).metadata_props for path in SAMPLE_MODELS)


def _conv_initializer(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def test_round_trip_keeps_if_subgraphs_constant_nodes_and_metadata(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    then_out = helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [1, 2, 4, 4])
    else_out = helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [1, 2, 4, 4])
    then_graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["then_y"], name="inner_conv")], "then", [], [then_out])
    else_graph = helper.make_graph([helper.make_node("Relu", ["x"], ["else_y"], name="inner_relu")], "else", [], [else_out])
    nodes = [
        helper.make_node("Constant", [], ["w"], name="weight_constant", value=_conv_initializer("w", (2, 2, 1, 1), 0)),
        helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph),
    ]
    graph = helper.make_graph(nodes, "with_if", [x, flag], [y], doc_string="graph doc")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string="model doc")
    helper.set_model_props(model, {"labels": "cat,dog", "author": "tests"})
    source = tmp_path / "if.onnx"
    onnx.save(model, str(source))

    target = tmp_path / "copy.onnx"
    onnxprune.save(onnxprune.load(source), target)
    copy = onnx.load(str(target))
    assert [n.op_type for n in copy.graph.node] == ["Constant", "If"]
    assert copy.graph.doc_string == "graph doc"
    branches = {attribute.name: attribute.g for attribute in copy.graph.node[1].attribute}
    assert [n.name for n in branches["then_branch"].node] == ["inner_conv"]
    x_value = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for condition in (True, False):
        feeds = {"x": x_value, "flag": np.array(condition)}
        np.testing.assert_array_equal(run_onnx(target, feeds)[0], run_onnx(source, feeds)[0])
    _assert_round_trip(source, tmp_path)


def _external_model(tmp_path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "external",
        [x],
        [y],
        [_conv_initializer("w", (8, 8, 3, 3), 2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = tmp_path / "external.onnx"
    onnx.save(model, str(source), save_as_external_data=True, location="external.onnx.data", size_threshold=0)
    return source


def test_external_data_round_trips_to_external_data(tmp_path: Path) -> None:
    source = _external_model(tmp_path)
    model = onnxprune.load(source)
    assert irx.has_external_tensors(model), "weights should stay memory-mapped, not be read at load time"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "copy.onnx"
    onnxprune.save(model, target)
    (data,) = irx.owned_data_files(target)
    assert data.parent == out_dir.resolve() and data.name.startswith("copy.onnx.")
    feeds = {"x": np.ones((1, 8, 4, 4), np.float32)}
    np.testing.assert_array_equal(run_onnx(target, feeds)[0], run_onnx(source, feeds)[0])


def test_saving_over_the_loaded_external_data_is_refused(tmp_path: Path) -> None:
    source = _external_model(tmp_path)
    model = onnxprune.load(source)
    with pytest.raises(InputError, match="weights are read from this file"):
        onnxprune.save(model, tmp_path / "external.onnx.data")


def test_saving_over_the_loaded_model_keeps_the_data_file_it_reads(tmp_path: Path) -> None:
    """The new model gets a data file of its own; the one the loaded model still reads stays untouched."""
    source = _external_model(tmp_path)
    data = tmp_path / "external.onnx.data"
    before = data.read_bytes()
    feeds = {"x": np.ones((1, 8, 4, 4), np.float32)}
    expected = run_onnx(source, feeds)
    model = onnxprune.load(source)
    onnxprune.save(model, source)
    assert data.read_bytes() == before
    assert irx.owned_data_files(source) and data.resolve() not in irx.owned_data_files(source)
    np.testing.assert_array_equal(run_onnx(source, feeds)[0], expected[0])


def test_save_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnxprune.load(_external_model(tmp_path))
    target = tmp_path / "never.onnx"

    def broken_save(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(irx.ir, "save", broken_save)
    with pytest.raises(InputError, match="cannot write the output \\(disk full\\)"):
        onnxprune.save(model, target, external_data=False)
    assert not target.exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".never.onnx")]
