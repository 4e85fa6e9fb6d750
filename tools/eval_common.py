"""Pieces shared by the labeled evaluation tasks in ``tools/eval_tasks.py``.

A task bundles an ONNX model, unlabeled calibration inputs and an ``evaluate``
function. Everything a task needs is generated once under its work folder and
reused: every builder writes through ``write_npz``/``write_model``, which go
through a temporary file and a rename, so an interrupted build never leaves a
half-written file that a later run would take as cached.

Evaluation always runs in onnxruntime on the CPU with one thread, so numbers
from different machines and from the original and pruned models compare.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
SEED = 0

Metrics = dict[str, float]


@dataclass
class Task:
    """A trained model with what it takes to check that a pruned copy still does its job."""

    name: str
    model: Path
    """The original ONNX model."""
    calibration: Path
    """``.npz`` of unlabeled inputs keyed by the model's input names, first axis = samples; never overlaps evaluation."""
    evaluate: Callable[[Path], Metrics]
    """Runs an ONNX file with the original's interface on the evaluation data; the first key is the headline metric."""


def ort_session(model: Path) -> ort.InferenceSession:
    """One-threaded CPU session, so timings and results do not depend on the machine's core count."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # pruned models may carry benign warnings; do not flood the table
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def batches(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``size`` covering ``range(count)``; bounds memory for models with large outputs."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def output_batches(model: Path, inputs: np.ndarray, output: int | str, batch_size: int) -> Iterator[np.ndarray]:
    """One output (by index or name) of the model's single input run over ``inputs`` batch by batch, one session."""
    session = ort_session(model)
    input_name = session.get_inputs()[0].name
    output_name = output if isinstance(output, str) else session.get_outputs()[output].name
    for part in batches(len(inputs), batch_size):
        (value,) = session.run([output_name], {input_name: inputs[part]})
        yield value


def run_batched(model: Path, inputs: np.ndarray, output: int | str, batch_size: int) -> np.ndarray:
    """One output of the model over all of ``inputs``, run in batches and concatenated."""
    return np.concatenate(list(output_batches(model, inputs, output, batch_size)))


def resolve_workdir(workdir: Path) -> Path:
    """Relative work folders are taken from the repository root, so the cache is shared whatever the current folder."""
    return workdir if workdir.is_absolute() else REPO / workdir


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """Write arrays atomically (temporary file, then rename); compressed for mostly-flat rendered images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    with open(temporary, "wb") as handle:
        save = np.savez_compressed if compressed else np.savez
        save(handle, **arrays)  # type: ignore[arg-type]  # numpy's stubs match **kwds against allow_pickle: bool
    temporary.replace(path)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    temporary.write_bytes(data)
    temporary.replace(path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read into memory so the file is closed at once."""
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def seeded_rng(*salt: int) -> np.random.Generator:
    """A generator seeded from the module seed and a per-use salt, so adding one draw does not shift the others."""
    return np.random.default_rng([SEED, *salt])
