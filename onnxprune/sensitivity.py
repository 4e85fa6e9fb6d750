"""Per channel group: how much output drift cutting it costs, and how many MACs and parameters it saves.

Layers differ widely in both: a wide late layer may lose half its channels
for almost no drift and save much, an early narrow one may break the model
for a small saving.  The allocation (:mod:`onnxprune.allocation`) needs both
numbers per group and cut level, measured, not guessed.

Each probe prunes ONE group to one level, exactly as the channel pass would
in the final run (the same data-driven channel order, the same least-squares
refit, on the calibration fit part, of the layers whose weights the cut
edits: the final run also refits every layer after those, which would make
each probe a pass over the rest of the network), and measures

    drift = max over graph outputs of ||y' - y||_2 / ||y||_2

on the held-out part against the original model, plus the MACs (at the
calibration data's input shape, one sample) and parameters left, and the
time saved as modelled from one profile of the original
(:mod:`onnxprune.latency_model`).  Levels
are fractions of the group's channels (:data:`LEVELS`) rounded the way the
pass rounds (``round_to``, ``min_channels``); levels that round to the same
count are probed once.  The data-driven scores are computed once for all
probes.  Probes are independent and run through an
:class:`~onnxprune.executor.Executor`.

A table is cached on disk under a key of the model's bytes, the calibration
arrays and every option that changes a probe, so asking for another target
on the same model and data re-uses it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.analysis.cost import layer_macs, model_cost
from onnxprune.analysis.dependency_walk import discover_channel_groups
from onnxprune.calibration import CalibrationData
from onnxprune.executor import Executor, InProcess
from onnxprune.latency_model import profile_layer_times
from onnxprune.options import ChannelOptions
from onnxprune.passes.channel_selection import group_names, override_ratios, rounded_keep, unrounded_keep
from onnxprune.passes.channels import ChannelPruningPass, channel_scores, resolved_importance
from onnxprune.passes.layers import DriftMeter
from onnxprune.progress import progress, silenced

LEVELS = (0.25, 0.5, 0.75)
"""Fractions of a group's channels probed; the allocation may only choose among these (and 0)."""

PROBE_FIT_SAMPLES = 32
"""Calibration samples a probe refits on (the first of the fit part).  A probe compares cuts, it does
not ship: measured on PP-OCR cls, 32 samples gave each probe's drift within ~25% of what all 192 gave
(same ranking of the groups) in a third of the time."""

CACHE_VERSION = 3
"""Bumped whenever a probe's method changes, so older cached tables are not reused."""

DRIFT_METRIC = "max over graph outputs of ||y' - y||_2 / ||y||_2 on the held-out calibration samples"


@dataclass(frozen=True)
class Level:
    """One group cut to ``keep`` channels: what it costs and saves on its own."""

    keep: int
    ratio: float
    """The override ratio that gives ``keep`` (``(channels - keep) / channels``)."""
    drift: float
    macs_saved: int
    params_saved: int
    latency_saved_ms: float
    """Modelled from the original's per-layer profile (see :mod:`onnxprune.latency_model`)."""


@dataclass(frozen=True)
class GroupSensitivity:
    """A prunable group (named after its first pruned layer) and its probed levels, shallowest cut first."""

    name: str
    sources: list[str]
    channels: int
    levels: list[Level]


@dataclass
class SensitivityTable:
    """Every prunable group's levels, with the original model's totals the savings are shares of."""

    groups: list[GroupSensitivity]
    macs: int
    params: int
    latency_ms: float
    """The original's profiled time per run (all kernels)."""
    shapes: dict[str, list[int]]
    samples: dict[str, int]
    """``fit`` and ``held_out`` sample counts of the calibration data probed with."""
    importance: str
    metric: str = DRIFT_METRIC
    cached: bool = field(default=False, compare=False)
    """Whether this table came from the cache (not stored in it)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the cache file's content)."""
        record = dataclasses.asdict(self)
        record.pop("cached")
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SensitivityTable:
        groups = [
            GroupSensitivity(group["name"], list(group["sources"]), int(group["channels"]), [Level(**level) for level in group["levels"]])
            for group in record["groups"]
        ]
        fields = {key: record[key] for key in ("macs", "params", "latency_ms", "shapes", "samples", "importance", "metric")}
        return cls(groups=groups, **fields)


def measure_sensitivity(
    model: ir.Model,
    options: ChannelOptions,
    calibration: CalibrationData,
    executor: Executor | None = None,
    cache_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    threads: int = 1,
) -> SensitivityTable:
    """The sensitivity table of ``model`` under ``options`` (round_to, min_channels, exclude, importance, reconstruct).

    Groups an override in ``options`` fixes are not probed: their ratio is the user's.
    Layer times are profiled on ``threads`` onnxruntime threads.
    """
    if not calibration.held_out:
        raise ValueError("sensitivity is measured on held-out calibration samples: the data has none")
    options = dataclasses.replace(options, ratio=0.0, global_ranking=False, remove_dead=False)
    cache = _cache_file(model, options, calibration, cache_dir, threads)
    if cache is not None and cache.is_file():
        table = SensitivityTable.from_dict(json.loads(cache.read_text()))
        table.cached = True
        return table
    shapes = calibration.shapes_of_one_sample(model)
    probe_fit = _first_samples(calibration.fit, PROBE_FIT_SAMPLES)
    probe = _Probe(irx.to_proto(model).SerializeToString(), options, probe_fit, calibration.held_out, shapes)
    with progress("scoring channels on the calibration data", quiet=quiet), silenced():
        probe.scores = channel_scores(model, options, calibration.fit)
    plans = _group_levels(model, options)
    tasks = [(name, (channels - keep) / channels) for name, _, channels, keeps in plans for keep in keeps]
    with progress(f"probing {len(plans)} channel group(s) at {len(tasks)} cut level(s)", total=len(tasks), quiet=quiet) as advance:
        outcomes = dict(zip(tasks, (executor or InProcess()).map(probe, tasks, advance)))
    original = model_cost(model, shapes=shapes)
    original_layers = layer_macs(model, shapes)
    with progress("profiling the original's layer times", quiet=quiet):
        times = profile_layer_times(model, shapes, threads)
    groups = []
    for name, sources, channels, keeps in plans:
        levels = []
        for keep in keeps:
            ratio = (channels - keep) / channels
            drift, macs, params, layers = outcomes[(name, ratio)]
            saved_ms = times.saved_ms(original_layers, layers)
            levels.append(Level(keep, ratio, drift, original.macs - macs, original.params - params, saved_ms))
        groups.append(GroupSensitivity(name, sources, channels, levels))
    table = SensitivityTable(
        groups=groups,
        macs=original.macs,
        params=original.params,
        latency_ms=times.total_ms,
        shapes={name: list(shape) for name, shape in shapes.items()},
        samples={"fit": calibration.fit_samples, "held_out": calibration.held_out_samples},
        importance=resolved_importance(options, calibration.fit),
    )
    if cache is not None:
        _write_atomically(cache, json.dumps(table.to_dict()))
    return table


def _group_levels(model: ir.Model, options: ChannelOptions) -> list[tuple[str, list[str], int, list[int]]]:
    """Per prunable group not fixed by an override: its name, layer names, channel count and distinct kept counts."""
    channels = discover_channel_groups(model, options.exclude)
    names = group_names(channels)
    fixed = override_ratios(channels, options)
    plans = []
    for group in range(channels.num_groups):
        units = np.flatnonzero(channels.group_of_unit == group)
        if group not in names or group in fixed or channels.unit_locked[units].all():
            continue
        size = len(units)
        kept = {rounded_keep(size, unrounded_keep(size, fraction), options) for fraction in LEVELS}
        keeps = sorted((keep for keep in kept if keep < size), reverse=True)
        if keeps:
            sources = [source.node.name for source in channels.sources if source.node.name in names[group]]
            plans.append((names[group][0], sources, size, keeps))
    return plans


def _first_samples(batches: list[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` samples of ``batches``, in batches as given (the last one cut short)."""
    taken: list[dict[str, np.ndarray]] = []
    left = count
    for batch in batches:
        if left <= 0:
            break
        size = runtime.sample_count(batch)
        taken.append(batch if size <= left else {name: array[:left] for name, array in batch.items()})
        left -= size
    return taken


def exact_override(name: str, ratio: float) -> str:
    """An override that matches the layer ``name`` only (glob characters in it escaped)."""
    return f"{glob.escape(name)}={ratio!r}"


@dataclass
class _Probe:
    """Prunes one group of a fresh copy of the model and measures it; picklable for worker processes."""

    model_bytes: bytes
    options: ChannelOptions
    fit: list[dict[str, np.ndarray]]
    held_out: list[dict[str, np.ndarray]]
    shapes: dict[str, tuple[int, ...]]
    scores: np.ndarray | None = None

    @cached_property
    def _model(self) -> ir.Model:
        return irx.from_proto(onnx.ModelProto.FromString(self.model_bytes))

    @cached_property
    def _meter(self) -> DriftMeter:
        return DriftMeter(self._model, self.held_out)

    def __call__(self, task: tuple[str, float]) -> tuple[float, int, int, dict[str, int]]:
        name, ratio = task
        options = dataclasses.replace(self.options, overrides=(exact_override(name, ratio),))
        with silenced():
            pruned = ChannelPruningPass(options, calibration=self.fit, scores=self.scores, quick_refit=True)(self._model.clone()).model
        common_passes.RemoveUnusedNodesPass()(pruned)  # refit layers leave their old weights behind until then
        cost = model_cost(pruned, shapes=self.shapes)
        return self._meter.drift(pruned), cost.macs, cost.params, layer_macs(pruned, self.shapes)


def default_cache_dir() -> Path:
    """``$ONNXPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/onnxprune``, else ``~/.cache/onnxprune``."""
    if os.environ.get("ONNXPRUNE_CACHE_DIR"):
        return Path(os.environ["ONNXPRUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "onnxprune"


def _cache_file(
    model: ir.Model, options: ChannelOptions, calibration: CalibrationData, cache_dir: str | os.PathLike | None, threads: int
) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256()
    digest.update(irx.to_proto(model).SerializeToString(deterministic=True))
    for part in (calibration.fit, calibration.held_out):
        for batch in part:
            for name in sorted(batch):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(batch[name]).tobytes())
        digest.update(b"|")
    settings = {
        "version": CACHE_VERSION,
        "levels": LEVELS,
        "round_to": options.round_to,
        "min_channels": options.min_channels,
        "exclude": options.exclude,
        "overrides": options.overrides,
        "importance": options.importance,
        "reconstruct": options.reconstruct,
        "threads": threads,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return Path(cache_dir) / f"sensitivity-{digest.hexdigest()[:24]}.json"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)

