"""Cost model: parameters, multiply-accumulates, node counts, from inferred shapes.

MACs are what channel pruning reduces, so they are counted exactly for the
ops that dominate a CNN's run time (Conv, ConvTranspose, Gemm, MatMul).  Every
other op is counted as one operation per output element (``elementwise_ops``),
which keeps the two kinds of work apart instead of mixing them in one number.
Shapes come from onnx shape inference on a copy, so the model is never
changed by being measured.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import ir as irx

_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def model_cost(model: ir.Model, path: str | os.PathLike | None = None) -> Cost:
    """Measure ``model``; ``path`` adds the size of the file it came from (with external data)."""
    shaped = model.clone()
    _fix_symbolic_batch(shaped)
    common_passes.ShapeInferencePass(strict_mode=False, data_prop=True)(shaped)
    histogram: Counter[str] = Counter()
    macs = elementwise = nodes = 0
    unknown: list[str] = []
    for node in irx.iter_nodes(shaped):
        nodes += 1
        histogram[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
        if node.op_type == "Constant":
            continue
        if node.domain in ("", "ai.onnx") and node.op_type in _MAC_OPS:
            count = _node_macs(node)
            if count is None:
                unknown.append(node.name or node.op_type)
            else:
                macs += count
        else:
            elementwise += sum(_numel(output) or 0 for output in node.outputs)
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


def _static_dims(value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None or value.shape is None or not value.shape.is_static():
        return None
    return tuple(int(dim) for dim in value.shape)


def _numel(value: ir.Value | None) -> int | None:
    dims = _static_dims(value)
    return None if dims is None else math.prod(dims)


def _node_macs(node: ir.Node) -> int | None:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul, or None when shapes are unknown."""
    weight = _static_dims(node.inputs[1]) if len(node.inputs) > 1 else None
    if node.op_type == "Conv":
        output = _numel(node.outputs[0])
        if output is None or weight is None:
            return None
        return output * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        data = _numel(node.inputs[0])
        if data is None or weight is None:
            return None
        # Weight is [C_in, C_out / group, k...]: each input element feeds C_out / group * k outputs.
        return data * math.prod(weight[1:])
    if node.op_type == "Gemm":
        first = _static_dims(node.inputs[0])
        if first is None or weight is None:
            return None
        inner = first[0] if node.attributes.get_int("transA", 0) else first[1]
        outer = weight[0] if node.attributes.get_int("transB", 0) else weight[1]
        rows = first[1] if node.attributes.get_int("transA", 0) else first[0]
        return rows * inner * outer
    # MatMul: every output element is a dot product over the shared axis.
    first = _static_dims(node.inputs[0])
    output = _numel(node.outputs[0])
    if first is None or output is None:
        return None
    return output * first[-1]

