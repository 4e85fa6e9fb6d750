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

Each bypass candidate (:mod:`onnxprune.analysis.layer_candidates`: a
shape-preserving layer or a residual branch) that saves at least
:data:`~onnxprune.passes.layers.MIN_MACS_SHARE` of the MACs is probed the
same way: removed alone, as the layer pass removes it, with the first weight
layers after it refit (the estimate the channel probes make too), and
measured the same.  Cheaper candidates are not probed: an activation or a
normalisation buys no speed for the harm it does.  A bypass that removes a
pruned layer of a channel group conflicts with cutting that group (the
allocation takes one or the other); one that removes a layer an override or
``exclude`` names is not probed (the user's choice stands).

A table is cached on disk under a key of the model's bytes, the calibration
arrays and every option that changes a probe, so asking for another target
on the same model and data re-uses it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
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
from onnxprune.analysis.cost import layer_macs, macs_by_node, model_cost
from onnxprune.analysis.dependency_walk import discover_channel_groups
from onnxprune.analysis.layer_candidates import bypass_name, bypass_shape_facts, find_bypass_candidates
from onnxprune.analysis.shapes import ShapeFacts
from onnxprune.analysis.weight_ops import weight_op
from onnxprune.calibration import CalibrationData
from onnxprune.executor import Executor, InProcess
from onnxprune.latency_model import profile_layer_times
from onnxprune.options import ChannelOptions
from onnxprune.passes.channel_selection import group_names, override_ratios, rounded_keep, unrounded_keep
from onnxprune.passes.channels import ChannelPruningPass, channel_scores, resolved_importance
from onnxprune.passes.layers import MIN_MACS_SHARE, DriftMeter, apply_bypass
from onnxprune.progress import progress, silenced
from onnxprune.reconstruct.refit import refit_changed_layers

LEVELS = (0.25, 0.5, 0.75, 0.875)
"""Fractions of a group's channels probed; the allocation chooses among these (and 0), the target search also between them.

0.875 is there for aggressive targets: with 0.75 the deepest cut of PP-OCR cls left 0.343 of its MACs, so
``--target-macs 0.286`` was out of reach.  It costs at most one probe per group (levels that round to the same
count are probed once)."""

PROBE_FIT_SAMPLES = 32
"""Calibration samples a probe refits on (the first of the fit part).  A probe compares cuts, it does
not ship: measured on PP-OCR cls, 32 samples gave each probe's drift within ~25% of what all 192 gave
(same ranking of the groups) in a third of the time."""

CACHE_VERSION = 6
"""Bumped whenever a probe's method changes, so older cached tables are not reused."""

CHANNELS, BYPASS = "channels", "bypass"
_Task = tuple[str, str, float]
"""A probe: (CHANNELS, group name, ratio) or (BYPASS, candidate name, 0.0)."""

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

    def at(self, keep: int) -> Level | None:
        """The group cut to ``keep`` channels, interpolated between the probed levels around it; None beyond the deepest.

        Linear because the MACs and parameters of the layers a group touches
        are linear in its channel count; drift is not, but between two
        measured points a straight line is the least-assuming guess.
        """
        points = [Level(self.channels, 0.0, 0.0, 0, 0, 0.0), *self.levels]
        for upper, lower in itertools.pairwise(points):
            if keep == lower.keep:
                return lower
            if lower.keep < keep < upper.keep:
                share = (upper.keep - keep) / (upper.keep - lower.keep)
                return Level(
                    keep,
                    (self.channels - keep) / self.channels,
                    upper.drift + share * (lower.drift - upper.drift),
                    round(upper.macs_saved + share * (lower.macs_saved - upper.macs_saved)),
                    round(upper.params_saved + share * (lower.params_saved - upper.params_saved)),
                    upper.latency_saved_ms + share * (lower.latency_saved_ms - upper.latency_saved_ms),
                )
        return None


@dataclass(frozen=True)
class BypassSensitivity:
    """A bypass candidate (a layer or a residual branch) removed alone: what it costs and saves."""

    name: str
    """The layer pass's name for it (``bypass`` selects it by this name)."""
    kind: str
    removed: list[str]
    """Every node the bypass removes."""
    conflicts: list[str]
    """Probed channel groups with a pruned layer among ``removed``: cutting one of them and this bypass exclude each other."""
    drift: float
    macs_saved: int
    params_saved: int
    latency_saved_ms: float


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
    bypasses: list[BypassSensitivity] = field(default_factory=list)
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
        bypasses = [BypassSensitivity(**bypass) for bypass in record.get("bypasses", [])]
        fields = {key: record[key] for key in ("macs", "params", "latency_ms", "shapes", "samples", "importance", "metric")}
        return cls(groups=groups, bypasses=bypasses, **fields)


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
    shapes = calibration.shapes_of_one_sample(model)
    original = model_cost(model, shapes=shapes)
    plans = _group_levels(model, options)
    bypasses = _bypass_plans(model, options, shapes, original.macs, plans)
    cache = _cache_file(model, options, calibration, cache_dir, threads, {"groups": plans, "bypasses": bypasses})
    if cache is not None and cache.is_file():
        table = SensitivityTable.from_dict(json.loads(cache.read_text()))
        table.cached = True
        return table
    probe_fit = first_samples(calibration.fit, PROBE_FIT_SAMPLES)
    probe = _Probe(irx.to_proto(model).SerializeToString(), options, probe_fit, calibration.held_out, shapes)
    with progress("scoring channels on the calibration data", quiet=quiet), silenced():
        probe.scores = channel_scores(model, options, calibration.fit)
    tasks = [(CHANNELS, name, (channels - keep) / channels) for name, _, channels, keeps in plans for keep in keeps]
    tasks += [(BYPASS, name, 0.0) for name, *_ in bypasses]
    label = f"probing {len(plans)} channel group(s) at {len(tasks) - len(bypasses)} cut level(s) and {len(bypasses)} bypass(es)"
    with progress(label, total=len(tasks), quiet=quiet) as advance:
        outcomes = dict(zip(tasks, (executor or InProcess()).map(probe, tasks, advance)))
    original_layers = layer_macs(model, shapes)
    with progress("profiling the original's layer times", quiet=quiet):
        times = profile_layer_times(model, shapes, threads)

    def saved(task: _Task) -> tuple[float, int, int, float]:
        """Drift, MACs, parameters and modelled ms saved (a layer a probe no longer has saves all its time)."""
        drift, macs, params, layers = outcomes[task]
        return drift, original.macs - macs, original.params - params, times.saved_ms(original_layers, {**dict.fromkeys(original_layers, 0), **layers})

    groups = []
    for name, sources, channels, keeps in plans:
        ratios = [(keep, (channels - keep) / channels) for keep in keeps]
        groups.append(GroupSensitivity(name, sources, channels, [Level(keep, ratio, *saved((CHANNELS, name, ratio))) for keep, ratio in ratios]))
    table = SensitivityTable(
        groups=groups,
        macs=original.macs,
        params=original.params,
        latency_ms=times.total_ms,
        shapes={name: list(shape) for name, shape in shapes.items()},
        samples={"fit": calibration.fit_samples, "held_out": calibration.held_out_samples},
        importance=resolved_importance(options, calibration.fit),
        bypasses=[BypassSensitivity(name, kind, removed, conflicts, *saved((BYPASS, name, 0.0))) for name, kind, removed, conflicts in bypasses],
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


def _bypass_plans(
    model: ir.Model, options: ChannelOptions, shapes: Mapping[str, tuple[int, ...]], total_macs: int, plans: list[tuple[str, list[str], int, list[int]]]
) -> list[tuple[str, str, list[str], list[str]]]:
    """Per bypass candidate worth probing: its name, kind, the nodes it removes and the probed groups it conflicts with.

    Worth probing: it saves at least :data:`MIN_MACS_SHARE` of ``total_macs``
    (the layer pass's own floor for automatic bypass) and removes no layer
    that an override fixes or ``exclude`` names.
    """
    if total_macs <= 0:
        return []
    channels = discover_channel_groups(model, options.exclude)
    names = group_names(channels)
    fixed = {name for group in override_ratios(channels, options) for name in names[group]}
    sources = {name: set(layers) for name, layers, _, _ in plans}
    macs = macs_by_node(model, shapes)
    rows = []
    for candidate in find_bypass_candidates(model, input_shapes=shapes)[0]:
        removed = {node.name for node in candidate.nodes if node.name}
        if sum(macs.get(node, 0) for node in candidate.nodes) < MIN_MACS_SHARE * total_macs:
            continue
        if removed & fixed or any(irx.matching_pattern(name, options.exclude) for name in removed):
            continue
        conflicts = [name for name, layers in sources.items() if layers & removed]
        rows.append((candidate.name, candidate.kind, [bypass_name(node) for node in candidate.nodes], conflicts))
    return rows


def _next_layers(nodes: set[ir.Node]) -> set[ir.Node]:
    """The first weight layers at or after ``nodes`` (through activations, pooling, merges): what a quick refit repairs."""
    found: set[ir.Node] = set()
    seen: set[ir.Node] = set()
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        if weight_op(node) is not None:
            found.add(node)
        else:
            pending.extend(use.node for value in node.outputs for use in value.uses())
    return found


def first_samples(batches: list[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
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
    def _bypass_facts(self) -> list[ShapeFacts]:
        """Shapes a bypass must keep, inferred once: every probe bypasses a fresh copy of the same model."""
        return bypass_shape_facts(self._model, self.shapes)

    @cached_property
    def _meter(self) -> DriftMeter:
        return DriftMeter(self._model, self.held_out)

    def __call__(self, task: _Task) -> tuple[float, int, int, dict[str, int]]:
        kind, name, ratio = task
        with silenced():
            pruned = self._cut(name, ratio) if kind == CHANNELS else self._bypassed(name)
        common_passes.RemoveUnusedNodesPass()(pruned)  # refit layers leave their old weights behind until then
        cost = model_cost(pruned, shapes=self.shapes)
        return self._meter.drift(pruned), cost.macs, cost.params, layer_macs(pruned, self.shapes)

    def _cut(self, name: str, ratio: float) -> ir.Model:
        """A copy with the group of layer ``name`` cut by ``ratio``, as the channel pass cuts it (quick refit)."""
        options = dataclasses.replace(self.options, overrides=(exact_override(name, ratio),))
        return ChannelPruningPass(options, calibration=self.fit, scores=self.scores, quick_refit=True)(self._model.clone()).model

    def _bypassed(self, name: str) -> ir.Model:
        """A copy with candidate ``name`` bypassed and, with ``reconstruct``, the first layers after it refit."""
        model = self._model.clone()
        candidate = next(found for found in find_bypass_candidates(model, self._bypass_facts)[0] if found.name == name)
        original_node = dict(zip(model.graph, self._model.graph))
        rewired = {use.node for use in candidate.output.uses()}
        apply_bypass(model.graph, candidate)
        if self.options.reconstruct and self.fit:
            refit_changed_layers(self._model, model, original_node, _next_layers(rewired), self.fit, rewired=rewired, edited_only=True)
        return model


def default_cache_dir() -> Path:
    """``$ONNXPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/onnxprune``, else ``~/.cache/onnxprune``."""
    if os.environ.get("ONNXPRUNE_CACHE_DIR"):
        return Path(os.environ["ONNXPRUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "onnxprune"


def _cache_file(
    model: ir.Model, options: ChannelOptions, calibration: CalibrationData, cache_dir: str | os.PathLike | None, threads: int, probes: Mapping[str, Any]
) -> Path | None:
    """Where the table for these inputs is cached.  ``probes`` (the groups, their levels and the bypasses to
    probe) is part of the key: a table measured before a change in how channel groups are found would
    lack groups that can now be cut, and is not reused."""
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
        "probes": probes,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return Path(cache_dir) / f"sensitivity-{digest.hexdigest()[:24]}.json"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)

