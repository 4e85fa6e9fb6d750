"""Reading calibration data: what the user gave, turned into arrays checked against the model's inputs.

This module's one job is to read each accepted form (listed in
:mod:`onnxprune.calibration`: a path to an ``.npz``, a folder of ``.npz`` or
``.npy`` files, one ``.npy`` file, an array, a dict or an iterable of dicts)
as a stream of chunks, to check every chunk, once, against the model's
declared inputs (names, rank, dtype, static dims, sample counts, labels), and
to join the chunks per input.  A user mistake ends in one line that names the
file, the key and what the model wants, not in an onnxruntime traceback
half-way through a pruning run.

Splitting the samples into fit and held-out parts, choosing the labels that
apply, and batching are :mod:`onnxprune.calibration`'s, which uses this module.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import onnx_ir as ir

from onnxprune.errors import InputError, first_line

LABELS_KEY = "labels"
"""The array (``.npz`` key, ``labels.npy``, dict key) that holds labels, unless a graph input has that name."""

_CASTS = {(np.dtype(np.float64), np.dtype(np.float32)), (np.dtype(np.float32), np.dtype(np.float16))}
"""Dtype changes done silently-but-noted: numpy's default float64 for float32 models, float32 for float16 models."""

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
"""What numpy raises for a missing, truncated, corrupt or pickled file."""

ArrayLike: TypeAlias = Any
CalibrationInput: TypeAlias = str | os.PathLike[str] | np.ndarray | Mapping[str, ArrayLike] | Iterable[Mapping[str, ArrayLike]]


# --- the model's inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """A graph input as the data must match it: dims are numbers (static), names or None (unknown)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...] | None
    """None when the model declares no shape: the data decides it all."""

    def static(self, axis: int) -> int | None:
        """The declared size of ``axis`` when it is a number; -1 (as some exporters write) is symbolic."""
        dim = None if self.dims is None else self.dims[axis]
        return dim if isinstance(dim, int) and dim >= 0 else None

    def describe(self) -> str:
        shape = "shape undeclared" if self.dims is None else "[" + ", ".join("?" if dim is None else str(dim) for dim in self.dims) + "]"
        return f"{self.name} {shape} {self.dtype}"


def model_inputs(model: ir.Model) -> dict[str, Input]:
    """The graph inputs calibration data must feed (initializers left out), by name."""
    inputs = {}
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        name = value.name or ""  # serialised, an unnamed input is "", which is what onnxruntime is fed under
        if not isinstance(value.type, ir.TensorType) or value.dtype is None:
            raise InputError(f"input '{name}' is not a tensor; calibration data can only feed tensor inputs")
        dims = None if value.shape is None else tuple(dim if isinstance(dim, int) else dim.value for dim in value.shape)
        if dims == ():
            raise InputError(f"input '{name}' is a scalar; calibration data needs inputs whose first axis is the sample axis")
        inputs[name] = Input(name, value.dtype.numpy(), dims)
    if not inputs:
        raise InputError("the model has no graph inputs to feed calibration data to")
    return inputs


def _wanted(inputs: Mapping[str, Input]) -> str:
    return "the model wants: " + "; ".join(spec.describe() for spec in inputs.values())


# --- reading: every form becomes a stream of chunks ---------------------------------------------------


@dataclass
class _Chunk:
    """One piece of the data as read (a file, a batch): arrays by input name, first axis = samples."""

    where: str
    """The file or batch, for messages."""
    arrays: dict[str, Any]
    labels: Any = None
    files: dict[str, str] = field(default_factory=dict)
    """Per input, the file it came from when that is not ``where`` (a folder of ``<input>.npy``)."""

    def at(self, name: str) -> str:
        return self.files.get(name, self.where)


@dataclass
class Source:
    """The data as opened: a description for messages, and its chunks, read as they are iterated."""

    description: str
    chunks: Iterator[_Chunk]
    labels: np.ndarray | None = None
    """Labels for the whole data (``labels.npy`` of a folder), as opposed to per-chunk labels."""
    labels_where: str = ""


def open_source(data: CalibrationInput, inputs: Mapping[str, Input]) -> Source:
    """``data`` in any accepted form, opened; files are read, and chunks checked, only when :func:`collect` iterates them."""
    if isinstance(data, (str, os.PathLike)):
        return _open_path(Path(data), inputs)
    if isinstance(data, np.ndarray):
        return Source("arrays given in Python", iter([_Chunk("the calibration array", {_only_input(inputs, "an array"): data})]))
    if isinstance(data, Mapping):
        return Source("arrays given in Python", iter([_mapping_chunk(data, "the calibration dict", inputs)]))
    if isinstance(data, Iterable) and not isinstance(data, (bytes, bytearray)):
        return Source("batches given in Python", _iterable_chunks(data, inputs))
    raise InputError(f"calibration data must be a path, an array, a dict of arrays or an iterable of such dicts, got {type(data).__name__}")


def _only_input(inputs: Mapping[str, Input], what: str) -> str:
    if len(inputs) != 1:
        raise InputError(f"{what} can only feed a model with one input, this one has {len(inputs)}: give arrays keyed by input name; {_wanted(inputs)}")
    return next(iter(inputs))


def _split_labels(arrays: Mapping[str, Any], inputs: Mapping[str, Input]) -> tuple[dict[str, Any], Any]:
    """The ``labels`` entry is labels unless the model has an input of that name."""
    arrays = dict(arrays)
    labels = arrays.pop(LABELS_KEY) if LABELS_KEY in arrays and LABELS_KEY not in inputs else None
    return arrays, labels


def _mapping_chunk(mapping: Mapping[Any, Any], where: str, inputs: Mapping[str, Input]) -> _Chunk:
    for key in mapping:
        if not isinstance(key, str):
            raise InputError(f"{where}: keys must be input names (strings), got {key!r}")
    arrays, labels = _split_labels(mapping, inputs)
    return _Chunk(where, arrays, labels)


def _iterable_chunks(batches: Iterable[Any], inputs: Mapping[str, Input]) -> Iterator[_Chunk]:
    for index, batch in enumerate(batches):
        where = f"calibration batch {index}"
        if not isinstance(batch, Mapping):
            raise InputError(f"{where} is of type {type(batch).__name__}; each batch must be a dict of input name -> array")
        yield _mapping_chunk(batch, where, inputs)


def _open_path(path: Path, inputs: Mapping[str, Input]) -> Source:
    if path.is_dir():
        return _open_folder(path, inputs)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npy":
        name = _only_input(inputs, f"{path}: a .npy file")
        return Source(str(path), iter([_Chunk(str(path), {name: _read_npy(path)})]))
    return Source(str(path), iter([_read_npz(path, inputs)]))


def _open_folder(folder: Path, inputs: Mapping[str, Input]) -> Source:
    try:
        files = sorted((entry for entry in folder.iterdir() if entry.is_file() and entry.suffix.lower() in (".npz", ".npy")), key=lambda entry: entry.name)
    except OSError as error:
        raise InputError(f"{folder}: cannot list the folder ({error.strerror or error})") from None
    npz = [entry for entry in files if entry.suffix.lower() == ".npz"]
    npy = [entry for entry in files if entry.suffix.lower() == ".npy"]
    if not files:
        raise InputError(f"{folder}: the folder holds no .npz or .npy files")
    if npz and npy:
        raise InputError(f"{folder}: the folder mixes .npz and .npy files; use one kind")
    if npz:
        return Source(str(folder), (_read_npz(entry, inputs) for entry in npz))
    labels_file = next((entry for entry in npy if entry.stem == LABELS_KEY and LABELS_KEY not in inputs), None)
    samples = [entry for entry in npy if entry != labels_file]
    if not samples:
        raise InputError(f"{folder}: the folder holds only {labels_file.name if labels_file else 'labels'}, no input samples")
    labels = None if labels_file is None else _read_npy(labels_file)
    labels_where = "" if labels_file is None else str(labels_file)
    if len(inputs) == 1:
        name = next(iter(inputs))
        chunks: Iterator[_Chunk] = (_Chunk(str(entry), {name: _read_npy(entry)}) for entry in samples)
        return Source(str(folder), chunks, labels, labels_where)
    for entry in samples:
        if entry.stem not in inputs:
            raise InputError(
                f"{entry}: '{entry.stem}' is not an input of the model; a folder of .npy files for several inputs needs one <input>.npy each; {_wanted(inputs)}"
            )
    arrays = {entry.stem: _read_npy(entry) for entry in samples}
    chunk = _Chunk(str(folder), arrays, files={entry.stem: str(entry) for entry in samples})
    return Source(str(folder), iter([chunk]), labels, labels_where)


def _why(error: BaseException) -> str:
    """numpy's reason, except that a file it does not recognise is reported as pickled data: say what that means here."""
    text = first_line(error, 200)
    return "not in numpy's format, or it holds pickled Python objects, which are not loaded" if "pickle" in text else text


def _read_npy(path: Path) -> np.ndarray:
    """Memory-mapped, so that ``max_samples`` reads only what it uses of a big file."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except _READ_ERRORS as error:
        raise InputError(f"{path}: not a readable .npy file ({_why(error)})") from None
    if not isinstance(array, np.ndarray):
        if hasattr(array, "close"):
            array.close()
        raise InputError(f"{path}: not a .npy array (it is an .npz archive; name it .npz)")
    return array


def _read_npz(path: Path, inputs: Mapping[str, Input]) -> _Chunk:
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise InputError(f"{path}: not a readable .npz file ({_why(error)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not an .npz archive (it holds a single array; a .npy file needs the .npy suffix)")
    with archive:
        try:
            arrays = {key: archive[key] for key in archive.files}
        except _READ_ERRORS as error:
            raise InputError(f"{path}: not a readable .npz file ({_why(error)})") from None
    arrays, labels = _split_labels(arrays, inputs)
    return _Chunk(str(path), arrays, labels)


# --- labels given apart from the data -----------------------------------------------------------------


def read_labels(labels: Any) -> tuple[np.ndarray, str]:
    """The ``labels`` argument of :func:`~onnxprune.calibration.load_calibration` (a path or an array), checked, and where it came from."""
    if not isinstance(labels, (str, os.PathLike)):
        return as_labels(labels, "the labels array"), "the labels array"
    path = Path(labels)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise InputError(f"{path}: not a readable .npy or .npz file ({_why(error)})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if LABELS_KEY not in loaded.files:
                raise InputError(f"{path}: no '{LABELS_KEY}' array (keys: {', '.join(loaded.files) or 'none'})")
            try:
                loaded = loaded[LABELS_KEY]
            except _READ_ERRORS as error:
                raise InputError(f"{path}: not a readable .npz file ({_why(error)})") from None
    return as_labels(loaded, str(path)), str(path)


# --- checking and joining -----------------------------------------------------------------------------


def collect(
    source: Source, inputs: Mapping[str, Input], max_samples: int | None, notes: dict[str, None]
) -> tuple[dict[str, np.ndarray], np.ndarray | None, int, bool]:
    """The checked chunks joined per input, their labels, the sample count, and whether all data was read."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in inputs}
    label_parts: list[np.ndarray] = []
    first: _Chunk | None = None
    first_has_labels = False
    count, complete = 0, True
    for chunk in source.chunks:
        arrays = _check_chunk(chunk, inputs)
        samples = len(next(iter(arrays.values())))
        chunk_labels = _chunk_labels(chunk, samples)
        if first is None:
            first, first_has_labels = chunk, chunk_labels is not None
        else:
            _check_same_layout(first, first_has_labels, parts, chunk, arrays, chunk_labels)
        take = samples if max_samples is None else min(samples, max_samples - count)
        for name, array in arrays.items():
            parts[name].append(_cast(array[:take], inputs[name], notes))
        if chunk_labels is not None:
            label_parts.append(np.array(chunk_labels[:take]))
        count += take
        if max_samples is not None and count >= max_samples:
            complete = False  # whether more samples follow is not known: the rest is not read
            break
    if first is None:
        raise InputError(f"{source.description}: no batches")
    joined = {name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for name, arrays in parts.items()}
    labels = None if not label_parts else np.concatenate(label_parts)
    return joined, labels, count, complete


def _check_chunk(chunk: _Chunk, inputs: Mapping[str, Input]) -> dict[str, np.ndarray]:
    """The chunk's arrays, each checked against its input: name, rank, dtype, static dims; same sample count."""
    for name in chunk.arrays:
        if name not in inputs:
            raise InputError(f"{chunk.at(name)}: '{name}' is not an input of the model; {_wanted(inputs)}")
    missing = [name for name in inputs if name not in chunk.arrays]
    if missing:
        raise InputError(f"{chunk.where}: no array for input{'s' if len(missing) > 1 else ''} {', '.join(repr(name) for name in missing)}; {_wanted(inputs)}")
    arrays = {}
    for name, spec in inputs.items():
        where = f"{chunk.at(name)}: '{name}'"
        array = _as_array(chunk.arrays[name], where)
        if array.ndim == 0:
            raise InputError(f"{where} is a scalar; the first axis must be the samples ({_wanted(inputs)})")
        if spec.dims is not None and array.ndim != len(spec.dims):
            raise InputError(f"{where} has rank {array.ndim} (shape {list(array.shape)}); the model's input is rank {len(spec.dims)}: {spec.describe()}")
        if array.dtype != spec.dtype and (array.dtype, spec.dtype) not in _CASTS:
            raise InputError(f"{where} has dtype {array.dtype}; the model's input is {spec.dtype}: {spec.describe()}")
        for axis in range(1, array.ndim):
            static = spec.static(axis)
            if static is not None and array.shape[axis] != static:
                raise InputError(f"{where} has shape {list(array.shape)}; dim {axis} must be {static}: {spec.describe()}")
        arrays[name] = array
    counts = {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"'{name}' {count}" for name, count in counts.items())
        raise InputError(f"{chunk.where}: inputs have different sample counts ({listed}); the first axis of every array is the samples")
    return arrays


def _as_array(value: Any, where: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise InputError(f"{where} is not an array ({_why(error)})") from None


def _chunk_labels(chunk: _Chunk, samples: int) -> np.ndarray | None:
    if chunk.labels is None:
        return None
    labels = as_labels(chunk.labels, f"{chunk.where}: '{LABELS_KEY}'")
    if len(labels) != samples:
        raise InputError(f"{chunk.where}: '{LABELS_KEY}' has {len(labels)} entries for {samples} samples; give one label per sample")
    return labels


def _check_same_layout(
    first: _Chunk,
    first_has_labels: bool,
    parts: Mapping[str, list[np.ndarray]],
    chunk: _Chunk,
    arrays: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
) -> None:
    """Chunks are joined along the sample axis, so every other dim (symbolic ones too) must agree, and labels be in all or none."""
    for name, array in arrays.items():
        before = parts[name][0]
        if array.shape[1:] != before.shape[1:]:
            raise InputError(
                f"{chunk.at(name)}: '{name}' has samples of shape {list(array.shape[1:])}, but {first.at(name)} has {list(before.shape[1:])}; "
                "joined data needs one shape per input"
            )
    if (labels is not None) != first_has_labels:
        has, lacks = (chunk, first) if labels is not None else (first, chunk)
        raise InputError(f"{lacks.where}: no '{LABELS_KEY}' array, but {has.where} has one; give labels in every file or batch, or in none")


def _cast(array: np.ndarray, spec: Input, notes: dict[str, None]) -> np.ndarray:
    if array.dtype == spec.dtype:
        return array
    notes[f"'{spec.name}' cast from {array.dtype} to {spec.dtype}"] = None
    return array.astype(spec.dtype)


def as_labels(value: Any, where: str) -> np.ndarray:
    """``value`` as an array of labels, one per sample: not a scalar, not Python objects."""
    labels = _as_array(value, where)
    if labels.ndim == 0:
        raise InputError(f"{where} is a single value; labels need one entry per sample")
    if labels.dtype == object:
        raise InputError(f"{where} holds Python objects; labels must be numbers")
    return labels
