"""Sparse weight storage and compressed size: smaller files that pass the full checker, identical outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.config import PruneConfig
from onnxprune.errors import InputError
from onnxprune.options import WeightOptions
from onnxprune.passes.weights import WeightPruningPass
from onnxprune.pipeline import PruneResult
from onnxprune.sparse import compressed_size, from_sparse_storage, to_sparse_storage
from tests.conftest import run_onnx


def _mlp(sparsity: float | None, dtype: type = np.float32, seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul(w1) + b1 -> Relu -> Gemm(w2, c2) -> Reshape(int64 shape); weights pruned to ``sparsity``."""
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    initializers = {
        "w1": rng.standard_normal((32, 64)).astype(dtype),
        "b1": rng.standard_normal(64).astype(dtype),
        "w2": rng.standard_normal((64, 16)).astype(dtype),
        "c2": rng.standard_normal(16).astype(dtype),
        "shape": np.array([-1, 4, 4], dtype=np.int64),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("Gemm", ["r", "w2", "c2"], ["g"]),
            helper.make_node("Reshape", ["g", "shape"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", elem, ["N", 32])],
        [helper.make_tensor_value_info("y", elem, ["N", 4, 4])],
        [numpy_helper.from_array(array, name) for name, array in initializers.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if sparsity is None:
        return proto
    model = irx.from_proto(proto)
    WeightPruningPass(WeightOptions(sparsity=sparsity))(model)
    return irx.to_proto(model)


def _feeds(dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(9).standard_normal((3, 32)).astype(dtype)}


def _dense_tensors(proto: onnx.ModelProto) -> dict[str, bytes]:
    return {tensor.name: numpy_helper.to_array(tensor).tobytes() for tensor in proto.graph.initializer}


def _sparse_names(proto: onnx.ModelProto) -> list[str]:
    """Outputs of the main graph's sparse ``Constant`` nodes (the weights stored sparse)."""
    return sorted(
        node.output[0]
        for node in proto.graph.node
        if node.op_type == "Constant" and any(attribute.name == "sparse_value" for attribute in node.attribute)
    )


def test_ninety_percent_sparse_model_is_smaller_and_runs_identically(tmp_path: Path) -> None:
    dense = _mlp(0.9)
    sparse = to_sparse_storage(dense)
    assert _sparse_names(sparse) == ["w1", "w2"]
    assert not sparse.graph.sparse_initializer
    assert sorted(tensor.name for tensor in sparse.graph.initializer) == ["b1", "c2", "shape"]
    onnx.checker.check_model(sparse, full_check=True)
    dense_path, sparse_path = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    onnx.save(dense, str(dense_path))
    onnx.save(sparse, str(sparse_path))
    assert sparse_path.stat().st_size < 0.5 * dense_path.stat().st_size
    for expected, actual in zip(run_onnx(dense_path, _feeds()), run_onnx(sparse_path, _feeds())):
        np.testing.assert_array_equal(actual, expected)


def test_sparse_storage_round_trips_to_identical_dense_tensors() -> None:
    dense = _mlp(0.9)
    restored = from_sparse_storage(to_sparse_storage(dense))
    assert not restored.graph.sparse_initializer and not _sparse_names(restored)
    assert _dense_tensors(restored) == _dense_tensors(dense)
    onnx.checker.check_model(restored, full_check=True)


def test_per_dimension_indices_are_read_back_too() -> None:
    values = np.array([1.5, -2.0], dtype=np.float32)
    indices = np.array([[0, 1], [2, 0]], dtype=np.int64)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(values, "w"), numpy_helper.from_array(indices, "w_indices"), [3, 2]
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        sparse_initializer=[sparse],
    )
    restored = from_sparse_storage(helper.make_model(graph))
    np.testing.assert_array_equal(
        numpy_helper.to_array(restored.graph.initializer[0]), np.array([[0, 1.5], [0, 0], [-2.0, 0]], np.float32)
    )


def test_dense_weights_stay_dense_because_sparse_would_be_bigger() -> None:
    dense = _mlp(None)
    sparse = to_sparse_storage(dense)
    assert sparse.SerializeToString() == dense.SerializeToString()


def test_half_sparse_float32_is_not_worth_converting() -> None:
    # COO costs 4 + 8 bytes per non-zero: at 50% that is 6 bytes per weight against 4 dense.
    assert not _sparse_names(to_sparse_storage(_mlp(0.5)))


def test_names_limit_which_initializers_convert() -> None:
    assert _sparse_names(to_sparse_storage(_mlp(0.9), names=["w2"])) == ["w2"]


def test_float16_weights_convert_and_run_identically() -> None:
    dense = _mlp(0.95, dtype=np.float16)
    sparse = to_sparse_storage(dense)
    assert sparse.graph.node[0].attribute[0].sparse_tensor.values.data_type == TensorProto.FLOAT16
    for expected, actual in zip(run_onnx(dense, _feeds(np.float16)), run_onnx(sparse, _feeds(np.float16))):
        np.testing.assert_array_equal(actual, expected)


def test_all_zero_weight_converts_to_an_empty_sparse_tensor_that_still_runs() -> None:
    dense = _mlp(None)
    for tensor in dense.graph.initializer:
        if tensor.name == "w2":
            tensor.CopyFrom(numpy_helper.from_array(np.zeros((64, 16), np.float32), "w2"))
    sparse = to_sparse_storage(dense)
    assert _sparse_names(sparse) == ["w2"]
    for expected, actual in zip(run_onnx(dense, _feeds()), run_onnx(sparse, _feeds())):
        np.testing.assert_array_equal(actual, expected)


def test_initializer_that_is_a_graph_input_stays_dense() -> None:
    dense = _mlp(0.9)
    dense.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, [32, 64]))
    assert _sparse_names(to_sparse_storage(dense)) == ["w2"]


def test_opset_without_sparse_constants_is_refused() -> None:
    dense = _mlp(0.9)
    dense.opset_import[0].version = 10
    with pytest.raises(InputError, match="opset >= 11"):
        to_sparse_storage(dense)


def test_input_model_is_not_modified() -> None:
    dense = _mlp(0.9)
    before = dense.SerializeToString()
    to_sparse_storage(dense)
    assert dense.SerializeToString() == before


def test_compressed_size_of_bytes_and_path_agree_and_zeros_compress(tmp_path: Path) -> None:
    unpruned, pruned = _mlp(0.0).SerializeToString(), _mlp(0.9).SerializeToString()
    assert len(unpruned) == len(pruned)  # zeros are stored dense: the raw file does not shrink
    assert compressed_size(pruned) < 0.5 * compressed_size(unpruned)
    path = tmp_path / "model.onnx"
    path.write_bytes(pruned)
    assert compressed_size(path) == compressed_size(str(path)) == compressed_size(pruned)
    assert 0 < compressed_size(b"\0" * 100_000) < 1_000


def test_compressed_size_of_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        compressed_size(tmp_path / "missing.onnx")


def test_sample_models_at_ninety_percent_store_smaller_and_run_identically(sample_model: Path) -> None:
    model = irx.load(sample_model)
    feeds = runtime.random_inputs(runtime.input_specs(model), seed=2)
    WeightPruningPass(WeightOptions(sparsity=0.9))(model)
    dense = irx.to_proto(model)
    sparse = to_sparse_storage(dense)
    onnx.checker.check_model(sparse, full_check=True)
    assert sparse.ByteSize() < dense.ByteSize()
    original_bytes = onnx.load(str(sample_model)).SerializeToString()
    assert compressed_size(sparse.SerializeToString()) < compressed_size(original_bytes)
    for expected, actual in zip(run_onnx(dense, feeds), run_onnx(sparse, feeds)):
        np.testing.assert_array_equal(actual, expected)
    assert _dense_tensors(from_sparse_storage(sparse)) == _dense_tensors(dense)


def _save_sparse(model: onnx.ModelProto | Path, path: Path, external_data: bool = False) -> None:
    """Save as ``prune`` does with ``--sparse-storage`` (and ``--external-data``)."""
    loaded = irx.load(model) if isinstance(model, Path) else irx.from_proto(model)
    config = PruneConfig.from_mapping({"sparse_storage": True, "external_data": external_data})
    PruneResult(loaded, {}, config, passed=True).save(path)


def _assert_loads_and_runs_like(path: Path, dense: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Full check from the file, onnx.load with its data, onnxruntime outputs equal, read back to the same weights."""
    onnx.checker.check_model(str(path), full_check=True)
    onnx.load(str(path))
    for expected, actual in zip(run_onnx(dense, feeds), run_onnx(path, feeds)):
        np.testing.assert_array_equal(actual, expected)
    read_back = irx.load(path).graph.initializers.values()
    assert {value.name: np.asarray(irx.constant_array(value)).tobytes() for value in read_back} == _dense_tensors(dense)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64], ids=["float32", "float16", "double"])
def test_saved_sparse_model_passes_the_full_check_and_runs(dtype: type, tmp_path: Path) -> None:
    """A sparse initializer is typed sparse_tensor(T), which no dense op accepts: the writer must not use one."""
    dense = _mlp(0.95, dtype=dtype)
    path = tmp_path / "sparse.onnx"
    _save_sparse(dense, path)
    _assert_loads_and_runs_like(path, dense, _feeds(dtype))
    assert _sparse_names(onnx.load(str(path))) == ["w1", "w2"]


def _external_data_source(directory: Path) -> tuple[Path, onnx.ModelProto]:
    """``_mlp`` at 95% with w2 left dense, saved with its two weights in ``model.onnx.data``."""
    dense = _mlp(0.95)
    for tensor in dense.graph.initializer:
        if tensor.name == "w2":
            tensor.CopyFrom(numpy_helper.from_array(np.ones((64, 16), np.float32), "w2"))
    directory.mkdir()
    source = directory / "model.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(dense)  # onnx.save moves the weights of the proto it saves out to the data file
    onnx.save(saved, str(source), save_as_external_data=True, location="model.onnx.data", size_threshold=1024)
    return source, dense


def _stored_outside(path: Path) -> set[str]:
    written = onnx.load(str(path), load_external_data=False)
    return {tensor.name for tensor in written.graph.initializer if tensor.data_location == TensorProto.EXTERNAL}


@pytest.mark.parametrize("external_data", [False, True], ids=["as_input", "external_data_option"])
def test_sparse_save_of_an_external_data_model_into_another_folder(external_data: bool, tmp_path: Path) -> None:
    """Dense weights still read from the input's data file are written to a data file in the output's folder."""
    source, dense = _external_data_source(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = out_dir / "sparse.onnx"
    _save_sparse(source, path, external_data=external_data)
    assert irx.model_files(path) <= {file.resolve() for file in out_dir.iterdir()}
    assert _sparse_names(onnx.load(str(path), load_external_data=False)) == ["w1"]
    assert _stored_outside(path) == {"w2"}
    _assert_loads_and_runs_like(path, dense, _feeds())


def test_sparse_save_of_an_external_data_model_as_one_file(tmp_path: Path) -> None:
    """Asked for one file, the weights still in the input's data file are read into it."""
    source, dense = _external_data_source(tmp_path / "in")
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "sparse.onnx"
    irx.save(irx.load(source), path, external_data=False, sparse=True)
    assert [file.name for file in path.parent.iterdir()] == ["sparse.onnx"]
    assert not _stored_outside(path)
    _assert_loads_and_runs_like(path, dense, _feeds())
