"""Per-group cut levels and layer bypasses chosen jointly: the least predicted drift for each amount saved.

From a :class:`~onnxprune.sensitivity.SensitivityTable`, greedily: starting
with nothing cut, take the move that adds the least squared drift per unit of the
resource it saves (MACs, parameters, or modelled milliseconds for a speed
target), until no move is left.  A move is one group to one of its deeper
levels, or one bypass candidate.  A bypass and a cut of a group it removes a
layer of exclude each other, and so do two bypasses that remove a common
node: once one is taken the other is off the table, so the allocation never
holds both.  The sequence of allocations this passes through
is the *path*; a target is met by searching along it
(:mod:`onnxprune.target`), so a stricter target always cuts a superset of
what a looser one cuts.

Drift is a relative L2 error, so independent cuts add in quadrature: the
allocation adds their squared drifts (error energies) and predicts
``sqrt(sum of drift**2)``, and each move is priced by the energy it adds.
Adding the drifts themselves instead prices the first cut of every group
as dearly as a deep cut of one, and concentrates the cuts: on PP-OCR rec
that plan was 6.5 points of exact match worse than a uniform ratio at the
same speed.  The squared drift is also what the task errors track: over
PP-OCR rec's 68 probes the share of flipped per-timestep top-1 classes and
the mean KL divergence correlate with drift squared (r = 0.997, 0.992) more
closely than with drift (0.928, 0.957; ``tools/drift_vs_task_error.py``).
A move may jump over a level: drift measured per level is not always convex
in the cut.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from typing import Literal

from onnxprune.sensitivity import BypassSensitivity, GroupSensitivity, Level, SensitivityTable, exact_override

Resource = Literal["macs", "params", "latency"]

_TINY_DRIFT = 1e-12
"""Drift below this counts as none: a move that saves something for nothing is taken first, cheapest-saving last."""


@dataclass(frozen=True)
class Allocation:
    """The level chosen per group (groups absent keep every channel) and the bypasses chosen."""

    levels: dict[str, Level] = field(default_factory=dict)
    bypasses: dict[str, BypassSensitivity] = field(default_factory=dict)

    @property
    def predicted_drift(self) -> float:
        """The moves' drifts added in quadrature (see module doc)."""
        moves: list[Level | BypassSensitivity] = [*self.levels.values(), *self.bypasses.values()]
        return math.sqrt(sum(move.drift**2 for move in moves))

    def saved(self, resource: Resource) -> float:
        """The resource the chosen levels and bypasses save, summed."""
        moves: list[Level | BypassSensitivity] = [*self.levels.values(), *self.bypasses.values()]
        return sum(_saving(move, resource) for move in moves)

    def overrides(self) -> tuple[str, ...]:
        """Channel overrides that apply exactly this allocation's cuts (each names one layer)."""
        return tuple(exact_override(name, level.ratio) for name, level in sorted(self.levels.items()))

    def bypass_patterns(self) -> tuple[str, ...]:
        """Layer-pass ``bypass`` patterns that select exactly this allocation's bypasses (glob characters escaped)."""
        return tuple(glob.escape(name) for name in sorted(self.bypasses))

    def with_level(self, name: str, level: Level | None) -> Allocation:
        """This allocation with group ``name`` at ``level`` (None: the group keeps every channel)."""
        levels = {other: chosen for other, chosen in self.levels.items() if other != name}
        if level is not None:
            levels[name] = level
        return Allocation(levels, self.bypasses)

    def to_dict(self) -> dict[str, object]:
        return {
            "predicted_drift": self.predicted_drift,
            "groups": {name: {"keep": level.keep, "ratio": level.ratio, "drift": level.drift} for name, level in sorted(self.levels.items())},
            "bypasses": {
                name: {"kind": bypass.kind, "drift": bypass.drift, "macs_saved": bypass.macs_saved} for name, bypass in sorted(self.bypasses.items())
            },
        }


def allocation_path(table: SensitivityTable, resource: Resource = "macs", bypasses: bool = True) -> list[Allocation]:
    """Every allocation of the greedy search, from nothing cut until no move is left (``bypasses``: may bypass too)."""
    groups = {group.name: group for group in table.groups}
    candidates = {bypass.name: bypass for bypass in table.bypasses} if bypasses else {}
    current: dict[str, int] = {}  # group name -> index of its chosen level
    chosen: dict[str, BypassSensitivity] = {}
    path = [Allocation()]
    while True:
        move = _best_move(groups, current, resource, chosen)
        bypass = _best_bypass({name: c for name, c in candidates.items() if _allowed(c, current, chosen)}, resource)
        if move is None and bypass is None:
            return path
        if bypass is not None and (move is None or bypass[0] < move[0]):
            chosen[bypass[1]] = candidates[bypass[1]]
        elif move is not None:
            current[move[1]] = move[2]
        path.append(Allocation({group: groups[group].levels[level] for group, level in current.items()}, dict(chosen)))


def _allowed(bypass: BypassSensitivity, current: dict[str, int], chosen: dict[str, BypassSensitivity]) -> bool:
    """Whether ``bypass`` may join: not chosen yet, none of the groups it conflicts with cut, no node shared with a chosen bypass."""
    if bypass.name in chosen or any(group in current for group in bypass.conflicts):
        return False
    removed = set(bypass.removed)
    return not any(removed.intersection(other.removed) for other in chosen.values())


def _best_bypass(candidates: dict[str, BypassSensitivity], resource: Resource) -> tuple[tuple[float, float, str], str] | None:
    """The candidate adding the least squared drift per unit saved, with its sort key; None when none saves anything."""
    keys = [
        ((max(bypass.drift**2, _TINY_DRIFT) / gain, -gain, name), name)
        for name, bypass in candidates.items()
        for gain in [_saving(bypass, resource)]
        if gain > 0
    ]
    return min(keys, default=None)


def _best_move(
    groups: dict[str, GroupSensitivity], current: dict[str, int], resource: Resource, chosen: dict[str, BypassSensitivity]
) -> tuple[tuple[float, float, str], str, int] | None:
    """The (sort key, group, level index) adding the least squared drift per unit saved; None when no move saves anything.

    Groups a chosen bypass conflicts with are not moved.
    """
    blocked = {group for bypass in chosen.values() for group in bypass.conflicts}
    best: tuple[tuple[float, float, str], str, int] | None = None
    for name, group in groups.items():
        if name in blocked:
            continue
        at = current.get(name, -1)
        drift_now = group.levels[at].drift if at >= 0 else 0.0
        saved_now = _saving(group.levels[at], resource) if at >= 0 else 0.0
        for index in range(at + 1, len(group.levels)):
            gain = _saving(group.levels[index], resource) - saved_now
            if gain <= 0:
                continue
            cost = max(group.levels[index].drift**2 - drift_now**2, _TINY_DRIFT)
            key = ((cost / gain, -gain, name), name, index)
            if best is None or key < best:
                best = key
    return best


def _saving(move: Level | BypassSensitivity, resource: Resource) -> float:
    if resource == "latency":
        return move.latency_saved_ms
    return move.macs_saved if resource == "macs" else move.params_saved
