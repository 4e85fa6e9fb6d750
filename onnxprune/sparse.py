"""Sparse storage of pruned weights, and how well a model file compresses.

Weight pruning keeps tensors dense, so the gain on disk shows in two ways:
zeros compress well (:func:`compressed_size`), and a mostly-zero weight can
be stored in sparse form (:func:`to_sparse_storage`, :func:`sparse_constant`).

The sparse form is a ``Constant`` node with a ``sparse_value`` attribute
(opset 11 and later), not a graph ``sparse_initializer``: the ONNX type of a
sparse initializer is ``sparse_tensor(T)``, which no standard op accepts, so
``onnx.checker.check_model(full_check=True)`` rejects every model that uses
one; a ``Constant`` node's output is a dense tensor, so the model checks and
onnxruntime densifies it when it loads the model (outputs identical, run time
unchanged).  The values are COO with linear int64 indices (ONNX's ``[NNZ]``
layout): 8 bytes of index per non-zero, so a float32 tensor gets smaller only
above about 2/3 sparsity, and a tensor is converted only when its sparse form
is smaller.

Reading works the other way (:func:`from_sparse_storage`): the graph IR holds
dense tensors only, so both sparse forms become dense initializers again.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import InputError

# Constant's sparse_value attribute appeared in opset 11.
MIN_OPSET = 11
_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
)
_INDEX_BYTES = 8
_CHUNK_BYTES = 1 << 20


def check_sparse_support(opset: int | None) -> None:
    """Refuse sparse storage for a model whose default-domain opset has no sparse ``Constant``."""
    if opset is None or opset < MIN_OPSET:
        raise InputError(f"sparse storage needs opset >= {MIN_OPSET} (Constant sparse_value), the model has opset {opset}")


def sparse_constant(name: str, array: np.ndarray, data_type: int) -> onnx.NodeProto | None:
    """A ``Constant`` node that outputs ``name`` from ``array`` stored sparse, or None when that is not smaller.

    Only floating-point tensors (``data_type`` is an ONNX element type) are
    converted: pruning zeroes weights, not shapes or indices.
    """
    if data_type not in _FLOAT_TYPES:
        return None
    flat = array.reshape(-1)
    positions = np.flatnonzero(flat != 0)
    if positions.size * (flat.itemsize + _INDEX_BYTES) >= array.nbytes:
        return None
    values = numpy_helper.from_array(np.ascontiguousarray(flat[positions]), name=name)
    indices = numpy_helper.from_array(positions.astype(np.int64), name=f"{name}_indices")
    sparse = helper.make_sparse_tensor(values, indices, list(array.shape))
    node = helper.make_node("Constant", [], [name], sparse_value=sparse)
    return node if node.ByteSize() < array.nbytes else None


def to_sparse_storage(proto: onnx.ModelProto, names: Iterable[str] | None = None) -> onnx.ModelProto:
    """A copy of ``proto`` whose floating-point main-graph initializers are sparse ``Constant`` nodes where smaller.

    ``names`` limits the conversion to those initializers (e.g. the tensors a
    pruning pass reported).  Initializers that are also graph inputs, and
    tensors kept in external data files, stay dense.
    """
    check_sparse_support(default_opset(proto))
    wanted = None if names is None else set(names)
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    graph = result.graph
    graph_inputs = {value.name for value in graph.input}
    dense: list[onnx.TensorProto] = []
    constants: list[onnx.NodeProto] = []
    for tensor in graph.initializer:
        node = None
        if (wanted is None or tensor.name in wanted) and _convertible(tensor, graph_inputs):
            node = sparse_constant(tensor.name, numpy_helper.to_array(tensor), tensor.data_type)
        if node is None:
            dense.append(tensor)
        else:
            constants.append(node)
    if constants:
        del graph.initializer[:]
        graph.initializer.extend(dense)
        prepend_nodes(graph, constants)
    return result


def prepend_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Put ``nodes`` first in ``graph``, so the graph stays topologically sorted for nodes without inputs."""
    ordered = [*nodes, *graph.node]
    del graph.node[:]
    graph.node.extend(ordered)


def from_sparse_storage(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose main-graph sparse tensors are dense initializers.

    Both sparse forms are read: ``sparse_initializer`` entries and ``Constant``
    nodes with a ``sparse_value`` attribute.  Densifying is exact.
    """
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    graph = result.graph
    dense = [_to_dense(sparse) for sparse in graph.sparse_initializer]
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        sparse = _sparse_constant_value(node)
        if sparse is None:
            kept.append(node)
        else:
            dense.append(_to_dense(sparse, name=node.output[0]))
    del graph.sparse_initializer[:]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(dense)
    return result


def has_sparse_storage(proto: onnx.ModelProto) -> bool:
    """Whether the main graph holds any tensor in sparse form."""
    return bool(proto.graph.sparse_initializer) or any(_sparse_constant_value(node) is not None for node in proto.graph.node)


def default_opset(proto: onnx.ModelProto) -> int | None:
    """The model's opset version for the default ONNX domain, or None when it imports none."""
    return next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)


def compressed_size(path_or_bytes: str | os.PathLike | bytes) -> int:
    """Bytes after deflate (zlib at level 6, zip's default) of a file or of serialised bytes.

    This is what zipping the model for download would give; it shows the gain
    of zeroed weights even while they are stored dense.  For a path, only that
    file is measured (not external data files beside it).
    """
    # Level 6 is within about 1% of level 9 on weights and several times faster.
    compressor = zlib.compressobj(6)
    size = 0
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        size += len(compressor.compress(bytes(path_or_bytes)))
    else:
        path = Path(path_or_bytes)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                size += len(compressor.compress(chunk))
    return size + len(compressor.flush())


def _convertible(tensor: onnx.TensorProto, graph_inputs: set[str]) -> bool:
    return tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.name not in graph_inputs


def _sparse_constant_value(node: onnx.NodeProto) -> onnx.SparseTensorProto | None:
    """The sparse tensor a ``Constant`` node outputs, or None for any other node."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    return next((attribute.sparse_tensor for attribute in node.attribute if attribute.name == "sparse_value"), None)


def _to_dense(sparse: onnx.SparseTensorProto, name: str | None = None) -> onnx.TensorProto:
    """The dense tensor of a COO sparse tensor (linear ``[NNZ]`` or per-dimension ``[NNZ, rank]`` indices)."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    shape = tuple(sparse.dims)
    dense = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), shape) if indices.size else indices.reshape(-1)
    dense[indices] = values
    return numpy_helper.from_array(dense.reshape(shape), name=name or sparse.values.name)
