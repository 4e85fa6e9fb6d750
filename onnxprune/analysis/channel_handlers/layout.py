"""Layout ops: channel positions move (Concat offsets, Split / Slice ranges, Transpose, Squeeze / Unsqueeze).

Each maps channel positions from input to output without touching values, so
constants travel with their channels.  Where the op's own constants (split
sizes, slice bounds) count channels, an edit recomputes them from the kept
channels.  Ops that turn channels into blocks of features (Flatten, Reshape)
and Shape reads live in :mod:`onnxprune.analysis.channel_handlers.reshape`.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ArrayEdit, AttributeEdit, KeptAtoms, Tracked
from onnxprune.analysis.channel_handlers.common import (
    count_kept,
    follow,
    foreign_channels,
    input_at,
    ints,
    positive_axis,
    ranked_inputs,
    with_kept_count,
)
from onnxprune.analysis.channel_handlers.registry import Walk, register_channel_handler
from onnxprune.ir import node_label


def _concat(walk: Walk, node: ir.Node) -> None:
    """Along the channel axis inputs stack (offsets); along another axis they must hold the same channels."""
    tracked_axes = {tracked.axis for tracked in map(walk.tracked, node.inputs) if tracked is not None}
    if not tracked_axes:
        return
    ranked = ranked_inputs(walk, node)
    if ranked is None or len({rank for _, rank in ranked}) != 1:
        walk.lock_inputs(node, f"{node_label(node)} has inputs of unknown or different rank")
        return
    values, rank = [value for value, _ in ranked], ranked[0][1]
    axis = positive_axis(node.attributes.get_int("axis", 0), rank)
    if tracked_axes == {axis}:
        _stack_channels(walk, node, values, axis, rank)
    elif len(tracked_axes) == 1:
        _join_same_channels(walk, node, values, tracked_axes.pop(), rank)
    else:
        walk.lock_inputs(node, f"{node_label(node)} joins tensors whose channels lie on different axes")


def _stack_channels(walk: Walk, node: ir.Node, values: list[ir.Value], axis: int, rank: int) -> None:
    """Channels of the inputs follow each other; an untracked input brings channels from no prunable layer."""
    atoms, consts = [], []
    for value in values:
        tracked = walk.tracked(value)
        if tracked is not None:
            atoms.append(tracked.atoms)
            consts.append(tracked.consts)
            continue
        shape = walk.shape(value)
        count = shape[axis] if shape is not None else None
        if not isinstance(count, int):
            walk.lock_inputs(node, f"{node_label(node)} input '{value.name}' has an unknown channel count")
            return
        atoms.append(foreign_channels(walk, value, count))
        consts.append(np.full(count, np.nan))
    merged = np.concatenate(atoms)
    walk.touch(node, merged)
    walk.track(node.outputs[0], Tracked(axis, rank, merged, np.concatenate(consts)))


def _join_same_channels(walk: Walk, node: ir.Node, values: list[ir.Value], axis: int, rank: int) -> None:
    """Concatenation along another axis: position ``c`` of every input is the same channel, so they couple."""
    reference = next(tracked for tracked in map(walk.tracked, values) if tracked is not None)
    consts = reference.consts.copy()
    for value in values:
        tracked = walk.tracked(value)
        if tracked is not None:
            if tracked.size != reference.size:
                walk.lock_inputs(node, f"{node_label(node)} joins tensors with different channel counts")
                return
            walk.couple(reference.atoms, tracked.atoms)
            consts = np.where(consts == tracked.consts, consts, np.nan)
            continue
        shape = walk.shape(value)
        if shape is None or shape[axis] != reference.size:
            walk.lock_inputs(node, f"{node_label(node)} input '{value.name}' has an unknown channel count")
            return
        walk.couple(reference.atoms, foreign_channels(walk, value, reference.size))
        consts = np.full(reference.size, np.nan)
    walk.touch(node, reference.atoms)
    walk.track(node.outputs[0], Tracked(axis, rank, reference.atoms, consts))


def _split_sizes(walk: Walk, node: ir.Node, tracked: Tracked) -> list[int] | None:
    """Split sizes along the channel axis (input, attribute, or equal parts); None after locking."""
    if input_at(node, 1) is not None:
        sizes = ints(walk.const_input(node, 1))
        if sizes is None:
            walk.lock(tracked.atoms, f"{node_label(node)} sizes are computed at run time")
            return None
    elif "split" in node.attributes:
        sizes = list(node.attributes.get_ints("split"))
    else:
        count = len(node.outputs)
        step = -(-tracked.size // count)
        sizes = [min(step, tracked.size - step * index) for index in range(count)]
    if sum(sizes) != tracked.size or len(sizes) != len(node.outputs):
        walk.lock(tracked.atoms, f"{node_label(node)} sizes do not match the channels")
        return None
    return sizes


def _split(walk: Walk, node: ir.Node) -> None:
    """Each output gets its range of channels; the sizes are written out explicitly from the kept channels."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    if positive_axis(node.attributes.get_int("axis", 0), tracked.rank) != tracked.axis:
        walk.touch(node, tracked.atoms)
        for output in node.outputs:
            walk.track(output, Tracked(tracked.axis, tracked.rank, tracked.atoms, tracked.consts))
        return
    sizes = _split_sizes(walk, node, tracked)
    if sizes is None:
        return
    bounds = np.cumsum([0, *sizes])
    pieces = [tracked.atoms[bounds[index] : bounds[index + 1]] for index in range(len(sizes))]

    def new_sizes(kept: KeptAtoms) -> list[int]:
        return [count_kept(kept, piece) for piece in pieces]

    walk.touch(node, tracked.atoms)
    if walk.opset >= 13:
        walk.record(ArrayEdit(node, 1, lambda kept: np.array(new_sizes(kept), dtype=np.int64), tracked.atoms))
        if "num_outputs" in node.attributes:
            # Explicit sizes replace the equal split, which may no longer divide the channels.
            walk.record(AttributeEdit(node, "num_outputs", lambda kept: None, tracked.atoms))
    else:
        walk.record(AttributeEdit(node, "split", new_sizes, tracked.atoms))
    for index, output in enumerate(node.outputs):
        segment = slice(bounds[index], bounds[index + 1])
        walk.track(output, Tracked(tracked.axis, tracked.rank, tracked.atoms[segment], tracked.consts[segment]))


def _slice(walk: Walk, node: ir.Node) -> None:
    """A step-1 range of channels passes; its bounds are recomputed from the kept channels before and inside it."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    if walk.opset < 10:
        walk.lock(tracked.atoms, f"{node_label(node)} keeps its bounds in attributes (opset < 10), which onnxprune does not rewrite")
        return
    starts, ends = walk.const_input(node, 1), walk.const_input(node, 2)
    axes = ints(walk.const_input(node, 3)) if input_at(node, 3) is not None else list(range(len(ints(starts) or [])))
    steps = ints(walk.const_input(node, 4)) if input_at(node, 4) is not None else [1] * len(axes or [])
    if starts is None or ends is None or axes is None or steps is None:
        walk.lock(tracked.atoms, f"{node_label(node)} bounds are computed at run time")
        return
    axes = [positive_axis(axis, tracked.rank) for axis in axes]
    if tracked.axis not in axes:
        follow(walk, node, tracked)
        return
    entry = axes.index(tracked.axis)
    if steps[entry] != 1:
        walk.lock(tracked.atoms, f"{node_label(node)} steps through channels with step {steps[entry]}")
        return
    start, stop, _ = slice(int(starts.reshape(-1)[entry]), int(ends.reshape(-1)[entry])).indices(tracked.size)
    stop = max(stop, start)
    walk.touch(node, tracked.atoms)
    walk.record(ArrayEdit(node, 1, with_kept_count(np.asarray(starts), entry, tracked.atoms[:start]), tracked.atoms))
    walk.record(ArrayEdit(node, 2, with_kept_count(np.asarray(ends), entry, tracked.atoms[:stop]), tracked.atoms))
    walk.track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms[start:stop], tracked.consts[start:stop]))


def _transpose(walk: Walk, node: ir.Node) -> None:
    """The channel axis moves to where ``perm`` puts it (reversed axes by default)."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    perm = list(node.attributes.get_ints("perm", list(reversed(range(tracked.rank)))))
    follow(walk, node, tracked, axis=perm.index(tracked.axis))


def _axes(walk: Walk, node: ir.Node) -> list[int] | None:
    """Squeeze / Unsqueeze axes: an attribute before opset 13, the constant second input after."""
    if walk.opset < 13:
        axes = node.attributes.get_ints("axes", None)
        return None if axes is None else list(axes)
    return ints(walk.const_input(node, 1)) if input_at(node, 1) is not None else None


def _tracked_and_axes(walk: Walk, node: ir.Node) -> tuple[Tracked | None, list[int] | None]:
    """The channels reaching a Squeeze / Unsqueeze and, when any do, its axes (None when not known)."""
    tracked = walk.first_tracked_only(node)
    return tracked, None if tracked is None else _axes(walk, node)


def _unsqueeze(walk: Walk, node: ir.Node) -> None:
    """New unit axes shift the channel axis along."""
    tracked, axes = _tracked_and_axes(walk, node)
    if tracked is None:
        return
    if axes is None:
        walk.lock(tracked.atoms, f"{node_label(node)} axes are computed at run time")
        return
    rank = tracked.rank + len(axes)
    inserted = {positive_axis(axis, rank) for axis in axes}
    kept_axes = [axis for axis in range(rank) if axis not in inserted]
    follow(walk, node, tracked, axis=kept_axes[tracked.axis], rank=rank)


def _squeeze(walk: Walk, node: ir.Node) -> None:
    """Removed unit axes shift the channel axis back; squeezing the channel axis itself locks."""
    tracked, axes = _tracked_and_axes(walk, node)
    if tracked is None:
        return
    if axes is None:
        shape = walk.shape(input_at(node, 0))
        if input_at(node, 1) is not None or shape is None or None in shape:
            walk.lock(tracked.atoms, f"{node_label(node)} axes are not known")
            return
        axes = [axis for axis, dim in enumerate(shape) if dim == 1]
    axes = [positive_axis(axis, tracked.rank) for axis in axes]
    if tracked.axis in axes:
        walk.lock(tracked.atoms, f"{node_label(node)} removes the channel axis")
        return
    axis = tracked.axis - sum(1 for item in axes if item < tracked.axis)
    follow(walk, node, tracked, axis=axis, rank=tracked.rank - len(axes))


register_channel_handler("Concat", _concat)
register_channel_handler("Split", _split)
register_channel_handler("Slice", _slice)
register_channel_handler("Transpose", _transpose)
register_channel_handler("Unsqueeze", _unsqueeze)
register_channel_handler("Squeeze", _squeeze)
