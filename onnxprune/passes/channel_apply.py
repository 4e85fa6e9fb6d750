"""Writing channel edits into a graph, after proving on a throw-away copy that the result is a valid model.

The design promise is that a failed plan never leaves a half-pruned graph:
:func:`apply_checked` first applies the edits to a clone whose large weights
are replaced by typed inputs, runs ``onnx.checker`` (full check) and strict
shape inference on it, and compares the channel counts and graph output
shapes with what the plan expects (:func:`check_on_copy`).  Only when that
passes are the same edits made on the model itself.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.errors import first_line
from onnxprune.naming import Names
from onnxprune.passes.channel_plan import ChannelEdits, ChannelPlanError

_SMALL_CONSTANT_BYTES = 1024

_Rewrite = tuple[ir.Node, int, np.ndarray]
"""One planned input: ``(node, input index, new array)``."""


def apply_checked(edits: ChannelEdits, model: ir.Model) -> None:
    """Make ``edits`` on ``model`` and re-infer its shapes; raises :class:`ChannelPlanError` first if they are invalid."""
    check_on_copy(edits, model)
    apply_edits(edits, model.graph, {node: node for node in model.graph})
    infer_shapes(model)


def check_on_copy(edits: ChannelEdits, model: ir.Model) -> None:
    """Apply the edits to a copy and check it; raise :class:`ChannelPlanError` on any problem."""
    copy = model.clone()
    node_of = dict(zip(model.graph, copy.graph))
    apply_edits(edits, copy.graph, node_of)
    _weights_as_inputs(copy)
    try:
        proto = irx.to_proto(copy)
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as error:  # the checker and inference raise several types
        raise ChannelPlanError(f"the pruned model would be invalid: {first_line(error)}") from None
    infos = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    shapes = {info.name: info.type.tensor_type.shape for info in infos}
    for value, axis, expected in edits.cleared:
        shape = shapes.get(value.name or "")
        if shape is None or len(shape.dim) <= axis or not shape.dim[axis].HasField("dim_value"):
            continue
        if shape.dim[axis].dim_value != expected:
            raise ChannelPlanError(
                f"'{value.name}' would have {shape.dim[axis].dim_value} channels after pruning, the plan expects {expected}"
            )
    for original, pruned in zip(model.graph.outputs, copy.graph.outputs):
        if original.shape is not None and original.shape.is_static():
            got = shapes.get(pruned.name or "")
            dims = None if got is None else tuple(dim.dim_value for dim in got.dim)
            if dims is not None and dims != tuple(original.shape.numpy()):
                raise ChannelPlanError(f"graph output '{original.name}' would change shape from {tuple(original.shape)} to {dims}")


def apply_edits(edits: ChannelEdits, graph: ir.Graph, node_of: dict[ir.Node, ir.Node]) -> None:
    """Write the edits into ``graph`` (the planned model's, or a copy's mapped through ``node_of``)."""
    # Sites grouped by the value they read now (or by the absent input a new bias fills), in plan order.
    by_input: dict[ir.Value | tuple[ir.Node, int], list[_Rewrite]] = defaultdict(list)
    names = Names(graph)
    for (node, index), array in edits.tensors.items():
        target = node_of[node]
        value = target.inputs[index] if len(target.inputs) > index else None
        by_input[value if value is not None else (target, index)].append((target, index, array))
    for read, sites in by_input.items():
        if not isinstance(read, ir.Value):
            _give_new_initializers(graph, names, f"{read[0].name or read[0].op_type}_bias", sites)
        elif _rewrite_in_place(read, sites, graph):
            irx.set_constant(read, sites[0][2])
        else:
            _give_new_initializers(graph, names, read.name or "pruned", sites)
            _drop_if_unused(read, graph)
    for (node, name), attribute in edits.attributes.items():
        target = node_of[node]
        if attribute is None:
            target.attributes.pop(name, None)
        elif isinstance(attribute, list):
            target.attributes[name] = ir.AttrInt64s(name, attribute)
        else:
            target.attributes[name] = ir.AttrInt64(name, int(attribute))
    for value, _, _ in edits.cleared:
        _mapped_value(value, node_of).shape = None


def _give_new_initializers(graph: ir.Graph, names: Names, hint: str, sites: list[_Rewrite]) -> None:
    """Point every site at a new initializer (named fresh in the model) holding its array; equal arrays share one."""
    created: list[tuple[np.ndarray, ir.Value]] = []
    for node, index, array in sites:
        new_value = next((made for known, made in created if known.shape == array.shape and np.array_equal(known, array)), None)
        if new_value is None:
            new_value = irx.add_initializer(graph, names.fresh(hint), array)
            created.append((array, new_value))
        if len(node.inputs) <= index:
            node.resize_inputs(index + 1)
        node.replace_input_with(index, new_value)


def _rewrite_in_place(value: ir.Value, sites: list[_Rewrite], graph: ir.Graph) -> bool:
    """An initializer can be rewritten in place when the plan rewrites every use of it identically."""
    if not irx.is_private_constant(value, graph) or value.const_value is None:
        return False
    uses = {(use.node, use.idx) for use in value.uses()}
    first = sites[0][2]
    return uses == {(node, index) for node, index, _ in sites} and all(
        array.shape == first.shape and np.array_equal(array, first) for _, _, array in sites
    )


def _drop_if_unused(value: ir.Value, graph: ir.Graph) -> None:
    if value.uses() or value.is_graph_output():
        return
    if value.is_initializer() and value.name is not None and value.name in graph.initializers and not value.is_graph_input():
        graph.initializers.pop(value.name)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.graph is graph:
        graph.remove(producer, safe=True)


def _mapped_value(value: ir.Value, node_of: dict[ir.Node, ir.Node]) -> ir.Value:
    """The copy's counterpart of a node output of the planned model."""
    producer = value.producer()
    index = value.index()
    if producer is None or index is None:
        raise ChannelPlanError(f"'{value.name}' changes channels but is no node output")
    return node_of[producer].outputs[index]


def _weights_as_inputs(model: ir.Model) -> None:
    """Turn large initializers of a throw-away copy into typed graph inputs.

    The checker and shape inference need only their types and shapes, so the
    trial check costs no copy of the weights and works for models over 2 GB
    or with external data (the checker would look for the data file relative
    to the working directory).  Small in-file initializers stay: shape
    inference reads their values (Reshape targets, Split sizes).
    """
    for name, value in list(model.graph.initializers.items()):
        tensor = value.const_value
        if tensor is None or (tensor.nbytes <= _SMALL_CONSTANT_BYTES and not isinstance(tensor, ir.ExternalTensor)):
            continue
        value.shape = ir.Shape(tensor.shape.numpy())
        value.dtype = tensor.dtype
        value.const_value = None
        del model.graph.initializers[name]
        model.graph.inputs.append(value)
