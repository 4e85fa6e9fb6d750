"""Structured channel pruning across the whole graph: plan, validate, apply.

1. **Plan** (:func:`plan_channel_pruning`, read-only): discover the channel
   dependency groups (:mod:`onnxprune.analysis.dependency_walk`), score every prunable
   channel, choose which to remove, and compute every new initializer array,
   attribute value and shape constant.
2. **Validate**: the plan is applied to a copy of the model, which must pass
   ``onnx.checker`` (full check) and re-infer the channel counts the plan
   expects, with unchanged graph inputs and outputs.  Anything else raises
   :class:`ChannelPlanError` before the real model is touched.
3. **Apply**: the same edits on the model itself, then stale shapes are
   cleared and re-inferred.

Which channels go:

* ``remove_dead``: a channel whose value is a known constant wherever it is
  consumed (a zero filter and zero bias; a zero filter whose bias becomes
  ``relu(b)``, a BatchNormalization shift, ...) is removed *exactly*: its
  constant is folded into the consuming layer's bias (Conv without padding,
  Gemm), or it was zero anyway.
* ``ratio``: per group (default) the lowest-scoring fraction of its channels,
  or with ``global_ranking`` the lowest-scoring fraction of all prunable
  channels, scores being normalised per layer (see
  :mod:`onnxprune.importance`).  Dead channels count towards the ratio.
* ``min_channels``: every tensor whose channels change keeps at least this
  many.  ``round_to``: a group that loses channels keeps a multiple of this
  many (rounded up, never above the original count), so onnxruntime's
  blocked convolution kernels stay in use.  Dead channels obey the multiple
  too: a few dead channels removed from 64 would leave the layer off the fast
  path and slower, so they are kept until enough of them can go together.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import importance as importance_lib
from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import ChannelGraph, Sink
from onnxprune.analysis.cost import model_cost
from onnxprune.analysis.dependency_walk import discover_channel_groups
from onnxprune.errors import first_line
from onnxprune.options import ChannelOptions
from onnxprune.passes.base import PassReport, PruningPass, PruningResult

_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
class ChannelPlanError(RuntimeError):
    """The computed plan failed validation; the model was left unchanged."""


@dataclass
class GroupPlan:
    """One dependency group: its layers, channel counts and what happens to it."""

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
class ChannelPlan:
    """The complete set of changes, computed before anything is mutated.

    ``tensors`` maps ``(node, input index)`` to the new constant for that
    input (a new bias input when the index was absent); ``attributes`` maps
    ``(node, name)`` to the new value (``None`` removes it); ``cleared``
    lists the values whose channel count changes.  ``removed_positions``
    maps ``(node name, input index, axis)`` to the indices removed there
    (for display and tests).
    """

    groups: list[GroupPlan]
    tensors: dict[tuple[ir.Node, int], np.ndarray]
    attributes: dict[tuple[ir.Node, str], Any]
    cleared: list[tuple[ir.Value, int, int]]
    removed_positions: dict[tuple[str, int, int], np.ndarray]
    skipped: list[tuple[str, str]]
    channels: ChannelGraph = field(repr=False)

    @property
    def changes_anything(self) -> bool:
        return bool(self.tensors or self.attributes)


def plan_channel_pruning(model: ir.Model, options: ChannelOptions) -> ChannelPlan:
    """Which channels go and every edit that removes them; the model is not changed."""
    channels = discover_channel_groups(model, options.exclude)
    scores = _unit_scores(channels, options.importance)
    dead = _dead_units(channels) if options.remove_dead else np.zeros(channels.num_units, dtype=bool)
    removed, thresholds = _Selection(channels, scores, dead, options).run()
    kept_atoms = ~removed[channels.unit_of_atom]
    tensors, positions = _tensor_edits(channels, kept_atoms)
    attributes = _attribute_edits(channels, kept_atoms)
    cleared = [
        (value, tracked.axis, int(np.count_nonzero(kept_atoms[tracked.atoms])))
        for value, tracked in channels.tracked.items()
        if not kept_atoms[tracked.atoms].all()
    ]
    groups = _group_plans(channels, removed, dead, thresholds, options)
    skipped = _skip_reasons(model, channels, tensors, groups)
    return ChannelPlan(groups, tensors, attributes, cleared, positions, skipped, channels)


# ---------------------------------------------------------------- scoring and selection


def _unit_scores(channels: ChannelGraph, criterion: str) -> np.ndarray:
    function = importance_lib.get_importance(criterion)
    members = [(source.atoms, importance_lib.layer_scores(function, source.filters())) for source in channels.sources]
    return importance_lib.group_scores(channels.unit_of_atom, channels.num_units, members)


def _dead_units(channels: ChannelGraph) -> np.ndarray:
    """Units whose every consumed position is a known constant that can be folded exactly."""
    dead = ~channels.unit_locked.copy()
    for sink in channels.sinks:
        exact = ~np.isnan(sink.consts) & ((sink.consts == 0) | sink.op.can_fold(sink.node))
        dead[channels.unit_of_atom[sink.atoms[~exact]]] = False
    has_source = np.zeros(channels.num_units, dtype=bool)
    for source in channels.sources:
        has_source[channels.unit_of_atom[source.atoms]] = True
    return dead & has_source


class _Selection:
    """Chooses units to remove while every tracked tensor keeps ``min_channels`` (at least one)."""

    def __init__(self, channels: ChannelGraph, scores: np.ndarray, dead: np.ndarray, options: ChannelOptions) -> None:
        self.channels = channels
        self.scores = scores
        self.dead = dead
        self.options = options
        units = channels.num_units
        self.removed = np.zeros(units, dtype=bool)
        self.removable = ~channels.unit_locked & np.isfinite(scores)
        self.constraints_of: list[list[int]] = [[] for _ in range(units)]
        self.remaining: list[int] = []
        self.floor: list[int] = []
        for index, members in enumerate(channels.value_units):
            self.remaining.append(len(members))
            self.floor.append(min(len(members), max(1, options.min_channels)))
            for unit in members.tolist():
                self.constraints_of[unit].append(index)

    def run(self) -> tuple[np.ndarray, dict[int, float]]:
        for unit in np.flatnonzero(self.dead & self.removable).tolist():
            self._try_remove(unit)
        if self.options.ratio > 0:
            if self.options.global_ranking:
                self._global()
            else:
                for group in range(self.channels.num_groups):
                    self._local(group)
        self._round_groups()
        return self.removed, self._thresholds()

    def _round_groups(self) -> None:
        """Give channels back until every group keeps a multiple of ``round_to``.

        Dead channels count too: removing three dead channels from 64 would
        leave 61, off the runtime's fast kernel path, and the model slower.
        The best-scored pruned channels come back first, dead ones last (keeping
        a dead channel costs time but no accuracy).
        """
        groups = self.channels.group_of_unit
        for group in range(self.channels.num_groups):
            units = np.flatnonzero(groups == group)
            gone = units[self.removed[units]]
            kept = len(units) - len(gone)
            restore = self._keep_target(len(units), kept) - kept
            if restore <= 0:
                continue
            live = self._ordered(gone[~self.dead[gone]])[::-1]
            dead = self._ordered(gone[self.dead[gone]])
            for unit in (live + dead)[:restore]:
                self._restore(unit)

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

    def _keep_target(self, size: int, keep: int) -> int:
        keep = max(keep, min(size, self.options.min_channels))
        if keep < size and self.options.round_to > 1:
            keep = min(size, math.ceil(keep / self.options.round_to) * self.options.round_to)
        return keep

    def _local(self, group: int) -> None:
        units = np.flatnonzero(self.channels.group_of_unit == group)
        size = len(units)
        keep = self._keep_target(size, size - int(math.floor(self.options.ratio * size + 1e-9)))
        budget = size - keep - int(np.count_nonzero(self.removed[units]))
        for unit in self._ordered(units[self.removable[units] & ~self.removed[units]]):
            if budget <= 0:
                break
            if self._try_remove(unit):
                budget -= 1

    def _global(self) -> None:
        candidates = np.flatnonzero(self.removable)
        budget = int(math.floor(self.options.ratio * len(candidates) + 1e-9)) - int(np.count_nonzero(self.removed))
        for unit in self._ordered(candidates[~self.removed[candidates]]):
            if budget <= 0:
                break
            if self._try_remove(unit):
                budget -= 1


# ---------------------------------------------------------------- edits


def _tensor_edits(channels: ChannelGraph, kept_atoms: np.ndarray) -> tuple[dict, dict]:
    """Final arrays for every constant input that changes, and the removed indices per slice."""
    deltas: dict[tuple[ir.Node, int], list[np.ndarray]] = defaultdict(list)
    slices: dict[tuple[ir.Node, int], list[tuple[int, np.ndarray, bool]]] = defaultdict(list)
    for edit in channels.slices:
        slices[(edit.node, edit.input_index)].append((edit.axis, edit.atoms, edit.optional))
    for sink in channels.sinks:
        keep = kept_atoms[sink.atoms]
        if keep.all():
            continue
        slices[(sink.node, sink.weight_index)].append((sink.weight_axis, sink.atoms, False))
        delta = _fold_delta(sink, ~keep)
        if delta is not None:
            deltas[(sink.node, 2)].append(delta)
    tensors: dict[tuple[ir.Node, int], np.ndarray] = {}
    positions: dict[tuple[str, int, int], np.ndarray] = {}
    for site in list(slices) + [site for site in deltas if site not in slices]:
        node, index = site
        value = node.inputs[index] if len(node.inputs) > index else None
        original = irx.constant_array(value)
        dtype = original.dtype if original is not None else irx.constant_array(node.inputs[1]).dtype
        array = None if original is None else np.asarray(original)
        changed = False
        for delta in deltas.get(site, []):
            array = (delta if array is None else array.astype(np.float64) + delta)
            changed = True
        for axis, atoms, optional in slices.get(site, []):
            keep = kept_atoms[atoms]
            if keep.all():
                continue
            if array is None or array.ndim == 0 or array.shape[axis] != len(atoms):
                if optional:
                    continue
                raise ChannelPlanError(f"input {index} of '{node.name}' does not have {len(atoms)} entries on axis {axis}")
            axis = axis % array.ndim
            positions[(node.name or "", index, axis)] = np.flatnonzero(~keep)
            array = np.compress(keep, array, axis=axis)
            changed = True
        if changed:
            tensors[site] = np.ascontiguousarray(array.astype(dtype, copy=False))
    for edit in channels.arrays:
        if kept_atoms[edit.atoms].all():
            continue
        original = irx.constant_array(edit.node.inputs[edit.input_index]) if len(edit.node.inputs) > edit.input_index and edit.node.inputs[edit.input_index] is not None else None
        array = np.asarray(edit.compute(kept_atoms), dtype=original.dtype if original is not None else np.int64)
        if original is None or not np.array_equal(original, array):
            tensors[(edit.node, edit.input_index)] = array
    return tensors, positions


def _fold_delta(sink: Sink, removed: np.ndarray) -> np.ndarray | None:
    """What removed constant channels contributed to the sink's output, as a bias correction."""
    consts = np.where(removed, sink.consts, 0.0)
    consts = np.where(np.isnan(consts), 0.0, consts)
    if not np.any(consts):
        return None
    if sink.op.fold_delta is None or not sink.op.can_fold(sink.node):
        return None
    weight = np.asarray(irx.constant_array(sink.node.inputs[sink.weight_index]), dtype=np.float64)
    return sink.op.fold_delta(sink.node, weight, consts)


def _attribute_edits(channels: ChannelGraph, kept_atoms: np.ndarray) -> dict[tuple[ir.Node, str], Any]:
    edits: dict[tuple[ir.Node, str], Any] = {}
    for edit in channels.attributes:
        if kept_atoms[edit.atoms].all():
            continue
        value = edit.compute(kept_atoms)
        current = edit.node.attributes.get(edit.name)
        if value is None and current is None:
            continue
        if current is not None and value is not None and current.value == value:
            continue
        edits[(edit.node, edit.name)] = value
    return edits


# ---------------------------------------------------------------- report


def _group_plans(
    channels: ChannelGraph, removed: np.ndarray, dead: np.ndarray, thresholds: dict[int, float], options: ChannelOptions
) -> list[GroupPlan]:
    members_by_group: dict[int, list[str]] = defaultdict(list)
    for node, atoms in channels.node_atoms.items():
        for group in sorted(set(channels.group_of_unit[channels.units_of(atoms)].tolist())):
            members_by_group[group].append(node.name or node.op_type)
    sources_by_group: dict[int, list] = defaultdict(list)
    for source in channels.sources:
        sources_by_group[int(channels.group_of_unit[channels.unit_of_atom[source.atoms[0]]])].append(source)
    plans = []
    for group, sources in sorted(sources_by_group.items()):
        units = np.flatnonzero(channels.group_of_unit == group)
        locked = channels.unit_locked[units]
        gone = removed[units]
        kept = {
            source.node.name or source.node.op_type: np.flatnonzero(~removed[channels.unit_of_atom[source.atoms]]).tolist()
            for source in sources
        }
        plan = GroupPlan(
            id=group,
            sources=[source.node.name or source.node.op_type for source in sources],
            members=members_by_group[group],
            channels_before=len(units),
            channels_after=int(len(units) - np.count_nonzero(gone)),
            dead_removed=int(np.count_nonzero(gone & dead[units])),
            threshold=thresholds.get(group),
            locked_channels=int(np.count_nonzero(locked)),
            lock_reasons=channels.lock_reasons(units) if locked.any() else [],
            kept=kept,
        )
        if not gone.any():
            plan.note = _why_unchanged(plan, options, int(np.count_nonzero(dead[units])))
        plans.append(plan)
    return plans


def _why_unchanged(plan: GroupPlan, options: ChannelOptions, dead: int) -> str:
    if plan.locked_channels == plan.channels_before:
        return "locked: " + "; ".join(plan.lock_reasons)
    if options.ratio == 0 and dead:
        return (
            f"its {dead} dead channel(s) stay: removing them would leave {plan.channels_before - dead}, "
            f"not a multiple of round_to={options.round_to} (slower kernels)"
        )
    if options.ratio == 0:
        return "ratio is 0 and none of its channels is dead"
    if plan.channels_before <= options.min_channels:
        return f"it has {plan.channels_before} channels, not more than min_channels={options.min_channels}"
    if options.round_to > 1 and plan.channels_before <= options.round_to * math.ceil(
        (plan.channels_before * (1 - options.ratio)) / options.round_to
    ):
        return f"keeping a multiple of round_to={options.round_to} channels keeps all {plan.channels_before}"
    if options.global_ranking:
        return "global ranking: all its channels score above the global threshold"
    if plan.locked_channels:
        return f"{plan.locked_channels} of its channels are locked: " + "; ".join(plan.lock_reasons)
    return "every removal would leave some tensor below min_channels"


def _skip_reasons(model: ir.Model, channels: ChannelGraph, tensors: dict, groups: list[GroupPlan]) -> list[tuple[str, str]]:
    """For every Conv / ConvTranspose / Gemm / MatMul whose weight is unchanged: why."""
    note_of_group = {plan.id: plan.note for plan in groups}
    source_of = {source.node: source for source in channels.sources}
    reasons = []
    for node in model.graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _WEIGHT_OPS or (node, 1) in tensors:
            continue
        name = node.name or node.op_type
        if node in source_of:
            group = int(channels.group_of_unit[channels.unit_of_atom[source_of[node].atoms[0]]])
            reasons.append((name, f"output channels not pruned: {note_of_group.get(group) or 'no channel selected'}"))
        elif node in channels.node_atoms:
            groups_of = sorted(set(channels.group_of_unit[channels.units_of(channels.node_atoms[node])].tolist()))
            notes = [note_of_group.get(group) for group in groups_of if note_of_group.get(group)]
            base = channels.not_sources.get(node, "its channels follow its input")
            detail = "; ".join(notes) if notes else "its input channels come from no prunable layer"
            reasons.append((name, f"{base}; {detail}"))
        else:
            reasons.append((name, channels.not_sources.get(node, "its input and output channels come from no prunable layer")))
    return reasons


# ---------------------------------------------------------------- apply and validate


def _apply(plan: ChannelPlan, graph: ir.Graph, node_of: dict[ir.Node, ir.Node]) -> None:
    """Write the plan's edits into ``graph`` (the planned model, or a copy mapped through ``node_of``)."""
    by_value: dict[Any, list[tuple[ir.Node, int, np.ndarray]]] = defaultdict(list)
    for (node, index), array in plan.tensors.items():
        target = node_of[node]
        value = target.inputs[index] if len(target.inputs) > index else None
        by_value[value if value is not None else ("absent", target, index)].append((target, index, array))
    for value, sites in by_value.items():
        if isinstance(value, ir.Value) and _rewrite_in_place(value, sites, graph):
            irx.set_constant(value, sites[0][2])
            continue
        hint = value.name if isinstance(value, ir.Value) else f"{sites[0][0].name or sites[0][0].op_type}_bias"
        created: list[tuple[np.ndarray, ir.Value]] = []
        for node, index, array in sites:
            new_value = next((made for known, made in created if known.shape == array.shape and np.array_equal(known, array)), None)
            if new_value is None:
                new_value = irx.add_initializer(graph, hint or "pruned", array)
                created.append((array, new_value))
            if len(node.inputs) <= index:
                node.resize_inputs(index + 1)
            node.replace_input_with(index, new_value)
        if isinstance(value, ir.Value):
            _drop_if_unused(value, graph)
    for (node, name), attribute in plan.attributes.items():
        target = node_of[node]
        if attribute is None:
            target.attributes.pop(name, None)
        elif isinstance(attribute, list):
            target.attributes[name] = ir.AttrInt64s(name, attribute)
        else:
            target.attributes[name] = ir.AttrInt64(name, int(attribute))
    for value, _, _ in plan.cleared:
        _mapped_value(value, node_of).shape = None


def _rewrite_in_place(value: ir.Value, sites: list, graph: ir.Graph) -> bool:
    """An initializer can be rewritten in place when the plan rewrites every use of it identically."""
    if not irx.is_private_constant(value, graph) or value.const_value is None:
        return False
    uses = {(use.node, use.idx) for use in value.uses()}
    first = sites[0][2]
    return uses == {(node, index) for node, index, _ in sites} and all(
        array.shape == first.shape and np.array_equal(array, first) for _, _, array in sites
    )


def _drop_if_unused(value: ir.Value, graph: ir.Graph) -> None:
    if value.uses() or value.is_graph_output():
        return
    if value.is_initializer() and value.name in graph.initializers and not value.is_graph_input():
        graph.initializers.pop(value.name)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.graph is graph:
        graph.remove(producer, safe=True)


def _mapped_value(value: ir.Value, node_of: dict[ir.Node, ir.Node]) -> ir.Value:
    producer = value.producer()
    return node_of[producer].outputs[value.index()]


def _weights_as_inputs(model: ir.Model) -> None:
    """Turn large initializers of a throw-away copy into typed graph inputs.

    The checker and shape inference need only their types and shapes, so the
    trial check costs no copy of the weights and works for models over 2 GB
    or with external data (the checker would look for the data file relative
    to the working directory).  Small in-file initializers stay: shape
    inference reads their values (Reshape targets, Split sizes).
    """
    for value in list(model.graph.initializers.values()):
        tensor = value.const_value
        if tensor is None or (tensor.nbytes <= _SMALL_CONSTANT_BYTES and not isinstance(tensor, ir.ExternalTensor)):
            continue
        value.shape = ir.Shape(tensor.shape)
        value.dtype = tensor.dtype
        value.const_value = None
        del model.graph.initializers[value.name]
        model.graph.inputs.append(value)


_SMALL_CONSTANT_BYTES = 1024


def _trial(plan: ChannelPlan, model: ir.Model) -> None:
    """Apply the plan to a copy and check it; raise :class:`ChannelPlanError` on any problem."""
    copy = model.clone()
    node_of = dict(zip(model.graph, copy.graph))
    _apply(plan, copy.graph, node_of)
    _weights_as_inputs(copy)
    try:
        proto = irx.to_proto(copy)
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as error:  # the checker and inference raise several types
        raise ChannelPlanError(f"the pruned model would be invalid: {first_line(error)}") from None
    shapes = {info.name: info.type.tensor_type.shape for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    for value, axis, expected in plan.cleared:
        shape = shapes.get(value.name)
        if shape is None or len(shape.dim) <= axis or not shape.dim[axis].HasField("dim_value"):
            continue
        if shape.dim[axis].dim_value != expected:
            raise ChannelPlanError(
                f"'{value.name}' would have {shape.dim[axis].dim_value} channels after pruning, the plan expects {expected}"
            )
    for original, pruned in zip(model.graph.outputs, copy.graph.outputs):
        if original.shape is not None and original.shape.is_static():
            got = shapes.get(pruned.name)
            dims = None if got is None else tuple(dim.dim_value for dim in got.dim)
            if dims is not None and dims != tuple(original.shape.numpy()):
                raise ChannelPlanError(f"graph output '{original.name}' would change shape from {tuple(original.shape)} to {dims}")


class ChannelPruningPass(PruningPass):
    """Remove whole channels, with every dependent slice, across the graph."""

    name = "channels"

    def __init__(self, options: ChannelOptions | None = None) -> None:
        super().__init__()
        self.options = options or ChannelOptions()
        self.plan: ChannelPlan | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.report = PassReport(self.name)
        plan = plan_channel_pruning(model, self.options)
        self.plan = plan
        irx.evict_model_pages(model)
        before = model_cost(model) if plan.changes_anything else None
        if plan.changes_anything:
            _trial(plan, model)
            _apply(plan, model.graph, {node: node for node in model.graph})
            common_passes.ShapeInferencePass(strict_mode=False, data_prop=True)(model)
        after = model_cost(model) if before is not None else None
        self._fill_report(plan, before, after)
        return PruningResult(model, plan.changes_anything, self.report, exact=self.options.ratio == 0.0 or not plan.changes_anything)

    def _fill_report(self, plan: ChannelPlan, before, after) -> None:
        report = self.report
        for group in plan.groups:
            if group.channels_after < group.channels_before:
                report.changes.append(group.to_dict())
        for target, reason in plan.skipped:
            report.skip(target, reason)
        total_before = sum(group.channels_before for group in plan.groups)
        total_after = sum(group.channels_after for group in plan.groups)
        report.summary = {
            "options": {
                "ratio": self.options.ratio,
                "global_ranking": self.options.global_ranking,
                "min_channels": self.options.min_channels,
                "round_to": self.options.round_to,
                "exclude": list(self.options.exclude),
                "importance": self.options.importance,
                "remove_dead": self.options.remove_dead,
            },
            "groups": [group.to_dict() for group in plan.groups],
            "groups_pruned": len(report.changes),
            "channels_before": total_before,
            "channels_after": total_after,
            "dead_channels_removed": sum(group.dead_removed for group in plan.groups),
        }
        if before is not None and after is not None:
            report.summary.update(
                params_before=before.params, params_after=after.params, macs_before=before.macs, macs_after=after.macs
            )
