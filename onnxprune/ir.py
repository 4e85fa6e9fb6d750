"""The few helpers over onnx-ir that every pass needs.

Loading and saving go through onnx-ir so that large weights stay memory-mapped
and nothing the model carries (opsets, metadata, doc strings, subgraphs,
``Constant`` nodes) is lost on the way.  Weight access is centralised here
because onnx-ir tensors are read-only views: a pass never edits an array in
place, it builds a new one and calls :func:`set_constant`.
"""

from __future__ import annotations

import fnmatch
import mmap
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxprune.errors import InputError, first_line
from onnxprune.sparse import from_sparse_initializers

# Protobuf cannot serialise a message over 2 GiB; leave room for the graph itself.
PROTOBUF_LIMIT_BYTES = 2**31 - 2**26


def load(path: str | os.PathLike, check: bool = True) -> ir.Model:
    """Read an ONNX model into the IR, external weights memory-mapped.

    Every way a file can fail to be a model ends in :class:`InputError` with a
    one-line reason, so callers never see a protobuf or checker traceback.
    ``check=False`` skips ``onnx.checker``, for a candidate whose checker
    failure is itself the verdict (``validate``), not bad input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an ONNX file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as error:
        raise InputError(f"{path}: not a readable ONNX model ({first_line(error)})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise InputError(f"{path}: not an ONNX model (no graph, IR version or opset import)")
    if proto.graph.sparse_initializer:
        # The graph IR holds dense tensors only; densifying is exact and the checker's shape inference needs it.
        proto = from_sparse_initializers(proto)
    if check:
        _check(path, proto)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as error:  # onnx-ir raises several types for malformed graphs
        raise InputError(f"{path}: cannot be read into the graph IR ({first_line(error)})") from None
    ir.external_data.set_base_dir(model.graph, str(path.parent))
    return model


def _check(path: Path, proto: onnx.ModelProto) -> None:
    """Full check, including strict shape inference (it catches weights whose shapes contradict their ops)."""
    # External weights are resolved by the checker from the file; everything else is checked as read.
    external = any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in proto.graph.initializer)
    try:
        onnx.checker.check_model(str(path) if external else proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError, OSError) as error:
        raise InputError(f"{path}: fails onnx.checker ({first_line(error)})") from None


def save(model: ir.Model, path: str | os.PathLike, external_data: bool | None = None) -> None:
    """Write ``model`` to ``path`` atomically (temporary file, then rename).

    ``external_data=None`` chooses for the caller: weights go to
    ``<name>.data`` beside the file when the model already kept them outside
    or when they would not fit in one protobuf.  An interrupted save never
    leaves a partial file at ``path``.
    """
    path = Path(path)
    if path.resolve() in external_files(model):
        raise InputError(f"{path}: the model's weights are read from this file; choose another output name")
    if external_data is None:
        external_data = needs_external_data(model)
    data_name = f"{path.name}.data" if external_data else None
    if data_name is not None:
        data_path = (path.parent / data_name).resolve()
        if data_path in external_files(model):
            raise InputError(f"{data_path}: the model's weights are read from this file; choose another output name")
    with atomic_output(path) as temporary:
        ir.save(model, temporary, external_data=data_name)


def save_proto(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write a protobuf built outside the IR (e.g. with sparse initializers) atomically."""
    with atomic_output(Path(path)) as temporary:
        temporary.write_bytes(proto.SerializeToString())


def check_output_directory(path: Path) -> Path:
    """The directory ``path`` would be written into, refused early when it cannot take the file."""
    directory = path.parent if str(path.parent) else Path(".")
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: is not a directory, cannot write {path.name} into it")
    if not directory.is_dir():
        raise InputError(f"{directory}: output directory does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"{directory}: output directory is not writable")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file path")
    return directory


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place only if the block succeeds.

    An interrupted or failed write leaves no partial file at ``path``.
    """
    directory = check_output_directory(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise InputError(f"{directory}: cannot create a file in the output directory ({error.strerror or error})") from None
    os.close(handle)
    # mkstemp creates the file private (0600); give the result the permissions a plain write would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except OSError as error:
        # Disk full, quota, a vanished directory: the user's environment, not a bug; say what failed.
        Path(temporary).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write the output ({error.strerror or error})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialise to a protobuf (for onnxruntime and the checker)."""
    return ir.serde.serialize_model(model)


def from_proto(proto: onnx.ModelProto) -> ir.Model:
    """Read a protobuf into the IR."""
    return ir.serde.deserialize_model(proto)


def copy_model(model: ir.Model) -> ir.Model:
    """An independent copy, so passes can run while the original stays for comparison."""
    return model.clone()


def iter_nodes(model: ir.Model) -> Iterator[ir.Node]:
    """Every node of the main graph and of its subgraphs (If/Loop/Scan bodies)."""
    return ir.traversal.RecursiveGraphIterator(model.graph)


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant content (initializer or ``Constant`` node), else ``None``.

    A graph input that is also an initializer (old IR versions) can be
    overridden by the caller at run time, so it does not count as constant.
    """
    if value is None or value.is_graph_input():
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:
        return None
    if tensor is None:
        return None
    return tensor.numpy()


def is_constant(value: ir.Value | None, allow_graph_input: bool = False) -> bool:
    """An initializer or a ``Constant`` node's output; no tensor is read.

    An initializer that is also a graph input (old IR versions) can be fed at
    run time, so it counts only with ``allow_graph_input`` (for callers that
    give that case a reason of its own).
    """
    if value is None or (value.is_graph_input() and not allow_graph_input):
        return False
    if value.const_value is not None:
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx")


def node_label(node: ir.Node) -> str:
    """How reports name a node: ``Conv 'conv1'``, or its op and output names when it has no name."""
    if node.name:
        return f"{node.op_type} '{node.name}'"
    outputs = ", ".join(value.name or "?" for value in node.outputs)
    return f"{node.op_type}({outputs})" if outputs else node.op_type


def matching_pattern(name: str | None, patterns: Iterable[str]) -> str | None:
    """The first glob (case-sensitive) that ``name`` matches, or None."""
    if not name:
        return None
    return next((pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)), None)


def replace_output(graph: ir.Graph, output: ir.Value, replacement: ir.Value) -> None:
    """Route every reader of ``output`` to ``replacement``; a graph output keeps its name, type and shape.

    The caller removes ``output``'s producer afterwards.  ``replacement`` must
    not be a graph input or initializer when ``output`` is a graph output (its
    name would have to change).
    """
    if output.is_graph_output():
        name = output.name
        replacement.shape = output.shape
        if replacement.type is None:
            replacement.type = output.type
        output.replace_all_uses_with(replacement, replace_graph_outputs=True)
        output.name = None
        replacement.name = name
        return
    if replacement.type is None:
        replacement.type = output.type
    if replacement.shape is None:
        replacement.shape = output.shape
    output.replace_all_uses_with(replacement)


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """Replace an initializer's content and keep its declared type and shape in step.

    Stale ``shape`` on the value would otherwise be written out as wrong
    ``value_info`` after a weight shrinks.
    """
    array = np.ascontiguousarray(array)
    value.const_value = ir.tensor(array, name=value.name)
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.DataType.from_numpy(array.dtype)


def add_initializer(graph: ir.Graph, name_hint: str, array: np.ndarray) -> ir.Value:
    """Register a new initializer under a name not yet used in ``graph``."""
    names = {value.name for value in graph.initializers.values()} | {
        value.name for node in graph for value in node.outputs
    } | {value.name for value in graph.inputs}
    name, suffix = name_hint, 1
    while name in names:
        name, suffix = f"{name_hint}_{suffix}", suffix + 1
    array = np.ascontiguousarray(array)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def is_private_constant(value: ir.Value, graph: ir.Graph) -> bool:
    """True when ``value`` is an initializer of ``graph`` that a pass may rewrite.

    Graph inputs can be fed at run time and values used inside subgraphs
    would need the subgraph rewritten too, so both are excluded.
    """
    return (
        value.is_initializer()
        and not value.is_graph_input()
        and not value.is_graph_output()
        and value.graph is graph
        and all(user.graph is graph for user in value.consumers())
    )


def values_used_in_subgraphs(model: ir.Model) -> set[ir.Value]:
    """Main-graph values that some If/Loop/Scan body reads from the outer scope."""
    captured: set[ir.Value] = set()
    for node in iter_nodes(model):
        if node.graph is model.graph:
            continue
        for value in node.inputs:
            if value is not None and value.graph is not node.graph:
                captured.add(value)
    return captured


def evict_pages(tensor: ir.TensorProtocol | None) -> None:
    """Let the kernel drop the cached pages of a memory-mapped external weight.

    A pass that reads every weight of a model over 2 GB would otherwise keep
    the whole file resident (mapped pages count as the process's memory) on
    top of the pruned copies it builds.  Dropping clean pages of a read-only
    mapping is always safe: a later read fetches them from the file again.
    """
    if not isinstance(tensor, ir.ExternalTensor) or tensor.raw is None or not tensor.nbytes:
        return
    page = mmap.PAGESIZE
    start = tensor.offset // page * page if tensor.offset else 0
    end = min(len(tensor.raw), (tensor.offset or 0) + tensor.nbytes)
    tensor.raw.madvise(mmap.MADV_DONTNEED, start, end - start)


def evict_model_pages(model: ir.Model) -> None:
    """:func:`evict_pages` for every initializer of the main graph."""
    for value in model.graph.initializers.values():
        evict_pages(value.const_value)


def needs_external_data(model: ir.Model) -> bool:
    """Whether the model cannot travel as one in-memory protobuf (over 2 GB, or weights already on disk)."""
    return has_external_tensors(model) or weight_bytes(model) > PROTOBUF_LIMIT_BYTES


@contextmanager
def temporary_file(model: ir.Model) -> Iterator[str]:
    """The model saved with external data in a temporary folder, for tools that need a path (checker, onnxruntime)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        ir.save(model, path, external_data="model.onnx.data")
        yield path


def weight_bytes(model: ir.Model) -> int:
    """Total bytes of the main graph's initializers."""
    return sum(value.const_value.nbytes for value in model.graph.initializers.values() if value.const_value is not None)


def has_external_tensors(model: ir.Model) -> bool:
    """Whether any initializer still lives in an external data file."""
    return bool(external_files(model))


def external_files(model: ir.Model) -> set[Path]:
    """The external data files the model's lazily loaded tensors point into."""
    files: set[Path] = set()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            files.add(Path(tensor.path).resolve())
    return files


def model_files(path: str | os.PathLike) -> set[Path]:
    """The model file and every external data file its tensors name, resolved, without reading weights.

    A run must never write over any of these: the input model has to survive it.
    """
    path = Path(path)
    files = {path.resolve()}
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        return files
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), None)
            if location:
                files.add((path.parent / location).resolve())
    return files
