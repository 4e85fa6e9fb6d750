"""Latency of models in onnxruntime on CPU, measured side by side.

Several models are timed interleaved (A B A B ...) on identical inputs so that
thermal and scheduling drift hit every model alike, and a model's speedup is
the median of per-pair ratios against the first model rather than a ratio of
medians taken at different moments.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import runtime
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
    models: list[ir.Model],
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    quiet: bool = False,
) -> list[Timing]:
    """Time every model on the same inputs, interleaved; speedups are relative to ``models[0]``.

    Sessions use full graph optimisation, as a deployment would.
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError("runs and threads must be at least 1, warmup at least 0")
    feeds = runtime.random_inputs(runtime.input_specs(models[0], shapes), seed)
    sessions = [runtime.make_session(model, optimize=True, threads=threads) for model in models]
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
