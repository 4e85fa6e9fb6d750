"""Shapes and element types of a model's values, from onnx shape inference on a copy.

Every analysis needs shapes the exporter did not declare (intermediate
values), and none may change the model it is asked about; so inference runs
once on a clone and the answers are looked up by value name.

Inference on the model itself (after pruning) fills intermediate values only:
onnx would also overwrite the declared graph inputs and outputs (a symbolic
``N`` becomes the ``1`` it inferred from a fixed input), and those
declarations are the model's interface, so they are kept as declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

Dim = int | str | None
ShapeTuple = tuple[Dim, ...]


Declaration = tuple[ir.TypeProtocol | None, ir.Shape | None]
"""A graph input's or output's declared type and shape."""


def fix_input_shapes(model: ir.Model, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Give the named inputs these dims and forget every intermediate shape, so that inference derives them anew."""
    for value in model.graph.inputs:
        if value.name is not None and value.name in input_shapes:
            value.shape = ir.Shape(list(input_shapes[value.name]))
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for output in node.outputs:
            if not output.is_graph_output():
                output.shape = None


def infer_shapes(model: ir.Model) -> None:
    """Infer the shapes of ``model``'s intermediate values in place; graph inputs and outputs keep their declarations."""
    declared = interface_declarations(model.graph)
    infer_all_shapes(model)
    declare_interface(model.graph, declared)


def infer_all_shapes(model: ir.Model) -> None:
    """Run onnx shape inference (with constant data propagation) in place, graph inputs and outputs included.

    For scratch clones whose inferred output shapes are wanted (MAC counts,
    shape facts); a model that is written out goes through :func:`infer_shapes`.
    """
    common_passes.ShapeInferencePass(strict_mode=False, data_prop=True)(model)


def interface_declarations(graph: ir.Graph) -> list[Declaration]:
    """The declared type and shape of every graph input, then every graph output."""
    return [(value.type, None if value.shape is None else value.shape.copy()) for value in (*graph.inputs, *graph.outputs)]


def declare_interface(graph: ir.Graph, declarations: list[Declaration]) -> None:
    """Give the graph inputs and outputs (same order and count) the declarations of :func:`interface_declarations`."""
    for value, (declared_type, shape) in zip((*graph.inputs, *graph.outputs), declarations, strict=True):
        value.type = declared_type
        value.shape = shape


@dataclass(frozen=True)
class ShapeFacts:
    """Inferred shapes and dtypes by value name; a declared shape is the fallback."""

    shapes: dict[str, ir.Shape]
    dtypes: dict[str, ir.DataType]

    @classmethod
    def infer(cls, model: ir.Model, input_shapes: Mapping[str, Sequence[int]] | None = None) -> ShapeFacts:
        """Infer on a clone: ``model`` itself is never touched; ``input_shapes`` fixes the named inputs' dims first."""
        shaped = model.clone()
        if input_shapes:
            fix_input_shapes(shaped, input_shapes)
        infer_all_shapes(shaped)
        shapes: dict[str, ir.Shape] = {}
        dtypes: dict[str, ir.DataType] = {}
        values = [*shaped.graph.inputs, *shaped.graph.initializers.values()]
        values += [output for node in shaped.graph for output in node.outputs]
        for value in values:
            if value.name is None:
                continue
            if value.shape is not None:
                shapes[value.name] = value.shape
            if value.dtype is not None:
                dtypes[value.name] = value.dtype
        return cls(shapes, dtypes)

    def shape(self, value: ir.Value) -> ir.Shape | None:
        """The inferred shape, else the declared one."""
        inferred = self.shapes.get(value.name or "")
        return inferred if inferred is not None else value.shape

    def dtype(self, value: ir.Value) -> ir.DataType | None:
        """The inferred element type, else the declared one."""
        inferred = self.dtypes.get(value.name or "")
        return inferred if inferred is not None else value.dtype

    def dims(self, value: ir.Value) -> ShapeTuple | None:
        """The shape as plain ints (static), strings (symbolic) and None (unknown)."""
        shape = self.shape(value)
        if shape is None:
            return None
        return tuple(
            dim if isinstance(dim, int) else (dim.value if isinstance(dim, ir.SymbolicDim) else None) for dim in shape
        )
