"""The few helpers over onnx-ir that every pass needs.

Loading and saving go through onnx-ir so that large weights stay memory-mapped
and nothing the model carries (opsets, metadata, doc strings, subgraphs,
``Constant`` nodes) is lost on the way.  Weight access is centralised here
because onnx-ir tensors are read-only views: a pass never edits an array in
place, it builds a new one and calls :func:`set_constant`.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import mmap
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxprune.errors import InputError, first_line
from onnxprune.sparse import check_sparse_support, from_sparse_storage, has_sparse_storage, prepend_nodes, sparse_constant

# Protobuf cannot serialise a message over 2 GiB; leave room for the graph itself.
PROTOBUF_LIMIT_BYTES = 2**31 - 2**26
# Name of the data file while it is written, before its content names it.
_STAGED_DATA = "weights.data"
_DIGEST_CHARS = 16


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
    if has_sparse_storage(proto):
        # The graph IR holds dense tensors only; densifying is exact and the checker's shape inference needs it.
        proto = from_sparse_storage(proto)
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


def save(
    model: ir.Model,
    path: str | os.PathLike,
    external_data: bool | None = None,
    sparse: bool = False,
    keep: Iterable[str | os.PathLike] = (),
) -> None:
    """Write ``model`` to ``path`` so that an interruption leaves the previous files or the new ones, never a mix.

    ``external_data=None`` chooses for the caller: weights go to an external
    data file when the model already kept them outside or when they would not
    fit in one protobuf.  ``sparse`` stores mostly-zero floating-point weights
    as sparse ``Constant`` nodes (see :mod:`onnxprune.sparse`).

    File naming: the data file is ``<name>.<digest>.data`` beside ``path``,
    ``<digest>`` being the first 16 hex digits of its SHA-256.  Every write of
    different weights therefore gets a file no earlier model points at (and the
    same weights the same name, so output stays deterministic).  It is
    complete and synced before the model that points at it is renamed into
    place, so a model and a data file from different writes never meet.  The
    data file of the model previously at ``path`` (``<name>.data`` or
    ``<name>.<digest>.data``) is removed only after that, and never one that
    ``model`` reads or that ``keep`` lists (e.g. the input model's files).
    """
    path = Path(path)
    reads = external_files(model)
    if path.resolve() in reads:
        raise InputError(f"{path}: the model's weights are read from this file; choose another output name")
    if external_data is None:
        external_data = needs_external_data(model)
    constants = sparse_constants(model) if sparse else []
    previous = owned_data_files(path)
    if external_data:
        written = _save_with_data(model, path, constants)
    else:
        _save_inline(model, path, constants)
        written = None
    _remove_files(previous - {written} - reads - _resolved(keep))


def remove_output(path: str | os.PathLike, keep: Iterable[str | os.PathLike] = ()) -> None:
    """Delete the model at ``path`` and the data file it owns (see :func:`save`), except files in ``keep``.

    The model goes first, so no model is ever left pointing at a deleted data file.
    """
    path = Path(path)
    stale = owned_data_files(path) - _resolved(keep)
    path.unlink(missing_ok=True)
    _remove_files(stale)


def owned_data_files(path: str | os.PathLike) -> set[Path]:
    """The data files the model at ``path`` points into that carry its own name (``<name>.data``, ``<name>.<digest>.data``).

    Only those are this model's to delete: any other file it points into may
    be shared with other models.
    """
    path = Path(path)
    if not path.is_file():
        return set()
    candidates = {
        candidate.resolve()
        for candidate in path.parent.glob(f"{glob.escape(path.name)}.*data")
        if _owned_data_name(candidate.name, path.name)
    }
    if not candidates:
        return set()
    return (model_files(path) - {path.resolve()}) & candidates


def sparse_constants(model: ir.Model) -> list[onnx.NodeProto]:
    """Sparse ``Constant`` nodes for the main-graph weights that are smaller stored sparse.

    Initializers that are graph inputs can be fed at run time and stay
    initializers.  Memory-mapped weights are evicted once read.
    """
    check_sparse_support(model.opset_imports.get(""))
    constants = []
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if value.is_graph_input() or tensor is None or value.name is None:
            continue
        node = sparse_constant(value.name, tensor.numpy(), int(tensor.dtype))
        evict_pages(tensor)
        if node is not None:
            constants.append(node)
    return constants


def _save_inline(model: ir.Model, path: Path, constants: list[onnx.NodeProto]) -> None:
    """One self-contained file: every weight inside it, whatever file the model's weights came from."""
    prepared = _prepared(model, constants, inline=True)
    with atomic_output(path) as temporary:
        if not constants:
            ir.save(prepared, temporary)
            return
        proto = to_proto(prepared)
        prepend_nodes(proto.graph, constants)
        temporary.write_bytes(proto.SerializeToString())


def _save_with_data(model: ir.Model, path: Path, constants: list[onnx.NodeProto]) -> Path | None:
    """Write the data file under its final name, then the model that points at it; returns the data file."""
    directory = check_output_directory(path)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=directory) as staging:
            staged = Path(staging) / path.name
            ir.save(_prepared(model, constants, inline=False), staged, external_data=_STAGED_DATA)
            proto = onnx.load(str(staged), load_external_data=False)
            data = _publish_data(Path(staging) / _STAGED_DATA, proto, path)
            prepend_nodes(proto.graph, constants)
            with atomic_output(path) as temporary:
                temporary.write_bytes(proto.SerializeToString())
    except OSError as error:
        raise InputError(f"{path}: cannot write the output ({error.strerror or error})") from None
    return data


def _publish_data(staged: Path, proto: onnx.ModelProto, path: Path) -> Path | None:
    """Move the staged data file, synced, to its content-derived name beside ``path``; point ``proto`` at it.

    Returns None when every weight was small enough to stay inside the model.
    """
    name = f"{path.name}.{_digest(staged)}.data"
    if not _relocate(proto, _STAGED_DATA, name):
        return None
    _fsync(staged)
    final = path.parent / name
    os.replace(staged, final)
    _fsync_directory(path.parent)
    return final.resolve()


def _relocate(proto: onnx.ModelProto, old: str, new: str) -> int:
    """Point every external tensor stored in ``old`` at ``new``; returns how many were."""
    moved = 0
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
                moved += 1
    return moved


def _prepared(model: ir.Model, constants: list[onnx.NodeProto], inline: bool) -> ir.Model:
    """``model`` as it is to be written: without the weights stored sparse, and weights read in when ``inline``.

    A weight still in the input's external data file would otherwise be
    written as a reference relative to the input's folder.  ``model`` itself
    is never changed: a clone shares its tensors.
    """
    external = inline and has_external_tensors(model)
    if not constants and not external:
        return model
    prepared = model.clone()
    for node in constants:
        prepared.graph.initializers.pop(node.output[0])
    if external:
        for value in prepared.graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                value.const_value = ir.tensor(value.const_value.numpy(), name=value.name)
    return prepared


def _owned_data_name(name: str, model_name: str) -> bool:
    return name == f"{model_name}.data" or re.fullmatch(rf"{re.escape(model_name)}\.[0-9a-f]{{{_DIGEST_CHARS}}}\.data", name) is not None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:_DIGEST_CHARS]


def _remove_files(paths: Iterable[Path | None]) -> None:
    """Delete stale data files; one that cannot be deleted is reported, since it would stay behind unnoticed."""
    for stale in paths:
        if stale is None:
            continue
        try:
            stale.unlink(missing_ok=True)
        except OSError as error:
            raise InputError(f"{stale}: cannot remove this stale data file ({error.strerror or error})") from None


def _resolved(paths: Iterable[str | os.PathLike]) -> set[Path]:
    return {Path(path).resolve() for path in paths}


def _fsync(path: Path) -> None:
    """Force the file's content to disk, so a rename that publishes it cannot outlive the content in a crash."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make completed renames in ``directory`` durable, in the order they were made."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


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
        _fsync(Path(temporary))
        os.replace(temporary, path)
        _fsync_directory(directory)
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
