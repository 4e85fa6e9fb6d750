"""Which channels the channel pass removes, and why a group keeps all of its channels.

Selection works on *units* (channels that must go or stay together) of the
:class:`~onnxprune.analysis.channel_graph.ChannelGraph`; nothing here looks
at a graph or computes an edit.  In order:

1. score every unit (:mod:`onnxprune.importance`) and find the dead ones,
   whose value is a known constant wherever it is consumed;
2. remove the dead units, then the lowest-scoring ones per group (or across
   groups with ``global_ranking``), never leaving a tracked tensor with fewer
   than ``min_channels`` (at least one); a group whose pruned layer matches
   one of ``overrides`` loses its own ratio of channels instead, whatever the
   mode;
3. give channels back until every group keeps a multiple of ``round_to``.

Each step that leaves a group untouched records the reason right there, in
the terms of the numbers it decided with, so the report never has to
reconstruct the arithmetic afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxprune import importance as importance_lib
from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import ChannelGraph
from onnxprune.options import ChannelOptions


@dataclass
class ChannelSelection:
    """The outcome per unit, and per group that keeps every channel, the reason it does.

    ``thresholds`` holds, per group, the highest score among the channels
    removed by score (dead ones aside).
    """

    removed: np.ndarray
    dead: np.ndarray
    thresholds: dict[int, float]
    kept_all_because: dict[int, str]


def select_channels(channels: ChannelGraph, options: ChannelOptions, scores: np.ndarray | None = None) -> ChannelSelection:
    """Choose the units to remove under ``options``, by ``scores`` when given (else by ``options.importance``)."""
    scores = unit_scores(channels, options.importance) if scores is None else scores
    dead = _dead_units(channels) if options.remove_dead else np.zeros(channels.num_units, dtype=bool)
    return _Selection(channels, scores, dead, options).run()


def unit_scores(channels: ChannelGraph, criterion: str) -> np.ndarray:
    """Per unit, the filter-based score of a registered criterion (mean over its coupled source channels)."""
    function = importance_lib.get_importance(criterion)
    members = [(source.atoms, importance_lib.layer_scores(function, source.filters())) for source in channels.sources]
    return importance_lib.group_scores(channels.unit_of_atom, channels.num_units, members)


def group_names(channels: ChannelGraph) -> dict[int, list[str]]:
    """Per group, the names its pruned layers answer to (node names, then their output value names)."""
    names: dict[int, list[str]] = {}
    for source in channels.sources:
        group = int(channels.group_of_unit[channels.unit_of_atom[source.atoms[0]]])
        names.setdefault(group, []).extend(_names(source.node))
    return names


def _names(node: ir.Node) -> list[str]:
    return [name for name in (node.name, node.outputs[0].name if node.outputs else None) if name]


def override_ratios(channels: ChannelGraph, options: ChannelOptions) -> dict[int, tuple[float, str]]:
    """Per group that an override matches: its ratio and the pattern (the first that matches any of its names)."""
    overrides = options.ratio_overrides()
    matched: dict[int, tuple[float, str]] = {}
    for group, names in group_names(channels).items():
        for pattern, ratio in overrides:
            if any(irx.matching_pattern(name, (pattern,)) for name in names):
                matched[group] = (ratio, pattern)
                break
    return matched


def unrounded_keep(size: int, ratio: float) -> int:
    """Channels left of ``size`` once ``ratio`` of them is removed, before rounding."""
    return size - math.floor(ratio * size + 1e-9)


def rounded_keep(size: int, keep: int, options: ChannelOptions) -> int:
    """``keep`` raised to ``min_channels`` and up to a multiple of ``round_to`` (never above ``size``)."""
    keep = max(keep, min(size, options.min_channels))
    if keep < size and options.round_to > 1:
        keep = min(size, math.ceil(keep / options.round_to) * options.round_to)
    return keep


def _dead_units(channels: ChannelGraph) -> np.ndarray:
    """Units whose every consumed position is a known constant that can be folded exactly."""
    dead = ~channels.unit_locked.copy()
    for sink in channels.sinks:
        exact = ~np.isnan(sink.consts) & ((sink.consts == 0) | sink.folds_constants)
        dead[channels.unit_of_atom[sink.atoms[~exact]]] = False
    has_source = np.zeros(channels.num_units, dtype=bool)
    for source in channels.sources:
        has_source[channels.unit_of_atom[source.atoms]] = True
    return dead & has_source


class _Selection:
    """Chooses units to remove while every tracked tensor keeps ``min_channels`` (at least one).

    ``kept_all_because`` gets an entry for a group exactly when the group ends
    up keeping all its channels: each phase records it for the groups it
    leaves untouched, and only :meth:`_round_groups` can later give a group
    back everything it lost, recording why as it does.
    """

    def __init__(self, channels: ChannelGraph, scores: np.ndarray, dead: np.ndarray, options: ChannelOptions) -> None:
        self.channels = channels
        self.scores = scores
        self.dead = dead
        self.options = options
        units = channels.num_units
        self.removed = np.zeros(units, dtype=bool)
        self.removable = ~channels.unit_locked & np.isfinite(scores)
        self.blocked = np.zeros(units, dtype=bool)  # removal refused by some tensor's floor
        order = np.argsort(channels.group_of_unit, kind="stable")
        bounds = np.cumsum(np.bincount(channels.group_of_unit, minlength=channels.num_groups))[:-1]
        self.group_units: list[np.ndarray] = np.split(order, bounds) if units else []
        self.constraints_of: list[list[int]] = [[] for _ in range(units)]
        self.remaining: list[int] = []
        self.floor: list[int] = []
        for index, members in enumerate(channels.value_units):
            self.remaining.append(len(members))
            self.floor.append(min(len(members), max(1, options.min_channels)))
            for unit in members.tolist():
                self.constraints_of[unit].append(index)
        self.overrides = override_ratios(channels, options)
        self.kept_all_because: dict[int, str] = {}
        for group, members in enumerate(self.group_units):
            if channels.unit_locked[members].all():
                self.kept_all_because[group] = "locked: " + "; ".join(channels.lock_reasons(members))
            elif self._ratio(group) > 0 and len(members) <= options.min_channels:
                # Every tensor of the group is at its floor already: no ratio can take a channel from it.
                self.kept_all_because[group] = self._floor_reason(len(members))

    def run(self) -> ChannelSelection:
        for unit in np.flatnonzero(self.dead & self.removable).tolist():
            self._try_remove(unit)
        for group, (ratio, pattern) in self.overrides.items():
            self._local(group, ratio, f"override '{pattern}': ratio={ratio}")
        if self.options.ratio == 0:
            self._decline_untouched("ratio is 0 and none of its channels is dead")
        elif self.options.global_ranking:
            self._global()
            self._decline_untouched("global ranking: all its channels score above the global threshold")
        else:
            for group in range(self.channels.num_groups):
                if group not in self.overrides:
                    self._local(group, self.options.ratio, f"ratio={self.options.ratio}")
        self._round_groups()
        return ChannelSelection(self.removed, self.dead, self._thresholds(), self.kept_all_because)

    def _decline(self, group: int, reason: str) -> None:
        """Record why ``group`` keeps everything, unless set up front already (a lock, or a group at min_channels)."""
        self.kept_all_because.setdefault(group, reason)

    def _decline_untouched(self, reason: str) -> None:
        """For every group that lost nothing: the floor that refused its candidates, else ``reason``."""
        for group, units in enumerate(self.group_units):
            if not self.removed[units].any():
                self._decline(group, self._floor_reason(len(units)) if self.blocked[units].any() else reason)

    def _floor_reason(self, size: int) -> str:
        if size <= self.options.min_channels:
            return f"it has {size} channels, not more than min_channels={self.options.min_channels}"
        return "every removal would leave some tensor below min_channels"

    def _round_groups(self) -> None:
        """Give channels back until every group keeps a multiple of ``round_to``.

        Dead channels count too: removing three dead channels from 64 would
        leave 61, off the runtime's fast kernel path, and the model slower.
        The best-scored pruned channels come back first, dead ones last (keeping
        a dead channel costs time but no accuracy).
        """
        for group, units in enumerate(self.group_units):
            gone = units[self.removed[units]]
            kept = len(units) - len(gone)
            restore = rounded_keep(len(units), kept, self.options) - kept
            if restore <= 0:
                continue
            live = self._ordered(gone[~self.dead[gone]])[::-1]
            dead = self._ordered(gone[self.dead[gone]])
            for unit in (live + dead)[:restore]:
                self._restore(unit)
            if restore == len(gone):
                self.kept_all_because[group] = (
                    f"its {len(gone)} dead channel(s) stay: removing them would leave {kept}, "
                    f"not a multiple of round_to={self.options.round_to} (slower kernels)"
                    if self.dead[gone].all()
                    else self._round_to_reason(len(units))
                )

    def _round_to_reason(self, size: int) -> str:
        return f"keeping a multiple of round_to={self.options.round_to} channels keeps all {size}"

    def _thresholds(self) -> dict[int, float]:
        """Per group, the highest importance among the channels pruned by score (dead ones aside)."""
        thresholds: dict[int, float] = {}
        for unit in np.flatnonzero(self.removed & ~self.dead).tolist():
            group = int(self.channels.group_of_unit[unit])
            thresholds[group] = max(thresholds.get(group, -math.inf), float(self.scores[unit]))
        return thresholds

    def _try_remove(self, unit: int) -> bool:
        if self.removed[unit] or not self.removable[unit]:
            return False
        if any(self.remaining[index] - 1 < self.floor[index] for index in self.constraints_of[unit]):
            self.blocked[unit] = True
            return False
        for index in self.constraints_of[unit]:
            self.remaining[index] -= 1
        self.removed[unit] = True
        return True

    def _restore(self, unit: int) -> None:
        for index in self.constraints_of[unit]:
            self.remaining[index] += 1
        self.removed[unit] = False

    def _ordered(self, units: np.ndarray) -> list[int]:
        return [int(unit) for unit in units[np.lexsort((units, self.scores[units]))]]

    def _ratio(self, group: int) -> float:
        return self.overrides[group][0] if group in self.overrides else self.options.ratio

    def _local(self, group: int, ratio: float, why: str) -> None:
        """``ratio`` of one group's channels, lowest scores first; says why (``why`` names the ratio) when the group keeps them all."""
        units = self.group_units[group]
        size = len(units)
        wanted = unrounded_keep(size, ratio)
        keep = rounded_keep(size, wanted, self.options)
        self._remove_lowest(units, size - keep - int(np.count_nonzero(self.removed[units])))
        if self.removed[units].any():
            return
        if keep < size:
            self._decline(group, self._floor_reason(size))
        elif ratio == 0:
            self._decline(group, f"{why} and none of its channels is dead")
        elif wanted == size:
            self._decline(group, f"{why} of its {size} channels is less than one channel")
        else:
            self._decline(group, self._round_to_reason(size))

    def _global(self) -> None:
        """The ratio of all prunable channels, lowest (per-layer normalised) scores first, wherever they are."""
        candidates = np.flatnonzero(self.removable & ~np.isin(self.channels.group_of_unit, list(self.overrides)))
        self._remove_lowest(candidates, math.floor(self.options.ratio * len(candidates) + 1e-9) - int(np.count_nonzero(self.removed)))

    def _remove_lowest(self, units: np.ndarray, budget: int) -> None:
        """Remove up to ``budget`` of ``units``, lowest score first, skipping those a floor refuses."""
        for unit in self._ordered(units[self.removable[units] & ~self.removed[units]]):
            if budget <= 0:
                break
            if self._try_remove(unit):
                budget -= 1
