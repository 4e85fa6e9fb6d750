"""Prove a candidate model is valid and computes (nearly) what the reference does.

The harness follows onnx/optimizer's ``_compare``: the full checker on the
candidate, then both models in onnxruntime with graph optimisations off on the
same seeded inputs, compared element-wise with ``|a - b| <= atol + rtol * |b|``.
Per output it also reports cosine similarity and, for class scores, how often
the top-1 class agrees, because lossy pruning is judged by those, not by
bit equality.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.errors import InputError, first_line
from onnxprune.model_source import ModelLike, read_model

PRECISION_STEPS = 4
"""Steps of an output's dtype (at its magnitude) that an exact rewrite may differ by."""
NOISE_FACTOR = 4.0
"""Times the original's own rounding noise (optimised vs not, in onnxruntime) that an exact rewrite may differ by."""
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5


@dataclass
class OutputComparison:
    """How one graph output of the candidate differs from the reference's."""

    name: str
    shape: list[int]
    max_abs_diff: float
    max_rel_diff: float
    cosine: float
    top1_agreement: float | None
    within_tolerance: bool
    atol: float = 0.0
    """The absolute tolerance applied: the requested one, raised to the output's own precision when that is coarser."""


@dataclass
class Validation:
    """The verdict on a candidate, with the numbers behind it."""

    passed: bool
    checker_error: str | None
    outputs: list[OutputComparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    samples: int = 0
    data: str = ""
    """What the outputs were compared on (held-out calibration samples, an npz, random inputs)."""
    real_data: bool = False
    """Whether that data is real (held-out samples, an npz) rather than random inputs, which say little about a trained model's task."""
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    """The shape of each input in the first compared batch."""
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    accuracy: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def worst(self, metric: str) -> float | None:
        """The worst value of ``metric`` across outputs (largest diff, smallest similarity)."""
        values = [getattr(output, metric) for output in self.outputs if getattr(output, metric) is not None]
        if not values:
            return None
        return max(values) if metric.startswith("max_") else min(values)


@dataclass(frozen=True)
class InputSource:
    """Where comparison inputs come from: given batches (held-out calibration data), an npz file, or seeded random samples."""

    npz_path: str | None = None
    samples: int = 3
    seed: int = 0
    shapes: Mapping[str, tuple[int, ...]] | None = None
    batches: Sequence[Mapping[str, np.ndarray]] | None = None
    labels: np.ndarray | None = None
    """Labels of the samples in ``batches``, in order."""
    description: str = ""
    """What the inputs are, for the report: real data or random, and how many samples."""

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.npz_path is not None:
            return f"inputs from {self.npz_path}"
        return f"{self.samples} random input batch(es) (seed {self.seed}): drift on random inputs says little about a trained model's task"


def check_model(model: ir.Model) -> str | None:
    """Run ``onnx.checker`` with the full check (strict shape inference); None when it passes."""
    try:
        if irx.needs_external_data(model):
            with irx.temporary_file(model) as path:
                onnx.checker.check_model(path, full_check=True)
        else:
            onnx.checker.check_model(irx.to_proto(model), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as error:
        return first_line(error)
    return None


def comparison_batches(model: ir.Model, source: InputSource) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """The input batches to compare on, and the labels when the npz carries them.

    An npz with more rows than a static-batch model accepts is fed in
    batch-sized chunks, so a whole test split can be used with any model.
    """
    if source.batches is not None:
        return [dict(batch) for batch in source.batches], source.labels
    specs = runtime.input_specs(model, source.shapes)
    if source.npz_path is None:
        return [runtime.random_inputs(specs, source.seed + index) for index in range(source.samples)], None
    feeds = runtime.load_npz_inputs(source.npz_path, specs)
    labels = _labels(source.npz_path)
    batch = _static_batch(model, specs)
    rows = {len(array) for array in feeds.values()}
    if batch is None or rows == {batch}:
        return [feeds], labels
    if len(rows) != 1 or next(iter(rows)) % batch:
        raise InputError(f"{source.npz_path}: arrays have {sorted(rows)} rows; the model takes batches of {batch}")
    count = next(iter(rows))
    return [{name: array[start : start + batch] for name, array in feeds.items()} for start in range(0, count, batch)], labels


def validate(
    reference: ModelLike,
    candidate: ModelLike,
    source: InputSource = InputSource(),
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> Validation:
    """Check ``candidate`` and compare its outputs with ``reference``'s on the same inputs.

    Both are paths, ``onnx.ModelProto``s or ``ir.Model``s.  A candidate that
    fails the checker is a failed validation, not an error.
    """
    reference, _ = read_model(reference)
    candidate, _ = read_model(candidate, check=False)
    result = Validation(passed=False, checker_error=check_model(candidate), rtol=rtol, atol=atol)
    if result.checker_error is not None:
        result.problems.append(f"onnx.checker: {result.checker_error}")
        return result
    result.problems.extend(_interface_differences(reference, candidate))
    if result.problems:
        return result
    batches, labels = comparison_batches(reference, source)
    reference_outputs = _run_all(reference, batches)
    try:
        candidate_outputs = _run_all(candidate, batches)
    except InputError as error:
        # A candidate onnxruntime cannot load or run is what validation exists to catch: a failed check, not bad input.
        result.problems.append(str(error))
        return result
    result.samples = len(batches)
    result.real_data = source.batches is not None or source.npz_path is not None
    result.input_shapes = {name: list(np.shape(array)) for name, array in batches[0].items()} if batches else {}
    result.data = source.describe() if source.batches is not None else f"{source.describe()} ({sum(runtime.sample_count(batch) for batch in batches)} samples)"
    for name, expected in reference_outputs.items():
        actual = candidate_outputs[name]
        if expected.shape != actual.shape:
            result.problems.append(f"output '{name}' has shape {list(actual.shape)}, the reference {list(expected.shape)}")
            continue
        result.outputs.append(compare_arrays(name, expected, actual, rtol, atol))
    _allow_for_precision(result, reference, batches, reference_outputs, candidate_outputs)
    if labels is not None:
        first = next(iter(reference_outputs))
        result.accuracy = {
            "reference": _accuracy(reference_outputs[first], labels),
            "candidate": _accuracy(candidate_outputs[first], labels),
        }
    result.passed = not result.problems and all(output.within_tolerance for output in result.outputs)
    return result


def compare_arrays(name: str, expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> OutputComparison:
    """Element-wise closeness plus the similarity measures lossy pruning is judged by.

    Both arrays carry a leading axis of runs (one entry per input batch).
    """
    reference = expected.astype(np.float64)
    candidate = actual.astype(np.float64)
    difference = np.abs(candidate - reference)
    # Relative error per element; the floor keeps exact zeros in the reference from dividing by zero.
    relative = difference / np.maximum(np.abs(reference), 1e-6)
    return OutputComparison(
        name=name,
        shape=list(expected.shape[1:]),
        max_abs_diff=float(difference.max(initial=0.0)),
        max_rel_diff=float(relative.max(initial=0.0)),
        cosine=_cosine(reference, candidate),
        top1_agreement=_top1_agreement(reference, candidate),
        within_tolerance=bool(np.all(difference <= atol + rtol * np.abs(reference))),
        atol=atol,
    )


def output_precision(expected: np.ndarray, noise: float) -> float:
    """The smallest absolute drift an exact rewrite of the model can be held to on this output.

    Two limits no rewrite can beat: a few steps of the output's own dtype at
    its magnitude (one float16 step near 1.0 is 9.8e-4), and a few times the
    rounding noise the original already shows when onnxruntime folds and
    fuses it (``noise``; a rewrite that folds BatchNorm moves outputs as much).
    """
    magnitude = float(np.max(np.abs(expected), initial=0.0))
    step = float(np.spacing(expected.dtype.type(magnitude))) if np.issubdtype(expected.dtype, np.floating) else 0.0
    return max(PRECISION_STEPS * step, NOISE_FACTOR * noise)


def _rounding_noise(model: ir.Model, batches: list[dict[str, np.ndarray]], outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per output, how far onnxruntime's own graph optimisations move the original's outputs (its rounding noise)."""
    optimized = _run_all(model, batches, optimize=True)
    return {name: float(np.max(np.abs(optimized[name].astype(np.float64) - reference.astype(np.float64)), initial=0.0)) for name, reference in outputs.items()}


def _allow_for_precision(
    result: Validation,
    reference: ir.Model,
    batches: list[dict[str, np.ndarray]],
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
) -> None:
    """Re-judge outputs that missed ``atol`` against the tolerance their precision allows (:func:`output_precision`).

    The rounding noise costs one more run of the original, so it is measured
    only when an output missed the requested tolerance.
    """
    missed = [index for index, output in enumerate(result.outputs) if not output.within_tolerance]
    if not missed:
        return
    noise = _rounding_noise(reference, batches, expected)
    for index in missed:
        output = result.outputs[index]
        atol = max(result.atol, output_precision(expected[output.name], noise[output.name]))
        if atol > result.atol:
            result.outputs[index] = compare_arrays(output.name, expected[output.name], actual[output.name], result.rtol, atol)


def _run_all(model: ir.Model, batches: list[dict[str, np.ndarray]], optimize: bool = False) -> dict[str, np.ndarray]:
    """Run every batch and join each output: along a new leading axis of batches, or along the batch axis when the last batch is shorter.

    Graph optimisations stay off unless asked, so the model is compared, not what onnxruntime makes of it.
    """
    session = runtime.make_session(model, optimize=optimize)
    runs = [runtime.run(session, feeds) for feeds in batches]
    return {name: _join(name, [np.asarray(run[name]) for run in runs]) for name in runs[0]}


def _join(name: str, arrays: list[np.ndarray]) -> np.ndarray:
    shapes = {array.shape for array in arrays}
    if len(shapes) == 1:
        return np.stack(arrays)
    if len({shape[1:] for shape in shapes}) == 1 and all(len(shape) > 0 for shape in shapes):
        return np.concatenate(arrays)
    raise InputError(f"output '{name}' has shapes {sorted(shapes)} across input batches; they cannot be compared as one")


def _interface_differences(reference: ir.Model, candidate: ir.Model) -> list[str]:
    """Inputs and outputs must keep names, order and element types."""
    problems = []
    for kind, ours, theirs in (
        ("inputs", reference.graph.inputs, candidate.graph.inputs),
        ("outputs", reference.graph.outputs, candidate.graph.outputs),
    ):
        expected = [(value.name, value.dtype) for value in ours if not value.is_initializer()]
        actual = [(value.name, value.dtype) for value in theirs if not value.is_initializer()]
        if expected != actual:
            problems.append(f"graph {kind} differ: reference {_describe(expected)}, candidate {_describe(actual)}")
    return problems


def _describe(signature: list[tuple[str | None, ir.DataType | None]]) -> str:
    return "[" + ", ".join(f"{name}:{dtype.name if dtype else '?'}" for name, dtype in signature) + "]"


def _static_batch(model: ir.Model, specs: list[runtime.InputSpec]) -> int | None:
    """The fixed leading dim shared by all inputs, or None when the batch is symbolic."""
    batches = set()
    for value in model.graph.inputs:
        if value.shape is None or len(value.shape) == 0:
            return None
        first = value.shape[0]
        if not isinstance(first, int):
            return None
        batches.add(first)
    return batches.pop() if len(batches) == 1 and specs else None


def _labels(path: str) -> np.ndarray | None:
    with np.load(path, allow_pickle=False) as archive:
        return archive["labels"] if "labels" in archive.files else None


def npz_has_labels(path: str) -> bool | None:
    """Whether the npz at ``path`` holds a ``labels`` array; None when it cannot be read (validation says why, in its words)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "labels" in archive.files
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def _cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    a, b = reference.ravel(), candidate.ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norms)


def _class_scores(array: np.ndarray) -> np.ndarray | None:
    """Rows of class scores ([runs, batch, classes] with classes > 1), else None."""
    if array.ndim not in (2, 3) or array.shape[-1] < 2 or not np.issubdtype(array.dtype, np.floating):
        return None
    return array.reshape(-1, array.shape[-1])


def _top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Fraction of rows whose arg-max class agrees; None for outputs that are not class scores."""
    ours, theirs = _class_scores(reference), _class_scores(candidate)
    if ours is None or theirs is None:
        return None
    return float(np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1)))


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class scores (batches joined) against integer labels."""
    scores = outputs.reshape(-1, outputs.shape[-1])
    if len(scores) != len(labels):
        raise InputError(f"labels has {len(labels)} entries, the model produced {len(scores)} rows of scores")
    return float(np.mean(scores.argmax(axis=1) == labels))
