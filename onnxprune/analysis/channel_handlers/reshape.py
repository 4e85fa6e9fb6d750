"""Flatten and Reshape turn each channel into a block of features; Shape reads the channel count.

After ``Flatten`` (or a Reshape that merges the channel axis with the axes
around it) channel ``c`` becomes the block of ``inner`` consecutive
features at ``c * inner``, repeated ``outer`` times: a Gemm or MatMul behind
it loses the rows of each removed block.  A Reshape that splits the channel
axis itself (a channel shuffle) would scatter channels, so it locks, as does
a target shape whose channel entry is computed at run time.  Sizes are
compared as products of static and symbolic dims, so a dynamic batch does
not get in the way.  Where inference left the target's dims unknown (it
does for ``x.permute(0, 3, 2, 1).reshape(x.size(0), -1)`` with a symbolic
batch, as in MTCNN), they are worked out from the target's entries: a
constant, or a dim copied from a shape read as ``x.size(i)``, and the one
``-1`` as what is left of the input's size (a number, or one symbolic dim:
``[-1, C]`` after a global pool leaves the batch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ArrayEdit, Tracked
from onnxprune.analysis.channel_handlers.common import input_at, ints, positive_axis, with_kept_count
from onnxprune.analysis.channel_handlers.registry import Walk, register_channel_handler
from onnxprune.analysis.shapes import Dim
from onnxprune.analysis.weight_ops import ONNX_DOMAINS
from onnxprune.ir import constant_array, node_label

Product = tuple[int, Counter[str]]
"""A product of dims: its static part and the multiset of symbolic dims in it."""


def _product(dims: Sequence[Dim]) -> Product | None:
    """Product of dims; None when a dim is unknown."""
    number, symbols = 1, Counter[str]()
    for dim in dims:
        if dim is None:
            return None
        if isinstance(dim, int):
            number *= dim
        else:
            symbols[dim] += 1
    return number, symbols


def _quotient(large: Product, small: Product) -> int | None:
    """``large / small`` when it is a plain integer (the same symbols on both sides)."""
    dim = _inferred_dim(large, small)
    return dim if isinstance(dim, int) else None


def _expand(walk: Walk, node: ir.Node, tracked: Tracked, outer: int, inner: int, axis: int, rank: int) -> None:
    """Channel ``c`` becomes the ``inner``-sized block ``c`` of features, repeated ``outer`` times."""
    atoms = np.tile(np.repeat(tracked.atoms, inner), outer)
    consts = np.tile(np.repeat(tracked.consts, inner), outer)
    walk.touch(node, tracked.atoms)
    walk.track(node.outputs[0], Tracked(axis, rank, atoms, consts))


def _flatten(walk: Walk, node: ir.Node) -> None:
    """The output is 2-D: the channels land in its second axis when they lie at or after ``axis``."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    split = positive_axis(node.attributes.get_int("axis", 1), tracked.rank)
    shape = walk.shape(input_at(node, 0))
    if split > tracked.axis or shape is None:
        walk.lock(tracked.atoms, f"{node_label(node)} merges the channel axis into the batch dimension")
        return
    outer = _product(shape[split : tracked.axis])
    inner = _product(shape[tracked.axis + 1 :])
    if outer is None or inner is None or outer[1] or inner[1]:
        walk.lock(tracked.atoms, f"{node_label(node)} input dims next to the channels are not static")
        return
    _expand(walk, node, tracked, outer[0], inner[0], axis=1, rank=2)


def _channel_block(before: Product, after: Product, target_shape: Sequence[Dim]) -> tuple[int, int, int] | None:
    """The target axis that holds whole channels, as ``(axis, outer, inner)``; None when the channel axis is split."""
    for axis in range(len(target_shape)):
        prefix, suffix = _product(target_shape[:axis]), _product(target_shape[axis + 1 :])
        if prefix is None or suffix is None:
            continue
        outer, inner = _quotient(before, prefix), _quotient(after, suffix)
        if outer is not None and inner is not None:
            return axis, outer, inner
    return None


def _reshape(walk: Walk, node: ir.Node) -> None:
    """Find the output axis that holds whole channels and rewrite the target shape's entry for it."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    label = node_label(node)
    source_shape, target_shape = walk.shape(input_at(node, 0)), walk.shape(node.outputs[0])
    target = walk.const_input(node, 1)
    entries = ints(target) if target is not None else _concatenated_entries(walk, input_at(node, 1))
    if entries is None:
        walk.lock(tracked.atoms, f"{label} target shape is computed at run time and may encode the channel count")
        return
    if source_shape is None or target_shape is None:
        walk.lock(tracked.atoms, f"{label} shapes could not be inferred")
        return
    before = _product(source_shape[: tracked.axis])
    after = _product(source_shape[tracked.axis + 1 :])
    if before is None or after is None:
        walk.lock(tracked.atoms, f"{label} input dims are not known")
        return
    block = _channel_block(before, after, target_shape)
    resolved = None if block is not None else _target_from_entries(node, entries, source_shape)
    if block is None and resolved is not None:
        block = _channel_block(before, after, resolved)
    if block is None:
        known = resolved is not None or all(isinstance(dim, int) for dim in target_shape)
        walk.lock(tracked.atoms, f"{label} splits or scatters the channel axis" if known else f"{label} output dims cannot be matched to its input's")
        return
    axis, outer, inner = block
    entry = entries[axis]
    if not isinstance(entry, int) or (entry > 0 and target is None):
        walk.lock(tracked.atoms, f"{label} computes the channel dim of its target shape at run time")
        return
    if entry == 0 and not node.attributes.get_int("allowzero", 0) and not (axis == tracked.axis and outer == inner == 1):
        walk.lock(tracked.atoms, f"{label} copies the channel dim from another axis")
        return
    if entry > 0 and target is not None:
        walk.record(ArrayEdit(node, 1, with_kept_count(np.asarray(target), axis, tracked.atoms, outer * inner), tracked.atoms))
    _expand(walk, node, tracked, outer, inner, axis=axis, rank=len(entries))


def _concatenated_entries(walk: Walk, value: ir.Value | None) -> Sequence[Dim] | None:
    """Entries of a shape built at run time as ``Concat(pieces)``: constants, dims copied from a shape, else None.

    This is how exporters write ``x.view(x.size(0), -1)`` with a dynamic
    batch; the channel entry is then a constant (often -1) even though the
    batch entry is computed.  An entry copied from a shape
    (:func:`_copied_dim`) is that dim, static or symbolic: known for working
    out the output shape, but still computed at run time, so a channel entry
    of that kind locks like any other.
    """
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "Concat" or producer.domain not in ONNX_DOMAINS:
        return None
    entries: list[Dim] = []
    for piece in producer.inputs:
        known = ints(constant_array(piece))
        if known is not None:
            entries.extend(known)
            continue
        shape = walk.shape(piece)
        if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            return None
        copied = _copied_dim(walk, piece) if piece is not None and shape[0] == 1 else None
        entries.extend([copied] if copied is not None else [None] * shape[0])
    return entries


def _copied_dim(walk: Walk, piece: ir.Value) -> Dim:
    """The dim a one-entry shape piece copies, ``Unsqueeze(Gather(Shape(x), i))`` or ``Gather(Shape(x), [i])``; None otherwise."""
    producer = piece.producer()
    if producer is not None and producer.op_type == "Unsqueeze" and producer.domain in ONNX_DOMAINS:
        piece = input_at(producer, 0) or piece
        producer = piece.producer()
    if producer is None or producer.op_type != "Gather" or producer.attributes.get_int("axis", 0) != 0:
        return None
    index = ints(walk.const_input(producer, 1))
    shape_of = input_at(producer, 0)
    reader = shape_of.producer() if shape_of is not None else None
    if index is None or len(index) != 1 or reader is None or reader.op_type != "Shape" or reader.attributes:
        return None
    shape = walk.shape(input_at(reader, 0))
    if shape is None or not -len(shape) <= index[0] < len(shape):
        return None
    dim = shape[index[0]]
    return None if isinstance(dim, int) and dim < 1 else dim


def _target_from_entries(node: ir.Node, entries: Sequence[Dim], source_shape: Sequence[Dim]) -> list[Dim] | None:
    """The Reshape's output shape worked out from its target ``entries``; None when one of them is not known."""
    if None in entries or sum(1 for entry in entries if entry == -1) > 1:
        return None
    dims: list[Dim] = []
    for axis, entry in enumerate(entries):
        if entry == 0 and not node.attributes.get_int("allowzero", 0):
            if axis >= len(source_shape):
                return None
            entry = source_shape[axis]
        dims.append(entry)
    if -1 in dims:
        total, rest = _product(source_shape), _product([dim for dim in dims if dim != -1])
        missing = None if total is None or rest is None else _inferred_dim(total, rest)
        if missing is None:
            return None
        dims[dims.index(-1)] = missing
    return dims


def _inferred_dim(total: Product, rest: Product) -> Dim:
    """The one dim ``total / rest``: a number, or a symbolic dim left alone (``[-1, C]`` after a pool with a
    symbolic batch infers the batch); None when what is left is not one dim."""
    if rest[0] == 0 or total[0] % rest[0] or rest[1] - total[1]:
        return None
    number, symbols = total[0] // rest[0], total[1] - rest[1]
    if not symbols:
        return number
    (symbol, power), *others = symbols.items()
    return symbol if number == 1 and power == 1 and not others else None


def _shape(walk: Walk, node: ir.Node) -> None:
    """A Shape read is harmless when only dims other than the channel dim are used (e.g. the batch size)."""
    tracked = walk.tracked(input_at(node, 0))
    if tracked is None:
        return
    start = positive_axis(node.attributes.get_int("start", 0), tracked.rank)
    end = min(positive_axis(node.attributes.get_int("end", tracked.rank), tracked.rank), tracked.rank)
    if start <= tracked.axis < end and _reads_channel_dim(walk, node.outputs[0], tracked.axis - start, end - start):
        walk.lock(tracked.atoms, f"its shape is read at run time by {node_label(node)}, and the channel count would change")


def _reads_channel_dim(walk: Walk, shape: ir.Value, entry: int, length: int) -> bool:
    """Whether anything may read entry ``entry`` of a shape vector; only constant Gathers of other entries are known not to."""
    if shape.is_graph_output():
        return True
    for use in shape.uses():
        user = use.node
        indices = walk.const_input(user, 1) if user.op_type == "Gather" and use.idx == 0 else None
        if indices is None or user.attributes.get_int("axis", 0) != 0:
            return True
        if entry in {(int(index) + length) % length for index in np.asarray(indices).reshape(-1)}:
            return True
    return False


register_channel_handler("Flatten", _flatten)
register_channel_handler("Reshape", _reshape)
register_channel_handler("Shape", _shape)
