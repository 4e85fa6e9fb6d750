"""Target mode: the user asks for a speedup, a MAC or a parameter ratio; the cut that reaches it with least drift is chosen.

1. Measure every channel group's sensitivity (:mod:`onnxprune.sensitivity`,
   cached).
2. Order allocations along the greedy path (:mod:`onnxprune.allocation`):
   each step cuts more, choosing the cheapest drift per MAC, parameter, or
   (for a speedup) modelled millisecond saved.
3. Bisect the path for the first allocation that meets the target, each
   candidate built as an architecture only (channels chosen by L1, no
   refit: which channels go does not change its cost) and measured: MACs at
   the calibration data's input shape, parameters, or onnxruntime latency
   against the original (interleaved, on the timing options' threads, with
   at least ``--runs`` runs and enough to fill half a second per model, so
   that a sub-millisecond model's search is not steered by timer noise).  For
   MAC and parameter targets channels are then given back, ``round_to`` at
   a time to the group where that keeps the result closest under the
   target, so it lands just under the target rather than a whole level
   beyond it.

The chosen allocation becomes exact channel overrides for the channel pass,
which then runs as usual (data-driven selection and refit), so the
report, validation and gates are those of any other run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from onnxprune.allocation import Allocation, Resource, allocation_path
from onnxprune.analysis.cost import model_cost
from onnxprune.bench import benchmark
from onnxprune.options import ChannelOptions, TargetOptions, TimingOptions
from onnxprune.passes.channels import ChannelPruningPass
from onnxprune.progress import progress, silenced
from onnxprune.sensitivity import GroupSensitivity, Level, SensitivityTable

SEARCH_SECONDS_PER_MODEL = 0.5
"""Timed run time per model and candidate in a speed search: a 0.1 ms model gets thousands of runs, a slow one ``--runs``."""

MAX_SEARCH_RUNS = 2000

TOLERANCE = 0.03
"""A MAC or parameter target is reached within this share above it; a speedup target within this share below it
(run-to-run timing noise on a shared CPU is of this order)."""


@dataclass
class TargetOutcome:
    """What was asked, what the chosen allocation measured during the search, and the allocation."""

    kind: str
    asked: float
    reached: float
    met: bool
    allocation: Allocation
    searched: list[tuple[int, float]] = field(default_factory=list)
    """(path index, measured value) of every allocation tried, in order."""
    path_length: int = 0

    def overrides(self) -> tuple[str, ...]:
        return self.allocation.overrides()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "asked": self.asked,
            "reached_in_search": self.reached,
            "met_in_search": self.met,
            "tolerance": TOLERANCE,
            "path_length": self.path_length,
            "searched": [{"index": index, "value": value} for index, value in self.searched],
            "allocation": self.allocation.to_dict(),
        }


def reach_target(
    model: ir.Model,
    table: SensitivityTable,
    channel_options: ChannelOptions,
    targets: TargetOptions,
    timing: TimingOptions,
    shapes: dict[str, tuple[int, ...]],
    quiet: bool = False,
) -> TargetOutcome:
    """Search the allocation path of ``table`` for the first allocation that meets ``targets`` on ``model``."""
    kind, asked = targets.asked()
    resource: Resource = "params" if kind == "params" else "macs" if kind == "macs" else "latency"
    path = allocation_path(table, resource)
    measure = _measure(kind, model, channel_options, timing, shapes, table)
    meets = (lambda value: value >= asked) if kind == "speedup" else (lambda value: value <= asked)
    searched: list[tuple[int, float]] = []

    def value_at(index: int, allocation: Allocation | None = None) -> float:
        value = measure(allocation or path[index])
        searched.append((index, value))
        return value

    with progress(f"searching {len(path)} allocations for {kind} {asked:g}", quiet=quiet), silenced():
        deepest = value_at(len(path) - 1)
        if not meets(deepest):
            return TargetOutcome(kind, asked, deepest, False, path[-1], searched, len(path))
        low, high, reached = 0, len(path) - 1, deepest
        while low < high:
            middle = (low + high) // 2
            value = value_at(middle)
            if meets(value):
                high, reached = middle, value
            else:
                low = middle + 1
        chosen = path[high]
        if kind != "speedup":
            chosen, reached = _give_back(chosen, reached, asked, table, channel_options.round_to, lambda candidate: value_at(high, candidate))
    return TargetOutcome(kind, asked, reached, True, chosen, searched, len(path))


def _give_back(
    chosen: Allocation,
    reached: float,
    asked: float,
    table: SensitivityTable,
    round_to: int,
    value_of: Callable[[Allocation], float],
) -> tuple[Allocation, float]:
    """Keep ``round_to`` more channels of some group, as long as the target stays met, until within the tolerance.

    The path moves whole levels, which on a small model can overshoot the
    target by a tenth of its MACs; each round measures every group's give-back
    and takes the one that stays under the target and closest to it.
    """
    groups = {group.name: group for group in table.groups}
    while reached < asked * (1 - TOLERANCE):
        best: tuple[float, Allocation] | None = None
        for name, level in chosen.levels.items():
            looser = _looser(groups[name], level, round_to)
            if looser is None:
                continue
            candidate = Allocation({**chosen.levels, name: looser} if looser.keep < groups[name].channels else _without(chosen, name))
            value = value_of(candidate)
            if value <= asked and (best is None or value > best[0]):
                best = (value, candidate)
        if best is None:
            break
        reached, chosen = best
    return chosen, reached


def _without(allocation: Allocation, name: str) -> dict[str, Level]:
    return {other: level for other, level in allocation.levels.items() if other != name}


def _looser(group: GroupSensitivity, level: Level, round_to: int) -> Level | None:
    """``level`` keeping ``round_to`` more channels, its drift interpolated between the probed levels around it."""
    keep = level.keep + max(1, round_to)
    if keep > group.channels:
        return None
    probed = [(group.channels, 0.0), *((probe.keep, probe.drift) for probe in group.levels)]
    upper = min((point for point in probed if point[0] >= keep), key=lambda point: point[0])
    lower = max((point for point in probed if point[0] <= keep), key=lambda point: point[0], default=upper)
    share = 0.0 if upper[0] == lower[0] else (upper[0] - keep) / (upper[0] - lower[0])
    drift = upper[1] + (lower[1] - upper[1]) * share
    return Level(keep, (group.channels - keep) / group.channels, drift, 0, 0, 0.0)


def architecture(model: ir.Model, channel_options: ChannelOptions, allocation: Allocation) -> ir.Model:
    """A copy of ``model`` cut as ``allocation`` says (channels chosen by L1, nothing refit): for costs and timing only."""
    options = dataclasses.replace(
        channel_options, ratio=0.0, global_ranking=False, importance="l1", reconstruct=False, overrides=channel_options.overrides + allocation.overrides()
    )
    cut = ChannelPruningPass(options)(model.clone()).model
    common_passes.RemoveUnusedNodesPass()(cut)
    return cut


def _measure(
    kind: str, model: ir.Model, channel_options: ChannelOptions, timing: TimingOptions, shapes: dict[str, tuple[int, ...]], table: SensitivityTable
) -> Callable[[Allocation], float]:
    if kind == "speedup":
        one_run_ms = benchmark([model], runs=5, warmup=timing.warmup, threads=timing.threads, shapes=shapes, quiet=True)[0].median_ms
        runs = max(timing.runs, min(MAX_SEARCH_RUNS, math.ceil(SEARCH_SECONDS_PER_MODEL * 1000 / max(one_run_ms, 1e-3))))
        return lambda allocation: benchmark(
            [model, architecture(model, channel_options, allocation)], runs=runs, warmup=timing.warmup, threads=timing.threads, shapes=shapes, quiet=True
        )[1].speedup
    if kind == "params":
        return lambda allocation: model_cost(architecture(model, channel_options, allocation)).params / table.params
    return lambda allocation: model_cost(architecture(model, channel_options, allocation), shapes=shapes).macs / table.macs
