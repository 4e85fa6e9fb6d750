"""Target mode: the user asks for a speedup, a MAC or a parameter ratio; the cut that reaches it with least drift is chosen.

1. Measure every channel group's sensitivity (:mod:`onnxprune.sensitivity`,
   cached).
2. Order allocations along the greedy path (:mod:`onnxprune.allocation`):
   each step cuts more, choosing the cheapest drift per MAC, parameter, or
   (for a speedup) modelled millisecond saved.
3. Bisect the path for the first allocation that meets the target, each
   candidate built as an architecture only (bypasses applied, channels
   chosen by L1, no refit: which channels go does not change its cost) and
   measured: MACs at the calibration data's input shape, parameters, or
   onnxruntime latency against the original (interleaved, on the timing
   options' threads, with at least ``--runs`` runs and enough to fill half
   a second per model, so that a sub-millisecond model's search is not
   steered by timer noise).
4. For MAC and parameter targets, settle: the path moves whole levels, which
   on a small model overshoots by a tenth of its MACs, so per-group channel
   counts are moved on the ``round_to`` grid, in both directions, one group
   or two at a time (combinations across groups step finer than any one
   group): each round predicts every such change from the table, measures
   the most promising and takes the measured one that stays under the
   target and closest to it (the least predicted drift among those within
   the tolerance).  When that walk up from the allocation the bisection
   chose does not land, a second walk comes down the same way from the
   path's last allocation above the target: on a model of a few coarse
   groups (MTCNN RNet at ``round_to`` 16) the landing combination can be
   three changes away from one side and two from the other.  When neither
   walk lands and the groups' grids allow at most
   :data:`EXHAUSTIVE_COMBINATIONS` combinations (a model of a few small
   groups, where a round_to step is a large share of the MACs), every
   combination is measured, least predicted drift first.  When nothing
   found at ``round_to`` lands within :data:`TOLERANCE`, the outcome says
   what is reachable nearest, below and above, and the run fails: a finer
   ``--round-to`` reaches closer.

The chosen allocation becomes exact channel overrides and by-name bypasses
for the layer and channel passes, which then run as usual (data-driven
selection and refit), so the report, validation and gates are those of any
other run.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from onnxprune.allocation import Allocation, Resource, allocation_path
from onnxprune.analysis.cost import model_cost
from onnxprune.analysis.layer_candidates import RESIDUAL, bypass_shape_facts, find_bypass_candidates
from onnxprune.bench import benchmark
from onnxprune.options import ChannelOptions, TargetOptions, TimingOptions
from onnxprune.passes.channel_selection import rounded_keep
from onnxprune.passes.channels import ChannelPruningPass
from onnxprune.passes.layers import apply_bypass
from onnxprune.progress import progress, silenced
from onnxprune.reconstruct.capture import Feeds
from onnxprune.sensitivity import BypassSensitivity, GroupSensitivity, Level, SensitivityTable

SEARCH_SECONDS_PER_MODEL = 0.5
"""Timed run time per model and candidate in a speed search: a 0.1 ms model gets thousands of runs, a slow one ``--runs``."""

MAX_SEARCH_RUNS = 2000

TOLERANCE = 0.03
"""A MAC or parameter target is reached within this share of it, either side; a speedup target within this share below it
(run-to-run timing noise on a shared CPU is of this order)."""

PROPOSALS_MEASURED = 6
"""Per settling round, how many proposed allocations are measured (the best by their predicted value)."""

EXHAUSTIVE_COMBINATIONS = 512
"""Settling measures every combination of grid counts when the walks do not land and there are at most this many
(MTCNN RNet at round_to 16: 192, about 10 s of MAC counts)."""


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
    note: str | None = None
    """Why the target could not be met, in terms of what was reachable."""

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
            "note": self.note,
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
    bypasses: bool = True,
    scores: np.ndarray | None = None,
    fit: list[Feeds] | None = None,
    timing_feeds: Feeds | None = None,
) -> TargetOutcome:
    """Search the allocation path of ``table`` for the first allocation that meets ``targets`` on ``model`` (``bypasses``: may bypass).

    The models a speed search times should compute what the final run's
    model computes, because onnxruntime's time can depend on values: a
    Softmax over PP-OCR rec's 6,625 classes ran 9x slower on the garbage
    logits of an unrefit cut.  ``scores``
    (:func:`~onnxprune.passes.channels.channel_scores` of ``model``) make them
    keep the channels the final run keeps, and ``fit`` (a few calibration
    samples) refits the layers each cut edits, as the sensitivity probes do;
    ``timing_feeds`` (one real sample) is what they are timed on, as the
    final model is.
    """
    kind, asked = targets.asked()
    resource: Resource = "params" if kind == "params" else "macs" if kind == "macs" else "latency"
    path = allocation_path(table, resource, bypasses)
    measure = _measure(kind, model, channel_options, timing, shapes, table, scores, fit, timing_feeds)
    meets = (lambda value: value >= asked) if kind == "speedup" else (lambda value: value <= asked)
    searched: list[tuple[int, float]] = []
    note: str | None

    def value_at(index: int, allocation: Allocation | None = None) -> float:
        value = measure(allocation or path[index])
        searched.append((index, value))
        return value

    with progress(f"searching {len(path)} allocations for {kind} {asked:g}", quiet=quiet), silenced():
        deepest = value_at(len(path) - 1)
        if kind == "speedup" and not meets(deepest) and deepest >= asked * (1 - TOLERANCE):
            return TargetOutcome(kind, asked, deepest, True, path[-1], searched, len(path))  # short of it by timing noise
        if not meets(deepest):
            note = f"the deepest cut the sensitivity table allows reaches {deepest:.3f}"
            return TargetOutcome(kind, asked, deepest, False, path[-1], searched, len(path), note)
        low, high, reached = 0, len(path) - 1, deepest
        while low < high:
            middle = (low + high) // 2
            value = value_at(middle)
            if meets(value):
                high, reached = middle, value
            else:
                low = middle + 1
        if kind == "speedup":
            return TargetOutcome(kind, asked, reached, True, path[high], searched, len(path))
        settled = _Settling(asked, table, channel_options, resource, lambda candidate: value_at(high, candidate))
        chosen, reached = settled.walk(path[high], reached)
        if not settled.lands(reached) and high > 0:
            chosen, reached = settled.walk_down(path[high - 1], value_at(high - 1)) or (chosen, reached)
        if not settled.lands(reached):
            chosen, reached = settled.every_combination(chosen) or (chosen, reached)
    note = None if settled.lands(reached) else settled.unreachable(reached)
    return TargetOutcome(kind, asked, reached, note is None, chosen, searched, len(path), note)


class _Settling:
    """Moves per-group channel counts on the ``round_to`` grid to the measured allocation nearest the target.

    Each round proposes every change of one group's count, and every pair of
    changes in two groups (combinations step finer than any one group),
    predicts each one's value from the table (the groups' interpolated
    savings, assumed to add up), measures the :data:`PROPOSALS_MEASURED`
    best proposals and moves to the best measured one that gets closer
    without crossing the target (a walk down may cross it into the
    tolerance); measuring keeps the prediction's error (two cut groups that
    meet in one layer save less than the sum) out of the result.
    """

    def __init__(
        self, asked: float, table: SensitivityTable, options: ChannelOptions, resource: Resource, value_of: Callable[[Allocation], float]
    ) -> None:
        self.asked = asked
        self.groups = {group.name: group for group in table.groups}
        self.grid = {group.name: _grid(group, options) for group in table.groups}
        self.options = options
        self.resource: Resource = resource
        self.total = table.macs if resource == "macs" else table.params
        self.value_of = value_of
        self.above: tuple[float, Allocation] | None = None
        """The least value measured above the target, and its allocation."""

    def lands(self, value: float) -> bool:
        return self.asked * (1 - TOLERANCE) <= value <= self.asked * (1 + TOLERANCE)

    def walk(self, chosen: Allocation, reached: float) -> tuple[Allocation, float]:
        """From ``chosen`` (measured ``reached``, under the target): rounds of one or two changes up while they get closer."""
        while not self.lands(reached):
            step = self._round(chosen, reached, up=True)
            if step is None:
                break
            reached, chosen = step
        if not self.lands(reached) and self.above is not None and self.lands(self.above[0]):
            return self.above[1], self.above[0]
        return chosen, reached

    def walk_down(self, chosen: Allocation, reached: float) -> tuple[Allocation, float] | None:
        """From ``chosen`` (measured ``reached``, above the target): rounds down while they get closer; None when none lands."""
        self._note_above(reached, chosen)
        while not self.lands(reached):
            step = self._round(chosen, reached, up=False)
            if step is None:
                return None
            reached, chosen = step
        return chosen, reached

    def every_combination(self, chosen: Allocation) -> tuple[Allocation, float] | None:
        """The least-drift combination of grid counts that lands (``chosen``'s bypasses kept), measured in order of
        predicted drift; None when there are more than :data:`EXHAUSTIVE_COMBINATIONS` or none lands."""
        blocked = {group for bypass in chosen.bypasses.values() for group in bypass.conflicts}
        grids = [[(name, keep) for keep in self.grid[name]] for name in self.groups if name not in blocked]
        if math.prod(len(grid) for grid in grids) > EXHAUSTIVE_COMBINATIONS:
            return None
        candidates = []
        for counts in itertools.product(*grids):
            cuts = {name: self.groups[name].at(keep) for name, keep in counts if keep != self.groups[name].channels}
            candidates.append(Allocation({name: level for name, level in cuts.items() if level is not None}, chosen.bypasses))
        for candidate in sorted(candidates, key=lambda candidate: candidate.predicted_drift):
            value = self.value_of(candidate)
            self._note_above(value, candidate)
            if self.lands(value):
                return candidate, value
        return None

    def unreachable(self, reached: float) -> str:
        """What was reachable, for a target no measured combination landed within the tolerance of."""
        above = f", the nearest above it {self.above[0]:.3f}" if self.above is not None else ""
        return (
            f"with channel counts in steps of round_to={self.options.round_to}, the nearest ratio found at or under "
            f"{self.asked:g} is {reached:.3f}{above}, neither within {TOLERANCE:.0%}; a finer --round-to reaches closer"
        )

    def _note_above(self, value: float, candidate: Allocation) -> None:
        if value > self.asked and (self.above is None or value < self.above[0]):
            self.above = (value, candidate)

    def _round(self, chosen: Allocation, reached: float, up: bool) -> tuple[float, Allocation] | None:
        """The best measured proposal of one round that gets closer from ``reached`` without crossing; None when none does."""
        proposals = sorted(self._proposals(chosen, reached, up), key=lambda proposal: self._rank(proposal[0], proposal[1], up))
        better = []
        for _, candidate in proposals[:PROPOSALS_MEASURED]:
            value = self.value_of(candidate)
            self._note_above(value, candidate)
            if (reached < value <= self.asked) if up else (self.asked * (1 - TOLERANCE) <= value < reached):
                better.append((value, candidate))
        landing = [entry for entry in better if self.lands(entry[0])]
        if landing:
            return min(landing, key=lambda entry: entry[1].predicted_drift)
        closest = max if up else min
        return closest(better, key=lambda entry: entry[0], default=None)

    def _rank(self, predicted: float, candidate: Allocation, up: bool) -> tuple[bool, float]:
        """Proposals predicted to land (on the walk's side) first, the least drift first; then the closest to the target."""
        if self.lands(predicted) and (predicted <= self.asked or not up):
            return False, candidate.predicted_drift
        return True, abs(self.asked - predicted)

    def _proposals(self, chosen: Allocation, reached: float, up: bool) -> list[tuple[float, Allocation]]:
        """(predicted value, allocation) for every change of one group's count and every pair in two groups, predicted beyond ``reached``."""
        blocked = {group for bypass in chosen.bypasses.values() for group in bypass.conflicts}
        changes: list[tuple[str, Level | None, float]] = []  # group, new level (None: uncut), predicted value change
        for name, group in self.groups.items():
            if name in blocked:
                continue
            now = chosen.levels.get(name)
            saved_now = _saved(now, self.resource)
            for keep in self.grid[name]:
                if keep != (now.keep if now is not None else group.channels):
                    level = None if keep == group.channels else group.at(keep)
                    changes.append((name, level, (saved_now - _saved(level, self.resource)) / self.total))
        proposals = [(reached + delta, chosen.with_level(name, level)) for name, level, delta in changes]
        for index, (first, first_level, first_delta) in enumerate(changes):
            for second, second_level, second_delta in changes[index + 1 :]:
                if first != second:
                    proposals.append((reached + first_delta + second_delta, chosen.with_level(first, first_level).with_level(second, second_level)))
        return [(predicted, candidate) for predicted, candidate in proposals if (predicted > reached if up else predicted < reached)]


def _saved(level: Level | None, resource: Resource) -> float:
    if level is None:
        return 0.0
    return level.macs_saved if resource == "macs" else level.params_saved


def _grid(group: GroupSensitivity, options: ChannelOptions) -> list[int]:
    """The channel counts a settling step may give ``group``, from all of them down to its deepest probed level.

    Below all of them only multiples of ``round_to`` that the pass keeps as
    they are; not below the deepest probe, whose drift is the last one known.
    """
    step = max(1, options.round_to)
    deepest = group.levels[-1].keep if group.levels else group.channels
    counts = range(group.channels // step * step, deepest - 1, -step)
    return sorted({group.channels, *(keep for keep in counts if keep > 0 and rounded_keep(group.channels, keep, options) == keep)}, reverse=True)


def architecture(
    model: ir.Model,
    channel_options: ChannelOptions,
    allocation: Allocation,
    scores: np.ndarray | None = None,
    fit: list[Feeds] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> ir.Model:
    """A copy of ``model`` cut as ``allocation`` says, for costs and timing only (bypasses found as at ``shapes``).

    Channels are chosen by ``scores``, else by L1 (``scores`` belong to
    ``model`` as it is; with bypasses the graph changes and L1 chooses); with
    ``fit`` the layers the cut edits are refit on those samples, else nothing
    is refit.
    """
    options = dataclasses.replace(
        channel_options,
        ratio=0.0,
        global_ranking=False,
        importance="l1",
        reconstruct=fit is not None,
        overrides=channel_options.overrides + allocation.overrides(),
    )
    cut = model.clone()
    _bypass(cut, sorted(allocation.bypasses.values(), key=lambda bypass: (bypass.kind != RESIDUAL, bypass.name)), shapes)
    cut = ChannelPruningPass(options, calibration=fit, scores=None if allocation.bypasses else scores, quick_refit=True)(cut).model
    common_passes.RemoveUnusedNodesPass()(cut)
    return cut


def _bypass(model: ir.Model, chosen: list[BypassSensitivity], shapes: Mapping[str, Sequence[int]] | None) -> None:
    """Bypass ``chosen`` in this order, as the layer pass does by name: each found anew on the graph its predecessors left
    (under the shapes inferred once: a bypass keeps every remaining value's shape)."""
    if not chosen:
        return
    facts = bypass_shape_facts(model, shapes)
    for bypass in chosen:
        candidate = next((found for found in find_bypass_candidates(model, facts)[0] if found.name == bypass.name), None)
        if candidate is not None:
            apply_bypass(model.graph, candidate)


def _measure(
    kind: str,
    model: ir.Model,
    channel_options: ChannelOptions,
    timing: TimingOptions,
    shapes: dict[str, tuple[int, ...]],
    table: SensitivityTable,
    scores: np.ndarray | None = None,
    fit: list[Feeds] | None = None,
    timing_feeds: Feeds | None = None,
) -> Callable[[Allocation], float]:
    if kind == "speedup":
        one_run_ms = benchmark([model], runs=5, warmup=timing.warmup, threads=timing.threads, shapes=shapes, quiet=True, feeds=timing_feeds)[0].median_ms
        runs = max(timing.runs, min(MAX_SEARCH_RUNS, math.ceil(SEARCH_SECONDS_PER_MODEL * 1000 / max(one_run_ms, 1e-3))))
        return lambda allocation: benchmark(
            [model, architecture(model, channel_options, allocation, scores, fit, shapes)],
            runs=runs,
            warmup=timing.warmup,
            threads=timing.threads,
            shapes=shapes,
            quiet=True,
            feeds=timing_feeds,
        )[1].speedup
    if kind == "params":
        return lambda allocation: model_cost(architecture(model, channel_options, allocation, shapes=shapes)).params / table.params
    return lambda allocation: model_cost(architecture(model, channel_options, allocation, shapes=shapes), shapes=shapes).macs / table.macs
