"""Per-group cut levels chosen jointly: the least predicted drift for each amount saved.

From a :class:`~onnxprune.sensitivity.SensitivityTable`, greedily: starting
with nothing cut, take the move (one group to one of its deeper levels) that
adds the least drift per unit of the resource it saves (MACs, parameters, or
modelled milliseconds for a speed target), until every group is at its
deepest level.  The sequence of allocations this passes through
is the *path*; a target is met by searching along it
(:mod:`onnxprune.target`), so a stricter target always cuts a superset of
what a looser one cuts.

Drift is predicted as the sum of the groups' measured drifts (cuts in
different groups are assumed to add up, which over-estimates more often
than not once each is refit).  A move may jump over a level: drift measured
per level is not always convex in the cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from onnxprune.sensitivity import GroupSensitivity, Level, SensitivityTable, exact_override

Resource = Literal["macs", "params", "latency"]

_TINY_DRIFT = 1e-12
"""Drift below this counts as none: a move that saves something for nothing is taken first, cheapest-saving last."""


@dataclass(frozen=True)
class Allocation:
    """The level chosen per group (groups absent keep every channel)."""

    levels: dict[str, Level] = field(default_factory=dict)

    @property
    def predicted_drift(self) -> float:
        return sum(level.drift for level in self.levels.values())

    def saved(self, resource: Resource) -> float:
        """The resource the chosen levels save, summed over groups."""
        return sum(_saving(level, resource) for level in self.levels.values())

    def overrides(self) -> tuple[str, ...]:
        """Channel overrides that apply exactly this allocation (each names one layer)."""
        return tuple(exact_override(name, level.ratio) for name, level in sorted(self.levels.items()))

    def to_dict(self) -> dict[str, object]:
        return {
            "predicted_drift": self.predicted_drift,
            "groups": {name: {"keep": level.keep, "ratio": level.ratio, "drift": level.drift} for name, level in sorted(self.levels.items())},
        }


def allocation_path(table: SensitivityTable, resource: Resource = "macs") -> list[Allocation]:
    """Every allocation of the greedy search, from nothing cut to every group at its deepest level."""
    groups = {group.name: group for group in table.groups}
    current: dict[str, int] = {}  # group name -> index of its chosen level
    path = [Allocation()]
    while True:
        move = _best_move(groups, current, resource)
        if move is None:
            return path
        name, index = move
        current[name] = index
        path.append(Allocation({group: groups[group].levels[level] for group, level in current.items()}))


def _best_move(groups: dict[str, GroupSensitivity], current: dict[str, int], resource: Resource) -> tuple[str, int] | None:
    """The (group, level index) adding the least drift per unit saved; None when no move saves anything."""
    best: tuple[float, float, str, int] | None = None
    for name, group in groups.items():
        at = current.get(name, -1)
        drift_now = group.levels[at].drift if at >= 0 else 0.0
        saved_now = _saving(group.levels[at], resource) if at >= 0 else 0.0
        for index in range(at + 1, len(group.levels)):
            gain = _saving(group.levels[index], resource) - saved_now
            if gain <= 0:
                continue
            cost = max(group.levels[index].drift - drift_now, _TINY_DRIFT)
            key = (cost / gain, -gain, name, index)
            if best is None or key < best:
                best = key
    return None if best is None else (best[2], best[3])


def _saving(level: Level, resource: Resource) -> float:
    if resource == "latency":
        return level.latency_saved_ms
    return level.macs_saved if resource == "macs" else level.params_saved
