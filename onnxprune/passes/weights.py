"""Unstructured weight pruning: zero the small weights of Conv, ConvTranspose, Gemm and MatMul.

Zeroed weights keep every tensor's shape, so the graph computes on the same
shapes as before; what shrinks is the file once it is compressed or stored in
sparse form (:mod:`onnxprune.sparse`), and on hardware with sparse
tensor cores an N:M pattern (2:4) can run faster.  Dense runtimes such as
onnxruntime on CPU multiply the zeros like any other number, which the report
says in plain words.

The three ways of choosing weights compose in a fixed order, each step
working on what the previous one left:

1. ``threshold`` T: every weight with ``|w| <= T`` becomes 0;
2. ``sparsity`` S: the ``round(S * size)`` smallest magnitudes of each tensor
   (``scope="tensor"``) or of all selected tensors ranked together
   (``scope="global"``) become 0 -- weights already zero count towards S, so S
   is the fraction of zeros reached, never an extra fraction on top;
3. ``pattern`` "N:M": in every run of M consecutive weights along the
   reduction (input-channel) axis, only the N largest magnitudes stay.  A
   tensor whose reduction axis is not a multiple of M (a first conv on RGB
   input, a depthwise conv) is skipped with that reason rather than given a
   ragged tail, so every group a sparse kernel sees really is N:M.

Ties in magnitude are broken by position (a stable sort), so the same model
and options always give the same bytes.  No tensor that had a non-zero weight
is pruned to all zeros unless ``allow_empty=True``: the guard keeps its
largest-magnitude weight, and in global scope ranks the next-smallest weight
of another tensor in its place so the global target is still met exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.weight_ops import reduction_axis, weight_op, weight_slots
from onnxprune.naming import fresh_name
from onnxprune.options import WeightOptions
from onnxprune.passes.base import PassReport, PruningPass, PruningResult

DENSE_RUNTIME_NOTE = (
    "Zeroed weights keep every tensor's shape: a dense runtime such as onnxruntime on CPU does the same "
    "work on zeros and does not run faster. The gain is file size once compressed or stored as sparse "
    "initializers, and for N:M patterns (e.g. 2:4) speed on runtimes with sparse tensor cores."
)

# Bytes of one int64 index per non-zero in ONNX COO storage (linear indices).
_INDEX_BYTES = 8


@dataclass
class _Candidate:
    """One weight tensor selected for pruning, with every node that reads it as a weight."""

    value: ir.Value
    array: np.ndarray
    consumers: list[ir.Node]
    axis: int | None = None
    keep: np.ndarray = field(init=False)
    zeros_before: int = field(init=False)
    source: ir.TensorProtocol | None = field(init=False)
    guarded: bool = False

    def __post_init__(self) -> None:
        self.source = self.value.const_value
        self.keep = self.array != 0
        self.zeros_before = int(self.keep.size - np.count_nonzero(self.keep))
        self.evict()

    @property
    def name(self) -> str:
        return self.value.name or "<unnamed>"

    def evict(self) -> None:
        """Done reading for now: let a memory-mapped source weight leave memory (see :func:`irx.evict_pages`)."""
        irx.evict_pages(self.source)


class WeightPruningPass(PruningPass):
    """Zero small weights of Conv/ConvTranspose/Gemm/MatMul; shapes and graph structure stay.

    Run :class:`onnxprune.passes.cleanup.CleanupPass` afterwards to remove
    what became removable (all-zero tensors, biases, neutral arithmetic).
    """

    name = "weights"

    def __init__(self, options: WeightOptions) -> None:
        super().__init__()
        self.options = options

    def call(self, model: ir.Model) -> PruningResult:
        report = PassReport(self.name)
        candidates = self._select(model, report)
        _apply_threshold(candidates, self.options.threshold)
        if self.options.sparsity is not None:
            if self.options.scope == "global":
                _apply_global_sparsity(candidates, self.options.sparsity, self.options.allow_empty)
            else:
                _apply_tensor_sparsity(candidates, self.options.sparsity)
        if self.options.n_m is not None:
            _apply_pattern(candidates, *self.options.n_m)
        if not self.options.allow_empty:
            _guard_empty(candidates)
        for candidate in candidates:
            if np.any(candidate.keep != (candidate.array != 0)):
                report.changes.append(_tensor_entry(candidate))
                _write(model.graph, candidate)
            candidate.evict()
        report.summary = self._summary(candidates, report)
        return PruningResult(model, bool(report.changes), report, exact=not report.changes)

    def _select(self, model: ir.Model, report: PassReport) -> list[_Candidate]:
        """Every weight tensor the options allow, each once however many nodes share it."""
        weight_uses: dict[ir.Value, list[tuple[ir.Node, int]]] = {}
        for node in irx.iter_nodes(model):
            if weight_op(node) is None:
                continue
            found = _constant_weight(node)
            if found is None:
                # A MatMul of two computed operands (attention) has no weight; other ops always have one.
                if node.op_type != "MatMul":
                    report.skip(irx.node_label(node), _computed_weight_reason(node))
                continue
            slot, weight = found
            if node.graph is not model.graph:
                report.skip(
                    weight.name or irx.node_label(node),
                    f"weight of {irx.node_label(node)} inside a subgraph (If/Loop/Scan body); "
                    "only main-graph weights are pruned",
                )
                continue
            weight_uses.setdefault(weight, []).append((node, slot))
        captured = irx.values_used_in_subgraphs(model)
        candidates = []
        for value, uses in weight_uses.items():
            candidate = self._candidate(value, uses, captured, report)
            if candidate is not None:
                candidates.append(candidate)
        return candidates

    def _candidate(
        self, value: ir.Value, uses: list[tuple[ir.Node, int]], captured: set[ir.Value], report: PassReport
    ) -> _Candidate | None:
        """A candidate for ``value``, or ``None`` after recording in ``report`` why it is left alone."""
        name = value.name or "<unnamed>"
        consumers = [node for node, _ in uses]
        reason = _ineligibility(value, uses, captured)
        if reason is None:
            reason = _excluded(value, consumers, self.options.exclude)
        if reason is not None:
            report.skip(name, reason)
            return None
        array = irx.constant_array(value)
        if array is None:
            report.skip(name, "its constant content cannot be read (unsupported Constant attribute)")
            return None
        if array.size == 0:
            report.skip(name, "empty tensor, nothing to prune")
            return None
        dtype = ir.DataType.from_numpy(array.dtype)
        if not dtype.is_floating_point():
            report.skip(name, f"is a {dtype.name} tensor; only floating-point weights are pruned")
            return None
        candidate = _Candidate(value, array, consumers)
        if self.options.n_m is not None:
            axis, reason = _pattern_axis(array, uses, self.options.n_m[1])
            if reason is not None:
                report.skip(name, reason)
                return None
            candidate.axis = axis
        return candidate

    def _summary(self, candidates: list[_Candidate], report: PassReport) -> dict[str, Any]:
        """Totals over every selected tensor, changed or not, with the options and the dense-runtime note."""
        params = sum(candidate.array.size for candidate in candidates)
        zeros_before = sum(candidate.zeros_before for candidate in candidates)
        zeros_after = sum(int(candidate.keep.size - np.count_nonzero(candidate.keep)) for candidate in candidates)
        return {
            "tensors": len(candidates),
            "tensors_changed": len(report.changes),
            "tensors_skipped": len(report.skipped),
            "params": params,
            "zeros_before": zeros_before,
            "zeros_after": zeros_after,
            "sparsity_before": zeros_before / params if params else 0.0,
            "sparsity_after": zeros_after / params if params else 0.0,
            "guarded": [candidate.name for candidate in candidates if candidate.guarded],
            "order": "threshold, then sparsity, then pattern",
            "options": asdict(self.options),
            "note": DENSE_RUNTIME_NOTE,
        }


def _constant_weight(node: ir.Node) -> tuple[int, ir.Value] | None:
    """The node's constant weight and its input index, or ``None`` when the weight is computed.

    An initializer that is also a graph input counts here, so that it is
    reported with its own reason (see :func:`_ineligibility`) instead of as
    "computed".
    """
    for slot in weight_slots(node):
        weight = node.inputs[slot] if slot < len(node.inputs) else None
        if weight is not None and irx.is_constant(weight, allow_graph_input=True):
            return slot, weight
    return None


# Weights dequantized at run time: zeroing the float result would disagree with the stored integers.
_QUANTIZED_PRODUCERS = frozenset({"DequantizeLinear", "DynamicQuantizeLinear", "QuantizeLinear"})


def _computed_weight_reason(node: ir.Node) -> str:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None:
        return "has no weight input"
    if weight.is_graph_input():
        return f"weight '{weight.name}' is a graph input, fed at run time"
    producer = weight.producer()
    if producer is not None and producer.op_type in _QUANTIZED_PRODUCERS:
        return f"weight '{weight.name}' is quantized ({producer.op_type}); quantized weights are left intact"
    return f"weight '{weight.name}' is computed at run time, not a constant; fold constants first (e.g. onnxsim)"


def _ineligibility(value: ir.Value, uses: list[tuple[ir.Node, int]], captured: set[ir.Value]) -> str | None:
    """Why ``value`` must not be rewritten, or ``None`` when it may be."""
    if value.is_graph_input():
        return "is a graph input, so its value can be replaced at run time"
    if value.is_graph_output():
        return "is a graph output; zeroing it would change the model's result"
    if value in captured:
        return "is read inside a subgraph (If/Loop/Scan body)"
    weight_slots = set(uses)
    others = [usage for usage in value.uses() if (usage.node, usage.idx) not in weight_slots]
    if others:
        usage = others[0]
        return f"is also read by {irx.node_label(usage.node)} (input {usage.idx}), not as a weight"
    return None


def _excluded(value: ir.Value, consumers: Sequence[ir.Node], patterns: Sequence[str]) -> str | None:
    """The exclusion reason when a glob matches the tensor's name or, failing that, a consuming node's name."""
    pattern = irx.matching_pattern(value.name, patterns)
    if pattern is not None:
        return f"excluded by pattern '{pattern}' (tensor name)"
    for node in consumers:
        pattern = irx.matching_pattern(node.name, patterns)
        if pattern is not None:
            return f"excluded by pattern '{pattern}' (node '{node.name}')"
    return None


def _pattern_axis(array: np.ndarray, uses: list[tuple[ir.Node, int]], group: int) -> tuple[int | None, str | None]:
    """The common reduction axis of every use, or the reason the N:M pattern cannot apply."""
    axes = [reduction_axis(node, slot, array.ndim) for node, slot in uses]
    known = {axis for axis in axes if axis is not None}
    if len(known) < len(set(axes)):
        return None, f"rank-{array.ndim} weight has no reduction axis the N:M pattern understands"
    if len(known) > 1:
        return None, "shared by nodes that reduce over different axes, so one N:M pattern cannot suit all of them"
    axis = known.pop()
    length = array.shape[axis]
    if length % group:
        return None, f"reduction axis {axis} has length {length}, not a multiple of M={group} for the N:M pattern"
    return axis, None


def _magnitudes(candidate: _Candidate) -> np.ndarray:
    """|w| of the weights still kept (0 where already pruned).

    Computed in the weight's own precision (half widened to single), which is
    exact for an absolute value and keeps memory near one copy of the tensor.
    """
    magnitudes = np.abs(candidate.array, dtype=np.result_type(candidate.array.dtype, np.float32))
    magnitudes[~candidate.keep] = 0
    return magnitudes


def _smallest(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` smallest entries of a flat array, ties broken by position.

    Gives the same set as the first ``count`` of a stable argsort, but with a
    partition (linear time, one copy) instead of a full sort with 8-byte indices.
    """
    mask = np.zeros(magnitudes.size, dtype=bool)
    if count <= 0:
        return mask
    if count >= magnitudes.size:
        mask[:] = True
        return mask
    kth = np.partition(magnitudes, count - 1)[count - 1]
    mask = magnitudes < kth
    ties = np.flatnonzero(magnitudes == kth)[: count - int(np.count_nonzero(mask))]
    mask[ties] = True
    return mask


def _apply_threshold(candidates: list[_Candidate], threshold: float | None) -> None:
    if threshold is None:
        return
    for candidate in candidates:
        # A float64 scalar makes the comparison exact without a float64 copy of the tensor.
        candidate.keep &= np.abs(candidate.array) > np.float64(threshold)
        candidate.evict()


def _apply_tensor_sparsity(candidates: list[_Candidate], sparsity: float) -> None:
    """Zero the ``round(sparsity * size)`` smallest magnitudes of each tensor."""
    for candidate in candidates:
        count = round(sparsity * candidate.array.size)
        pruned = _smallest(_magnitudes(candidate).ravel(), count)
        candidate.keep &= ~pruned.reshape(candidate.array.shape)
        candidate.evict()


def _apply_global_sparsity(candidates: list[_Candidate], sparsity: float, allow_empty: bool) -> None:
    """Zero the ``round(sparsity * total)`` smallest magnitudes over all tensors together.

    When the ranking would wipe a tensor out, its largest weight is taken out
    of the ranking (guard) and the cut is recomputed, so the next-smallest
    weight elsewhere is zeroed instead and the global count stays exact.
    Memory stays near one copy of the selected weights plus one byte each.
    """
    if not candidates:
        return
    ranked = np.concatenate([_magnitudes(candidate).ravel() for candidate in candidates])
    sizes = [candidate.array.size for candidate in candidates]
    spans = [slice(start, start + size) for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes)]
    total = ranked.size
    count = round(sparsity * total)
    alive = [bool(np.any(ranked[span] > 0)) for span in spans]
    protected = 0
    while True:
        cut = _smallest(ranked, min(count, total - protected))
        wiped = [index for index, span in enumerate(spans) if alive[index] and np.all(cut[span])]
        if allow_empty or not wiped:
            break
        for index in wiped:
            # The largest weight, the last of its tensor in a stable ascending order.
            part = ranked[spans[index]]
            largest = part.size - 1 - int(np.argmax(part[::-1]))
            ranked[spans[index].start + largest] = np.inf
            protected += 1
            candidates[index].guarded = True
            alive[index] = False
    for candidate, span in zip(candidates, spans):
        candidate.keep &= ~cut[span].reshape(candidate.array.shape)


def _apply_pattern(candidates: list[_Candidate], keep_count: int, group: int) -> None:
    """Keep the ``keep_count`` largest magnitudes of every ``group`` consecutive weights along the axis."""
    for candidate in candidates:
        assert candidate.axis is not None, "selection assigns an axis to every candidate when a pattern is set"
        moved = np.moveaxis(_magnitudes(candidate), candidate.axis, -1)
        groups = moved.reshape(-1, group)
        order = np.argsort(groups, axis=1, kind="stable")
        pattern_keep = np.ones(groups.shape, dtype=bool)
        np.put_along_axis(pattern_keep, order[:, : group - keep_count], False, axis=1)
        candidate.keep &= np.moveaxis(pattern_keep.reshape(moved.shape), -1, candidate.axis)


def _guard_empty(candidates: list[_Candidate]) -> None:
    """Give back the largest weight of any tensor that pruning emptied (threshold or per-tensor S=1)."""
    for candidate in candidates:
        if candidate.keep.any() or not np.any(candidate.array != 0):
            continue
        magnitudes = np.abs(candidate.array.astype(np.float64)).ravel()
        largest = int(np.argsort(magnitudes, kind="stable")[-1])
        keep = candidate.keep.ravel()
        keep[largest] = True
        candidate.keep = keep.reshape(candidate.array.shape)
        candidate.guarded = True


def _write(graph: ir.Graph, candidate: _Candidate) -> None:
    """Store the pruned tensor; a ``Constant``-node weight becomes an initializer of the same name."""
    pruned = np.where(candidate.keep, candidate.array, np.zeros((), dtype=candidate.array.dtype))
    value = candidate.value
    if value.is_initializer():
        irx.set_constant(value, pruned)
        return
    constant = value.producer()
    assert constant is not None and constant.op_type == "Constant", "selection admits initializers and Constant outputs"
    name = value.name or "weight"
    replacement = irx.add_initializer(graph, fresh_name(graph, f"{name}_pruned"), pruned)
    value.replace_all_uses_with(replacement)
    graph.remove(constant, safe=True)
    replacement.name = name
    candidate.value = replacement


def _tensor_entry(candidate: _Candidate) -> dict[str, object]:
    """Per-tensor line of the report."""
    size = candidate.array.size
    nonzero_before = size - candidate.zeros_before
    nonzero_after = int(np.count_nonzero(candidate.keep))
    itemsize = candidate.array.dtype.itemsize
    return {
        "tensor": candidate.name,
        "shape": list(candidate.array.shape),
        "dtype": str(candidate.array.dtype),
        "consumers": [irx.node_label(node) for node in candidate.consumers],
        "params": size,
        "nonzero_before": nonzero_before,
        "nonzero_after": nonzero_after,
        "sparsity_before": 1 - nonzero_before / size,
        "sparsity_after": 1 - nonzero_after / size,
        "dense_bytes": size * itemsize,
        "coo_bytes": nonzero_after * (itemsize + _INDEX_BYTES),
        "guarded": candidate.guarded,
    }
