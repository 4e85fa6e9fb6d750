"""Small facts several channel handlers need: optional inputs, integer constants, axes, kept counts, pass-through."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import KeptAtoms, Tracked
from onnxprune.analysis.channel_handlers.registry import Walk


def input_at(node: ir.Node, index: int) -> ir.Value | None:
    """Input ``index`` of ``node``, or None when it is absent (omitted optional inputs are absent too)."""
    return node.inputs[index] if len(node.inputs) > index else None


def not_constant_reason(value: ir.Value | None) -> str:
    """How a report says why an input is no constant a pass may rewrite (as a predicate: "'b' is ...")."""
    if value is None:
        return "is absent"
    if value.is_graph_input():
        listed = "an initializer also listed as a graph input" if value.is_initializer() else "a graph input"
        return f"'{value.name}' is {listed}, which callers may feed at run time"
    return f"'{value.name}' is computed at run time"


def ints(array: np.ndarray | None) -> list[int] | None:
    """A constant as a flat list of Python ints (axes, sizes, bounds), or None when it is not constant."""
    return None if array is None else [int(item) for item in np.asarray(array).reshape(-1)]


def positive_axis(axis: int, rank: int) -> int:
    """``axis`` counted from the front (ONNX allows negative axes)."""
    return axis + rank if axis < 0 else axis


def count_kept(kept: KeptAtoms, atoms: np.ndarray) -> int:
    """How many of ``atoms`` survive: a channel count after pruning."""
    return int(np.count_nonzero(kept[atoms]))


def only_first_output_used(node: ir.Node) -> bool:
    """Whether outputs after the first (pool indices, training statistics) are never read."""
    return all(not output.uses() and not output.is_graph_output() for output in node.outputs[1:])


def pads_input(node: ir.Node) -> bool:
    """Whether a windowed op (pool, conv) pads its input, explicitly or with a ``SAME`` auto-pad.

    A padded border mixes the fill value into the window, so a constant
    channel no longer gives the same value everywhere.
    """
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    return any(node.attributes.get_ints("pads", [0])) or auto_pad in ("SAME_UPPER", "SAME_LOWER")


def foreign_channels(walk: Walk, value: ir.Value, count: int) -> np.ndarray:
    """Fixed atoms for ``count`` channels that ``value`` brings in from outside any prunable layer.

    An initializer also listed as a graph input looks like a constant but is
    fed at run time; the reason says so rather than calling it data.
    """
    reason = not_constant_reason(value) if value.is_initializer() else f"'{value.name}' carries channels that come from no prunable layer"
    return walk.fixed_atoms(count, reason)


def follow(
    walk: Walk, node: ir.Node, tracked: Tracked, *, axis: int | None = None, rank: int | None = None, consts: np.ndarray | None = None
) -> None:
    """The op keeps the channels of ``tracked`` in its first output (maybe on another axis, rank or constant)."""
    walk.touch(node, tracked.atoms)
    walk.track(
        node.outputs[0],
        Tracked(
            tracked.axis if axis is None else axis,
            tracked.rank if rank is None else rank,
            tracked.atoms,
            tracked.consts if consts is None else consts,
        ),
    )


def ranked_inputs(walk: Walk, node: ir.Node) -> list[tuple[ir.Value, int]] | None:
    """Every input with its rank, or None when one is missing or of unknown rank (operands then cannot be aligned)."""
    ranked: list[tuple[ir.Value, int]] = []
    for value in node.inputs:
        rank = walk.rank(value)
        if value is None or rank is None:
            return None
        ranked.append((value, rank))
    return ranked


def with_kept_count(original: np.ndarray, entry: int, atoms: np.ndarray, per_channel: int = 1) -> Callable[[KeptAtoms], np.ndarray]:
    """A constant vector (sizes, bounds, a target shape) whose ``entry`` becomes ``per_channel`` times the kept count of ``atoms``."""

    def compute(kept: KeptAtoms) -> np.ndarray:
        array = original.copy().reshape(-1)
        array[entry] = per_channel * count_kept(kept, atoms)
        return array.reshape(original.shape)

    return compute
