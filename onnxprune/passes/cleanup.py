"""Exact cleanup after pruning: remove what zeroed weights made removable.

Every rewrite here leaves the model's outputs unchanged for finite inputs:

1. A Conv/ConvTranspose/Gemm/MatMul whose whole weight is zero computes its
   bias (Gemm: ``beta * C``) broadcast to the output shape, or zeros.  It is
   replaced by ``Expand(fill, shape)`` with a constant shape, or with a shape
   built from the input's ``Shape`` where the batch (or another dimension the
   output copies from the input) is symbolic.  Needs the output shape; without
   it the node is kept and the reason recorded.  (A non-finite input times a
   zero weight would give NaN; the replacement gives the bias, which is why
   exactness is claimed for finite inputs only.)
2. An all-zero optional bias (Conv/ConvTranspose input 2, Gemm ``C`` from
   opset 11) is dropped.
3. ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x`` and ``x / 1`` are
   bypassed -- only where broadcasting cannot make the result differ from
   ``x`` in shape or type.  A bypassed node that produced a graph output hands
   that name to ``x``, so the model's interface keeps its names.
4. Nodes and initializers nothing reads any more are removed.

Cases 1-3 rewrite the main graph only; a node holding a subgraph (If/Loop/
Scan body) is reported as skipped, and its body gets dead-code removal alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import ir as irx
from onnxprune.analysis.shapes import ShapeFacts
from onnxprune.analysis.weight_ops import weight_op, weight_slots
from onnxprune.naming import Names
from onnxprune.passes.base import PassReport, PruningPass, PruningResult

# Shape facts inferred on first use: most models reach cleanup with nothing to rewrite and need none.
_LazyFacts = Callable[[], ShapeFacts]

_NEUTRAL_OPS = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1}
# Ops where the neutral constant may stand on either side (commutative).
_COMMUTATIVE = frozenset({"Add", "Mul"})


class CleanupPass(PruningPass):
    """Remove zero-weight layers, zero biases, neutral arithmetic and dead code, exactly."""

    name = "cleanup"

    def call(self, model: ir.Model) -> PruningResult:
        report = PassReport(self.name)
        graph = model.graph
        nodes_before = sum(1 for _ in graph)
        initializers_before = len(graph.initializers)
        _skip_subgraphs(model, report)
        # Inferred at the first rewrite that needs a shape, before that rewrite changes the graph.
        facts: _LazyFacts = functools.cache(functools.partial(ShapeFacts.infer, model))
        opset = graph.opset_imports.get("", 1)
        names = Names(graph)
        for node in list(graph):
            _try_replace_zero_weight(graph, node, facts, opset, names, report)
        for node in list(graph):
            _try_drop_zero_bias(node, opset, report)
        for node in list(graph):
            _try_bypass_neutral(graph, node, facts, report)
        rewrites = len(report.changes)
        common_passes.RemoveUnusedNodesPass()(model)
        nodes_after = sum(1 for _ in graph)
        initializers_after = len(graph.initializers)
        report.summary = {
            "rewrites": rewrites,
            "nodes_before": nodes_before,
            "nodes_after": nodes_after,
            "initializers_before": initializers_before,
            "initializers_after": initializers_after,
            "note": "Exact for finite inputs: a zero weight times inf/NaN would give NaN, its replacement does not.",
        }
        modified = bool(rewrites) or nodes_after != nodes_before or initializers_after != initializers_before
        return PruningResult(model, modified, report, exact=True)


def _skip_subgraphs(model: ir.Model, report: PassReport) -> None:
    """Say which nodes hold subgraphs: their bodies get dead-code removal but none of the rewrites."""
    for node in model.graph:
        for attribute in node.attributes.values():
            if attribute.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                report.skip(
                    irx.node_label(node),
                    f"its subgraph '{attribute.name}' gets dead-code removal only; "
                    "the other rewrites apply to the main graph only",
                )


def _try_replace_zero_weight(graph: ir.Graph, node: ir.Node, facts: _LazyFacts, opset: int, names: Names, report: PassReport) -> None:
    """Case 1: replace a layer whose whole weight is zero by its broadcast bias."""
    slot = _zero_weight_slot(node)
    if slot is None:
        return
    label = irx.node_label(node)
    output = node.outputs[0]
    # The weight sits in input 0 or 1; the data is the other one.
    data = node.inputs[1 - slot]
    shape_value = None
    fill, reason = _fill(node, slot)
    if reason is None and opset < 8:
        reason = f"Expand needs opset 8, the model uses opset {opset}"
    if reason is None:
        shape_value, reason = _output_shape_value(graph, node, slot, data, output, facts(), names)
    if reason is not None:
        report.skip(label, f"weight is all zero but the layer is kept: {reason}")
        return
    assert fill is not None and shape_value is not None
    fill_value = irx.add_initializer(graph, names.fresh(f"{output.name}_fill"), fill)
    expand = _new_node(names, "Expand", [fill_value, shape_value], f"{output.name}_expanded", f"{_label_hint(node)}_zero_weight")
    graph.insert_before(node, expand)
    replacement = expand.outputs[0]
    replacement.shape = facts().shape(output)
    dtype = facts().dtype(output)
    if dtype is not None:
        replacement.dtype = dtype
    name = output.name
    irx.replace_output(graph, output, replacement)
    graph.remove(node, safe=True)
    # Downstream value names stay as they were, graph output or not.
    replacement.name = name
    report.changes.append(
        {
            "action": "zero_weight_replaced",
            "node": label,
            "output": replacement.name,
            "replacement": "Expand of the bias" if np.any(fill != 0) else "Expand of zeros",
        }
    )


def _try_drop_zero_bias(node: ir.Node, opset: int, report: PassReport) -> None:
    """Case 2: drop an all-zero optional bias input."""
    op = weight_op(node)
    if op is None or op.bias_slot is None or len(node.inputs) <= op.bias_slot:
        return
    bias = node.inputs[op.bias_slot]
    array = irx.constant_array(bias)
    if bias is None or array is None or array.size == 0 or np.any(array != 0):
        return
    label = irx.node_label(node)
    if op.op_type == "Gemm" and opset < 11:
        report.skip(label, f"Gemm's C input is required before opset 11 (model uses opset {opset})")
        return
    if not math.isfinite(op.bias_scale(node)):
        report.skip(label, "beta is not finite, so beta * 0 is not 0")
        return
    node.replace_input_with(op.bias_slot, None)
    node.resize_inputs(op.bias_slot)
    report.changes.append({"action": "zero_bias_dropped", "node": label, "bias": bias.name})


def _try_bypass_neutral(graph: ir.Graph, node: ir.Node, facts: _LazyFacts, report: PassReport) -> None:
    """Case 3: bypass ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1`` (and commuted forms)."""
    if node.domain != "" or node.op_type not in _NEUTRAL_OPS or len(node.inputs) != 2:
        return
    found = _neutral_operand(node)
    if found is None:
        return
    slot, neutral, constant = found
    data = node.inputs[1 - slot]
    output = node.outputs[0]
    label = irx.node_label(node)
    if data is None:
        return
    shapes = facts()
    reason = _broadcast_changes(data, constant.shape, shapes)
    if reason is None and shapes.dtype(data) is not None and shapes.dtype(output) not in (None, shapes.dtype(data)):
        reason = f"result type {shapes.dtype(output)} differs from input type {shapes.dtype(data)}"
    if reason is None and output.is_graph_output():
        if data.is_graph_input() or data.is_initializer():
            reason = f"graph output '{output.name}' would become graph input or initializer '{data.name}'"
        elif data.is_graph_output():
            reason = f"'{data.name}' is already a graph output; one value cannot be two outputs"
    if reason is not None:
        report.skip(label, f"neutral {node.op_type} kept: {reason}")
        return
    change = {"action": "neutral_bypassed", "node": label, "constant": neutral.name, "kept": data.name}
    irx.replace_output(graph, output, data)
    graph.remove(node, safe=True)
    report.changes.append(change)


def _neutral_operand(node: ir.Node) -> tuple[int, ir.Value, np.ndarray] | None:
    """The slot, value and content of a constant operand that leaves the other operand unchanged, if any."""
    neutral = _NEUTRAL_OPS[node.op_type]
    for slot in (1, 0) if node.op_type in _COMMUTATIVE else (1,):
        value = node.inputs[slot]
        constant = irx.constant_array(value)
        if value is not None and constant is not None and constant.size > 0 and np.all(constant == neutral):
            return slot, value, constant
    return None


def _zero_weight_slot(node: ir.Node) -> int | None:
    """The input index of the node's weight when that weight is a constant of zeros (None for other ops)."""
    for slot in weight_slots(node):
        if len(node.inputs) <= slot:
            continue
        array = irx.constant_array(node.inputs[slot])
        if array is not None and array.size > 0 and not np.any(array != 0):
            return slot
    return None


def _fill(node: ir.Node, slot: int) -> tuple[np.ndarray | None, str | None]:
    """What the layer computes when its weight is zero, shaped to broadcast against the output."""
    op = weight_op(node)
    weight = irx.constant_array(node.inputs[slot])
    assert op is not None and weight is not None, "the caller found a constant weight in this slot"
    if not math.isfinite(op.weight_scale(node)):
        return None, "alpha is not finite, so alpha * 0 is not 0"
    bias_value = node.inputs[op.bias_slot] if op.bias_slot is not None and len(node.inputs) > op.bias_slot else None
    if bias_value is None:
        return np.zeros((), dtype=weight.dtype), None
    bias = irx.constant_array(bias_value)
    if bias is None:
        return None, f"bias '{bias_value.name}' is computed at run time"
    scale = op.bias_scale(node)
    if scale != 1.0:
        bias = np.asarray(bias * np.asarray(scale, dtype=bias.dtype), dtype=bias.dtype)
    if weight.ndim <= 2:
        # Gemm's C already broadcasts against the [M, N] output.
        return bias, None
    # A conv's bias [C] lines up with output axis 1 of [N, C, spatial...].
    return bias.reshape((1, bias.size) + (1,) * (weight.ndim - 2)), None


def _output_shape_value(
    graph: ir.Graph, node: ir.Node, slot: int, data: ir.Value | None, output: ir.Value, facts: ShapeFacts, names: Names
) -> tuple[ir.Value | None, str | None]:
    """An int64 shape for ``Expand``: a constant, or gathered from ``Shape(data)`` for symbolic dims."""
    out_shape = facts.shape(output)
    if out_shape is None:
        return None, f"the shape of its output '{output.name}' is unknown"
    dims = list(out_shape)
    symbolic = [axis for axis, dim in enumerate(dims) if not isinstance(dim, int)]
    if not symbolic:
        return irx.add_initializer(graph, names.fresh(f"{output.name}_shape"), np.array(dims, dtype=np.int64)), None
    data_shape = facts.shape(data) if data is not None else None
    if data is None or data_shape is None:
        return None, f"output dims {symbolic} are symbolic and the input's rank is unknown"
    sources = _copied_axes(node, slot, len(data_shape), len(dims))
    unmapped = [axis for axis in symbolic if axis not in sources]
    if unmapped:
        return None, f"output dims {unmapped} are symbolic and not copied from the input"
    # Gather from [*Shape(data), *static dims]: symbolic dims index the first part, static ones the second.
    statics = [dim for dim in dims if isinstance(dim, int)]
    indices, static_position = [], len(data_shape)
    for axis, dim in enumerate(dims):
        if isinstance(dim, int):
            indices.append(static_position)
            static_position += 1
        else:
            indices.append(sources[axis])
    shape_node = _new_node(names, "Shape", [data], f"{output.name}_input_shape", f"{_label_hint(node)}_input_shape")
    nodes = [shape_node]
    table = shape_node.outputs[0]
    axis_zero = [ir.AttrInt64("axis", 0)]
    if statics:
        static_value = irx.add_initializer(graph, names.fresh(f"{output.name}_static_dims"), np.array(statics, dtype=np.int64))
        concat = _new_node(
            names, "Concat", [table, static_value], f"{output.name}_shape_table", f"{_label_hint(node)}_shape_table", axis_zero
        )
        nodes.append(concat)
        table = concat.outputs[0]
    index_value = irx.add_initializer(graph, names.fresh(f"{output.name}_shape_index"), np.array(indices, dtype=np.int64))
    gather = _new_node(
        names, "Gather", [table, index_value], f"{output.name}_shape", f"{_label_hint(node)}_output_shape", axis_zero
    )
    nodes.append(gather)
    graph.insert_before(node, nodes)
    return gather.outputs[0], None


def _copied_axes(node: ir.Node, slot: int, data_rank: int, out_rank: int) -> dict[int, int]:
    """Output axes whose size is, by the op's definition, the size of an input axis (output -> input)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return {0: 0}
    if node.op_type == "Gemm":
        return {0: 1 if node.attributes.get_int("transA", 0) else 0}
    weight = irx.constant_array(node.inputs[slot])
    if weight is None or weight.ndim != 2 or data_rank < 2 or out_rank != data_rank:
        return {}
    if slot == 1:
        # data [..., M, K] @ W[K, N] -> [..., M, N]
        return {axis: axis for axis in range(data_rank - 1)}
    # W[M, K] @ data [..., K, N] -> [..., M, N]
    copied = {axis: axis for axis in range(data_rank - 2)}
    copied[data_rank - 1] = data_rank - 1
    return copied


def _broadcast_changes(data: ir.Value, constant_shape: tuple[int, ...], facts: ShapeFacts) -> str | None:
    """Why ``data op constant`` might not have ``data``'s shape, or ``None`` when it always does."""
    if not constant_shape:
        return None
    data_shape = facts.shape(data)
    if data_shape is None:
        return f"the input's shape is unknown and the constant has shape {list(constant_shape)}"
    if len(constant_shape) > len(data_shape):
        return f"the constant's rank {len(constant_shape)} exceeds the input's rank {len(data_shape)}"
    for dim, data_dim in zip(reversed(constant_shape), reversed(list(data_shape))):
        if dim == 1 or dim == data_dim:
            continue
        return f"constant of shape {list(constant_shape)} broadcasts the input of shape {data_shape}"
    return None


def _label_hint(node: ir.Node) -> str:
    """What names derived from ``node`` start with: its name, or its op type when it has none."""
    return node.name or node.op_type


def _new_node(
    names: Names,
    op_type: str,
    inputs: list[ir.Value],
    output_hint: str,
    node_hint: str,
    attributes: list[ir.Attr] | None = None,
) -> ir.Node:
    """A default-domain node with one output; node and output names are fresh in the whole model."""
    output = ir.Value(name=names.fresh(output_hint))
    return ir.Node("", op_type, inputs, attributes or (), outputs=[output], name=names.fresh(node_hint))
