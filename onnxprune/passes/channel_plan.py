"""The channel pass's plan as plain records, shared by the modules that build, check and apply it.

Selection (:mod:`~onnxprune.passes.channel_selection`), edit computation
(:mod:`~onnxprune.passes.channel_edits`), applying
(:mod:`~onnxprune.passes.channel_apply`) and the pass itself
(:mod:`~onnxprune.passes.channels`) hand these records to one another; keeping
them in a module of their own lets each of those import them without
importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ChannelGraph

Site = tuple[ir.Node, int]
"""An input of a node: ``(node, input index)``."""


class ChannelPlanError(RuntimeError):
    """The computed plan failed validation; the model was left unchanged."""


@dataclass
class ChannelEdits:
    """Every change the plan makes to a graph, computed before anything is mutated.

    ``tensors`` maps ``(node, input index)`` to the new constant for that
    input (a new bias input when the index was absent); ``attributes`` maps
    ``(node, name)`` to the new value (``None`` removes it); ``cleared``
    lists the values whose channel count changes, with the channel axis and
    the count the plan expects.  ``removed_positions`` maps ``(node name,
    input index, axis)`` to the indices removed there (for display and tests).
    """

    tensors: dict[Site, np.ndarray]
    attributes: dict[tuple[ir.Node, str], int | list[int] | None]
    cleared: list[tuple[ir.Value, int, int]]
    removed_positions: dict[tuple[str, int, int], np.ndarray]

    @property
    def changes_anything(self) -> bool:
        """Whether applying the edits would change the graph at all."""
        return bool(self.tensors or self.attributes)


@dataclass
class GroupPlan:
    """One dependency group: its layers, channel counts and what happens to it.

    ``note`` says why the group keeps every channel (``None`` when it loses
    some); the selection records it where it made that decision.
    """

    id: int
    sources: list[str]
    members: list[str]
    channels_before: int
    channels_after: int
    dead_removed: int
    threshold: float | None
    locked_channels: int
    lock_reasons: list[str]
    kept: dict[str, list[int]]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the pass report."""
        return {
            "group": self.id,
            "sources": self.sources,
            "members": self.members,
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
            "dead_removed": self.dead_removed,
            "threshold": self.threshold,
            "locked_channels": self.locked_channels,
            "lock_reasons": self.lock_reasons,
            "kept": self.kept,
            "note": self.note,
        }


@dataclass
class ChannelPlan(ChannelEdits):
    """The edits, with what the report needs: every group's outcome and why weight layers stay unchanged."""

    groups: list[GroupPlan]
    skipped: list[tuple[str, str]]
    channels: ChannelGraph = field(repr=False)
    removed_units: np.ndarray = field(repr=False)
    importance: str = "l1"
    """The criterion that chose the channels (``auto`` resolved)."""

    def kept_outputs(self) -> dict[ir.Node, np.ndarray]:
        """For every node whose first output loses channels (a pruned layer, a depthwise conv in a group), the kept indices."""
        kept_atoms = ~self.removed_units[self.channels.unit_of_atom]
        kept: dict[ir.Node, np.ndarray] = {}
        for value, tracked in self.channels.tracked.items():
            producer = value.producer()
            if producer is not None and producer.outputs[0] is value and not kept_atoms[tracked.atoms].all():
                kept[producer] = np.flatnonzero(kept_atoms[tracked.atoms])
        return kept

    def edited_nodes(self) -> set[ir.Node]:
        """The nodes whose constants or attributes the plan changes."""
        return {node for node, _ in self.tensors} | {node for node, _ in self.attributes}
