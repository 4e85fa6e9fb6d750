"""Cost model: parameters, multiply-accumulates, node counts, from inferred shapes.

MACs are what channel pruning reduces, so they are counted exactly for the
ops that dominate a CNN's run time, the weight ops of
:mod:`onnxprune.analysis.weight_ops` (each entry knows its formula).  Every
other op is counted as one operation per output element (``elementwise_ops``),
which keeps the two kinds of work apart instead of mixing them in one number.
Shapes come from onnx shape inference on a copy, so the model is never
changed by being measured.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.analysis.shapes import fix_input_shapes, infer_all_shapes
from onnxprune.analysis.weight_ops import static_dims, weight_op
from onnxprune.errors import InputError
from onnxprune.model_source import ModelLike, read_model


@dataclass
class Cost:
    """What a model costs to store and to run once."""

    params: int
    macs: int
    elementwise_ops: int
    nodes: int
    weight_bytes: int
    op_histogram: dict[str, int] = field(default_factory=dict)
    unknown_shape_nodes: list[str] = field(default_factory=list)
    file_bytes: int | None = None

    @property
    def macs_known(self) -> bool:
        """Whether every weight op's MACs could be counted (no symbolic dims left in their shapes)."""
        return not self.unknown_shape_nodes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def macs_ratio(original: Cost, pruned: Cost) -> float | None:
    """Pruned MACs over original MACs; None when either count is incomplete (a ratio of partial counts means nothing)."""
    if not (original.macs_known and pruned.macs_known):
        return None
    return pruned.macs / original.macs if original.macs else 1.0


def model_cost(model: ModelLike, path: str | os.PathLike | None = None, shapes: Mapping[str, Sequence[int]] | None = None) -> Cost:
    """Measure ``model`` (a path, ``onnx.ModelProto`` or ``ir.Model``); ``path`` adds the size of the file it came from (with external data).

    A model given as a path is its own ``path``.

    ``shapes`` fixes the named inputs' dims (H and W of a model exported with
    symbolic ones): shapes of intermediate values are then inferred afresh
    from them, since the exporter's symbolic ones would otherwise be kept.
    """
    model, source = read_model(model)
    path = path if path is not None else source
    shaped = _shaped(model, shapes)
    histogram: Counter[str] = Counter()
    macs = elementwise = nodes = 0
    unknown: list[str] = []
    for node in irx.iter_nodes(shaped):
        nodes += 1
        histogram[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
        if node.op_type == "Constant":
            continue
        op = weight_op(node)
        if op is None:
            elementwise += sum(math.prod(dims) for output in node.outputs if (dims := static_dims(output)) is not None)
            continue
        count = op.macs(node)
        if count is None:
            unknown.append(node.name or node.op_type)
        else:
            macs += count
    params, weight_bytes = _parameters(model)
    return Cost(
        params=params,
        macs=macs,
        elementwise_ops=elementwise,
        nodes=nodes,
        weight_bytes=weight_bytes,
        op_histogram=dict(sorted(histogram.items())),
        unknown_shape_nodes=unknown,
        file_bytes=file_size(path) if path is not None else None,
    )


def macs_by_node(model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None) -> dict[ir.Node, int]:
    """MACs of each weight op of ``model``'s main graph, counted as :func:`model_cost` counts them (unknown: 0).

    Counted on a shaped clone whose nodes map back to ``model``'s by position.
    """
    counts: dict[ir.Node, int] = {}
    for node, twin in zip(model.graph, _shaped(model, shapes).graph, strict=True):
        op = weight_op(twin)
        if op is not None:
            counts[node] = op.macs(twin) or 0
    return counts


def layer_macs(model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, int]:
    """:func:`macs_by_node` keyed by node name (unnamed nodes left out), to compare two versions of a model."""
    return {node.name: macs for node, macs in macs_by_node(model, shapes).items() if node.name}


def _shaped(model: ir.Model, shapes: Mapping[str, Sequence[int]] | None) -> ir.Model:
    """A clone with fixed input dims (``shapes``, then batch 1) and inferred shapes; ``model`` is not touched."""
    shaped = model.clone()
    if shapes:
        fix_input_shapes(shaped, shapes)
    _fix_symbolic_batch(shaped)
    infer_all_shapes(shaped)
    _measure_missing_shapes(shaped)
    return shaped


def _measure_missing_shapes(model: ir.Model) -> None:
    """Shapes around weight ops that inference could not derive, read off one onnxruntime run at the fixed input shapes.

    onnx shape inference stops at shapes computed at run time (a Reshape
    whose target is a Concat of Shape slices, as Paddle exports write before
    their classifier), which would leave those layers' MACs uncounted.  The
    run needs every graph input fully fixed; otherwise the shapes stay unknown
    and the count says so.
    """
    missing = {
        value.name: value
        for node in model.graph
        if (op := weight_op(node)) is not None and op.macs(node) is None
        for value in (*node.inputs, *node.outputs)
        if value is not None and value.name and static_dims(value) is None and not value.is_graph_input()
    }
    if not missing:
        return
    try:
        feeds = runtime.random_inputs(runtime.input_specs(model), seed=0)
    except InputError:
        return
    declared = list(model.graph.outputs)
    model.graph.outputs.extend(value for value in missing.values() if not value.is_graph_output())
    try:
        measured = runtime.run(runtime.make_session(model, optimize=False), feeds)
    except Exception:  # a model onnxruntime cannot run keeps its unknown shapes, which the count reports
        return
    finally:
        model.graph.outputs.clear()
        model.graph.outputs.extend(declared)
    for name, value in missing.items():
        if name in measured:
            value.shape = ir.Shape(list(np.shape(measured[name])))


def _fix_symbolic_batch(model: ir.Model) -> None:
    """Count per sample: a symbolic leading (batch) dim of an input is taken as 1, as validation does."""
    for value in model.graph.inputs:
        if value.shape is not None and len(value.shape) > 0 and not isinstance(value.shape[0], int):
            value.shape = ir.Shape([1, *list(value.shape)[1:]])


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a model and the external data files it references."""
    path = Path(path)
    total = path.stat().st_size
    for data in path.parent.glob(f"{path.name}.data*"):
        total += data.stat().st_size
    return total


def _parameters(model: ir.Model) -> tuple[int, int]:
    """Floating-point weight elements (initializers and Constant nodes, subgraphs included) and their bytes."""
    params = weight_bytes = 0
    seen: set[int] = set()
    tensors = [value.const_value for value in model.graph.initializers.values()]
    for node in irx.iter_nodes(model):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attribute = node.attributes.get("value")
            if attribute is not None and attribute.type == ir.AttributeType.TENSOR:
                tensors.append(attribute.value)
        if node.graph is not model.graph and node.graph is not None:
            tensors.extend(value.const_value for value in node.graph.initializers.values())
    for tensor in tensors:
        if tensor is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        weight_bytes += tensor.nbytes
        if tensor.dtype.is_floating_point():
            params += math.prod(tensor.shape.numpy())
    return params, weight_bytes
