"""The ops that carry weights, described once: every pass and the cost model read this table.

A weight op multiplies a tensor by a constant weight and may add a bias.  What
differs between Conv, ConvTranspose, Gemm and MatMul is *where* things are: in
which input the weight and bias sit, which weight axis holds the output
channels (what channel pruning removes from the layer) and which the input
channels (what it removes from the next layer, and what an N:M pattern runs
along), how the multiply-accumulates count, and whether a removed input
channel whose value is a known constant can be folded into the bias exactly.
Adding a weight op is one :class:`WeightOp` entry in :data:`WEIGHT_OPS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

ONNX_DOMAINS = ("", "ai.onnx")

Dims = tuple[int, ...]


def static_dims(value: ir.Value | None) -> Dims | None:
    """The value's shape as integers, or None when it is unknown or symbolic."""
    if value is None or value.shape is None or not value.shape.is_static():
        return None
    return tuple(value.shape.numpy())


def _numel(value: ir.Value | None) -> int | None:
    dims = static_dims(value)
    return None if dims is None else math.prod(dims)


def _group(node: ir.Node) -> int:
    return node.attributes.get_int("group", 1)


def _trans_b(node: ir.Node) -> bool:
    return bool(node.attributes.get_int("transB", 0))


def _no_padding(node: ir.Node) -> bool:
    """No zero padding can meet a constant channel, so it contributes the same everywhere."""
    padded = any(node.attributes.get_ints("pads", [0]))
    return not padded and node.attributes.get_string("auto_pad", "NOTSET") in ("NOTSET", "VALID")


# ---------------------------------------------------------------- MACs


def _conv_macs(node: ir.Node) -> int | None:
    output, weight = _numel(node.outputs[0]), static_dims(node.inputs[1])
    return None if output is None or weight is None else output * math.prod(weight[1:])


def _conv_transpose_macs(node: ir.Node) -> int | None:
    # Weight is [C_in, C_out / group, k...]: each input element feeds C_out / group * k outputs.
    data, weight = _numel(node.inputs[0]), static_dims(node.inputs[1])
    return None if data is None or weight is None else data * math.prod(weight[1:])


def _gemm_macs(node: ir.Node) -> int | None:
    first, weight = static_dims(node.inputs[0]), static_dims(node.inputs[1])
    if first is None or weight is None:
        return None
    trans_a = node.attributes.get_int("transA", 0)
    rows, inner = (first[1], first[0]) if trans_a else (first[0], first[1])
    outer = weight[0] if _trans_b(node) else weight[1]
    return rows * inner * outer


def _matmul_macs(node: ir.Node) -> int | None:
    # Every output element is a dot product over the shared axis.
    first, output = static_dims(node.inputs[0]), _numel(node.outputs[0])
    return None if first is None or output is None else output * first[-1]


# ---------------------------------------------------------------- folding constant input channels


def _conv_fold(node: ir.Node, weight: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """Each output channel gains sum over kernel positions of W[m, c] * const[c]."""
    return np.einsum("mc...,c->m...", weight, consts).reshape(weight.shape[0], -1).sum(axis=1)


def _gemm_fold(node: ir.Node, weight: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """``alpha * const @ B`` moved into ``C``, which Gemm scales by ``beta``."""
    attributes = node.attributes
    rows = weight.T if _trans_b(node) else weight
    return attributes.get_float("alpha", 1.0) / attributes.get_float("beta", 1.0) * (consts @ rows)


def _conv_can_fold(node: ir.Node) -> bool:
    return _group(node) == 1 and _no_padding(node)


def _gemm_can_fold(node: ir.Node) -> bool:
    beta = node.attributes.get_float("beta", 1.0)
    return beta != 0.0 and math.isfinite(beta)


def _never(node: ir.Node) -> bool:
    return False


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class WeightOp:
    """Where one weight op keeps its weight and bias, and how its channels behave.

    Axes index the weight tensor (input ``weight_slot``).  ``output_axis`` holds
    the layer's output channels / features; ``input_axis`` the channels it sums
    over.  ``data_channel_axis`` is the axis of the *data* input and of the
    output that carries channels (``-1``: the last).  ``fold_delta`` is the bias
    correction that replaces removed input channels of known constant value,
    valid only where ``can_fold`` is true; elsewhere only constant-zero
    channels can be removed exactly.
    """

    op_type: str
    bias_slot: int | None
    output_axis: Callable[[ir.Node], int]
    input_axis: Callable[[ir.Node], int]
    data_channel_axis: int
    macs: Callable[[ir.Node], int | None]
    can_fold: Callable[[ir.Node], bool] = _never
    fold_delta: Callable[[ir.Node, np.ndarray, np.ndarray], np.ndarray] | None = None
    weight_slot: int = 1

    def bias_scale(self, node: ir.Node) -> float:
        """The factor the op applies to its bias (Gemm's ``beta``)."""
        return node.attributes.get_float("beta", 1.0) if self.op_type == "Gemm" else 1.0

    def weight_scale(self, node: ir.Node) -> float:
        """The factor the op applies to the product with its weight (Gemm's ``alpha``)."""
        return node.attributes.get_float("alpha", 1.0) if self.op_type == "Gemm" else 1.0

    def group(self, node: ir.Node) -> int:
        """The ``group`` attribute (1 for ops without one)."""
        return _group(node)


WEIGHT_OPS: dict[str, WeightOp] = {
    op.op_type: op
    for op in (
        WeightOp(
            "Conv", bias_slot=2, output_axis=lambda node: 0, input_axis=lambda node: 1, data_channel_axis=1,
            macs=_conv_macs, can_fold=_conv_can_fold, fold_delta=_conv_fold,
        ),
        WeightOp(
            "ConvTranspose", bias_slot=2, output_axis=lambda node: 1, input_axis=lambda node: 0, data_channel_axis=1,
            macs=_conv_transpose_macs,
        ),
        WeightOp(
            "Gemm", bias_slot=2, output_axis=lambda node: 0 if _trans_b(node) else 1,
            input_axis=lambda node: 1 if _trans_b(node) else 0, data_channel_axis=1,
            macs=_gemm_macs, can_fold=_gemm_can_fold, fold_delta=_gemm_fold,
        ),
        WeightOp(
            "MatMul", bias_slot=None, output_axis=lambda node: 1, input_axis=lambda node: 0, data_channel_axis=-1,
            macs=_matmul_macs,
        ),
    )
}


def weight_op(node: ir.Node) -> WeightOp | None:
    """The table entry for ``node``, or None when it is not a (standard-domain) weight op."""
    return WEIGHT_OPS.get(node.op_type) if node.domain in ONNX_DOMAINS else None


def weight_slots(node: ir.Node) -> tuple[int, ...]:
    """The inputs that may carry ``node``'s constant weight, preferred first; empty for other ops.

    MatMul is the one weight op whose constant may stand on either side:
    ``x @ W`` (input 1) or ``W @ x`` (input 0).
    """
    op = weight_op(node)
    if op is None:
        return ()
    return (op.weight_slot, 0) if op.op_type == "MatMul" else (op.weight_slot,)


def reduction_axis(node: ir.Node, slot: int, rank: int) -> int | None:
    """The axis of the rank-``rank`` constant in input ``slot`` that ``node`` sums over (input channels / K).

    The table's ``input_axis`` describes the weight in its usual place and
    rank.  MatMul also sums over the last axis of a constant A (input 0), over
    axis -2 of a batched B, and over the only axis of a vector.  None where
    the op takes no weight of that rank.
    """
    op = weight_op(node)
    if op is None:
        return None
    if op.op_type == "MatMul":
        if rank == 1:
            return 0
        return rank - 2 if slot == op.weight_slot else rank - 1
    spatial = op.op_type in ("Conv", "ConvTranspose")
    if (spatial and rank < 3) or (not spatial and rank != 2):
        return None
    return op.input_axis(node)
