"""Which layers and residual branches can be bypassed without changing any shape.

Read-only: the model is never changed by being analysed.  Two kinds of
candidates are found:

1. ``residual`` — a merge ``y = Add(x, f(x))`` (either operand order, or a
   two-operand ``Sum``) whose branch ``f`` keeps the shape of ``x``.
   Bypassing it removes the merge and every node of ``f``; ``y``'s consumers
   read ``x`` instead (an activation after the merge stays and becomes
   ``act(x)``).  The branch is every node that depends on ``x`` and feeds the
   merge's other operand; it is found by walking back from that operand until
   ``x``.
2. ``layer`` — one node of a known shape-preserving kind (a Conv whose output
   has its input's shape, a normalisation, an activation, Identity, Dropout,
   a square Gemm/MatMul) whose consumers can read its data input instead.

Everything else the walk meets is declined with a reason a user can act on
(a shape change, a downsample shortcut, a branch value used elsewhere, a
graph output whose name could not be kept, a node inside a subgraph, a shape
that could not be inferred, a quantized op or weight the bypass would remove).

Shapes come from onnx inference, which gives every conv output of a model with
symbolic H and W (a Paddle export) fresh symbolic dims, so no shape there can
be compared with another.  Where the run fixes those dims (calibration data,
``--input-shape``), shapes are inferred at the run's input shape and again with
every free dim but the batch doubled (:func:`bypass_shape_facts`), and a
candidate must keep its shape at both: one that does so only at one size (a
Resize to fixed sizes, a stride that happens to divide out) is declined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.shapes import ShapeFacts
from onnxprune.analysis.weight_ops import WEIGHT_OPS
from onnxprune.passes.base import Skip

RESIDUAL = "residual"
LAYER = "layer"
KINDS = (RESIDUAL, LAYER)

# Ops whose output can take their data input's place when the shapes agree:
# the weight ops except ConvTranspose (a layer that is there to upsample), and
# the ops below.  Softmax-like output heads and elementwise ops with two computed
# operands are deliberately absent: they are not "layers" a network can lose.
LAYER_OPS = frozenset(WEIGHT_OPS.keys() - {"ConvTranspose"}) | frozenset(
    {
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Softplus",
        "Softsign",
        "Mish",
        "Clip",
        "ThresholdedRelu",
        "Identity",
        "Dropout",
    }
)
MERGE_OPS = frozenset({"Add", "Sum"})
# Quantized parts are left intact, as the weight pass leaves quantized weights:
# a bypass that would remove one of these ops, or a layer fed by one, is declined.
QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)

# How many nodes back along a shortcut to look for the block input when
# explaining why a merge has no identity shortcut (Conv, BN, and a spare).
_SHORTCUT_DEPTH = 4


@dataclass(frozen=True, eq=False)
class Candidate:
    """A bypassable layer or residual block, tied to the model it was found in.

    ``anchor`` is the node whose first output disappears (the layer itself, or
    the merge of a residual block); ``source`` is the value that takes its
    place; ``nodes`` are all nodes removed, in graph order.
    """

    kind: str
    anchor: ir.Node
    source: ir.Value
    nodes: tuple[ir.Node, ...]

    @property
    def output(self) -> ir.Value:
        """The value whose consumers are rewired to ``source``."""
        return self.anchor.outputs[0]

    @property
    def name(self) -> str:
        """Node name, or the output's name for an unnamed node."""
        return bypass_name(self.anchor)

    def matches(self, pattern: str) -> bool:
        """Whether a name or glob selects this candidate (node name or output value name)."""
        return matches_node(self.anchor, pattern)

    def describe(self) -> dict[str, object]:
        """JSON-ready facts for the report."""
        return {
            "kind": self.kind,
            "name": self.name,
            "op_type": self.anchor.op_type,
            "output": self.output.name,
            "replaced_by": self.source.name,
            "removed_nodes": [bypass_name(node) for node in self.nodes],
        }

    def transferred(self, source_model: ir.Model, target_model: ir.Model) -> Candidate:
        """The same candidate in ``target_model``, a clone of ``source_model``.

        Clones keep node order, so nodes map by position; graph inputs map by
        position and initializers by name.
        """
        node_map = dict(zip(source_model.graph, target_model.graph, strict=True))
        producer, index = self.source.producer(), self.source.index()
        if producer is not None and index is not None:
            source = node_map[producer].outputs[index]
        elif self.source.is_graph_input():
            source = target_model.graph.inputs[list(source_model.graph.inputs).index(self.source)]
        else:
            assert self.source.name is not None, "an initializer always has a name"
            source = target_model.graph.initializers[self.source.name]
        return Candidate(self.kind, node_map[self.anchor], source, tuple(node_map[node] for node in self.nodes))


@dataclass(frozen=True)
class Declined(Skip):
    """A :class:`Skip` that also remembers the node, so name patterns can find it."""

    node: ir.Node = field(compare=False, repr=False)
    kind: str = LAYER

    def as_skip(self) -> Skip:
        """The plain form that goes into a report."""
        return Skip(self.target, self.reason)


def bypass_name(node: ir.Node) -> str:
    """The name a user selects a node by in ``bypass``: its name, else its first output's name.

    Reports list candidates and removed nodes by this name rather than by
    :func:`onnxprune.ir.node_label`, so that a name read from a report can be
    passed back to ``bypass`` as it is.
    """
    if node.name:
        return node.name
    if node.outputs and node.outputs[0].name:
        return node.outputs[0].name
    return node.op_type


def matches_node(node: ir.Node, pattern: str) -> bool:
    """Glob match (case-sensitive) against a node's name and its outputs' names."""
    names = [node.name, *(value.name for value in node.outputs)]
    return any(irx.matching_pattern(name, (pattern,)) for name in names)


def bypass_shape_facts(model: ir.Model, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[ShapeFacts]:
    """The shapes a bypass must keep under: as declared, or, when ``input_shapes`` fixes inputs' free dims
    other than the batch, at those shapes and at those shapes with the free dims doubled (see module doc)."""
    doubled = _with_free_dims_doubled(model, input_shapes or {})
    if doubled is None:
        return [ShapeFacts.infer(model)]
    return [ShapeFacts.infer(model, input_shapes), ShapeFacts.infer(model, doubled)]


def _with_free_dims_doubled(model: ir.Model, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]] | None:
    """``input_shapes`` with each dim the model declares free (symbolic or -1), the first axis apart, doubled; None when there is none."""
    doubled: dict[str, tuple[int, ...]] = {}
    for value in model.graph.inputs:
        asked = input_shapes.get(value.name or "")
        if asked is None or value.shape is None or len(value.shape) != len(asked):
            continue
        free = [axis > 0 and not (isinstance(dim, int) and dim >= 0) for axis, dim in enumerate(value.shape)]
        if any(free):
            doubled[value.name or ""] = tuple(2 * size if grows else size for size, grows in zip(asked, free))
    return {**{name: tuple(shape) for name, shape in input_shapes.items()}, **doubled} if doubled else None


def find_bypass_candidates(
    model: ir.Model, shapes: ShapeFacts | Sequence[ShapeFacts] | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[list[Candidate], list[Declined]]:
    """Every bypassable layer and residual block of the main graph, and every decline with its reason.

    ``shapes`` defaults to inference on a copy at ``input_shapes``
    (:func:`bypass_shape_facts`; the model itself is not touched); several
    facts must all agree that a candidate keeps its shape.  A bypass keeps every remaining value's
    shape, so a pass that bypasses one candidate after another may keep
    passing the facts it inferred first.  The candidates hold references into
    ``model`` itself.
    """
    facts = bypass_shape_facts(model, input_shapes) if shapes is None else [shapes] if isinstance(shapes, ShapeFacts) else list(shapes)
    candidates, declined = _candidates_under(model, facts[0])
    for other in facts[1:]:
        kept = {(candidate.kind, candidate.anchor) for candidate in _candidates_under(model, other)[0]}
        reason = "keeps its input's shape at the run's input shape but not with the free input dims doubled"
        declined += [Declined(found.name, reason, found.anchor, found.kind) for found in candidates if (found.kind, found.anchor) not in kept]
        candidates = [found for found in candidates if (found.kind, found.anchor) in kept]
    return candidates, declined


def _candidates_under(model: ir.Model, shapes: ShapeFacts) -> tuple[list[Candidate], list[Declined]]:
    """The candidates and declines under one set of shape facts."""
    graph = model.graph
    position = {node: index for index, node in enumerate(graph)}
    candidates: list[Candidate] = []
    declined: list[Declined] = []
    for node in irx.iter_nodes(model):
        kind = _kind(node)
        if kind is None:
            continue
        if node.graph is not graph:
            reason = "inside a subgraph (If/Loop/Scan body); only main-graph layers are bypassed"
            declined.append(Declined(bypass_name(node), reason, node, kind))
            continue
        found = _residual_candidate(node, graph, shapes, position) if kind == RESIDUAL else _layer_candidate(node, shapes)
        if isinstance(found, Candidate):
            found = _quantized_reason(found) or found
        if isinstance(found, str):
            declined.append(Declined(bypass_name(node), found, node, kind))
        else:
            candidates.append(found)
    return candidates, declined


def _kind(node: ir.Node) -> str | None:
    """Which candidate kind a node could anchor, judged from its op alone."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in LAYER_OPS:
        return LAYER
    if node.op_type in MERGE_OPS and len(_computed_inputs(node)) >= 2:
        return RESIDUAL
    return None


def _computed_inputs(node: ir.Node) -> list[ir.Value]:
    """Inputs that are not constants: a bias Add has one, a residual merge two."""
    return [value for value in node.inputs if value is not None and not irx.is_constant(value)]


def _same(shapes: ShapeFacts, first: ir.Value, second: ir.Value) -> bool | None:
    """True when both provably have one shape and dtype, False when provably not, None when unknown."""
    first_dtype, second_dtype = shapes.dtype(first), shapes.dtype(second)
    if first_dtype is not None and second_dtype is not None and first_dtype != second_dtype:
        return False
    relation = _same_dims(shapes.shape(first), shapes.shape(second))
    if relation is True and (first_dtype is None or second_dtype is None):
        return None
    return relation


def _mismatch_reason(shapes: ShapeFacts, data: ir.Value, output: ir.Value, what: str) -> str | None:
    """Why ``output`` cannot be replaced by ``data`` (a shape or dtype change, or unknown), else None."""
    relation = _same(shapes, data, output)
    if relation is True:
        return None
    described = f"'{data.name}' is {_describe(shapes, data)}, '{output.name}' is {_describe(shapes, output)}"
    if relation is None:
        return f"shape unknown: cannot prove {what} keeps the shape ({described})"
    return f"bypassing {what} would change the shape: {described}"


def _describe(shapes: ShapeFacts, value: ir.Value) -> str:
    """``[1, 64, 8, 8] float`` style text for messages."""
    shape = shapes.shape(value)
    dims = "unknown" if shape is None else "[" + ", ".join(_dim_text(dim) for dim in shape) + "]"
    dtype = shapes.dtype(value)
    return dims if dtype is None else f"{dims} {dtype.name.lower()}"


def _dim_text(dim: int | ir.SymbolicDim) -> str:
    if isinstance(dim, int):
        return str(dim)
    return dim.value or "?"


def _same_dims(first: ir.Shape | None, second: ir.Shape | None) -> bool | None:
    """Dimension-wise equality; a definite mismatch wins over unknown dims."""
    if first is None or second is None:
        return None
    if len(first) != len(second):
        return False
    unknown = False
    for left, right in zip(first, second):
        if isinstance(left, int) and isinstance(right, int):
            if left != right:
                return False
        elif not isinstance(left, int) and not isinstance(right, int) and left.value is not None and left.value == right.value:
            continue
        else:
            unknown = True
    return None if unknown else True


def _graph_output_reason(output: ir.Value, source: ir.Value) -> str | None:
    """A graph output keeps its name by renaming ``source``, which graph inputs/outputs and initializers forbid."""
    if not output.is_graph_output():
        return None
    if source.is_graph_input() or source.is_graph_output() or source.is_initializer():
        role = "graph input" if source.is_graph_input() else "graph output" if source.is_graph_output() else "initializer"
        return (
            f"its output '{output.name}' is a graph output and '{source.name}', which would replace it, "
            f"is a {role}, so the output's name could not be kept"
        )
    return None


def _dead_output_reason(output: ir.Value) -> str | None:
    if output.uses() or output.is_graph_output():
        return None
    return f"its output '{output.name}' is unused (dead code, left to the cleanup pass)"


def _layer_candidate(node: ir.Node, shapes: ShapeFacts) -> Candidate | str:
    """A single shape-preserving node, or the reason it cannot be bypassed."""
    data = node.inputs[0] if node.inputs else None
    if data is None or not node.outputs:
        return "has no data input or no output"
    output = node.outputs[0]
    for extra in node.outputs[1:]:
        if extra.uses() or extra.is_graph_output():
            return f"its extra output '{extra.name}' is used, and would have no replacement"
    if node.op_type == "Gemm" and bool(node.attributes.get_int("transA", 0)):
        return "Gemm with transA=1 reads its input transposed, so its input cannot stand in for its output"
    reason = (
        _dead_output_reason(output)
        or _mismatch_reason(shapes, data, output, irx.node_label(node))
        or _graph_output_reason(output, data)
    )
    if reason is not None:
        return reason
    return Candidate(LAYER, node, data, (node,))


def _residual_candidate(node: ir.Node, graph: ir.Graph, shapes: ShapeFacts, position: dict[ir.Node, int]) -> Candidate | str:
    """A residual block ``y = x + f(x)`` anchored at its merge, or the reason it cannot be bypassed."""
    operands = _computed_inputs(node)
    if len(operands) != 2 or len(node.inputs) != 2:
        return f"{node.op_type} of {len(node.inputs)} operands; only two-operand merges are bypassed"
    first, second = operands
    if first is second:
        return f"both operands are the same value '{first.name}', so there is no branch to remove"
    for skip, branch_out in ((first, second), (second, first)):
        branch = _branch_between(skip, branch_out, graph, position)
        if branch is not None:
            break
    else:
        return _no_identity_shortcut_reason(first, second, shapes, graph)
    output = node.outputs[0]
    reason = (
        _dead_output_reason(output)
        or _branch_leak_reason(branch, branch_out, node)
        or _branch_shape_reason(branch_out, skip, shapes)
        or _mismatch_reason(shapes, skip, output, irx.node_label(node))
        or _graph_output_reason(output, skip)
    )
    if reason is not None:
        return reason
    return Candidate(RESIDUAL, node, skip, (*branch, node))


def _quantized_reason(candidate: Candidate) -> str | None:
    """Why the bypass would break a quantized part: it removes a quantized op, or a node that reads one's output.

    The value that takes the candidate's place is exempt: it stays, and so
    does whatever produces it.
    """
    members = set(candidate.nodes)
    for node in candidate.nodes:
        if node.op_type in QUANTIZED_OPS:
            return f"it would remove the quantized op {irx.node_label(node)}; quantized parts are left intact"
        for value in node.inputs:
            if value is None or value is candidate.source:
                continue
            producer = value.producer()
            if producer is not None and producer not in members and producer.op_type in QUANTIZED_OPS:
                return (
                    f"{irx.node_label(node)} reads '{value.name}' from {producer.op_type}, "
                    "which the bypass would leave unused; quantized parts are left intact"
                )
    return None


def _branch_shape_reason(branch_out: ir.Value, skip: ir.Value, shapes: ShapeFacts) -> str | None:
    """A residual branch must produce exactly the block input's shape; a broadcast add is something else."""
    relation = _same(shapes, branch_out, skip)
    if relation is True:
        return None
    facts = (
        f"branch output '{branch_out.name}' is {_describe(shapes, branch_out)}, "
        f"block input '{skip.name}' is {_describe(shapes, skip)}"
    )
    if relation is None:
        return f"shape unknown: cannot prove the branch keeps the block input's shape ({facts})"
    return f"the branch does not keep the block input's shape, so it is no residual branch ({facts})"


def _ancestors(value: ir.Value, stop: ir.Value, graph: ir.Graph) -> tuple[set[ir.Node], bool]:
    """Nodes of ``graph`` that ``value`` is computed from, not looking past ``stop``; and whether ``stop`` was reached."""
    nodes: set[ir.Node] = set()
    seen: set[ir.Value] = set()
    reached = False
    pending = [value]
    while pending:
        current = pending.pop()
        if current is stop:
            reached = True
            continue
        if current in seen:
            continue
        seen.add(current)
        producer = current.producer()
        if producer is None or producer.graph is not graph or producer in nodes:
            continue
        nodes.add(producer)
        pending.extend(value for value in producer.inputs if value is not None)
    return nodes, reached


def _branch_between(
    skip: ir.Value, branch_out: ir.Value, graph: ir.Graph, position: dict[ir.Node, int]
) -> list[ir.Node] | None:
    """Nodes that depend on ``skip`` and feed ``branch_out``, in graph order; None when ``skip`` is not upstream.

    Ancestors that do not depend on ``skip`` (constant folding leftovers,
    other inputs) are not part of the branch; they are removed afterwards
    only if nothing else uses them.
    """
    ancestors, reached = _ancestors(branch_out, skip, graph)
    if not reached:
        return None
    branch: list[ir.Node] = []
    members: set[ir.Node] = set()
    for node in sorted(ancestors, key=position.__getitem__):
        if any(value is skip or value.producer() in members for value in node.inputs if value is not None):
            branch.append(node)
            members.add(node)
    return branch


def _branch_leak_reason(branch: Sequence[ir.Node], branch_out: ir.Value, merge: ir.Node) -> str | None:
    """Why the branch cannot go: a value of it is needed outside the block, or it holds control flow."""
    members = set(branch)
    for node in branch:
        if any(attribute.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attribute in node.attributes.values()):
            return f"the branch contains control flow ({irx.node_label(node)})"
        for value in node.outputs:
            if value.is_graph_output():
                return f"the branch value '{value.name}' is a graph output"
            for user in value.consumers():
                if user in members or (user is merge and value is branch_out):
                    continue
                return f"the branch value '{value.name}' is also used by '{bypass_name(user)}' outside the block"
    return None


def _no_identity_shortcut_reason(first: ir.Value, second: ir.Value, shapes: ShapeFacts, graph: ir.Graph) -> str:
    """Explain a merge where neither operand is the other's input, naming a downsample shortcut when there is one.

    Both operands are walked back one node at a time in step, so the shorter
    side (the shortcut) is the one found and named.
    """
    walks: list[tuple[ir.Value, ir.Value, list[str], ir.Value]] = [(first, second, [], first), (second, first, [], second)]
    for _ in range(_SHORTCUT_DEPTH):
        advanced = []
        for shortcut, other, ops, value in walks:
            producer = value.producer()
            if producer is None or producer.graph is not graph:
                continue
            computed = _computed_inputs(producer)
            if len(computed) != 1:
                continue
            ops = [producer.op_type, *ops]
            value = computed[0]
            if _ancestors(other, value, graph)[1]:
                return _shortcut_reason(shortcut, value, ops, shapes)
            advanced.append((shortcut, other, ops, value))
        walks = advanced
    return "neither operand is computed from the other (no identity shortcut), so there is no branch to remove"


def _shortcut_reason(shortcut: ir.Value, block_input: ir.Value, ops: list[str], shapes: ShapeFacts) -> str:
    chain = " -> ".join(ops)
    if _same(shapes, block_input, shortcut) is False:
        return (
            f"downsample shortcut: the shortcut applies {chain} to the block input '{block_input.name}' "
            f"({_describe(shapes, block_input)} -> {_describe(shapes, shortcut)}), "
            "so the block changes the shape and cannot be bypassed as a whole"
        )
    return (
        f"projection shortcut: the shortcut applies {chain} to the block input '{block_input.name}' "
        "instead of passing it through, so the block cannot be bypassed as a whole"
    )


def names_of(candidates: Iterable[Candidate], limit: int = 8) -> str:
    """A short comma-separated list of candidate names for error messages."""
    names = [candidate.name for candidate in candidates]
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} in all)"
    return shown or "none"
