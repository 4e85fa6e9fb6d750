"""The channel-handler interface and registry: what a handler may ask of the walk, and who handles which op.

The dependency walk (:mod:`onnxprune.analysis.dependency_walk`) knows no op.
For every node of the main graph, in topological order, it calls the handler
registered for the node's op type and domain as ``handler(walk, node)``.  A
handler does one or more of three things through the :class:`Walk` it is
given:

* **map channel indices** through the op: every output that carries channels
  gets a :class:`~onnxprune.analysis.channel_graph.Tracked` (its channel axis
  and, per position, the atom that lives there and its known constant);
* **record what must be rewritten** when channels go, as edit records
  (``SliceEdit``, ``ArrayEdit``, ``AttributeEdit``, ``Sink``) that are
  functions of the kept atoms; the channel pass does the rewriting, so index
  mapping stays apart from graph surgery;
* **lock** the channels it cannot map, with a reason written for the user.

A handler is called for every node of its op, whether or not channels reach
it (a weight layer opens channels of its own); a handler that only maps
channels returns at once when none of its inputs is tracked
(:meth:`Walk.first_tracked_only` does that for ops with one data input).  A
node whose op has no handler locks every channel that reaches it: an unknown
op is never assumed to be elementwise.

Handlers live in one module per op family in this package and register
themselves on import; other code registers its own with
:func:`register_channel_handler`, as criteria are registered in
:mod:`onnxprune.importance`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ChannelEdit, Tracked
from onnxprune.analysis.shapes import ShapeTuple
from onnxprune.analysis.weight_ops import ONNX_DOMAINS
from onnxprune.errors import InputError


class Walk(Protocol):
    """What a channel handler may ask of the dependency walk, and tell it.

    Atoms are integer ids, one per channel position opened by a source (or
    fixed: channels that come from no prunable layer).  Arrays of atoms are
    ``np.int64`` vectors, in channel order.
    """

    @property
    def opset(self) -> int:
        """The model's standard-domain opset: several ops moved attributes to inputs across versions."""

    def tracked(self, value: ir.Value | None) -> Tracked | None:
        """The channels ``value`` carries, or None when it carries none."""

    def first_tracked_only(self, node: ir.Node) -> Tracked | None:
        """The channels of the data input (index 0) of an op whose other inputs are parameters.

        Channels reaching any other input are locked (removing them would
        change the parameter's meaning) and None is returned, as it is when
        input 0 carries no channels.
        """

    def track(self, value: ir.Value, tracked: Tracked) -> None:
        """Declare that ``value`` carries these channels (locked when a subgraph reads it or it is excluded)."""

    def lock(self, atoms: np.ndarray, reason: str) -> None:
        """Keep every unit these atoms belong to; ``reason`` tells the user why."""

    def lock_inputs(self, node: ir.Node, reason: str) -> None:
        """Lock the channels of every tracked input of ``node``."""

    def couple(self, first: np.ndarray, second: np.ndarray) -> None:
        """Position ``i`` of ``first`` and of ``second`` must be removed or kept together."""

    def touch(self, node: ir.Node, atoms: np.ndarray) -> None:
        """Note that ``node`` handles these channels, so the report can say which groups change it."""

    def fixed_atoms(self, count: int, reason: str) -> np.ndarray:
        """New atoms for channels that come from no prunable layer, locked with ``reason``."""

    def record(self, edit: ChannelEdit) -> None:
        """Record a rewrite the channel pass must make when channels go."""

    def open_source(self, node: ir.Node, weight_index: int, weight_axis: int, size: int) -> np.ndarray:
        """Open ``size`` new channels at ``node``, whose weight (input ``weight_index``) holds them on ``weight_axis``.

        Returns their atoms; the walk records the source and locks it when
        the node matches an exclude pattern.
        """

    def not_a_source(self, node: ir.Node, reason: str) -> None:
        """Say why a weight layer opens no channels of its own (the first reason given is kept)."""

    def shape(self, value: ir.Value | None) -> ShapeTuple | None:
        """Inferred (else declared, else constant) dims: int static, str symbolic, None unknown."""

    def rank(self, value: ir.Value | None) -> int | None:
        """The rank of ``value``: its tracked rank, else its shape's length."""

    def const_input(self, node: ir.Node, index: int) -> np.ndarray | None:
        """The constant content of input ``index``, or None when it is absent or computed at run time."""


ChannelHandler = Callable[[Walk, ir.Node], None]
"""``handler(walk, node) -> None``: maps channels through ``node``, records edits, or locks with a reason."""

_REGISTRY: dict[tuple[str, str], ChannelHandler] = {}


def _key(op_type: str, domain: str) -> tuple[str, str]:
    """Registry key; ``""`` and ``"ai.onnx"`` name the same standard domain."""
    return ("" if domain in ONNX_DOMAINS else domain, op_type)


def _op_types(op_types: str | Iterable[str]) -> list[str]:
    names = [op_types] if isinstance(op_types, str) else list(op_types)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise InputError("channel handlers are registered for one or more non-empty op type names")
    return names


def register_channel_handler(op_types: str | Iterable[str], handler: ChannelHandler, domain: str = "", *, replace: bool = False) -> None:
    """Let ``handler`` map channels through the ops ``op_types`` of ``domain`` (``""``: standard ONNX).

    An op that already has a handler is refused unless ``replace`` is true:
    two modules silently claiming the same op would make the result depend on
    import order.  Nothing is registered when any name is refused.
    """
    names = _op_types(op_types)
    if not callable(handler):
        raise InputError("register_channel_handler needs a callable handler(walk, node)")
    taken = [name for name in names if _key(name, domain) in _REGISTRY]
    if taken and not replace:
        where = "" if domain in ONNX_DOMAINS else f" in domain '{domain}'"
        raise InputError(f"a channel handler is already registered for {', '.join(taken)}{where}; pass replace=True to replace it")
    for name in names:
        _REGISTRY[_key(name, domain)] = handler


def unregister_channel_handler(op_types: str | Iterable[str], domain: str = "") -> None:
    """Forget the handlers of ``op_types``: their channels lock again, as an unknown op's do."""
    names = _op_types(op_types)
    missing = [name for name in names if _key(name, domain) not in _REGISTRY]
    if missing:
        raise InputError(f"no channel handler is registered for {', '.join(missing)}")
    for name in names:
        del _REGISTRY[_key(name, domain)]


def channel_handler(op_type: str, domain: str = "") -> ChannelHandler | None:
    """The handler registered for ``op_type`` of ``domain``, or None."""
    return _REGISTRY.get(_key(op_type, domain))
