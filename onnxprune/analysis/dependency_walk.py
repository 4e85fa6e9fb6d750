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
  which atom lives there.  How positions map through each op (Concat offsets,
  Split / Slice ranges, a channel becoming a block of features after
  Flatten / Reshape, a depthwise conv's multiplier) is the business of that
  op's *handler* (:mod:`onnxprune.analysis.channel_handlers`); this walk knows
  no op.
* Ops that require two tensors to hold the same channels (a residual Add, the
  gate of a squeeze-excitation Mul, ``Sum``) *couple* atoms position by
  position, with union-find.  A connected set of atoms is a *unit*: one
  prunable channel, removed or kept as a whole.  Units whose atoms share a
  space form a *group*.
* Anything not understood — an op without a handler, a graph output, a value
  read by a subgraph, a value or node matching an exclude pattern, a shape
  computed at run time — *locks* the atoms it touches, with a reason written
  for the user.  An unknown op is never assumed to be elementwise.

Along the walk every tracked position also carries a known constant (or NaN):
a channel whose filter is all zero produces its bias everywhere, and the
handlers push that constant through activations, normalisations and pooling
so that channels whose output is a known constant can be removed *exactly*,
by folding the constant into the next layer's bias.

What changes where is recorded as *edits* that are functions of the kept
atoms; the pass computes the final arrays from them (plan), checks them
(validate) and only then mutates the graph (apply).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import (
    ArrayEdit,
    AttributeEdit,
    ChannelEdit,
    ChannelGraph,
    Lock,
    Sink,
    SliceEdit,
    Source,
    Tracked,
)
from onnxprune.analysis.channel_handlers import channel_handler
from onnxprune.analysis.channel_handlers.common import input_at
from onnxprune.analysis.shapes import ShapeFacts, ShapeTuple
from onnxprune.analysis.weight_ops import ONNX_DOMAINS


def discover_channel_groups(model: ir.Model, exclude: Sequence[str] = ()) -> ChannelGraph:
    """Find channel sources, dependency groups, edits and locks of ``model`` (read-only).

    ``exclude`` holds glob patterns of node and value names whose channels stay.
    """
    return _ChannelWalk(model, tuple(exclude)).run()


def _topological(graph: ir.Graph) -> list[ir.Node]:
    """Main-graph nodes in an order where producers come first (the stored order need not be)."""
    nodes = list(graph)
    position = {node: index for index, node in enumerate(nodes)}
    pending = dict.fromkeys(nodes, 0)
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


class _UnionFind:
    """Disjoint sets of integer ids (atoms, then units), merged by :meth:`union`."""

    def __init__(self) -> None:
        self.parent: list[int] = []

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

    def classes(self) -> np.ndarray:
        """The dense class index (0, 1, ...) of every id, classes numbered by their smallest id."""
        roots = np.array([self.find(item) for item in range(len(self.parent))], dtype=np.int64)
        return np.unique(roots, return_inverse=True)[1].reshape(-1).astype(np.int64)


class _ChannelWalk:
    """One topological walk over the main graph that builds a :class:`ChannelGraph`.

    It is the :class:`~onnxprune.analysis.channel_handlers.Walk` every handler
    is given; the methods that protocol documents are its whole interface to
    handlers.
    """

    def __init__(self, model: ir.Model, exclude: tuple[str, ...]) -> None:
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        self._graph = model.graph
        self._exclude = exclude
        self._shapes = ShapeFacts.infer(model)
        self._captured = irx.values_used_in_subgraphs(model)
        self._atoms = _UnionFind()
        self._fixed: list[np.ndarray] = []
        self._tracked: dict[ir.Value, Tracked] = {}
        self._sources: list[Source] = []
        self._slices: list[SliceEdit] = []
        self._arrays: list[ArrayEdit] = []
        self._attributes: list[AttributeEdit] = []
        self._sinks: list[Sink] = []
        self._locks: list[Lock] = []
        self._not_sources: dict[ir.Node, str] = {}
        self._node_atoms: dict[ir.Node, list[np.ndarray]] = {}

    def run(self) -> ChannelGraph:
        for node in _topological(self._graph):
            self._visit(node)
        for value in self._graph.outputs:
            if value in self._tracked:
                self.lock(self._tracked[value].atoms, f"'{value.name}' is a graph output; its shape must not change")
        return self._finish()

    def _visit(self, node: ir.Node) -> None:
        """Locks for an excluded node or an op without a handler, then the op's handler."""
        handler = channel_handler(node.op_type, node.domain)
        if any(self.tracked(value) is not None for value in node.inputs):
            reason = self._excluded(node)
            if reason is not None:
                self.lock_inputs(node, reason)
            if handler is None:
                custom = "" if node.domain in ONNX_DOMAINS else f" ({node.domain}.{node.op_type})"
                self.lock_inputs(node, f"consumed by {irx.node_label(node)}{custom}, an op onnxprune does not know how to prune through")
        if handler is not None:
            handler(self, node)

    def _excluded(self, node: ir.Node) -> str | None:
        pattern = irx.matching_pattern(node.name, self._exclude)
        return None if pattern is None else f"{irx.node_label(node)} matches exclude pattern '{pattern}'"

    # -- the Walk interface (documented on the protocol in channel_handlers.registry)

    def tracked(self, value: ir.Value | None) -> Tracked | None:
        return None if value is None else self._tracked.get(value)

    def first_tracked_only(self, node: ir.Node) -> Tracked | None:
        others = [value for value in node.inputs[1:] if value is not None and value in self._tracked]
        if others:
            self.lock_inputs(node, f"'{others[0].name}' is used as a parameter of {irx.node_label(node)}")
            return None
        return self.tracked(input_at(node, 0))

    def track(self, value: ir.Value, tracked: Tracked) -> None:
        self._tracked[value] = tracked
        if value in self._captured:
            self.lock(tracked.atoms, f"'{value.name}' is read inside a subgraph (If/Loop/Scan body)")
        pattern = irx.matching_pattern(value.name, self._exclude)
        if pattern is not None:
            self.lock(tracked.atoms, f"value '{value.name}' matches exclude pattern '{pattern}'")

    def lock(self, atoms: np.ndarray, reason: str) -> None:
        if len(atoms):
            self._locks.append(Lock(reason, np.unique(atoms)))

    def lock_inputs(self, node: ir.Node, reason: str) -> None:
        for value in node.inputs:
            tracked = self.tracked(value)
            if tracked is not None:
                self.lock(tracked.atoms, reason)

    def couple(self, first: np.ndarray, second: np.ndarray) -> None:
        for a, b in zip(first.tolist(), second.tolist()):
            self._atoms.union(a, b)

    def touch(self, node: ir.Node, atoms: np.ndarray) -> None:
        self._node_atoms.setdefault(node, []).append(atoms)

    def fixed_atoms(self, count: int, reason: str) -> np.ndarray:
        atoms = self._atoms.add(count)
        self._fixed.append(atoms)
        self.lock(atoms, reason)
        return atoms

    def record(self, edit: ChannelEdit) -> None:
        if isinstance(edit, SliceEdit):
            self._slices.append(edit)
        elif isinstance(edit, ArrayEdit):
            self._arrays.append(edit)
        elif isinstance(edit, AttributeEdit):
            self._attributes.append(edit)
        else:
            self._sinks.append(edit)

    def open_source(self, node: ir.Node, weight_index: int, weight_axis: int, size: int) -> np.ndarray:
        atoms = self._atoms.add(size)
        self._sources.append(Source(len(self._sources), node, weight_index, weight_axis, atoms))
        self.touch(node, atoms)
        reason = self._excluded(node)
        if reason is not None:
            self.lock(atoms, reason)
        return atoms

    def not_a_source(self, node: ir.Node, reason: str) -> None:
        self._not_sources.setdefault(node, reason)

    def shape(self, value: ir.Value | None) -> ShapeTuple | None:
        if value is None:
            return None
        dims = self._shapes.dims(value)
        if dims is not None:
            return dims
        array = irx.constant_array(value)
        return None if array is None else tuple(array.shape)

    def rank(self, value: ir.Value | None) -> int | None:
        tracked = self.tracked(value)
        if tracked is not None:
            return tracked.rank
        shape = self.shape(value)
        return None if shape is None else len(shape)

    def const_input(self, node: ir.Node, index: int) -> np.ndarray | None:
        return irx.constant_array(input_at(node, index))

    # -- result

    def _finish(self) -> ChannelGraph:
        """Units are the classes of coupled atoms; groups join the units that share a source."""
        unit_of_atom = self._atoms.classes()
        units = int(unit_of_atom.max()) + 1 if len(unit_of_atom) else 0
        groups = _UnionFind()
        groups.add(units)
        for source in self._sources:
            members = unit_of_atom[source.atoms]
            for unit in members[1:].tolist():
                groups.union(int(members[0]), unit)
        unit_locked = np.zeros(units, dtype=bool)
        for lock in self._locks:
            unit_locked[unit_of_atom[lock.atoms]] = True
        value_units = {}
        for tracked in self._tracked.values():
            members = np.unique(unit_of_atom[tracked.atoms])
            value_units[members.tobytes()] = members
        return ChannelGraph(
            sources=self._sources,
            slices=self._slices,
            arrays=self._arrays,
            attributes=self._attributes,
            sinks=self._sinks,
            locks=self._locks,
            tracked=self._tracked,
            unit_of_atom=unit_of_atom,
            group_of_unit=groups.classes(),
            unit_locked=unit_locked,
            value_units=list(value_units.values()),
            not_sources=self._not_sources,
            node_atoms={node: np.unique(np.concatenate(parts)) for node, parts in self._node_atoms.items()},
            fixed_atoms=np.concatenate(self._fixed) if self._fixed else np.zeros(0, dtype=np.int64),
        )
