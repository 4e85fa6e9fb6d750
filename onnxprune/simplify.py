"""Simplification before pruning: fold weights computed at run time into initializers.

The pruning passes see and rewrite initializers.  A weight that is the output
of a ``Constant`` node, of a ``ConstantOfShape`` chain, or of a node computed
only from constants (a transposed or rescaled weight) is folded into a plain
initializer first.  Which tool does it:

- **nothing** when :func:`fold_candidates` finds nothing a simplifier would
  change (the common case for TorchScript and dynamo exports of CNNs): onnxsim
  is then not even imported (importing it costs about a second, two when torch
  is installed, which it imports).
- **onnxsim** for a model that fits one protobuf: it folds constants and also
  fuses BatchNormalization into the Conv before it; the ``Constant`` nodes it
  keeps are then lifted into initializers.
- **the onnxscript optimizer's constant folding** for a model whose weights
  live in external data (onnxsim needs one in-memory protobuf), for a model
  that lists initializers as graph inputs (onnxsim would drop those inputs),
  and when onnxsim fails.  It works on the onnx-ir model itself: only the
  inputs of the nodes it folds are read from disk; every other weight stays a
  lazily loaded external tensor.

A model no tool can simplify is still prunable, so a failure is a warning,
never the end of the run.

The model's interface survives simplification unchanged: a result that would
drop initializers listed as graph inputs (old IR versions list every weight
there, and a caller may feed them) or otherwise change which values the graph
takes and gives is declined with a warning; and the simplifier's inferred
shapes in the graph inputs' and outputs' declarations (a symbolic ``N``
becomes ``1``) are replaced by the original declarations.

:func:`simplify_step` also reports what changed (node and initializer counts,
a histogram of the ops removed and added, the nodes and initializers removed
and added by name), apart from the pruning passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import ir as irx
from onnxprune.analysis.shapes import ShapeFacts, declare_interface, interface_declarations
from onnxprune.errors import first_line

# Ops that onnxsim leaves alone on their own (checked on the models in models/ and in tests/test_simplify.py): a
# graph made only of these, with none of the patterns fold_candidates looks for, comes out of onnxsim unchanged.
# Everything else (Constant, ConstantOfShape, Identity, Shape, Cast, Transpose, Squeeze, Unsqueeze, Gather,
# BatchNormalization, Pad, Dropout, Mul, Sub, Div, control flow, other domains, ...) counts as something to fold.
PLAIN_OPS = frozenset(
    {
        "Conv",
        "Gemm",
        "MatMul",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "Tanh",
        "Clip",
        "HardSigmoid",
        "HardSwish",
        "Add",
        "Sum",
        "Concat",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Flatten",
        "Reshape",
        "ReduceMean",
        "Softmax",
    }
)
_RESHAPES = frozenset({"Reshape", "Flatten"})
_SHAPE_DEPENDENT = frozenset({"Reshape", "Flatten", "ReduceMean"})
# Plain ops that onnxsim leaves alone when one feeds another of the same op (checked: Conv into Conv, MatMul into
# MatMul, Add into Add); any other op fed only by its own kind (Relu after Relu, Concat into Concat) counts as foldable.
_CHAINABLE = frozenset({"Conv", "Gemm", "MatMul", "Add", "Sum"})
# A folded tensor is never allowed to grow past the largest weight already in the model or this many elements
# (ConstantOfShape, Expand and Tile can turn a few bytes into gigabytes).
_FOLD_OUTPUT_ELEMENTS = 1 << 27
# Where the onnxscript folder records the names of the values a folded tensor was computed from (onnxscript's
# optimizer.FOLDED_FROM_KEY; kept in ``Value.meta``, a set of names).
_FOLDED_FROM_KEY = "pkg.onnxscript.optimizer.folded_from"


@dataclass
class Simplification:
    """The simplified model (or the model unchanged), which tool made it, and the report step saying what changed."""

    model: ir.Model
    tool: str
    warning: str | None
    step: dict[str, Any]


def simplify(model: ir.Model) -> tuple[ir.Model, str | None]:
    """Return the simplified model, or the model unchanged and a warning saying why."""
    result = simplify_step(model)
    return result.model, result.warning


def simplify_step(model: ir.Model) -> Simplification:
    """Simplify ``model`` with the tool that fits it (or none), and report what changed.

    ``model`` itself is not modified: the result is a new model, or ``model``
    when nothing was simplified.  ``tool`` is ``"onnxsim"``, ``"onnxscript"``
    or ``"none"``; the step's ``skipped`` entries say why a tool was not used
    (nothing to fold, external data, a failure), and ``warning`` is set when
    something had to be folded and no tool could.
    """
    before = _Snapshot.of(model)
    candidates = fold_candidates(model, read_tensors=not irx.needs_external_data(model))
    skipped: list[dict[str, str]] = []
    warning: str | None = None
    if not candidates:
        result, tool = model, "none"
        skipped.append({"target": "onnxsim", "reason": f"nothing to fold ({_plain_description(model)}); not run"})
    else:
        result, tool, warning = _simplify(model, skipped)
    step = _step(before, result, tool, candidates, skipped, warning)
    return Simplification(result, tool, warning, step)


def fold_candidates(model: ir.Model, read_tensors: bool = True) -> dict[str, int]:
    """What a simplifier would change in ``model``, counted by kind (``{"Constant node": 38}``); empty when nothing.

    Conservative: a node outside :data:`PLAIN_OPS`, a node computed only from
    constants, an Add with a constant operand (onnxsim folds it into the bias
    of the Conv or Gemm before it), a single-input Concat or Sum, more than one
    Reshape/Flatten (onnxsim merges consecutive reshapes and those around
    elementwise ops), an unused node or initializer, two identical nodes, a
    local function; with ``read_tensors``, two initializers with equal
    contents (that needs their bytes, so a model with external data skips
    it). Without ``read_tensors`` no weight is read.
    """
    found: Counter[str] = Counter()
    graph = model.graph
    if model.functions:
        found["local function"] += len(model.functions)
    reshapes: list[ir.Node] = []
    seen: set[tuple[Any, ...]] = set()
    for node in irx.iter_nodes(model):
        kind = _node_candidate(node)
        if kind is not None:
            found[kind] += 1
        elif node.op_type in _SHAPE_DEPENDENT:
            reshapes.append(node)
        if node.graph is graph and not any(output.uses() or output.is_graph_output() for output in node.outputs):
            found["unused node"] += 1
        key = _node_key(node)
        if key is not None:
            if key in seen:
                found["repeated node (same op, inputs and attributes)"] += 1
            seen.add(key)
    if sum(node.op_type in _RESHAPES for node in reshapes) > 1:
        found["Reshape/Flatten nodes (more than one)"] += sum(node.op_type in _RESHAPES for node in reshapes)
    elif reshapes:
        # Shapes decide whether a Reshape, Flatten or ReduceMean does nothing; infer them only when one is there.
        facts = ShapeFacts.infer(model)
        for node in reshapes:
            kind = _shape_candidate(node, facts)
            if kind is not None:
                found[kind] += 1
    for value in graph.initializers.values():
        if not (value.uses() or value.is_graph_input() or value.is_graph_output()):
            found["unused initializer"] += 1
    if read_tensors:
        duplicates = _duplicate_initializers(graph.initializers.values())
        if duplicates:
            found["duplicate initializer"] += duplicates
    return dict(found)


def _node_candidate(node: ir.Node) -> str | None:
    if node.domain not in ("", "ai.onnx") or node.op_type not in PLAIN_OPS:
        return f"{node.op_type} node" if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type} node"
    inputs = [value for value in node.inputs if value is not None]
    constant = [irx.is_constant(value) for value in inputs]
    if inputs and all(constant):
        return "node computed only from constants"
    if node.op_type == "Add" and any(constant):
        return "Add with a constant operand"
    if node.op_type in ("Concat", "Sum") and len(inputs) == 1:
        return f"single-input {node.op_type}"
    producer = inputs[0].producer() if inputs else None
    if (
        node.op_type not in _CHAINABLE
        and producer is not None
        and (producer.op_type, producer.domain) == (node.op_type, node.domain)
        and len(inputs[0].uses()) == 1
        and not inputs[0].is_graph_output()
    ):
        # Relu after Relu, Concat into Concat, Flatten after Flatten (the first used only there): onnxsim merges them.
        return f"{node.op_type} after {node.op_type}"
    if node.op_type == "ReduceMean" and producer is not None and producer.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return "ReduceMean after a global pool"
    return None


def _shape_candidate(node: ir.Node, facts: ShapeFacts) -> str | None:
    """A Reshape or Flatten that keeps the shape, or a ReduceMean over a size-1 axis (or shapes unknown): onnxsim drops it."""
    source = facts.dims(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    if node.op_type == "ReduceMean":
        axes = _reduce_axes(node)
        if source is None or axes is None:
            return "ReduceMean with unknown shapes"
        if any(source[axis] in (1, None) for axis in (axes or range(len(source))) if -len(source) <= axis < len(source)):
            return "ReduceMean over a size-1 axis"
        return None
    target = facts.dims(node.outputs[0])
    if source is None or target is None or (len(source) == len(target) and None in (*source, *target)):
        return f"{node.op_type} with unknown shapes"
    if source == target:
        return f"{node.op_type} that keeps the shape"
    return None


def _reduce_axes(node: ir.Node) -> list[int] | None:
    """The axes a ReduceMean reduces ([] for all), or None when they are not constant."""
    attribute = node.attributes.get("axes")
    if attribute is not None:
        return list(attribute.as_ints())
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return []
    axes = irx.constant_array(node.inputs[1])
    return None if axes is None else [int(axis) for axis in axes.ravel()]


def _node_key(node: ir.Node) -> tuple[Any, ...] | None:
    """What makes two nodes compute the same value, or None for nodes that can't be compared cheaply."""
    if any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS, ir.AttributeType.TENSOR) for attr in node.attributes.values()):
        return None
    attributes = tuple(sorted((name, repr(attr.value)) for name, attr in node.attributes.items()))
    return (node.domain, node.op_type, tuple(id(value) for value in node.inputs), attributes)


def _duplicate_initializers(values: Iterable[ir.Value]) -> int:
    """How many initializers repeat another's dtype, shape and bytes (onnxsim merges them into one).

    Only tensors that share a dtype and shape with another are read, and only a digest of each is kept.
    """
    groups: dict[tuple[Any, ...], list[ir.TensorProtocol]] = {}
    for value in values:
        if value.const_value is not None and not value.is_graph_input():
            groups.setdefault((value.const_value.dtype, tuple(value.const_value.shape.numpy())), []).append(value.const_value)
    duplicates = 0
    for tensors in groups.values():
        if len(tensors) > 1:
            duplicates += len(tensors) - len({hashlib.sha256(tensor.tobytes()).digest() for tensor in tensors})
    return duplicates


def _plain_description(model: ir.Model) -> str:
    ops = sorted({node.op_type for node in irx.iter_nodes(model)})
    return f"ops {', '.join(ops) or 'none'}; no Constant, shape computation or node computed only from constants; nothing unused or repeated"


def _simplify(model: ir.Model, skipped: list[dict[str, str]]) -> tuple[ir.Model, str, str | None]:
    """(model, tool, warning) for a model with something to fold; ``skipped`` receives why a tool was not used."""
    if irx.needs_external_data(model):
        reason = "weights are stored outside the protobuf (external data), which onnxsim cannot read"
    elif any(value.is_initializer() for value in model.graph.inputs):
        reason = "initializers are listed as graph inputs, which onnxsim would drop from the inputs"
    else:
        simplified, failure = _with_onnxsim(model)
        if failure is None:
            return simplified, "onnxsim", None
        reason = failure
    skipped.append({"target": "onnxsim", "reason": f"{reason}; folding with the onnxscript optimizer instead"})
    folded, failure = _with_onnxscript(model)
    if failure is not None:
        skipped.append({"target": "onnxscript", "reason": failure})
        return model, "none", f"{reason}; {failure}; continuing unsimplified"
    return folded, "onnxscript", None


def _with_onnxsim(model: ir.Model) -> tuple[ir.Model, str | None]:
    # Imported here: importing onnxsim costs a second or two (it imports torch when torch is installed).
    import onnxsim

    proto = irx.to_proto(model)
    captured = io.StringIO()
    try:
        # onnxsim prints progress of its own; keep the tool's output readable.
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            simplified, ok = onnxsim.simplify(proto, check_n=0)
    except Exception as error:  # onnxsim raises many types (C++ errors surface as RuntimeError and others)
        return model, f"onnxsim could not simplify the model ({first_line(error, 200)})"
    if not ok:
        return model, "onnxsim's own check failed"
    result = irx.from_proto(simplified)
    # onnxsim folds what Constant nodes feed but keeps the Constant nodes themselves.
    _lift_constants(result)
    changed = _interface_change(model.graph, result.graph)
    if changed is not None:
        return model, f"onnxsim would {changed}"
    declare_interface(result.graph, interface_declarations(model.graph))
    # onnxsim drops the model-level metadata some applications rely on, and adds its own bookkeeping
    # ("onnxsim.removed_nodes", ...) that the report carries instead: keep exactly the original's.
    result.metadata_props.clear()
    result.metadata_props.update(model.metadata_props)
    if model.doc_string and not result.doc_string:
        result.doc_string = model.doc_string
    return result, None


def _with_onnxscript(model: ir.Model) -> tuple[ir.Model, str | None]:
    """Constant folding with the onnxscript optimizer on a copy of the onnx-ir model (no protobuf, no full read).

    The folder leaves nodes that read a graph input alone (an initializer
    listed as an input can be fed at run time), reads only the inputs of the
    nodes it folds, and never grows a tensor past :func:`_fold_output_limit`.
    """
    from onnxscript.optimizer import fold_constants_ir

    work = irx.copy_model(model)
    limit = _fold_output_limit(model)
    try:
        fold_constants_ir(work, input_size_limit=limit, output_size_limit=limit, should_fold=_should_fold(limit))
        _lift_constants(work)
        ir.passes.Sequential(common_passes.IdentityEliminationPass(), common_passes.RemoveUnusedNodesPass())(work)
    except Exception as error:  # the folder runs the ONNX reference evaluator: any op's error can surface
        return model, f"the onnxscript optimizer could not fold the model ({first_line(error, 200)})"
    changed = _interface_change(model.graph, work.graph)
    if changed is not None:
        return model, f"the onnxscript optimizer would {changed}"
    declare_interface(work.graph, interface_declarations(model.graph))
    for value in (*work.graph.initializers.values(), *(output for node in irx.iter_nodes(work) for output in node.outputs)):
        # Which values a folded tensor came from is for the report (``meta``), not for the saved model.
        value.metadata_props.pop(_FOLDED_FROM_KEY, None)
    # The folded weights' sources were read through the memory map: let their pages go.
    for value in model.graph.initializers.values():
        irx.evict_pages(value.const_value)
    return work, None


def _lift_constants(model: ir.Model) -> None:
    """Every ``Constant`` node (of any size, not a graph output) becomes an initializer: the form every pass reads."""
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)


def _fold_output_limit(model: ir.Model) -> int:
    """The most elements a folded tensor may have: the largest weight's, at least :data:`_FOLD_OUTPUT_ELEMENTS` (shapes only)."""
    sizes = [math.prod(value.shape.numpy()) for value in model.graph.initializers.values() if value.shape is not None and value.shape.is_static()]
    return max([_FOLD_OUTPUT_ELEMENTS, *sizes])


def _should_fold(limit: int) -> Callable[[ir.Node], bool | None]:
    """Fold ConstantOfShape (the folder keeps it by default) when its output stays under ``limit``; default rules otherwise."""

    def should_fold(node: ir.Node) -> bool | None:
        if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
            return None
        shape = irx.constant_array(node.inputs[0] if node.inputs else None)
        return shape is not None and int(math.prod(shape.tolist())) <= limit

    return should_fold


def _interface_change(before: ir.Graph, after: ir.Graph) -> str | None:
    """How simplification would change which values the graph takes and gives, or None when it keeps them."""
    kept = {value.name for value in after.inputs}
    dropped = [value for value in before.inputs if value.name not in kept]
    if dropped:
        names = ", ".join(f"'{value.name}'" for value in dropped)
        fed = all(value.is_initializer() for value in dropped)
        return f"drop graph input(s) {names}" + (" (initializers also listed as inputs, which callers may feed at run time)" if fed else "")
    if [value.name for value in before.inputs] != [value.name for value in after.inputs]:
        return "change the graph inputs"
    if [value.name for value in before.outputs] != [value.name for value in after.outputs]:
        return "change the graph outputs"
    return None


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class _Snapshot:
    """What the report compares: every node by (label, op) and every initializer by name (no tensor is read)."""

    nodes: list[tuple[str, str]]
    initializers: dict[str, list[int | str] | None]

    @classmethod
    def of(cls, model: ir.Model) -> _Snapshot:
        nodes = [(irx.node_label(node), node.op_type) for node in irx.iter_nodes(model)]
        initializers = {
            name: None if value.shape is None else [dim if isinstance(dim, int) else str(dim) for dim in value.shape]
            for name, value in model.graph.initializers.items()
        }
        return cls(nodes, initializers)


def _step(before: _Snapshot, model: ir.Model, tool: str, candidates: dict[str, int], skipped: list[dict[str, str]], warning: str | None) -> dict[str, Any]:
    after = _Snapshot.of(model)
    old_ops, new_ops = Counter(op for _, op in before.nodes), Counter(op for _, op in after.nodes)
    removed, added = dict(sorted((old_ops - new_ops).items())), dict(sorted((new_ops - old_ops).items()))
    summary: dict[str, Any] = {
        "tool": tool,
        "nodes_before": len(before.nodes),
        "nodes_after": len(after.nodes),
        "initializers_before": len(before.initializers),
        "initializers_after": len(after.initializers),
        # One line for the terminal; the histograms below for programs.
        "ops": " ".join([*(f"-{count} {op}" for op, count in removed.items()), *(f"+{count} {op}" for op, count in added.items())]) or "unchanged",
        "ops_removed": removed,
        "ops_added": added,
        "foldable": candidates,
    }
    if warning is not None:
        summary["warning"] = warning
    if candidates:
        summary["note"] = "to fold: " + ", ".join(f"{count} {kind}" for kind, count in sorted(candidates.items(), key=lambda item: (-item[1], item[0])))
    return {"name": "simplify", "changes": _changes(before, after, model), "skipped": skipped, "summary": summary}


def _changes(before: _Snapshot, after: _Snapshot, model: ir.Model) -> list[dict[str, Any]]:
    """Nodes removed and added (by name and op), initializers removed and added (by name, with shape and origin)."""
    old_nodes, new_nodes = Counter(before.nodes), Counter(after.nodes)
    changes: list[dict[str, Any]] = []
    for (label, op), count in (old_nodes - new_nodes).items():
        changes.extend({"action": "node_removed", "node": label, "op_type": op} for _ in range(count))
    for (label, op), count in (new_nodes - old_nodes).items():
        changes.extend({"action": "node_added", "node": label, "op_type": op} for _ in range(count))
    changes.extend({"action": "initializer_removed", "name": name} for name in before.initializers if name not in after.initializers)
    for name, shape in after.initializers.items():
        if name not in before.initializers:
            change: dict[str, Any] = {"action": "initializer_added", "name": name, "shape": shape}
            origin = model.graph.initializers[name].meta.get(_FOLDED_FROM_KEY)
            if origin:
                change["folded_from"] = sorted(origin)
            changes.append(change)
    return changes
