"""Spatial ops: pools, reductions, Resize / Upsample and Pad keep channels as long as they leave the channel axis alone.

Each works on the other axes of every channel independently, so channels
pass through; an op that would act on the channel axis itself (reduce over
it, rescale it, pad it) locks.  A known constant channel stays that constant
where the op cannot mix anything else into it (a padded average that counts
the padding, a sum over a window, a fill value of another value).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ArrayEdit
from onnxprune.analysis.channel_handlers.common import follow, input_at, ints, only_first_output_used, pads_input, positive_axis, with_kept_count
from onnxprune.analysis.channel_handlers.registry import Walk, register_channel_handler
from onnxprune.ir import node_label

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
REDUCTIONS = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)  # fmt: skip


def _pool(walk: Walk, node: ir.Node) -> None:
    """Pools window over the spatial axes of an NCHW tensor; only constant zeros survive an Lp norm or a counted pad."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    if tracked.axis != 1:
        walk.lock(tracked.atoms, f"{node_label(node)} pools a tensor whose channels are not on axis 1")
        return
    if not only_first_output_used(node):
        walk.lock(tracked.atoms, f"{node_label(node)} has its indices output used")
        return
    counts_padding = node.op_type == "AveragePool" and pads_input(node) and node.attributes.get_int("count_include_pad", 0) != 0
    zeros_only = counts_padding or node.op_type in ("LpPool", "GlobalLpPool")
    follow(walk, node, tracked, consts=np.where(tracked.consts == 0, tracked.consts, np.nan) if zeros_only else tracked.consts.copy())


def _reduce(walk: Walk, node: ir.Node) -> None:
    """Reducing over other axes keeps the channels (on a shifted axis without ``keepdims``)."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    if (node.op_type == "ReduceSum" and walk.opset >= 13) or walk.opset >= 18:
        axes = ints(walk.const_input(node, 1)) if input_at(node, 1) is not None else []
    else:
        axes = list(node.attributes.get_ints("axes", []))
    if axes is None:
        walk.lock(tracked.atoms, f"{node_label(node)} axes are computed at run time")
        return
    if not axes and not node.attributes.get_int("noop_with_empty_axes", 0):
        axes = list(range(tracked.rank))
    axes = [positive_axis(axis, tracked.rank) for axis in axes]
    if tracked.axis in axes:
        walk.lock(tracked.atoms, f"{node_label(node)} reduces over the channel axis")
        return
    keep_dims = node.attributes.get_int("keepdims", 1)
    axis = tracked.axis if keep_dims else tracked.axis - sum(1 for item in axes if item < tracked.axis)
    rank = tracked.rank if keep_dims else tracked.rank - len(axes)
    if node.op_type in ("ReduceLogSum", "ReduceLogSumExp", "ReduceProd"):
        consts = np.full_like(tracked.consts, np.nan)
    elif node.op_type in ("ReduceMean", "ReduceMax", "ReduceMin"):
        consts = tracked.consts.copy()
    else:
        consts = np.where(tracked.consts == 0, 0.0, np.nan)
    follow(walk, node, tracked, axis=axis, rank=rank, consts=consts)


def _resize(walk: Walk, node: ir.Node) -> None:
    """A scale of 1 on the channel axis passes; explicit output sizes get the new channel count."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    attribute_axes = node.attributes.get_ints("axes", None)
    axes = list(range(tracked.rank)) if attribute_axes is None else [positive_axis(axis, tracked.rank) for axis in attribute_axes]
    if node.op_type == "Upsample" or walk.opset < 11:
        scales_index, sizes_index = (1 if walk.opset >= 9 else None), None
    else:
        scales_index, sizes_index = 2, 3
    if scales_index is not None:
        scales = walk.const_input(node, scales_index)
    else:
        scales = np.asarray(node.attributes.get_floats("scales", [])) if "scales" in node.attributes else None
    entry = axes.index(tracked.axis) if tracked.axis in axes else None
    if scales is not None and np.asarray(scales).size:
        if entry is not None and float(np.asarray(scales).reshape(-1)[entry]) != 1.0:
            walk.lock(tracked.atoms, f"{node_label(node)} rescales the channel axis")
            return
    elif sizes_index is not None and input_at(node, sizes_index) is not None:
        sizes = walk.const_input(node, sizes_index)
        if sizes is None:
            walk.lock(tracked.atoms, f"{node_label(node)} output sizes are computed at run time")
            return
        if entry is not None:
            walk.record(ArrayEdit(node, sizes_index, with_kept_count(np.asarray(sizes), entry, tracked.atoms), tracked.atoms))
    else:
        walk.lock(tracked.atoms, f"{node_label(node)} scales are computed at run time")
        return
    follow(walk, node, tracked)


def _pad(walk: Walk, node: ir.Node) -> None:
    """Padding other axes keeps channels; a channel keeps its constant only where it equals the fill value."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    pads = node.attributes.get_ints("pads", None) if walk.opset < 11 else ints(walk.const_input(node, 1))
    axes = ints(walk.const_input(node, 3)) if input_at(node, 3) is not None else list(range(tracked.rank))
    if pads is None or axes is None:
        walk.lock(tracked.atoms, f"{node_label(node)} amounts are computed at run time")
        return
    axes = [positive_axis(axis, tracked.rank) for axis in axes]
    if tracked.axis in axes:
        entry = axes.index(tracked.axis)
        if pads[entry] != 0 or pads[entry + len(axes)] != 0:
            walk.lock(tracked.atoms, f"{node_label(node)} pads the channel axis")
            return
    consts = tracked.consts.copy()
    if node.attributes.get_string("mode", "constant") == "constant":
        fill_value = _fill_value(walk, node)
        consts = np.where(consts == fill_value, consts, np.nan) if fill_value is not None else np.full_like(consts, np.nan)
    follow(walk, node, tracked, consts=consts)


def _fill_value(walk: Walk, node: ir.Node) -> float | None:
    """Pad's constant fill (attribute before opset 11, optional input after, 0 by default); None when computed at run time."""
    if walk.opset < 11:
        return node.attributes.get_float("value", 0.0)
    if input_at(node, 2) is None:
        return 0.0
    fill = walk.const_input(node, 2)
    return None if fill is None else float(np.asarray(fill).reshape(-1)[0])


register_channel_handler(POOLS, _pool)
register_channel_handler(REDUCTIONS, _reduce)
register_channel_handler(("Resize", "Upsample"), _resize)
register_channel_handler("Pad", _pad)
