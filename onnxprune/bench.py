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
    feeds: Mapping[str, np.ndarray] | None = None,
) -> list[Timing]:
    """Time every model on the same inputs, interleaved; speedups are relative to ``models[0]``.

    Sessions use full graph optimisation, as a deployment would.  Models
    are paths, ``onnx.ModelProto``s or ``ir.Model``s and must take the same
    inputs: ``feeds`` when given (their shapes fix symbolic dims), else
    seeded random inputs.  Real inputs are worth giving: onnxruntime's time
    can depend on the values (PP-OCRv5 rec pruned to half its MACs and refit
    ran 15.0 ms on a random input, 9.9 ms on a rendered text line).
    Progress is shown only with ``quiet=False``.
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError("runs and threads must be at least 1, warmup at least 0")
    loaded = [read_model(model)[0] for model in models]
    if feeds is not None:
        _refuse_mismatched_feeds(loaded[0], feeds)
        shapes = {name: tuple(array.shape) for name, array in feeds.items()}
    specs = runtime.input_specs(loaded[0], shapes)
    _refuse_different_inputs(loaded, specs, shapes)
    feeds = runtime.random_inputs(specs, seed) if feeds is None else feeds
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


def _refuse_mismatched_feeds(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> None:
    """Given inputs must be exactly the graph's, in its dtypes and fitting its declared dims."""
    inputs = {value.name: value for value in model.graph.inputs if value.name and not value.is_initializer()}
    if sorted(feeds) != sorted(inputs):
        raise InputError(f"timing inputs {sorted(feeds)} are not the graph's inputs {sorted(inputs)}")
    for spec in runtime.input_specs(model, data_shapes={name: tuple(array.shape) for name, array in feeds.items()}):
        array = feeds[spec.name]
        if array.dtype != spec.dtype or tuple(array.shape) != spec.shape:
            raise InputError(f"timing input '{spec.name}' is {array.dtype} {list(array.shape)}, the graph takes {spec.dtype} {list(spec.shape)}")


def _describe(signature: list[tuple[str, tuple[int, ...], np.dtype]]) -> str:
    return ", ".join(f"{name} {list(shape)} {dtype}" for name, shape, dtype in signature)
