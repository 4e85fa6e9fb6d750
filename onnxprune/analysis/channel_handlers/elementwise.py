"""Elementwise ops: channel ``c`` of the output depends only on channel ``c`` of each operand.

Unary ops (activations, casts, ``Identity``) pass channels through unchanged
and map each channel's known constant through the op where its value is
modelled here; elsewhere the constant becomes unknown, which only costs an
exact removal.  Adding a unary op is one name in :data:`UNARY_OPS`, or one
:func:`register_elementwise_unary` call from outside.

Binary and variadic ops (a residual ``Add``/``Sum``, a per-channel scale, the
gate of a squeeze-excitation ``Mul``) require their operands to hold the same
channels, so they *couple* them position by position.  A constant operand
with one entry per channel is sliced with the channels; one that broadcasts
over them is left alone; a run-time operand with one entry per channel brings
channels from outside any prunable layer and is fixed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import SliceEdit, Tracked
from onnxprune.analysis.channel_handlers.common import foreign_channels, input_at, ranked_inputs
from onnxprune.analysis.channel_handlers.registry import Walk, register_channel_handler
from onnxprune.ir import constant_array, node_label

ConstantMap = Callable[[ir.Node, np.ndarray], np.ndarray]
"""``(node, constants) -> constants``: a unary op applied to known per-channel values (NaN: unknown)."""

UNARY_OPS = frozenset(
    {
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu", "Clip", "Cos",
        "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
        "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu",
        "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Swish", "Tan", "Tanh",
        "ThresholdedRelu",
    }
)  # fmt: skip
"""Standard ops whose output channel ``c`` depends only on input channel ``c``."""


def _clip_bounds(node: ir.Node) -> tuple[float | None, float | None] | None:
    """Clip's bounds (attributes before opset 11, inputs after); None when a bound is computed at run time."""
    if "min" in node.attributes or "max" in node.attributes:
        return node.attributes.get_float("min", None), node.attributes.get_float("max", None)
    bounds: list[float | None] = []
    for index in (1, 2):
        value = input_at(node, index)
        array = constant_array(value)
        if value is not None and array is None:
            return None
        bounds.append(None if array is None else float(np.asarray(array).reshape(-1)[0]))
    return bounds[0], bounds[1]


def _clip(node: ir.Node, x: np.ndarray) -> np.ndarray:
    bounds = _clip_bounds(node)
    if bounds is None or bounds == (None, None):
        return np.full_like(x, np.nan)
    low, high = bounds
    return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)


def _hard_sigmoid(node: ir.Node, x: np.ndarray) -> np.ndarray:
    alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
    return np.clip(alpha * x + beta, 0.0, 1.0)


_CONSTANT_MAPS: dict[str, ConstantMap] = {
    "Identity": lambda node, x: x.copy(),
    "Dropout": lambda node, x: x.copy(),
    "Relu": lambda node, x: np.maximum(x, 0.0),
    "LeakyRelu": lambda node, x: np.where(x >= 0, x, node.attributes.get_float("alpha", 0.01) * x),
    "Clip": _clip,
    "Sigmoid": lambda node, x: 1.0 / (1.0 + np.exp(-x)),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda node, x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Tanh": lambda node, x: np.tanh(x),
    "Neg": lambda node, x: -x,
    "Abs": lambda node, x: np.abs(x),
}


def _unary(walk: Walk, node: ir.Node, constant: ConstantMap | None) -> None:
    """Every used output carries the input's channels (Dropout's mask too: it is elementwise as well)."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    walk.touch(node, tracked.atoms)
    with np.errstate(all="ignore"):
        consts = np.full_like(tracked.consts, np.nan) if constant is None else constant(node, tracked.consts)
    for output in node.outputs:
        if output.uses() or output.is_graph_output():
            walk.track(output, Tracked(tracked.axis, tracked.rank, tracked.atoms, consts))


def register_elementwise_unary(op_type: str, constant: ConstantMap | None = None, domain: str = "", *, replace: bool = False) -> None:
    """Declare ``op_type`` elementwise unary: its channels pass through unchanged.

    ``constant`` maps known per-channel constant values through the op, so
    that channels whose value is known stay removable exactly; without it
    their value becomes unknown after the op.
    """
    register_channel_handler(op_type, functools.partial(_unary, constant=constant), domain, replace=replace)


# ---------------------------------------------------------------- several operands

Combine = Callable[[list[np.ndarray]], np.ndarray]


def _multiply(operands: list[np.ndarray]) -> np.ndarray:
    """A known zero factor gives zero even when another factor is unknown."""
    any_zero = np.any([operand == 0 for operand in operands], axis=0)
    return np.where(any_zero, 0.0, np.prod(operands, axis=0))


_COMBINE: dict[str, Combine] = {
    "Add": lambda operands: np.sum(operands, axis=0),
    "Sum": lambda operands: np.sum(operands, axis=0),
    "Mean": lambda operands: np.mean(operands, axis=0),
    "Sub": lambda operands: operands[0] - operands[1],
    "Mul": _multiply,
    "Div": lambda operands: operands[0] / operands[1],
    "Max": lambda operands: np.max(operands, axis=0),
    "Min": lambda operands: np.min(operands, axis=0),
    "PRelu": lambda operands: np.where(operands[0] >= 0, operands[0], operands[0] * operands[1]),
    "Pow": lambda operands: np.full_like(operands[0], np.nan),
}
"""Binary / variadic elementwise ops, and how each combines known per-channel constants."""


def _uniform_per_channel(array: np.ndarray, axis: int) -> np.ndarray | None:
    """The per-channel values of a constant when it is uniform along every other axis."""
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), axis, 0).reshape(array.shape[axis], -1)
    if moved.shape[1] == 0:
        return None
    first = moved[:, :1]
    if not np.array_equal(np.broadcast_to(first, moved.shape), moved):
        return None
    return first[:, 0]


def _untracked_operand(walk: Walk, node: ir.Node, index: int, value: ir.Value, local_axis: int, reference: Tracked) -> np.ndarray | None:
    """Per-channel constants of operand ``index``, which carries no tracked channels; None after locking the node.

    ``local_axis`` is where the channels fall in this operand once it is
    broadcast against the others.
    """
    channels = reference.size
    shape = walk.shape(value)
    dim = None if shape is None else (shape[local_axis] if 0 <= local_axis < len(shape) else 1)
    array = constant_array(value)
    if dim == 1:
        # Broadcast over the channels: a known constant only when it is one value.
        flat = np.zeros(0) if array is None else np.asarray(array).reshape(-1)
        uniform = flat.size > 0 and bool(np.all(flat == flat[0]))
        return np.full(channels, float(flat[0]) if uniform else np.nan)
    if dim == channels and array is not None:
        walk.record(SliceEdit(node, index, local_axis, reference.atoms))
        per_channel = _uniform_per_channel(array, local_axis)
        return per_channel if per_channel is not None else np.full(channels, np.nan)
    if dim == channels:
        walk.couple(reference.atoms, foreign_channels(walk, value, channels))
        return np.full(channels, np.nan)
    walk.lock_inputs(node, f"{node_label(node)} operand '{value.name}' has an unknown or mismatched channel dim")
    return None


def _elementwise(walk: Walk, node: ir.Node, combine: Combine) -> None:
    """Couple the operands that carry the most channels; broadcast the rest (numpy rules: ranks align at the end)."""
    tracked = {index: found for index, value in enumerate(node.inputs) if (found := walk.tracked(value)) is not None}
    if not tracked:
        return
    label = node_label(node)
    ranked = ranked_inputs(walk, node)
    if ranked is None:
        walk.lock_inputs(node, f"{label} has an operand of unknown rank")
        return
    rank = max(operand_rank for _, operand_rank in ranked)
    full = [operand for operand in tracked.values() if operand.size > 1] or list(tracked.values())
    channels = max(operand.size for operand in full)
    full = [operand for operand in full if operand.size == channels]
    positions = {operand.axis + rank - operand.rank for operand in full}
    if len(positions) != 1:
        walk.lock_inputs(node, f"{label} combines tensors whose channels lie on different axes")
        return
    axis = positions.pop()
    if node.op_type == "Pow" and 1 in tracked:
        walk.lock_inputs(node, f"{label} uses channels as an exponent")
        return
    reference = full[0]
    operand_consts: list[np.ndarray] = []
    for index, (value, operand_rank) in enumerate(ranked):
        operand = tracked.get(index)
        if operand is None:
            consts = _untracked_operand(walk, node, index, value, axis - (rank - operand_rank), reference)
            if consts is None:
                return
            operand_consts.append(consts)
        elif operand.size == channels:
            walk.couple(reference.atoms, operand.atoms)
            operand_consts.append(operand.consts)
        else:
            operand_consts.append(np.full(channels, operand.consts[0] if operand.size == 1 else np.nan))
    walk.touch(node, reference.atoms)
    with np.errstate(all="ignore"):
        consts = combine(operand_consts)
    walk.track(node.outputs[0], Tracked(axis, rank, reference.atoms, consts))


for _op in UNARY_OPS:
    register_elementwise_unary(_op, _CONSTANT_MAPS.get(_op))
for _op, _combine in _COMBINE.items():
    register_channel_handler(_op, functools.partial(_elementwise, combine=_combine))
