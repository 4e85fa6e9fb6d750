"""The curve to look at before picking a target: quality against measured speedup, uniform ratios and allocated plans.

For each uniform ratio the model is pruned as ``--channel-ratio`` would
(data-driven, refit), and an allocated plan is pruned to the same MAC ratio
(``--target-macs``, reusing the cached sensitivity table); all of them and
the original are then timed together (interleaved, so they share the same
machine state, on one calibration sample) and scored on the held-out calibration samples: accuracy when
labels are given, else the worst output's cosine similarity with the
original.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from onnxprune.bench import benchmark
from onnxprune.calibration import CalibrationData
from onnxprune.config import PruneConfig
from onnxprune.pipeline import prune
from onnxprune.progress import progress

CURVE_RATIOS = (0.25, 0.5, 0.75)


def tradeoff_curve(
    model: str | os.PathLike,
    original: ir.Model,
    config: PruneConfig,
    calibration: CalibrationData,
    ratios: Sequence[float] = CURVE_RATIOS,
    quiet: bool = False,
) -> dict[str, Any]:
    """Points ``{"uniform": [...], "allocated": [...]}``, each with MACs ratio, measured speedup and quality."""
    metric = "accuracy" if calibration.held_out_labels is not None else "min_cosine"
    runs: list[tuple[str, float, Any]] = []
    with progress(f"pruning at {len(ratios)} uniform ratios and as many allocated plans", total=2 * len(ratios), quiet=quiet) as advance:
        for ratio in ratios:
            uniform = prune(model, _with(config, channel_ratio=ratio), quiet=True)
            runs.append(("uniform", ratio, uniform))
            advance(1)
            allocated = prune(model, _with(config, target_macs=uniform.report["macs_ratio"]), quiet=True)
            runs.append(("allocated", ratio, allocated))
            advance(1)
    shapes = config.input_shapes() or calibration.shapes_of_one_sample(original)
    models = [original, *(result.model for _, _, result in runs)]
    feeds = calibration.timing_feeds(original, shapes)
    timings = benchmark(models, runs=config.runs, warmup=config.warmup, threads=config.threads, shapes=shapes, quiet=quiet, feeds=feeds)
    curve: dict[str, Any] = {"metric": metric, "uniform": [], "allocated": []}
    for (kind, ratio, result), timing in zip(runs, timings[1:]):
        point = {"ratio": ratio, "macs_ratio": result.report["macs_ratio"], "speedup": timing.speedup, "passed": result.passed}
        curve[kind].append({**point, metric: _quality(result.report, metric)})
    return curve


def _with(config: PruneConfig, **changes: Any) -> PruneConfig:
    values = {**config.values, "bench": False, "validate": True, **changes}
    return PruneConfig.from_mapping(values)


def _quality(report: dict[str, Any], metric: str) -> float | None:
    validation = report["validation"]
    if metric == "accuracy":
        return validation["accuracy"]["candidate"] if validation["accuracy"] else None
    return min(output["cosine"] for output in validation["outputs"])
