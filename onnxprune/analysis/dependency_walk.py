"""Channel dependency groups: which channels of which layers must be removed together.

Removing output channel ``c`` of a Conv is only correct if every tensor that
carries channel ``c`` onward loses it too: the bias, a BatchNormalization's
parameters, a per-channel constant, the next Conv's input channel, the rows of
a Gemm behind a Flatten, the channel ``c`` of the other operand of a residual
Add.  This module finds those dependencies on the onnx-ir graph without
changing it.

The model (inspired by DepGraph in Torch-Pruning, rebuilt on ONNX values):

* Every channel *source* (the output channels of a Conv / ConvTranspose with
  ``group=1``, the output features of a Gemm or MatMul with a constant weight)
  opens a *space* of ``C`` channel *atoms*.
* Walking the graph in topological order, every value that carries channels
  is *tracked*: it knows its channel axis and, for each position along it,
  which atom lives there.  Positions are mapped through Concat (offsets),
  Split / Slice (sub-ranges), Flatten / Reshape (a channel becomes a block of
  features), Transpose, depthwise convs (a channel becomes ``multiplier``
  channels) and every channel-preserving op.
* Ops that require two tensors to hold the same channels (a residual Add, the
  gate of a squeeze-excitation Mul, ``Sum``) *couple* atoms position by
  position, with union-find.  A connected set of atoms is a *unit*: one
  prunable channel, removed or kept as a whole.  Units whose atoms share a
  space form a *group*.
* Anything not understood — an unknown op, a graph output, a value read by a
  subgraph, a shape computed at run time — *locks* the atoms it touches, with
  a reason written for the user.  An unknown op is never assumed to be
  elementwise.

Along the walk every tracked position also carries a known constant (or NaN):
a channel whose filter is all zero produces its bias everywhere, and that
constant is pushed through activations, normalisations and pooling so that
channels whose output is a known constant can be removed *exactly*, by folding
the constant into the next layer's bias.

What changes where is recorded as *edits* that are functions of the kept
atoms; the pass computes the final arrays from them (plan), checks them
(validate) and only then mutates the graph (apply).
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import (
    ArrayEdit,
    AttributeEdit,
    ChannelGraph,
    KeptAtoms,
    Lock,
    Sink,
    SliceEdit,
    Source,
    Tracked,
)
from onnxprune.analysis.weight_ops import WEIGHT_OPS

Dim = int | str | None
ShapeTuple = tuple[Dim, ...]

_ONNX_DOMAINS = ("", "ai.onnx")

# Elementwise unary ops: channel c of the output depends only on channel c of the input.
_UNARY_PASS_THROUGH = frozenset(
    {
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu", "Clip", "Cos",
        "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
        "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu",
        "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Swish", "Tan", "Tanh",
        "ThresholdedRelu",
    }
)
_ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow"})
_CHANNEL_PRESERVING_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
_REDUCE_OPS = frozenset(
    {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
)
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def discover_channel_groups(model: ir.Model, exclude: Sequence[str] = ()) -> ChannelGraph:
    """Find channel sources, dependency groups, edits and locks of ``model`` (read-only)."""
    return _Walker(model, tuple(exclude)).run()


# ---------------------------------------------------------------- helpers


def _is_onnx(node: ir.Node) -> bool:
    return node.domain in _ONNX_DOMAINS


def _name(node: ir.Node) -> str:
    return node.name or f"{node.op_type}({', '.join(v.name or '?' for v in node.outputs)})"


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def _inferred_shapes(model: ir.Model) -> dict[str, ShapeTuple]:
    """Shapes by value name, from onnx shape inference on a copy (the model is not touched)."""
    shaped = model.clone()
    common_passes.ShapeInferencePass(strict_mode=False, data_prop=True)(shaped)
    shapes: dict[str, ShapeTuple] = {}
    values: list[ir.Value] = list(shaped.graph.inputs) + list(shaped.graph.initializers.values())
    for node in shaped.graph:
        values.extend(node.outputs)
    for value in values:
        if value.name and value.shape is not None:
            shapes[value.name] = tuple(
                dim if isinstance(dim, int) else (dim.value if isinstance(dim, ir.SymbolicDim) else None)
                for dim in value.shape
            )
    return shapes


def _topological(graph: ir.Graph) -> list[ir.Node]:
    """Main-graph nodes in an order where producers come first (the stored order need not be)."""
    nodes = list(graph)
    position = {node: index for index, node in enumerate(nodes)}
    pending = {node: 0 for node in nodes}
    users: dict[ir.Node, list[ir.Node]] = {node: [] for node in nodes}
    for node in nodes:
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and producer in position:
                pending[node] += 1
                users[producer].append(node)
    ready = [node for node in nodes if pending[node] == 0]
    order: list[ir.Node] = []
    while ready:
        ready.sort(key=position.__getitem__, reverse=True)
        node = ready.pop()
        order.append(node)
        for user in users[node]:
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
    return order


def _product(dims: Sequence[Dim]) -> tuple[int, Counter] | None:
    """Product of dims as (integer part, symbols); None when a dim is unknown."""
    number, symbols = 1, Counter()
    for dim in dims:
        if dim is None:
            return None
        if isinstance(dim, int):
            number *= dim
        else:
            symbols[dim] += 1
    return number, symbols


def _divides(small: tuple[int, Counter], large: tuple[int, Counter]) -> bool:
    return small[0] != 0 and large[0] % small[0] == 0 and not (small[1] - large[1])


def _quotient(large: tuple[int, Counter], small: tuple[int, Counter]) -> int | None:
    """large / small when it is a plain integer."""
    if not _divides(small, large) or (large[1] - small[1]):
        return None
    return large[0] // small[0]


def _ints(array: np.ndarray | None) -> list[int] | None:
    return None if array is None else [int(item) for item in np.asarray(array).reshape(-1)]


def _count_kept(kept: KeptAtoms, atoms: np.ndarray) -> int:
    return int(np.count_nonzero(kept[atoms]))


def _uniform_per_channel(array: np.ndarray, axis: int) -> np.ndarray | None:
    """The per-channel values of a constant when it is uniform along every other axis."""
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), axis, 0).reshape(array.shape[axis], -1)
    if moved.shape[1] == 0:
        return None
    first = moved[:, :1]
    if not np.array_equal(np.broadcast_to(first, moved.shape), moved):
        return None
    return first[:, 0]


def _unary_constant(node: ir.Node, values: np.ndarray) -> np.ndarray:
    """Elementwise unary op applied to known constants (NaN where the op's value is not modelled)."""
    op, attrs = node.op_type, node.attributes
    x = values
    with np.errstate(all="ignore"):
        if op in ("Identity", "Dropout"):
            return x.copy()
        if op == "Relu":
            return np.maximum(x, 0.0)
        if op == "LeakyRelu":
            alpha = attrs.get_float("alpha", 0.01)
            return np.where(x >= 0, x, alpha * x)
        if op == "Clip":
            low, high = _clip_bounds(node)
            if low is None and high is None:
                return np.full_like(x, np.nan)
            return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)
        if op == "Sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if op == "HardSigmoid":
            return np.clip(attrs.get_float("alpha", 0.2) * x + attrs.get_float("beta", 0.5), 0.0, 1.0)
        if op == "HardSwish":
            return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
        if op == "Tanh":
            return np.tanh(x)
        if op == "Neg":
            return -x
        if op == "Abs":
            return np.abs(x)
    # Other ops are not modelled: the constant becomes unknown, which only costs an exact removal.
    return np.full_like(x, np.nan)


def _clip_bounds(node: ir.Node) -> tuple[float | None, float | None]:
    if "min" in node.attributes or "max" in node.attributes:
        return node.attributes.get_float("min", None), node.attributes.get_float("max", None)
    bounds: list[float | None] = []
    for index in (1, 2):
        value = node.inputs[index] if len(node.inputs) > index else None
        if value is None:
            bounds.append(None)
            continue
        array = irx.constant_array(value)
        if array is None:
            return None, None
        bounds.append(float(np.asarray(array).reshape(-1)[0]))
    return bounds[0], bounds[1]


# ---------------------------------------------------------------- walker


@dataclass
class _UnionFind:
    parent: list[int] = field(default_factory=list)

    def add(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


class _Walker:
    """One topological walk over the main graph that builds a :class:`ChannelGraph`."""

    def __init__(self, model: ir.Model, exclude: tuple[str, ...]) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = _opset(model)
        self.exclude = exclude
        self.shapes = _inferred_shapes(model)
        self.captured = irx.values_used_in_subgraphs(model)
        self.atoms = _UnionFind()
        self.fixed: list[np.ndarray] = []
        self.tracked: dict[ir.Value, Tracked] = {}
        self.sources: list[Source] = []
        self.slices: list[SliceEdit] = []
        self.arrays: list[ArrayEdit] = []
        self.attributes: list[AttributeEdit] = []
        self.sinks: list[Sink] = []
        self.locks: list[Lock] = []
        self.not_sources: dict[ir.Node, str] = {}
        self.node_atoms: dict[ir.Node, list[np.ndarray]] = {}

    # -- bookkeeping

    def run(self) -> ChannelGraph:
        for node in _topological(self.graph):
            self._visit(node)
        for value in self.graph.outputs:
            if value in self.tracked:
                self._lock(self.tracked[value].atoms, f"'{value.name}' is a graph output; its shape must not change")
        return self._finish()

    def _new_atoms(self, count: int) -> np.ndarray:
        return self.atoms.add(count)

    def _fixed_atoms(self, count: int, reason: str) -> np.ndarray:
        atoms = self._new_atoms(count)
        self.fixed.append(atoms)
        self._lock(atoms, reason)
        return atoms

    def _lock(self, atoms: np.ndarray, reason: str) -> None:
        if len(atoms):
            self.locks.append(Lock(reason, np.unique(atoms)))

    def _lock_inputs(self, node: ir.Node, reason: str) -> None:
        for value in node.inputs:
            if value is not None and value in self.tracked:
                self._lock(self.tracked[value].atoms, reason)

    def _couple(self, first: np.ndarray, second: np.ndarray) -> None:
        for a, b in zip(first.tolist(), second.tolist()):
            self.atoms.union(a, b)

    def _touch(self, node: ir.Node, atoms: np.ndarray) -> None:
        self.node_atoms.setdefault(node, []).append(atoms)

    def _track(self, value: ir.Value, tracked: Tracked) -> None:
        self.tracked[value] = tracked
        if value in self.captured:
            self._lock(tracked.atoms, f"'{value.name}' is read inside a subgraph (If/Loop/Scan body)")
        pattern = self._excluded(value.name)
        if pattern is not None:
            self._lock(tracked.atoms, f"value '{value.name}' matches exclude pattern '{pattern}'")

    def _excluded(self, name: str | None) -> str | None:
        if not name:
            return None
        return next((pattern for pattern in self.exclude if fnmatch.fnmatchcase(name, pattern)), None)

    def _shape(self, value: ir.Value | None) -> ShapeTuple | None:
        if value is None:
            return None
        if value.name in self.shapes:
            return self.shapes[value.name]
        array = irx.constant_array(value)
        return None if array is None else tuple(array.shape)

    def _rank(self, value: ir.Value) -> int | None:
        if value in self.tracked:
            return self.tracked[value].rank
        shape = self._shape(value)
        return None if shape is None else len(shape)

    def _input(self, node: ir.Node, index: int) -> ir.Value | None:
        return node.inputs[index] if len(node.inputs) > index else None

    def _const_input(self, node: ir.Node, index: int) -> np.ndarray | None:
        return irx.constant_array(self._input(node, index))

    def _only_first_output_used(self, node: ir.Node) -> bool:
        return all(not output.uses() and not output.is_graph_output() for output in node.outputs[1:])

    # -- dispatch

    def _visit(self, node: ir.Node) -> None:
        tracked_inputs = [value for value in node.inputs if value is not None and value in self.tracked]
        pattern = self._excluded(node.name)
        if tracked_inputs:
            if pattern is not None:
                self._lock_inputs(node, f"node '{_name(node)}' matches exclude pattern '{pattern}'")
            self._propagate(node)
        if _is_onnx(node) and node.op_type in _WEIGHT_OPS:
            self._maybe_source(node, pattern)

    def _propagate(self, node: ir.Node) -> None:
        op = node.op_type
        if not _is_onnx(node):
            self._lock_inputs(node, f"consumed by '{_name(node)}' ({node.domain}.{op}), an op onnxprune does not know how to prune through")
            return
        handler = {
            "Conv": self._conv,
            "ConvTranspose": self._conv_transpose,
            "Gemm": self._gemm,
            "MatMul": self._matmul,
            "BatchNormalization": self._batch_norm,
            "InstanceNormalization": self._instance_norm,
            "LayerNormalization": self._layer_norm,
            "Concat": self._concat,
            "Split": self._split,
            "Slice": self._slice,
            "Flatten": self._flatten,
            "Reshape": self._reshape,
            "Transpose": self._transpose,
            "Squeeze": self._squeeze,
            "Unsqueeze": self._unsqueeze,
            "Pad": self._pad,
            "Resize": self._resize,
            "Upsample": self._resize,
            "Shape": self._shape_op,
            "Softmax": self._softmax,
            "LogSoftmax": self._softmax,
        }.get(op)
        if handler is not None:
            handler(node)
        elif op in _UNARY_PASS_THROUGH:
            self._unary(node)
        elif op in _ELEMENTWISE_BINARY:
            self._elementwise(node)
        elif op in _CHANNEL_PRESERVING_POOLS:
            self._pool(node)
        elif op in _REDUCE_OPS:
            self._reduce(node)
        else:
            self._lock_inputs(node, f"consumed by '{_name(node)}' ({op}), an op onnxprune does not know how to prune through")

    def _first_tracked_only(self, node: ir.Node) -> Tracked | None:
        """The tracked data input (index 0); any other tracked input locks, since it is used as a parameter."""
        data = node.inputs[0]
        others = [value for value in node.inputs[1:] if value is not None and value in self.tracked]
        if others:
            self._lock_inputs(node, f"'{others[0].name}' is used as a parameter of '{_name(node)}' ({node.op_type})")
            return None
        if data is None or data not in self.tracked:
            return None
        return self.tracked[data]

    # -- pass-through ops

    def _unary(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        self._touch(node, tracked.atoms)
        consts = _unary_constant(node, tracked.consts)
        for output in node.outputs:
            if output.uses() or output.is_graph_output():
                self._track(output, Tracked(tracked.axis, tracked.rank, tracked.atoms, consts))

    def _pool(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        if tracked.axis != 1:
            self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) pools a tensor whose channels are not on axis 1")
            return
        if not self._only_first_output_used(node):
            self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) has its indices output used")
            return
        consts = tracked.consts.copy()
        padded = any(node.attributes.get_ints("pads", [0])) or node.attributes.get_string("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")
        if node.op_type == "AveragePool" and padded and node.attributes.get_int("count_include_pad", 0):
            consts = np.where(consts == 0, consts, np.nan)
        elif node.op_type in ("LpPool", "GlobalLpPool"):
            consts = np.where(consts == 0, consts, np.nan)
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, consts))

    def _softmax(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        default = -1 if self.opset >= 13 else 1
        axis = node.attributes.get_int("axis", default)
        axis = axis + tracked.rank if axis < 0 else axis
        covers_channels = axis == tracked.axis if self.opset >= 13 else axis <= tracked.axis
        if covers_channels:
            self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) normalises across the channel axis")
            return
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, np.full(tracked.size, np.nan)))

    def _shape_op(self, node: ir.Node) -> None:
        """A Shape read is harmless when only dims other than the channel dim are used."""
        tracked = self.tracked[node.inputs[0]]
        start = node.attributes.get_int("start", 0)
        end = node.attributes.get_int("end", tracked.rank)
        start = start + tracked.rank if start < 0 else start
        end = min(end + tracked.rank if end < 0 else end, tracked.rank)
        if not start <= tracked.axis < end:
            return
        output = node.outputs[0]
        channel_entry = tracked.axis - start
        for use in output.uses():
            user = use.node
            indices = self._const_input(user, 1) if user.op_type == "Gather" and use.idx == 0 else None
            if indices is None or user.attributes.get_int("axis", 0) != 0:
                break
            length = end - start
            if channel_entry in {(index + length) % length for index in _ints(indices) or []}:
                break
        else:
            if not output.is_graph_output():
                return
        self._lock(tracked.atoms, f"its shape is read at run time by '{_name(node)}' (Shape), and the channel count would change")

    # -- normalisations

    def _batch_norm(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        params = [self._const_input(node, index) for index in range(1, 5)]
        if any(param is None for param in params) or not self._only_first_output_used(node):
            self._lock(tracked.atoms, f"'{_name(node)}' (BatchNormalization) has non-constant parameters or training outputs")
            return
        if tracked.axis != 1 or any(np.asarray(param).shape != (tracked.size,) for param in params):
            self._lock(tracked.atoms, f"'{_name(node)}' (BatchNormalization) parameters do not match the channels")
            return
        self._touch(node, tracked.atoms)
        for index in range(1, 5):
            self.slices.append(SliceEdit(node, index, 0, tracked.atoms))
        scale, bias, mean, var = (np.asarray(param, dtype=np.float64) for param in params)
        epsilon = node.attributes.get_float("epsilon", 1e-5)
        consts = (tracked.consts - mean) / np.sqrt(var + epsilon) * scale + bias
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, consts))

    def _instance_norm(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        params = [self._const_input(node, index) for index in (1, 2)]
        if any(param is None or np.asarray(param).shape != (tracked.size,) for param in params) or tracked.axis != 1:
            self._lock(tracked.atoms, f"'{_name(node)}' (InstanceNormalization) parameters are not constant per channel")
            return
        self._touch(node, tracked.atoms)
        for index in (1, 2):
            self.slices.append(SliceEdit(node, index, 0, tracked.atoms))
        # A constant channel normalises to exactly its bias.
        consts = np.where(np.isnan(tracked.consts), np.nan, np.asarray(params[1], dtype=np.float64))
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, consts))

    def _layer_norm(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        axis = node.attributes.get_int("axis", -1)
        axis = axis + tracked.rank if axis < 0 else axis
        if axis <= tracked.axis or not self._only_first_output_used(node):
            self._lock(tracked.atoms, f"'{_name(node)}' (LayerNormalization) normalises across the channel axis")
            return
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, np.full(tracked.size, np.nan)))

    # -- elementwise with several operands

    def _elementwise(self, node: ir.Node) -> None:
        inputs = list(node.inputs)
        ranks = [self._rank(value) if value is not None else None for value in inputs]
        if any(rank is None for rank in ranks):
            self._lock_inputs(node, f"'{_name(node)}' ({node.op_type}) has an operand of unknown rank")
            return
        rank = max(ranks)
        full = [v for v in inputs if v in self.tracked and self.tracked[v].size > 1]
        if not full:
            full = [v for v in inputs if v in self.tracked]
        channels = max(self.tracked[v].size for v in full)
        full = [v for v in full if self.tracked[v].size == channels]
        positions = {self.tracked[v].axis + rank - self.tracked[v].rank for v in full}
        if len(positions) != 1:
            self._lock_inputs(node, f"'{_name(node)}' ({node.op_type}) combines tensors whose channels lie on different axes")
            return
        axis = positions.pop()
        if node.op_type == "Pow" and inputs[1] in self.tracked:
            self._lock_inputs(node, f"'{_name(node)}' (Pow) uses channels as an exponent")
            return
        reference = self.tracked[full[0]]
        operand_consts: list[np.ndarray] = []
        for index, value in enumerate(inputs):
            offset = rank - ranks[index]
            local_axis = axis - offset
            if value in self.tracked:
                tracked = self.tracked[value]
                if tracked.size == channels:
                    self._couple(reference.atoms, tracked.atoms)
                    operand_consts.append(tracked.consts)
                else:
                    operand_consts.append(np.full(channels, tracked.consts[0] if tracked.size == 1 else np.nan))
                continue
            shape = self._shape(value)
            dim = shape[local_axis] if shape is not None and 0 <= local_axis < len(shape) else (1 if shape is not None else None)
            array = irx.constant_array(value)
            if dim == 1:
                if array is not None and array.size == 1:
                    operand_consts.append(np.full(channels, float(np.asarray(array).reshape(-1)[0])))
                elif array is not None and np.all(array == array.reshape(-1)[0]):
                    operand_consts.append(np.full(channels, float(array.reshape(-1)[0])))
                else:
                    operand_consts.append(np.full(channels, np.nan))
            elif dim == channels and array is not None:
                self.slices.append(SliceEdit(node, index, local_axis, reference.atoms))
                per_channel = _uniform_per_channel(array, local_axis)
                operand_consts.append(per_channel if per_channel is not None else np.full(channels, np.nan))
            elif dim == channels:
                fixed = self._fixed_atoms(channels, f"'{value.name}' carries channels that come from no prunable layer")
                self._couple(reference.atoms, fixed)
                operand_consts.append(np.full(channels, np.nan))
            else:
                self._lock_inputs(node, f"'{_name(node)}' ({node.op_type}) operand '{value.name}' has an unknown or mismatched channel dim")
                return
        self._touch(node, reference.atoms)
        consts = self._combine_consts(node.op_type, operand_consts)
        self._track(node.outputs[0], Tracked(axis, rank, reference.atoms, consts))

    @staticmethod
    def _combine_consts(op: str, operands: list[np.ndarray]) -> np.ndarray:
        with np.errstate(all="ignore"):
            if op in ("Add", "Sum"):
                return np.sum(operands, axis=0)
            if op == "Mean":
                return np.mean(operands, axis=0)
            if op == "Sub":
                return operands[0] - operands[1]
            if op == "Mul":
                product = np.prod(operands, axis=0)
                any_zero = np.any([operand == 0 for operand in operands], axis=0)
                return np.where(any_zero, 0.0, product)
            if op == "Div":
                return operands[0] / operands[1]
            if op == "Max":
                return np.max(operands, axis=0)
            if op == "Min":
                return np.min(operands, axis=0)
            if op == "PRelu":
                return np.where(operands[0] >= 0, operands[0], operands[0] * operands[1])
        return np.full_like(operands[0], np.nan)

    # -- layout ops

    def _concat(self, node: ir.Node) -> None:
        ranks = {self._rank(value) for value in node.inputs}
        if len(ranks) != 1 or None in ranks:
            self._lock_inputs(node, f"'{_name(node)}' (Concat) has inputs of unknown rank")
            return
        rank = ranks.pop()
        axis = node.attributes.get_int("axis", 0)
        axis = axis + rank if axis < 0 else axis
        tracked_axes = {self.tracked[value].axis for value in node.inputs if value in self.tracked}
        if tracked_axes == {axis}:
            atoms, consts = [], []
            for value in node.inputs:
                if value in self.tracked:
                    atoms.append(self.tracked[value].atoms)
                    consts.append(self.tracked[value].consts)
                    continue
                shape = self._shape(value)
                count = shape[axis] if shape is not None else None
                if not isinstance(count, int):
                    self._lock_inputs(node, f"'{_name(node)}' (Concat) input '{value.name}' has an unknown channel count")
                    return
                atoms.append(self._fixed_atoms(count, f"'{value.name}' carries channels that come from no prunable layer"))
                consts.append(np.full(count, np.nan))
            merged = np.concatenate(atoms)
            self._touch(node, merged)
            self._track(node.outputs[0], Tracked(axis, rank, merged, np.concatenate(consts)))
            return
        if len(tracked_axes) == 1:
            # Concatenation along another axis: every input must carry the same channels.
            self._join_same_channels(node, tracked_axes.pop(), rank)
            return
        self._lock_inputs(node, f"'{_name(node)}' (Concat) joins tensors whose channels lie on different axes")

    def _join_same_channels(self, node: ir.Node, axis: int, rank: int) -> None:
        reference = next(self.tracked[value] for value in node.inputs if value in self.tracked)
        consts = reference.consts.copy()
        for value in node.inputs:
            if value in self.tracked:
                if self.tracked[value].size != reference.size:
                    self._lock_inputs(node, f"'{_name(node)}' ({node.op_type}) joins tensors with different channel counts")
                    return
                self._couple(reference.atoms, self.tracked[value].atoms)
                consts = np.where(consts == self.tracked[value].consts, consts, np.nan)
            else:
                shape = self._shape(value)
                if shape is None or shape[axis] != reference.size:
                    self._lock_inputs(node, f"'{_name(node)}' ({node.op_type}) input '{value.name}' has an unknown channel count")
                    return
                self._couple(reference.atoms, self._fixed_atoms(reference.size, f"'{value.name}' carries channels that come from no prunable layer"))
                consts = np.full(reference.size, np.nan)
        self._touch(node, reference.atoms)
        self._track(node.outputs[0], Tracked(axis, rank, reference.atoms, consts))

    def _split(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        axis = node.attributes.get_int("axis", 0)
        axis = axis + tracked.rank if axis < 0 else axis
        if axis != tracked.axis:
            self._touch(node, tracked.atoms)
            for output in node.outputs:
                self._track(output, Tracked(tracked.axis, tracked.rank, tracked.atoms, tracked.consts))
            return
        sizes_input = self._input(node, 1)
        if sizes_input is not None:
            sizes = _ints(irx.constant_array(sizes_input))
            if sizes is None:
                self._lock(tracked.atoms, f"'{_name(node)}' (Split) sizes are computed at run time")
                return
        elif "split" in node.attributes:
            sizes = list(node.attributes.get_ints("split"))
        else:
            count = len(node.outputs)
            step = -(-tracked.size // count)
            sizes = [min(step, tracked.size - step * index) for index in range(count)]
        if sum(sizes) != tracked.size or len(sizes) != len(node.outputs):
            self._lock(tracked.atoms, f"'{_name(node)}' (Split) sizes do not match the channels")
            return
        bounds = np.cumsum([0, *sizes])
        pieces = [tracked.atoms[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]

        def new_sizes(kept: KeptAtoms) -> list[int]:
            return [_count_kept(kept, piece) for piece in pieces]

        self._touch(node, tracked.atoms)
        if self.opset >= 13:
            self.arrays.append(ArrayEdit(node, 1, lambda kept: np.array(new_sizes(kept), dtype=np.int64), tracked.atoms))
            if "num_outputs" in node.attributes:
                self.attributes.append(AttributeEdit(node, "num_outputs", lambda kept: None, tracked.atoms))
        else:
            self.attributes.append(AttributeEdit(node, "split", new_sizes, tracked.atoms))
        for index, output in enumerate(node.outputs):
            segment = slice(bounds[index], bounds[index + 1])
            self._track(output, Tracked(tracked.axis, tracked.rank, tracked.atoms[segment], tracked.consts[segment]))

    def _slice(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        if self.opset < 10:
            self._lock(tracked.atoms, f"'{_name(node)}' (Slice, opset < 10) keeps its bounds in attributes, which onnxprune does not rewrite")
            return
        starts, ends = self._const_input(node, 1), self._const_input(node, 2)
        axes_value, steps_value = self._input(node, 3), self._input(node, 4)
        axes = _ints(irx.constant_array(axes_value)) if axes_value is not None else list(range(len(_ints(starts) or [])))
        steps = _ints(irx.constant_array(steps_value)) if steps_value is not None else [1] * len(axes or [])
        if starts is None or ends is None or axes is None or steps is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Slice) bounds are computed at run time")
            return
        axes = [axis + tracked.rank if axis < 0 else axis for axis in axes]
        if tracked.axis not in axes:
            self._touch(node, tracked.atoms)
            self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, tracked.consts))
            return
        entry = axes.index(tracked.axis)
        if steps[entry] != 1:
            self._lock(tracked.atoms, f"'{_name(node)}' (Slice) steps through channels with step {steps[entry]}")
            return
        start, stop, _ = slice(int(starts.reshape(-1)[entry]), int(ends.reshape(-1)[entry])).indices(tracked.size)
        stop = max(stop, start)
        before, inside = tracked.atoms[:start], tracked.atoms[start:stop]
        original_starts, original_ends = np.asarray(starts), np.asarray(ends)

        def new_bounds(kept: KeptAtoms, which: int) -> np.ndarray:
            first = _count_kept(kept, before)
            array = (original_starts if which == 0 else original_ends).copy().reshape(-1)
            array[entry] = first if which == 0 else first + _count_kept(kept, inside)
            return array.reshape(original_starts.shape if which == 0 else original_ends.shape)

        self._touch(node, tracked.atoms)
        self.arrays.append(ArrayEdit(node, 1, lambda kept: new_bounds(kept, 0), tracked.atoms))
        self.arrays.append(ArrayEdit(node, 2, lambda kept: new_bounds(kept, 1), tracked.atoms))
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, inside, tracked.consts[start:stop]))

    def _transpose(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        perm = list(node.attributes.get_ints("perm", list(reversed(range(tracked.rank)))))
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(perm.index(tracked.axis), tracked.rank, tracked.atoms, tracked.consts))

    def _axes(self, node: ir.Node, attribute_before: int) -> list[int] | None:
        """Axes from the attribute (old opsets) or the constant second input."""
        if self.opset < attribute_before:
            axes = node.attributes.get_ints("axes", None)
            return None if axes is None else list(axes)
        value = self._input(node, 1)
        return None if value is None else _ints(irx.constant_array(value))

    def _unsqueeze(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        axes = self._axes(node, 13)
        if axes is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Unsqueeze) axes are computed at run time")
            return
        rank = tracked.rank + len(axes)
        inserted = {axis + rank if axis < 0 else axis for axis in axes}
        kept_axes = [axis for axis in range(rank) if axis not in inserted]
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(kept_axes[tracked.axis], rank, tracked.atoms, tracked.consts))

    def _squeeze(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        axes = self._axes(node, 13)
        if axes is None:
            shape = self._shape(node.inputs[0])
            if self._input(node, 1) is not None or shape is None or None in shape:
                self._lock(tracked.atoms, f"'{_name(node)}' (Squeeze) axes are not known")
                return
            axes = [axis for axis, dim in enumerate(shape) if dim == 1]
        axes = [axis + tracked.rank if axis < 0 else axis for axis in axes]
        if tracked.axis in axes:
            self._lock(tracked.atoms, f"'{_name(node)}' (Squeeze) removes the channel axis")
            return
        self._touch(node, tracked.atoms)
        axis = tracked.axis - sum(1 for item in axes if item < tracked.axis)
        self._track(node.outputs[0], Tracked(axis, tracked.rank - len(axes), tracked.atoms, tracked.consts))

    def _flatten(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        split = node.attributes.get_int("axis", 1)
        split = split + tracked.rank if split < 0 else split
        shape = self._shape(node.inputs[0])
        if split > tracked.axis or shape is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Flatten) merges the channel axis into the batch dimension")
            return
        outer = _product(shape[split : tracked.axis])
        inner = _product(shape[tracked.axis + 1 :])
        if outer is None or inner is None or outer[1] or inner[1]:
            self._lock(tracked.atoms, f"'{_name(node)}' (Flatten) input dims next to the channels are not static")
            return
        self._expand(node, tracked, outer[0], inner[0], axis=1, rank=2)

    def _expand(self, node: ir.Node, tracked: Tracked, outer: int, inner: int, axis: int, rank: int) -> None:
        """Channel c becomes the ``inner``-sized block c of features, repeated ``outer`` times."""
        atoms = np.tile(np.repeat(tracked.atoms, inner), outer)
        consts = np.tile(np.repeat(tracked.consts, inner), outer)
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(axis, rank, atoms, consts))

    def _reshape(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        source_shape, target_shape = self._shape(node.inputs[0]), self._shape(node.outputs[0])
        target = self._const_input(node, 1)
        entries = _ints(target) if target is not None else self._concatenated_entries(node.inputs[1])
        if entries is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Reshape) target shape is computed at run time and may encode the channel count")
            return
        if source_shape is None or target_shape is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Reshape) shapes could not be inferred")
            return
        before = _product(source_shape[: tracked.axis])
        after = _product(source_shape[tracked.axis + 1 :])
        if before is None or after is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Reshape) input dims are not known")
            return
        for axis in range(len(target_shape)):
            prefix, suffix = _product(target_shape[:axis]), _product(target_shape[axis + 1 :])
            if prefix is None or suffix is None:
                continue
            outer, inner = _quotient(before, prefix), _quotient(after, suffix)
            if outer is not None and inner is not None:
                break
        else:
            self._lock(tracked.atoms, f"'{_name(node)}' (Reshape) splits or scatters the channel axis")
            return
        entry = entries[axis]
        if entry is None or (entry > 0 and target is None):
            self._lock(tracked.atoms, f"'{_name(node)}' (Reshape) computes the channel dim of its target shape at run time")
            return
        allow_zero = node.attributes.get_int("allowzero", 0)
        if entry == 0 and not allow_zero and not (axis == tracked.axis and outer == inner == 1):
            self._lock(tracked.atoms, f"'{_name(node)}' (Reshape) copies the channel dim from another axis")
            return
        if entry > 0:
            original = np.asarray(target)

            def new_target(kept: KeptAtoms) -> np.ndarray:
                array = original.copy().reshape(-1)
                array[axis] = outer * _count_kept(kept, tracked.atoms) * inner
                return array.reshape(original.shape)

            self.arrays.append(ArrayEdit(node, 1, new_target, tracked.atoms))
        self._expand(node, tracked, outer, inner, axis=axis, rank=len(target_shape))

    def _concatenated_entries(self, value: ir.Value) -> list[int | None] | None:
        """Entries of a shape built at run time as ``Concat(pieces)``: constants where known, else None.

        This is how exporters write ``x.view(x.size(0), -1)`` with a dynamic
        batch; the channel entry is then a constant (often -1) even though
        the batch entry is computed.
        """
        producer = value.producer()
        if producer is None or producer.op_type != "Concat" or not _is_onnx(producer):
            return None
        entries: list[int | None] = []
        for piece in producer.inputs:
            array = irx.constant_array(piece)
            if array is not None:
                entries.extend(_ints(array) or [])
                continue
            shape = self._shape(piece)
            if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
                return None
            entries.extend([None] * shape[0])
        return entries

    def _pad(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        pads = node.attributes.get_ints("pads", None) if self.opset < 11 else _ints(self._const_input(node, 1))
        axes_value = self._input(node, 3)
        axes = _ints(irx.constant_array(axes_value)) if axes_value is not None else list(range(tracked.rank))
        if pads is None or axes is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Pad) amounts are computed at run time")
            return
        axes = [axis + tracked.rank if axis < 0 else axis for axis in axes]
        if tracked.axis in axes:
            entry = axes.index(tracked.axis)
            if pads[entry] != 0 or pads[entry + len(axes)] != 0:
                self._lock(tracked.atoms, f"'{_name(node)}' (Pad) pads the channel axis")
                return
        mode = node.attributes.get_string("mode", "constant")
        consts = tracked.consts.copy()
        if mode == "constant":
            fill = self._const_input(node, 2) if self.opset >= 11 else np.array(node.attributes.get_float("value", 0.0))
            fill_value = 0.0 if self._input(node, 2) is None and self.opset >= 11 else (None if fill is None else float(np.asarray(fill).reshape(-1)[0]))
            consts = np.where(consts == fill_value, consts, np.nan) if fill_value is not None else np.full_like(consts, np.nan)
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, consts))

    def _resize(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        axes = node.attributes.get_ints("axes", None)
        axes = list(range(tracked.rank)) if axes is None else [axis + tracked.rank if axis < 0 else axis for axis in axes]
        if node.op_type == "Upsample" or self.opset < 11:
            scales_index, sizes_index = (1 if self.opset >= 9 else None), None
        else:
            scales_index, sizes_index = 2, 3
        scales = self._const_input(node, scales_index) if scales_index is not None else (
            np.asarray(node.attributes.get_floats("scales", [])) if "scales" in node.attributes else None
        )
        entry = axes.index(tracked.axis) if tracked.axis in axes else None
        if scales is not None and np.asarray(scales).size:
            if entry is not None and float(np.asarray(scales).reshape(-1)[entry]) != 1.0:
                self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) rescales the channel axis")
                return
        elif sizes_index is not None and self._input(node, sizes_index) is not None:
            sizes = self._const_input(node, sizes_index)
            if sizes is None:
                self._lock(tracked.atoms, f"'{_name(node)}' (Resize) output sizes are computed at run time")
                return
            if entry is not None:
                original = np.asarray(sizes)

                def new_sizes(kept: KeptAtoms) -> np.ndarray:
                    array = original.copy()
                    array[entry] = _count_kept(kept, tracked.atoms)
                    return array

                self.arrays.append(ArrayEdit(node, sizes_index, new_sizes, tracked.atoms))
        else:
            self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) scales are computed at run time")
            return
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, tracked.consts))

    def _reduce(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        axes_in_input = (node.op_type == "ReduceSum" and self.opset >= 13) or self.opset >= 18
        if axes_in_input:
            value = self._input(node, 1)
            axes = _ints(irx.constant_array(value)) if value is not None else []
        else:
            axes = list(node.attributes.get_ints("axes", []))
        if axes is None:
            self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) axes are computed at run time")
            return
        if not axes:
            if node.attributes.get_int("noop_with_empty_axes", 0):
                axes = []
            else:
                axes = list(range(tracked.rank))
        axes = [axis + tracked.rank if axis < 0 else axis for axis in axes]
        if tracked.axis in axes:
            self._lock(tracked.atoms, f"'{_name(node)}' ({node.op_type}) reduces over the channel axis")
            return
        keep_dims = node.attributes.get_int("keepdims", 1)
        axis = tracked.axis if keep_dims else tracked.axis - sum(1 for item in axes if item < tracked.axis)
        rank = tracked.rank if keep_dims else tracked.rank - len(axes)
        consts = tracked.consts.copy() if node.op_type in ("ReduceMean", "ReduceMax", "ReduceMin") else np.where(tracked.consts == 0, 0.0, np.nan)
        if node.op_type in ("ReduceLogSum", "ReduceLogSumExp", "ReduceProd"):
            consts = np.full_like(consts, np.nan)
        self._touch(node, tracked.atoms)
        self._track(node.outputs[0], Tracked(axis, rank, tracked.atoms, consts))

    # -- weight ops: sinks, depthwise pass-through, sources

    def _conv(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        weight = self._const_input(node, 1)
        if weight is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (Conv) weight is computed at run time")
            return
        group = node.attributes.get_int("group", 1)
        if tracked.axis != 1 or weight.shape[1] * group != tracked.size:
            self._lock(tracked.atoms, f"'{_name(node)}' (Conv) weight does not match its input channels")
            return
        no_padding = not any(node.attributes.get_ints("pads", [0])) and node.attributes.get_string("auto_pad", "NOTSET") in ("NOTSET", "VALID")
        if group == 1:
            self._touch(node, tracked.atoms)
            self.sinks.append(Sink(node, 1, 1, tracked.atoms, tracked.consts, WEIGHT_OPS["Conv"]))
            return
        if group == tracked.size and weight.shape[1] == 1:
            self._depthwise(node, tracked, np.asarray(weight), no_padding)
            return
        self._lock(
            tracked.atoms,
            f"'{_name(node)}' is a grouped convolution (group={group}); removing channels would need the same count removed from every group",
        )
        self.not_sources[node] = f"grouped convolution (group={group}); onnxprune keeps grouped convolutions whole"

    def _depthwise(self, node: ir.Node, tracked: Tracked, weight: np.ndarray, no_padding: bool) -> None:
        """Channels pass through; output channel m belongs to input channel m // multiplier."""
        multiplier = weight.shape[0] // tracked.size
        atoms = np.repeat(tracked.atoms, multiplier)
        bias = self._const_input(node, 2)
        if self._input(node, 2) is not None and bias is None:
            self._lock(tracked.atoms, f"'{_name(node)}' (depthwise Conv) bias is computed at run time")
            return
        self._touch(node, tracked.atoms)
        self.slices.append(SliceEdit(node, 1, 0, atoms))
        if bias is not None:
            self.slices.append(SliceEdit(node, 2, 0, atoms))
        self.attributes.append(AttributeEdit(node, "group", lambda kept: _count_kept(kept, tracked.atoms), tracked.atoms))
        bias_values = np.zeros(len(atoms)) if bias is None else np.asarray(bias, dtype=np.float64)
        inputs = np.repeat(tracked.consts, multiplier)
        kernel_sums = weight.reshape(weight.shape[0], -1).astype(np.float64).sum(axis=1)
        consts = np.where(inputs == 0, bias_values, inputs * kernel_sums + bias_values if no_padding else np.nan)
        self.not_sources[node] = "depthwise convolution: its channels follow its input's channels"
        self._track(node.outputs[0], Tracked(1, tracked.rank, atoms, consts))

    def _conv_transpose(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        weight = self._const_input(node, 1)
        group = node.attributes.get_int("group", 1)
        if weight is None or group != 1 or tracked.axis != 1 or weight.shape[0] != tracked.size:
            self._lock(tracked.atoms, f"'{_name(node)}' (ConvTranspose) has a non-constant or grouped weight")
            return
        self._touch(node, tracked.atoms)
        self.sinks.append(Sink(node, 1, 0, tracked.atoms, tracked.consts, WEIGHT_OPS["ConvTranspose"]))

    def _gemm(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        weight = self._const_input(node, 1)
        if weight is None or node.attributes.get_int("transA", 0) or tracked.rank != 2 or tracked.axis != 1:
            self._lock(tracked.atoms, f"'{_name(node)}' (Gemm) has a non-constant weight or transposed input")
            return
        axis = 1 if node.attributes.get_int("transB", 0) else 0
        if weight.shape[axis] != tracked.size:
            self._lock(tracked.atoms, f"'{_name(node)}' (Gemm) weight does not match its input features")
            return
        self._touch(node, tracked.atoms)
        self.sinks.append(Sink(node, 1, axis, tracked.atoms, tracked.consts, WEIGHT_OPS["Gemm"]))

    def _matmul(self, node: ir.Node) -> None:
        tracked = self._first_tracked_only(node)
        if tracked is None:
            return
        weight = self._const_input(node, 1)
        if weight is None or weight.ndim != 2 or tracked.axis != tracked.rank - 1 or weight.shape[0] != tracked.size:
            self._lock(tracked.atoms, f"'{_name(node)}' (MatMul) does not multiply the channels by a constant matrix")
            return
        self._touch(node, tracked.atoms)
        self.sinks.append(Sink(node, 1, 0, tracked.atoms, tracked.consts, WEIGHT_OPS["MatMul"]))

    def _maybe_source(self, node: ir.Node, pattern: str | None) -> None:
        op = node.op_type
        weight = self._const_input(node, 1)
        output = node.outputs[0]
        if weight is None:
            self.not_sources.setdefault(node, "its weight is computed at run time, not a constant")
            return
        weight = np.asarray(weight)
        if op in ("Conv", "ConvTranspose"):
            if node.attributes.get_int("group", 1) != 1:
                self.not_sources.setdefault(node, f"grouped convolution (group={node.attributes.get_int('group', 1)})")
                return
            weight_axis, rank, axis = (0 if op == "Conv" else 1), weight.ndim, 1
        elif op == "Gemm":
            weight_axis, rank, axis = (0 if node.attributes.get_int("transB", 0) else 1), 2, 1
        else:
            input_rank = self._rank(node.inputs[0])
            if weight.ndim != 2 or input_rank is None or input_rank < 2:
                self.not_sources[node] = "MatMul whose constant operand is not a 2-D weight on the right"
                return
            weight_axis, rank, axis = 1, input_rank, input_rank - 1
        bias_index = 2 if op != "MatMul" else None
        bias_value = self._input(node, bias_index) if bias_index is not None else None
        bias = irx.constant_array(bias_value) if bias_value is not None else None
        if bias_value is not None and bias is None:
            self.not_sources[node] = "its bias is computed at run time"
            return
        size = weight.shape[weight_axis]
        atoms = self._new_atoms(size)
        self.sources.append(Source(len(self.sources), node, 1, weight_axis, atoms))
        self._touch(node, atoms)
        self.slices.append(SliceEdit(node, 1, weight_axis, atoms))
        if bias_index is not None:
            self.slices.append(SliceEdit(node, bias_index, -1, atoms, optional=True))
        if pattern is not None:
            self._lock(atoms, f"node '{_name(node)}' matches exclude pattern '{pattern}'")
        consts = self._source_constants(node, weight, weight_axis, bias)
        self._track(output, Tracked(axis, rank, atoms, consts))

    def _source_constants(self, node: ir.Node, weight: np.ndarray, axis: int, bias: np.ndarray | None) -> np.ndarray:
        """Output channels whose filter is all zero produce their bias (times Gemm's beta) everywhere."""
        filters = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
        zero = ~np.any(filters != 0, axis=1)
        size = weight.shape[axis]
        if bias is None:
            offsets = np.zeros(size)
        else:
            bias = np.asarray(bias, dtype=np.float64)
            per_feature = np.broadcast_to(bias, bias.shape[:-1] + (size,)) if bias.ndim else np.full(size, float(bias))
            rows = per_feature.reshape(-1, size)
            offsets = np.where(np.all(rows == rows[:1], axis=0), rows[0], np.nan)
            if node.op_type == "Gemm":
                offsets = offsets * node.attributes.get_float("beta", 1.0)
        return np.where(zero, offsets, np.nan)

    # -- result

    def _finish(self) -> ChannelGraph:
        count = len(self.atoms.parent)
        roots = np.array([self.atoms.find(atom) for atom in range(count)], dtype=np.int64)
        _, unit_of_atom = np.unique(roots, return_inverse=True) if count else (None, np.zeros(0, dtype=np.int64))
        unit_of_atom = np.asarray(unit_of_atom, dtype=np.int64).reshape(-1)
        units = int(unit_of_atom.max()) + 1 if count else 0
        groups = _UnionFind()
        groups.add(units)
        for source in self.sources:
            members = unit_of_atom[source.atoms]
            for unit in members[1:].tolist():
                groups.union(int(members[0]), unit)
        group_roots = np.array([groups.find(unit) for unit in range(units)], dtype=np.int64)
        _, group_of_unit = np.unique(group_roots, return_inverse=True) if units else (None, np.zeros(0, dtype=np.int64))
        unit_locked = np.zeros(units, dtype=bool)
        for lock in self.locks:
            unit_locked[unit_of_atom[lock.atoms]] = True
        value_units = {}
        for tracked in self.tracked.values():
            members = np.unique(unit_of_atom[tracked.atoms])
            value_units[members.tobytes()] = members
        return ChannelGraph(
            sources=self.sources,
            slices=self.slices,
            arrays=self.arrays,
            attributes=self.attributes,
            sinks=self.sinks,
            locks=self.locks,
            tracked=self.tracked,
            unit_of_atom=unit_of_atom,
            group_of_unit=np.asarray(group_of_unit, dtype=np.int64).reshape(-1),
            unit_locked=unit_locked,
            value_units=list(value_units.values()),
            not_sources=self.not_sources,
            node_atoms={node: np.unique(np.concatenate(parts)) for node, parts in self.node_atoms.items()},
            fixed_atoms=np.concatenate(self.fixed) if self.fixed else np.zeros(0, dtype=np.int64),
        )
