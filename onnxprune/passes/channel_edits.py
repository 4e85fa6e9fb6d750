"""The numbers behind every edit a channel selection implies: new arrays, attribute values, channel counts.

Apart from selection (which channels go) and from applying (how a graph is
rewritten), this module only turns "these atoms stay" into final values, from
the edit records of :mod:`onnxprune.analysis.channel_graph`.  A removed
channel whose value is a known constant is folded into the bias of the layer
that consumed it, as the weight-op table (:mod:`onnxprune.analysis.weight_ops`)
says; nothing here touches the graph, so a plan can be computed, checked and
discarded freely.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import ChannelGraph, KeptAtoms, Sink
from onnxprune.passes.channel_plan import ChannelEdits, ChannelPlanError, Site


class _Slice(NamedTuple):
    """Keep the positions on ``axis`` whose atoms survive; ``optional``: only if the axis has one per atom."""

    axis: int
    atoms: np.ndarray
    optional: bool


def compute_edits(channels: ChannelGraph, removed_units: np.ndarray) -> ChannelEdits:
    """Every edit that removes ``removed_units``; raises :class:`ChannelPlanError` when a constant cannot be sliced."""
    kept_atoms = ~removed_units[channels.unit_of_atom]
    tensors, positions = _sliced_and_folded(channels, kept_atoms)
    tensors.update(_recomputed_arrays(channels, kept_atoms))
    cleared = [
        (value, tracked.axis, int(np.count_nonzero(kept_atoms[tracked.atoms])))
        for value, tracked in channels.tracked.items()
        if not kept_atoms[tracked.atoms].all()
    ]
    return ChannelEdits(tensors, _attribute_edits(channels, kept_atoms), cleared, positions)


def _sliced_and_folded(
    channels: ChannelGraph, kept_atoms: KeptAtoms
) -> tuple[dict[Site, np.ndarray], dict[tuple[str, int, int], np.ndarray]]:
    """Final arrays for every constant input that loses positions or absorbs removed constants.

    Also returns the indices removed per ``(node name, input index, axis)``.
    """
    deltas: dict[Site, list[np.ndarray]] = defaultdict(list)
    slices: dict[Site, list[_Slice]] = defaultdict(list)
    for edit in channels.slices:
        slices[(edit.node, edit.input_index)].append(_Slice(edit.axis, edit.atoms, edit.optional))
    for sink in channels.sinks:
        keep = kept_atoms[sink.atoms]
        if keep.all():
            continue
        slices[(sink.node, sink.weight_index)].append(_Slice(sink.weight_axis, sink.atoms, False))
        folded = _fold_delta(sink, ~keep)
        if folded is not None:
            deltas[folded[0]].append(folded[1])
    tensors: dict[Site, np.ndarray] = {}
    positions: dict[tuple[str, int, int], np.ndarray] = {}
    for site in [*slices, *(site for site in deltas if site not in slices)]:
        array = _edited_constant(site, deltas.get(site, []), slices.get(site, []), kept_atoms, positions)
        if array is not None:
            tensors[site] = array
    return tensors, positions


def _edited_constant(
    site: Site,
    deltas: list[np.ndarray],
    slices: list[_Slice],
    kept_atoms: KeptAtoms,
    positions: dict[tuple[str, int, int], np.ndarray],
) -> np.ndarray | None:
    """One input's constant with the bias deltas added and the removed positions cut; None if unchanged."""
    node, index = site
    value = node.inputs[index] if len(node.inputs) > index else None
    original = irx.constant_array(value)
    if value is not None and original is None:
        # A graph input (an initializer listed as one too) or a computed value: replacing it would drop what the caller feeds.
        raise ChannelPlanError(f"input {index} of '{node.name}' ('{value.name}') is not a constant the plan may rewrite")
    array = None if original is None else np.asarray(original)
    for delta in deltas:
        array = delta if array is None else array.astype(np.float64) + delta
    changed = bool(deltas)
    for axis, atoms, optional in slices:
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
    if not changed or array is None:
        return None
    # A new bias (the input was absent) takes the weight's type.
    dtype = original.dtype if original is not None else _constant(node.inputs[1]).dtype
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def _fold_delta(sink: Sink, removed: np.ndarray) -> tuple[Site, np.ndarray] | None:
    """Where and by how much removed constant channels shift the sink's output, as a bias correction."""
    consts = np.where(removed, sink.consts, 0.0)
    consts = np.where(np.isnan(consts), 0.0, consts)
    if not np.any(consts):
        return None
    if not sink.folds_constants or sink.op.fold_delta is None or sink.op.bias_slot is None:
        return None
    weight = np.asarray(_constant(sink.node.inputs[sink.weight_index]), dtype=np.float64)
    return (sink.node, sink.op.bias_slot), sink.op.fold_delta(sink.node, weight, consts)


def _constant(value: ir.Value | None) -> np.ndarray:
    """A weight the dependency walk already found constant."""
    array = irx.constant_array(value)
    if array is None:
        raise ChannelPlanError(f"'{value.name if value is not None else '?'}' is no longer a constant")
    return array


def _recomputed_arrays(channels: ChannelGraph, kept_atoms: KeptAtoms) -> dict[Site, np.ndarray]:
    """Shape constants, split sizes and slice bounds recomputed for the channels that stay."""
    arrays: dict[Site, np.ndarray] = {}
    for edit in channels.arrays:
        if kept_atoms[edit.atoms].all():
            continue
        inputs = edit.node.inputs
        original = irx.constant_array(inputs[edit.input_index] if len(inputs) > edit.input_index else None)
        array = np.asarray(edit.compute(kept_atoms), dtype=original.dtype if original is not None else np.int64)
        if original is None or not np.array_equal(original, array):
            arrays[(edit.node, edit.input_index)] = array
    return arrays


def _attribute_edits(channels: ChannelGraph, kept_atoms: KeptAtoms) -> dict[tuple[ir.Node, str], int | list[int] | None]:
    """New attribute values (``group`` of a depthwise conv, ...); None removes the attribute."""
    edits: dict[tuple[ir.Node, str], int | list[int] | None] = {}
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
