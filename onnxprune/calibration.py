"""Calibration data: user samples turned into checked onnxruntime feed batches.

Data-driven steps need real inputs.  The channel pass refits layers by least
squares on the *fit* part; validation measures drift and task accuracy on the
*held-out* part, which pruning never saw, so a refit cannot flatter itself by
being judged on the samples it was fitted to.

Everything about the data is checked once, against the model's declared
inputs, by :mod:`onnxprune.calibration_sources` (which reads the forms below),
so that the passes and validation get feeds onnxruntime accepts and a user
mistake ends in one line that names the file, the key and what the model
wants, not in an onnxruntime traceback half-way through a pruning run.  This
module is the public API: it splits the checked samples into the two parts,
settles their labels and cuts them into feed batches.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import runtime
from onnxprune.calibration_sources import LABELS_KEY as LABELS_KEY  # re-exported: part of this module's public API
from onnxprune.calibration_sources import ArrayLike, CalibrationInput, Input, Source, as_labels, collect, model_inputs, open_source, read_labels
from onnxprune.errors import InputError

DEFAULT_BATCH_SIZE = 32
"""Samples per run for models whose batch dim is symbolic.

Large enough that onnxruntime's per-run overhead is small against the work,
small enough that the activations of a mid-size CNN stay well inside memory
(the least-squares refit accumulates over batches, so it needs no bigger
batch).  A model with a fixed batch dim is always fed batches of that size.
"""

DEFAULT_HELD_OUT_FRACTION = 0.25
"""A quarter held out: enough samples for a stable accuracy, most left to fit on."""


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

    def shapes_of_one_sample(self, model: ir.Model) -> dict[str, tuple[int, ...]]:
        """Per input, the data's shape with batch 1 where ``model`` declares a symbolic batch (for timing and MAC counts)."""
        declared_batch = {value.name: value.shape[0] if value.shape else None for value in model.graph.inputs}
        shapes = {}
        for name, shape in self.shapes().items():
            batch = declared_batch.get(name)
            shapes[name] = shape if isinstance(batch, int) and batch >= 0 else (1, *shape[1:])
        return shapes

    def timing_feeds(self, model: ir.Model, shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray] | None:
        """The first sample of the batch :meth:`shapes` reads (all of it where ``model`` fixes the batch), to time ``model`` on;
        None when ``shapes`` (what ``--input-shape`` asks for) give an input another shape.

        Latency is measured on real data when there is some: onnxruntime's
        time can depend on the values (see :func:`onnxprune.bench.benchmark`).
        """
        first = self.fit[0] if self.fit else self.held_out[0]
        one = self.shapes_of_one_sample(model)
        feeds = {name: array[: one[name][0]] if array.ndim else array for name, array in first.items()}
        asked = shapes or {}
        return feeds if all(tuple(array.shape) == tuple(asked.get(name, array.shape)) for name, array in feeds.items()) else None


def _samples(batches: list[dict[str, np.ndarray]]) -> int:
    return sum(runtime.sample_count(batch) for batch in batches)


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
    inputs = model_inputs(model)
    source = open_source(data, inputs)
    notes: dict[str, None] = {}  # an ordered set: a cast is noted once, not once per file
    arrays, chunk_labels, count, complete = collect(source, inputs, max_samples, notes)
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


# --- arguments ----------------------------------------------------------------------------------------


def _check_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not 0 <= float(value) < 1:
        raise InputError(f"held_out_fraction must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_count(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")


# --- labels -------------------------------------------------------------------------------------------


def _labels(source: Source, chunk_labels: np.ndarray | None, override: Any, count: int, complete: bool, notes: dict[str, None]) -> np.ndarray | None:
    """The labels of the used samples: the ``labels`` argument, else the data's own."""
    if override is not None:
        labels, where = read_labels(override)
        if chunk_labels is not None or source.labels is not None:
            notes[f"labels from {where} replace the labels in {source.description}"] = None
    elif source.labels is not None:
        labels, where = as_labels(source.labels, source.labels_where), source.labels_where
    else:
        return chunk_labels
    if len(labels) != count if complete else len(labels) < count:
        expected = f"{count} samples" if complete else f"the {count} samples used"
        raise InputError(f"{where}: {len(labels)} labels for {expected}; give one label per sample")
    return np.array(labels[:count])


# --- batching -----------------------------------------------------------------------------------------


def _batch_size(inputs: Mapping[str, Input], requested: int | None, notes: dict[str, None]) -> tuple[int, bool]:
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
