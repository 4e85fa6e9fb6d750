"""Weight layers (Conv, ConvTranspose, Gemm, MatMul): where channels end, pass through, and begin.

Where each op keeps its weight and bias, which weight axis holds its output
and its input channels, and on which data axis channels lie, come from the
weight-op table (:mod:`onnxprune.analysis.weight_ops`).  A weight layer plays
up to two roles:

* **Sink**: the channels reaching its data input end in its weight, as the
  slices along the table's input axis (a :class:`Sink` record; the pass
  removes them and folds known constants into the bias where the table says
  that is exact).  A depthwise convolution instead passes its channels
  through: output channel ``m`` follows input channel ``m // multiplier``,
  and its ``group`` attribute follows the channel count.  Other grouped
  convolutions lock.
* **Source**: a layer with a constant weight (and a constant bias, if any)
  and ``group == 1`` opens one new channel per slice along the table's
  output axis.  A channel whose filter is all zero produces its bias (times
  Gemm's ``beta``) everywhere; that constant travels with it.

Adding a weight op: a :class:`~onnxprune.analysis.weight_ops.WeightOp` entry
in the table, a function that checks what reaches its data input, and one
``register_channel_handler(op_type, _weight_layer(check))`` line here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import AttributeEdit, Sink, SliceEdit, Tracked
from onnxprune.analysis.channel_handlers.common import count_kept, input_at, not_constant_reason, pads_input, positive_axis
from onnxprune.analysis.channel_handlers.registry import ChannelHandler, Walk, register_channel_handler
from onnxprune.analysis.weight_ops import WEIGHT_OPS, WeightOp
from onnxprune.ir import constant_array, node_label

InputCheck = Callable[[Walk, ir.Node, Tracked, np.ndarray], None]
"""``(walk, node, arriving channels, constant weight)``: make the layer a sink, pass channels through, or lock."""


def _weight_layer(check_input: InputCheck) -> ChannelHandler:
    """The handler of a weight op: channels that arrive meet its weight, then the layer opens its own."""

    def handler(walk: Walk, node: ir.Node) -> None:
        op = WEIGHT_OPS[node.op_type]
        tracked = walk.first_tracked_only(node)
        if tracked is not None:
            weight = walk.const_input(node, op.weight_slot)
            if weight is None:
                walk.lock(tracked.atoms, f"{node_label(node)} weight {not_constant_reason(input_at(node, op.weight_slot))}")
            else:
                check_input(walk, node, tracked, np.asarray(weight))
        _open_source(walk, node, op)

    return handler


def _matches(node: ir.Node, tracked: Tracked, weight: np.ndarray, per_slice: int = 1) -> bool:
    """The channels lie on the op's data channel axis and the weight's input axis holds ``size / per_slice`` of them."""
    op = WEIGHT_OPS[node.op_type]
    on_axis = tracked.axis == positive_axis(op.data_channel_axis, tracked.rank)
    return on_axis and weight.shape[op.input_axis(node)] * per_slice == tracked.size


def _sink(walk: Walk, node: ir.Node, tracked: Tracked) -> None:
    """The channels end here: the pass removes their slices of the weight (input axis).

    Removed channels of known constant value fold into the bias only when the
    bias is absent or a constant; a run-time bias must stay as it is read.
    """
    op = WEIGHT_OPS[node.op_type]
    bias_value, bias = _bias(node, op)
    bias_note = None if bias_value is None or bias is not None else f"bias {not_constant_reason(bias_value)}"
    walk.touch(node, tracked.atoms)
    walk.record(Sink(node, op.weight_slot, op.input_axis(node), tracked.atoms, tracked.consts, op, bias_note))


def _mismatch(walk: Walk, node: ir.Node, tracked: Tracked) -> None:
    walk.lock(tracked.atoms, f"{node_label(node)} weight does not match its input channels")


def _grouped(walk: Walk, node: ir.Node, tracked: Tracked, group: int) -> None:
    """Removing channels of a grouped convolution would need the same count removed from every group."""
    walk.lock(
        tracked.atoms,
        f"{node_label(node)} is a grouped convolution (group={group}); removing channels would need the same count removed from every group",
    )
    walk.not_a_source(node, f"grouped convolution (group={group}); onnxprune keeps grouped convolutions whole")


def _conv_input(walk: Walk, node: ir.Node, tracked: Tracked, weight: np.ndarray) -> None:
    group = WEIGHT_OPS["Conv"].group(node)
    if not _matches(node, tracked, weight, per_slice=group):
        _mismatch(walk, node, tracked)
    elif group == 1:
        _sink(walk, node, tracked)
    elif group == tracked.size and weight.shape[1] == 1:
        _depthwise(walk, node, tracked, weight)
    else:
        _grouped(walk, node, tracked, group)


def _conv_transpose_input(walk: Walk, node: ir.Node, tracked: Tracked, weight: np.ndarray) -> None:
    group = WEIGHT_OPS["ConvTranspose"].group(node)
    if group != 1:
        _grouped(walk, node, tracked, group)
    elif not _matches(node, tracked, weight):
        _mismatch(walk, node, tracked)
    else:
        _sink(walk, node, tracked)


def _gemm_input(walk: Walk, node: ir.Node, tracked: Tracked, weight: np.ndarray) -> None:
    if node.attributes.get_int("transA", 0) or tracked.rank != 2:
        walk.lock(tracked.atoms, f"{node_label(node)} multiplies a transposed or non-2-D input")
    elif not _matches(node, tracked, weight):
        _mismatch(walk, node, tracked)
    else:
        _sink(walk, node, tracked)


def _matmul_input(walk: Walk, node: ir.Node, tracked: Tracked, weight: np.ndarray) -> None:
    if weight.ndim != 2:
        walk.lock(tracked.atoms, f"{node_label(node)} does not multiply the channels by a 2-D constant matrix")
    elif not _matches(node, tracked, weight):
        _mismatch(walk, node, tracked)
    else:
        _sink(walk, node, tracked)


def _bias(node: ir.Node, op: WeightOp) -> tuple[ir.Value | None, np.ndarray | None]:
    """The bias input, if any, and its constant content (None when it is absent or computed at run time)."""
    value = input_at(node, op.bias_slot) if op.bias_slot is not None else None
    return value, constant_array(value)


def _depthwise(walk: Walk, node: ir.Node, tracked: Tracked, weight: np.ndarray) -> None:
    """Channels pass through; output channel ``m`` belongs to input channel ``m // multiplier``."""
    op = WEIGHT_OPS["Conv"]
    multiplier = weight.shape[0] // tracked.size
    atoms = np.repeat(tracked.atoms, multiplier)
    bias_value, bias = _bias(node, op)
    if bias_value is not None and bias is None:
        walk.lock(tracked.atoms, f"{node_label(node)} (depthwise) bias {not_constant_reason(bias_value)}")
        return
    walk.touch(node, tracked.atoms)
    walk.record(SliceEdit(node, op.weight_slot, op.output_axis(node), atoms))
    if bias is not None and op.bias_slot is not None:
        walk.record(SliceEdit(node, op.bias_slot, 0, atoms))
    walk.record(AttributeEdit(node, "group", lambda kept: count_kept(kept, tracked.atoms), tracked.atoms))
    # A constant channel gives constant * (sum of its kernel) + bias, unless zero padding mixes in at the border.
    bias_values = np.zeros(len(atoms)) if bias is None else np.asarray(bias, dtype=np.float64)
    inputs = np.repeat(tracked.consts, multiplier)
    kernel_sums = weight.reshape(weight.shape[0], -1).astype(np.float64).sum(axis=1)
    consts = np.where(inputs == 0, bias_values, np.nan if pads_input(node) else inputs * kernel_sums + bias_values)
    walk.not_a_source(node, "depthwise convolution: its channels follow its input's channels")
    walk.track(node.outputs[0], Tracked(1, tracked.rank, atoms, consts))


def _output_rank(walk: Walk, node: ir.Node, op: WeightOp, weight: np.ndarray) -> int | None:
    """The rank of the output whose channels the layer opens; None when the layer cannot open any."""
    if op.data_channel_axis >= 0:
        # Conv / ConvTranspose outputs have their weight's rank (batch, channels, spatial...); Gemm's are 2-D like its weight.
        return weight.ndim
    # MatMul's channels are the last axis of an output with the data's rank, from a 2-D weight on the right.
    rank = walk.rank(input_at(node, 0))
    return rank if weight.ndim == 2 and rank is not None and rank >= 2 else None


def _open_source(walk: Walk, node: ir.Node, op: WeightOp) -> None:
    """Open one channel per output slice of a constant weight, or say why the layer is not a source."""
    weight = walk.const_input(node, op.weight_slot)
    if weight is None:
        walk.not_a_source(node, f"its weight {not_constant_reason(input_at(node, op.weight_slot))}, not a constant")
        return
    weight = np.asarray(weight)
    group = op.group(node)
    if group != 1:
        walk.not_a_source(node, f"grouped convolution (group={group})")
        return
    rank = _output_rank(walk, node, op, weight)
    if rank is None:
        walk.not_a_source(node, f"{op.op_type} whose constant operand is not a 2-D weight on the right")
        return
    bias_value, bias = _bias(node, op)
    if bias_value is not None and bias is None:
        walk.not_a_source(node, f"its bias {not_constant_reason(bias_value)}")
        return
    weight_axis = op.output_axis(node)
    atoms = walk.open_source(node, op.weight_slot, weight_axis, weight.shape[weight_axis])
    walk.record(SliceEdit(node, op.weight_slot, weight_axis, atoms))
    if op.bias_slot is not None:
        walk.record(SliceEdit(node, op.bias_slot, -1, atoms, optional=True))
    consts = _source_constants(node, op, weight, weight_axis, bias)
    walk.track(node.outputs[0], Tracked(positive_axis(op.data_channel_axis, rank), rank, atoms, consts))


def _source_constants(node: ir.Node, op: WeightOp, weight: np.ndarray, axis: int, bias: np.ndarray | None) -> np.ndarray:
    """Output channels whose filter is all zero produce their (scaled) bias everywhere; the others are unknown."""
    filters = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    zero = ~np.any(filters != 0, axis=1)
    size = weight.shape[axis]
    if bias is None:
        offsets = np.zeros(size)
    else:
        bias = np.asarray(bias, dtype=np.float64)
        per_feature = np.broadcast_to(bias, (*bias.shape[:-1], size)) if bias.ndim else np.full(size, float(bias))
        rows = per_feature.reshape(-1, size)
        # A bias that broadcasts over more than the features is a constant only where every row agrees.
        offsets = np.where(np.all(rows == rows[:1], axis=0), rows[0], np.nan) * op.bias_scale(node)
    return np.where(zero, offsets, np.nan)


register_channel_handler("Conv", _weight_layer(_conv_input))
register_channel_handler("ConvTranspose", _weight_layer(_conv_transpose_input))
register_channel_handler("Gemm", _weight_layer(_gemm_input))
register_channel_handler("MatMul", _weight_layer(_matmul_input))
