"""What the channel pass tells the user: every group's outcome, and why each weight layer it left alone stayed.

The product promise is that nothing is skipped silently.  The reasons
themselves are recorded where they arise (locks by the dependency walk,
"kept every channel because ..." by the selection); this module only
gathers them per group and per Conv / ConvTranspose / Gemm / MatMul, and
fills the pass report.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ChannelGraph, Source
from onnxprune.analysis.cost import Cost
from onnxprune.analysis.weight_ops import weight_op
from onnxprune.options import ChannelOptions
from onnxprune.passes.base import PassReport
from onnxprune.passes.channel_plan import ChannelPlan, GroupPlan, Site
from onnxprune.passes.channel_selection import ChannelSelection


def group_plans(channels: ChannelGraph, selection: ChannelSelection) -> list[GroupPlan]:
    """One entry per group that has a source layer, in group order."""
    members_by_group: dict[int, list[str]] = defaultdict(list)
    for node, atoms in channels.node_atoms.items():
        for group in sorted(set(channels.group_of_unit[channels.units_of(atoms)].tolist())):
            members_by_group[group].append(node.name or node.op_type)
    sources_by_group: dict[int, list[Source]] = defaultdict(list)
    for source in channels.sources:
        sources_by_group[_group_of(channels, source)].append(source)
    removed = selection.removed
    plans = []
    for group, sources in sorted(sources_by_group.items()):
        units = np.flatnonzero(channels.group_of_unit == group)
        locked = channels.unit_locked[units]
        gone = removed[units]
        plans.append(
            GroupPlan(
                id=group,
                sources=[source.node.name or source.node.op_type for source in sources],
                members=members_by_group[group],
                channels_before=len(units),
                channels_after=int(len(units) - np.count_nonzero(gone)),
                dead_removed=int(np.count_nonzero(gone & selection.dead[units])),
                threshold=selection.thresholds.get(group),
                locked_channels=int(np.count_nonzero(locked)),
                lock_reasons=channels.lock_reasons(units) if locked.any() else [],
                kept={
                    source.node.name or source.node.op_type: np.flatnonzero(~removed[channels.unit_of_atom[source.atoms]]).tolist()
                    for source in sources
                },
                note=selection.kept_all_because.get(group),
            )
        )
    return plans


def _group_of(channels: ChannelGraph, source: Source) -> int:
    return int(channels.group_of_unit[channels.unit_of_atom[source.atoms[0]]])


def unchanged_weight_layers(
    model: ir.Model, channels: ChannelGraph, tensors: dict[Site, np.ndarray], groups: list[GroupPlan]
) -> list[tuple[str, str]]:
    """For every Conv / ConvTranspose / Gemm / MatMul whose weight is unchanged: why."""
    note_of_group = {plan.id: plan.note for plan in groups}
    source_of = {source.node: source for source in channels.sources}
    reasons = []
    for node in model.graph:
        op = weight_op(node)
        if op is None or (node, op.weight_slot) in tensors:
            continue
        name = node.name or node.op_type
        if node in source_of:
            group = _group_of(channels, source_of[node])
            reasons.append((name, f"output channels not pruned: {note_of_group.get(group) or 'no channel selected'}"))
        elif node in channels.node_atoms:
            groups_of = sorted(set(channels.group_of_unit[channels.units_of(channels.node_atoms[node])].tolist()))
            notes = [note for note in (note_of_group.get(group) for group in groups_of) if note]
            base = channels.not_sources.get(node, "its channels follow its input")
            detail = "; ".join(notes) if notes else "its input channels come from no prunable layer"
            reasons.append((name, f"{base}; {detail}"))
        else:
            reasons.append((name, channels.not_sources.get(node, "its input and output channels come from no prunable layer")))
    return reasons


def unfolded_constants(channels: ChannelGraph, removed_units: np.ndarray) -> list[tuple[str, str]]:
    """For every layer whose bias cannot absorb the constant channels reaching it: what that costs.

    Such a channel stays in exact removal (it is not dead), and when a ratio
    removes it anyway its constant contribution is lost, not compensated.
    """
    reasons = []
    for sink in channels.sinks:
        if sink.bias_note is None or sink.op.fold_delta is None or not sink.op.can_fold(sink.node):
            continue
        units = channels.unit_of_atom[sink.atoms]
        constant = ~np.isnan(sink.consts) & (sink.consts != 0) & ~channels.unit_locked[units]
        removed = constant & removed_units[units]
        kept = constant & ~removed
        effects = []
        if kept.any():
            effects.append(f"{int(np.count_nonzero(kept))} constant input channel(s) stay instead of being removed exactly")
        if removed.any():
            effects.append(f"{int(np.count_nonzero(removed))} removed input channel(s) of constant value are not compensated")
        if effects:
            reasons.append((sink.node.name or sink.node.op_type, f"{'; '.join(effects)}: its {sink.bias_note}, so no constant can be folded into it"))
    return reasons


def fill_report(report: PassReport, plan: ChannelPlan, options: ChannelOptions, costs: tuple[Cost, Cost] | None) -> None:
    """Changes (groups that lost channels), skips with their reasons, and totals; ``costs`` is (before, after)."""
    for group in plan.groups:
        if group.channels_after < group.channels_before:
            report.changes.append(group.to_dict())
    for target, reason in plan.skipped:
        report.skip(target, reason)
    report.summary = {
        "options": {
            "ratio": options.ratio,
            "global_ranking": options.global_ranking,
            "min_channels": options.min_channels,
            "round_to": options.round_to,
            "exclude": list(options.exclude),
            "importance": options.importance,
            "reconstruct": options.reconstruct,
            "remove_dead": options.remove_dead,
        },
        "importance": plan.importance,
        "groups": [group.to_dict() for group in plan.groups],
        "groups_pruned": len(report.changes),
        "channels_before": sum(group.channels_before for group in plan.groups),
        "channels_after": sum(group.channels_after for group in plan.groups),
        "dead_channels_removed": sum(group.dead_removed for group in plan.groups),
    }
    if costs is not None:
        before, after = costs
        report.summary.update(params_before=before.params, params_after=after.params, macs_before=before.macs, macs_after=after.macs)
