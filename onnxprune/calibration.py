"""Calibration data: user samples turned into checked onnxruntime feed batches.

Data-driven steps need real inputs.  The channel pass refits layers by least
squares on the *fit* part; validation measures drift and task accuracy on the
*held-out* part, which pruning never saw, so a refit cannot flatter itself by
being judged on the samples it was fitted to.

Everything about the data is checked here, once, against the model's declared
inputs, so that the passes and validation get feeds onnxruntime accepts and a
user mistake ends in one line that names the file, the key and what the model
wants, not in an onnxruntime traceback half-way through a pruning run.

Accepted forms (see :func:`load_calibration`):

* a path to an ``.npz`` whose arrays are keyed by graph input name, first axis
  = samples, with an optional ``labels`` array;
* a path to a folder of ``.npz`` files like that, concatenated in sorted
  file-name order (``part10`` sorts before ``part2``: zero-pad the numbers);
* a path to a folder of ``.npy`` files: for a single-input model each file is
  an array of samples (concatenated in sorted file-name order); for a model
  with several inputs each file is named after its input (``<input>.npy``);
  ``labels.npy`` holds the labels.  Files of other kinds and sub-folders are
  ignored;
* a path to one ``.npy`` file (single-input models);
* a numpy array (single-input models), a dict input name -> array, or an
  iterable of such dicts, each one batch (first axis = samples).

The split is per sample index, not per batch (see :func:`held_out_mask`), so
it does not depend on the batch size, on how the data was cut into files, or
on ``max_samples``: the first N samples are split the same way whatever
follows them.
"""

from __future__ import annotations

import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import onnx_ir as ir

from onnxprune.errors import InputError, first_line

DEFAULT_BATCH_SIZE = 32
"""Samples per run for models whose batch dim is symbolic.

Large enough that onnxruntime's per-run overhead is small against the work,
small enough that the activations of a mid-size CNN stay well inside memory
(the least-squares refit accumulates over batches, so it needs no bigger
batch).  A model with a fixed batch dim is always fed batches of that size.
"""

DEFAULT_HELD_OUT_FRACTION = 0.25
"""A quarter held out: enough samples for a stable accuracy, most left to fit on."""

LABELS_KEY = "labels"
"""The array (``.npz`` key, ``labels.npy``, dict key) that holds labels, unless a graph input has that name."""

_CASTS = {(np.dtype(np.float64), np.dtype(np.float32)), (np.dtype(np.float32), np.dtype(np.float16))}
"""Dtype changes done silently-but-noted: numpy's default float64 for float32 models, float32 for float16 models."""

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
"""What numpy raises for a missing, truncated, corrupt or pickled file."""

ArrayLike: TypeAlias = Any
CalibrationInput: TypeAlias = str | os.PathLike[str] | np.ndarray | Mapping[str, ArrayLike] | Iterable[Mapping[str, ArrayLike]]


@dataclass(frozen=True)
class CalibrationData:
    """Checked feed batches, split into a part to fit pruning on and a part to validate on.

    Every batch maps each graph input name to an array of the model's dtype,
    ready for ``session.run``.  Samples keep their order within each part, and
    the labels of a part line up with its samples (batches joined).
    """

    fit: list[dict[str, np.ndarray]]
    """Feed batches for fitting (least-squares refit, scoring), keyed by graph input name."""
    held_out: list[dict[str, np.ndarray]]
    """Feed batches for validation; empty when ``held_out_fraction`` was 0."""
    fit_labels: np.ndarray | None
    """Labels of the fit samples in order, or None when the data has no labels."""
    held_out_labels: np.ndarray | None
    """Labels of the held-out samples in order, or None when the data has no labels."""
    source: str
    """Where the data came from, for reports: a path, or ``"arrays given in Python"``."""
    notes: tuple[str, ...] = field(default=())
    """What was changed on the way, e.g. ``"'x' cast from float64 to float32"``, for reports."""

    @property
    def fit_samples(self) -> int:
        """Samples in the fit part (batches joined)."""
        return _samples(self.fit)

    @property
    def held_out_samples(self) -> int:
        """Samples in the held-out part (batches joined)."""
        return _samples(self.held_out)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per input, the shape of one batch as fed (first dim = the batch size used).

        Symbolic dims of the model (batch, or H/W of a Paddle export) are taken
        from the data this way: pass the result to
        :func:`onnxprune.runtime.input_specs` as ``data_shapes``.  The last
        batch of a part may be smaller; this is the first, full one.
        """
        first = self.fit[0] if self.fit else self.held_out[0]
        return {name: tuple(int(dim) for dim in array.shape) for name, array in first.items()}


def _samples(batches: list[dict[str, np.ndarray]]) -> int:
    return sum(len(next(iter(batch.values()))) for batch in batches if batch)


def load_calibration(
    data: CalibrationInput,
    model: ir.Model,
    *,
    labels: str | os.PathLike[str] | ArrayLike | None = None,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
    batch_size: int | None = None,
    max_samples: int | None = None,
) -> CalibrationData:
    """Load, check, split and batch calibration data for ``model``.

    ``data`` is any form listed in the module doc.  ``labels`` (a ``.npy``, an
    ``.npz`` with a ``labels`` array, or an array) replaces labels found in the
    data; either way there must be one label per sample.

    ``held_out_fraction`` (in [0, 1)) of the samples is held out, interleaved
    over the data (:func:`held_out_mask`) so that class-sorted data still gives
    both parts every class; 0 means no held-out part.

    ``batch_size`` is the samples per batch for a model whose batch dim is
    symbolic (default :data:`DEFAULT_BATCH_SIZE`).  A model whose batch dim is
    a number is fed batches of exactly that size, whatever ``batch_size``
    says (noted), and samples that do not fill a last batch of a part are
    left out (noted).

    ``max_samples`` uses only the first N samples, so that a huge data set
    does not have to fit in memory: ``.npy`` files are memory-mapped and read
    only up to N samples, folders and iterables are read only until N samples
    are in (an iterable is not consumed further), and an ``.npz`` member,
    which cannot be read in part, is read whole and cut.  Labels given apart
    from the data are then only checked to cover the samples used.

    Raises :class:`~onnxprune.errors.InputError` (one line naming the file or
    key and what the model wants) for unknown or missing inputs, a wrong rank,
    a dtype other than the model's (beyond the two noted casts), a static dim
    that disagrees with the data, inputs or labels of different sample counts,
    too few samples to split, an empty folder, and unreadable files.
    """
    fraction = _check_fraction(held_out_fraction)
    _check_count("batch_size", batch_size)
    _check_count("max_samples", max_samples)
    inputs = _model_inputs(model)
    source = _open(data, inputs)
    notes: dict[str, None] = {}  # an ordered set: a cast is noted once, not once per file
    arrays, chunk_labels, count, complete = _collect(source, inputs, max_samples, notes)
    sample_labels = _labels(source, chunk_labels, labels, count, complete, notes)
    description = source.description if labels is None or not isinstance(labels, (str, os.PathLike)) else f"{source.description} (labels: {os.fspath(labels)})"

    if count == 0:
        raise InputError(f"{source.description}: no samples (the first axis of every array has length 0)")
    if fraction > 0 and count < 2:
        raise InputError(f"{source.description}: 1 sample; at least 2 are needed to hold some out for validation (or use held_out_fraction 0)")
    held = held_out_mask(count, fraction)
    if fraction > 0 and not held.any():
        raise InputError(f"{source.description}: held_out_fraction {held_out_fraction:g} of {count} samples holds none out; give more samples")
    if held.all():
        raise InputError(f"{source.description}: held_out_fraction {held_out_fraction:g} holds out all {count} samples, leaving none to fit on")

    batch, fixed = _batch_size(inputs, batch_size, notes)
    fit, fit_labels = _batches(arrays, sample_labels, np.flatnonzero(~held), batch, fixed, "fit", source.description, notes)
    held_out: list[dict[str, np.ndarray]] = []
    held_out_labels = None if sample_labels is None else sample_labels[:0]
    if fraction > 0:
        held_out, held_out_labels = _batches(arrays, sample_labels, np.flatnonzero(held), batch, fixed, "held-out", source.description, notes)
    return CalibrationData(fit, held_out, fit_labels, held_out_labels, description, tuple(notes))


def held_out_mask(count: int, fraction: float) -> np.ndarray:
    """Which of ``count`` samples are held out: True for about every ``1/fraction``-th one.

    Sample ``i`` is held out when ``round(i * fraction)`` steps up at ``i + 1``
    (rounding half up), so the first N samples hold out ``round(N * fraction)``
    evenly spread ones (every 4th, starting with the 2nd, for 0.25) whatever N
    is, and data sorted by class gives both parts every class with more than
    a few samples.  The fraction is made an exact ratio first so the pattern
    does not depend on floating-point rounding.
    """
    ratio = Fraction(fraction).limit_denominator(1_000_000)
    p, q = ratio.numerator, ratio.denominator
    steps = (2 * np.arange(count + 1, dtype=np.int64) * p + q) // (2 * q)
    return np.asarray(steps[1:] > steps[:-1])


# --- arguments and the model's inputs -----------------------------------------------------------------


def _check_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not 0 <= float(value) < 1:
        raise InputError(f"held_out_fraction must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_count(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class _Input:
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


def _model_inputs(model: ir.Model) -> dict[str, _Input]:
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
        inputs[name] = _Input(name, value.dtype.numpy(), dims)
    if not inputs:
        raise InputError("the model has no graph inputs to feed calibration data to")
    return inputs


def _wanted(inputs: Mapping[str, _Input]) -> str:
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
class _Source:
    description: str
    chunks: Iterator[_Chunk]
    labels: np.ndarray | None = None
    """Labels for the whole data (``labels.npy`` of a folder), as opposed to per-chunk labels."""
    labels_where: str = ""


def _open(data: CalibrationInput, inputs: Mapping[str, _Input]) -> _Source:
    if isinstance(data, (str, os.PathLike)):
        return _open_path(Path(data), inputs)
    if isinstance(data, np.ndarray):
        return _Source("arrays given in Python", iter([_Chunk("the calibration array", {_only_input(inputs, "an array"): data})]))
    if isinstance(data, Mapping):
        return _Source("arrays given in Python", iter([_mapping_chunk(data, "the calibration dict", inputs)]))
    if isinstance(data, Iterable) and not isinstance(data, (bytes, bytearray)):
        return _Source("batches given in Python", _iterable_chunks(data, inputs))
    raise InputError(f"calibration data must be a path, an array, a dict of arrays or an iterable of such dicts, got {type(data).__name__}")


def _only_input(inputs: Mapping[str, _Input], what: str) -> str:
    if len(inputs) != 1:
        raise InputError(f"{what} can only feed a model with one input, this one has {len(inputs)}: give arrays keyed by input name; {_wanted(inputs)}")
    return next(iter(inputs))


def _split_labels(arrays: Mapping[str, Any], inputs: Mapping[str, _Input]) -> tuple[dict[str, Any], Any]:
    """The ``labels`` entry is labels unless the model has an input of that name."""
    arrays = dict(arrays)
    labels = arrays.pop(LABELS_KEY) if LABELS_KEY in arrays and LABELS_KEY not in inputs else None
    return arrays, labels


def _mapping_chunk(mapping: Mapping[Any, Any], where: str, inputs: Mapping[str, _Input]) -> _Chunk:
    for key in mapping:
        if not isinstance(key, str):
            raise InputError(f"{where}: keys must be input names (strings), got {key!r}")
    arrays, labels = _split_labels(mapping, inputs)
    return _Chunk(where, arrays, labels)


def _iterable_chunks(batches: Iterable[Any], inputs: Mapping[str, _Input]) -> Iterator[_Chunk]:
    for index, batch in enumerate(batches):
        where = f"calibration batch {index}"
        if not isinstance(batch, Mapping):
            raise InputError(f"{where} is of type {type(batch).__name__}; each batch must be a dict of input name -> array")
        yield _mapping_chunk(batch, where, inputs)


def _open_path(path: Path, inputs: Mapping[str, _Input]) -> _Source:
    if path.is_dir():
        return _open_folder(path, inputs)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npy":
        name = _only_input(inputs, f"{path}: a .npy file")
        return _Source(str(path), iter([_Chunk(str(path), {name: _read_npy(path)})]))
    return _Source(str(path), iter([_read_npz(path, inputs)]))


def _open_folder(folder: Path, inputs: Mapping[str, _Input]) -> _Source:
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
        return _Source(str(folder), (_read_npz(entry, inputs) for entry in npz))
    labels_file = next((entry for entry in npy if entry.stem == LABELS_KEY and LABELS_KEY not in inputs), None)
    samples = [entry for entry in npy if entry != labels_file]
    if not samples:
        raise InputError(f"{folder}: the folder holds only {labels_file.name if labels_file else 'labels'}, no input samples")
    labels = None if labels_file is None else _read_npy(labels_file)
    labels_where = "" if labels_file is None else str(labels_file)
    if len(inputs) == 1:
        name = next(iter(inputs))
        chunks: Iterator[_Chunk] = (_Chunk(str(entry), {name: _read_npy(entry)}) for entry in samples)
        return _Source(str(folder), chunks, labels, labels_where)
    for entry in samples:
        if entry.stem not in inputs:
            raise InputError(
                f"{entry}: '{entry.stem}' is not an input of the model; a folder of .npy files for several inputs needs one <input>.npy each; {_wanted(inputs)}"
            )
    arrays = {entry.stem: _read_npy(entry) for entry in samples}
    chunk = _Chunk(str(folder), arrays, files={entry.stem: str(entry) for entry in samples})
    return _Source(str(folder), iter([chunk]), labels, labels_where)


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


def _read_npz(path: Path, inputs: Mapping[str, _Input]) -> _Chunk:
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


# --- checking and joining -----------------------------------------------------------------------------


def _collect(
    source: _Source, inputs: Mapping[str, _Input], max_samples: int | None, notes: dict[str, None]
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


def _check_chunk(chunk: _Chunk, inputs: Mapping[str, _Input]) -> dict[str, np.ndarray]:
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
    labels = _as_labels(chunk.labels, f"{chunk.where}: '{LABELS_KEY}'")
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


def _cast(array: np.ndarray, spec: _Input, notes: dict[str, None]) -> np.ndarray:
    if array.dtype == spec.dtype:
        return array
    notes[f"'{spec.name}' cast from {array.dtype} to {spec.dtype}"] = None
    return array.astype(spec.dtype)


def _as_labels(value: Any, where: str) -> np.ndarray:
    labels = _as_array(value, where)
    if labels.ndim == 0:
        raise InputError(f"{where} is a single value; labels need one entry per sample")
    if labels.dtype == object:
        raise InputError(f"{where} holds Python objects; labels must be numbers")
    return labels


def _labels(
    source: _Source, chunk_labels: np.ndarray | None, override: Any, count: int, complete: bool, notes: dict[str, None]
) -> np.ndarray | None:
    """The labels of the used samples: the ``labels`` argument, else the data's own."""
    if override is not None:
        labels, where = _read_labels(override)
        if chunk_labels is not None or source.labels is not None:
            notes[f"labels from {where} replace the labels in {source.description}"] = None
    elif source.labels is not None:
        labels, where = _as_labels(source.labels, source.labels_where), source.labels_where
    else:
        return chunk_labels
    if len(labels) != count if complete else len(labels) < count:
        expected = f"{count} samples" if complete else f"the {count} samples used"
        raise InputError(f"{where}: {len(labels)} labels for {expected}; give one label per sample")
    return np.array(labels[:count])


def _read_labels(labels: Any) -> tuple[np.ndarray, str]:
    if not isinstance(labels, (str, os.PathLike)):
        return _as_labels(labels, "the labels array"), "the labels array"
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
    return _as_labels(loaded, str(path)), str(path)


# --- batching -----------------------------------------------------------------------------------------


def _batch_size(inputs: Mapping[str, _Input], requested: int | None, notes: dict[str, None]) -> tuple[int, bool]:
    """``(samples per batch, whether the model fixes it)``: the model's numeric batch dim wins over ``requested``."""
    fixed = {spec.static(0) for spec in inputs.values()} - {None}
    if len(fixed) > 1:
        listed = ", ".join(f"'{spec.name}' {spec.static(0)}" for spec in inputs.values() if spec.static(0) is not None)
        raise InputError(f"the model's inputs fix different batch sizes ({listed}); calibration data cannot be fed to it")
    if fixed:
        batch = fixed.pop()
        if batch is None or batch < 1:
            raise InputError("the model's batch dim is 0; calibration data cannot be fed to it")
        if requested is not None and requested != batch:
            notes[f"batch_size {requested} not used: the model takes batches of exactly {batch}"] = None
        return batch, True
    return (requested or DEFAULT_BATCH_SIZE), False


def _batches(
    arrays: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    indices: np.ndarray,
    batch: int,
    fixed: bool,
    part: str,
    source: str,
    notes: dict[str, None],
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """The samples at ``indices`` (in order) cut into batches; with a fixed batch, the samples of a last partial batch are left out."""
    total = len(indices)
    if fixed and total % batch:
        if total < batch:
            raise InputError(f"{source}: the {part} part has {total} samples, fewer than the {batch} of one batch the model takes; give more samples")
        notes[f"{total % batch} of the {total} {part} samples left out: the model takes batches of exactly {batch}"] = None
        indices = indices[: total - total % batch]
    # A copy per part (contiguous, plain ndarray even from a memory map); the batches are views of it.
    gathered = {name: np.ascontiguousarray(array[indices]) for name, array in arrays.items()}
    batches = [{name: array[start : start + batch] for name, array in gathered.items()} for start in range(0, len(indices), batch)]
    return batches, None if labels is None else labels[indices]
