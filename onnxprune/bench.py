"""Latency of models in onnxruntime on CPU, measured side by side.

Several models are timed interleaved (A B A B ...) on identical inputs so that
thermal and scheduling drift hit every model alike, and a model's speedup is
the median of per-pair ratios against the first model rather than a ratio of
medians taken at different moments.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import runtime
from onnxprune.errors import InputError
from onnxprune.model_source import ModelLike, read_model
from onnxprune.progress import progress


@dataclass
class Timing:
    """Latency statistics of one model, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    speedup: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def benchmark(
    models: Sequence[ModelLike],
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    quiet: bool = True,
) -> list[Timing]:
    """Time every model on the same inputs, interleaved; speedups are relative to ``models[0]``.

    Sessions use full graph optimisation, as a deployment would.  Models
    are paths, ``onnx.ModelProto``s or ``ir.Model``s and must take the same
    inputs.  Progress is shown only with ``quiet=False``.
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError("runs and threads must be at least 1, warmup at least 0")
    loaded = [read_model(model)[0] for model in models]
    specs = runtime.input_specs(loaded[0], shapes)
    _refuse_different_inputs(loaded, specs, shapes)
    feeds = runtime.random_inputs(specs, seed)
    sessions = [runtime.make_session(model, optimize=True, threads=threads) for model in loaded]
    for session in sessions:
        for _ in range(warmup):
            runtime.run(session, feeds)
    samples = np.zeros((len(sessions), runs))
    with progress(f"timing {len(models)} model(s), {runs} interleaved runs", total=runs, quiet=quiet) as advance:
        for run in range(runs):
            for index, session in enumerate(sessions):
                start = time.perf_counter()
                runtime.run(session, feeds)
                samples[index, run] = time.perf_counter() - start
            advance(1)
    samples *= 1000.0
    return [
        Timing(
            median_ms=float(np.median(row)),
            p10_ms=float(np.percentile(row, 10)),
            p90_ms=float(np.percentile(row, 90)),
            speedup=float(np.median(samples[0] / row)),
            runs=runs,
        )
        for row in samples
    ]


def _refuse_different_inputs(models: list[ir.Model], specs: list[runtime.InputSpec], shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Interleaved timing feeds every model the same inputs; models that take different ones cannot be compared."""
    expected = [(spec.name, spec.shape, spec.dtype) for spec in specs]
    for index, model in enumerate(models[1:], start=2):
        try:
            actual = [(spec.name, spec.shape, spec.dtype) for spec in runtime.input_specs(model, shapes)]
        except InputError as error:
            raise InputError(f"model {index} cannot take the first model's inputs ({error})") from None
        if actual != expected:
            raise InputError(f"model {index} takes inputs {_describe(actual)}, the first model {_describe(expected)}: bench times models on the same inputs")


def _describe(signature: list[tuple[str, tuple[int, ...], np.dtype]]) -> str:
    return ", ".join(f"{name} {list(shape)} {dtype}" for name, shape, dtype in signature)
