"""The result of channel dependency analysis: what the channel pass needs to know, as plain records.

The dependency walk (:mod:`onnxprune.analysis.dependency_walk`) and its
per-op handlers (:mod:`onnxprune.analysis.channel_handlers`) produce a
:class:`ChannelGraph`; the channel pass reads it to choose channels and to
compute every edit.  Nothing here refers to the graph walk itself: edits are
functions of the kept atoms, so finding them stays apart from applying them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.weight_ops import WeightOp

KeptAtoms = np.ndarray  # bool, indexed by atom id


@dataclass
class Tracked:
    """A value that carries channels: its channel axis and, per position, the atom and known constant."""

    axis: int
    rank: int
    atoms: np.ndarray
    consts: np.ndarray

    @property
    def size(self) -> int:
        return len(self.atoms)


@dataclass(frozen=True)
class Source:
    """A layer whose output channels open a channel space."""

    space: int
    node: ir.Node
    weight_index: int
    weight_axis: int
    atoms: np.ndarray

    def filters(self) -> np.ndarray:
        """The weight as one row per output channel (for importance scores).

        Kept in the weight's own precision (half widened to single): a float64
        copy of every weight would double the memory a large model needs, and
        criteria accumulate in float64 where it matters (see importance.py).
        """
        array = np.asarray(irx.constant_array(self.node.inputs[self.weight_index]))
        weight = np.asarray(array, dtype=np.result_type(array.dtype, np.float32))
        return np.moveaxis(weight, self.weight_axis, 0).reshape(weight.shape[self.weight_axis], -1)


@dataclass(frozen=True)
class SliceEdit:
    """Keep the positions of a constant input (``axis``) whose atoms survive.

    ``optional`` edits apply only when the axis really has one entry per
    position (a bias may be a broadcast scalar, or absent).
    """

    node: ir.Node
    input_index: int
    axis: int
    atoms: np.ndarray
    optional: bool = False


@dataclass(frozen=True)
class ArrayEdit:
    """Replace a constant input (a shape, split sizes, slice bounds) by ``compute(kept_atoms)``."""

    node: ir.Node
    input_index: int
    compute: Callable[[KeptAtoms], np.ndarray]
    atoms: np.ndarray


@dataclass(frozen=True)
class AttributeEdit:
    """Set an attribute to ``compute(kept_atoms)``; ``None`` removes the attribute."""

    node: ir.Node
    name: str
    compute: Callable[[KeptAtoms], int | list[int] | None]
    atoms: np.ndarray


@dataclass(frozen=True)
class Sink:
    """Where channels end: input channels of a Conv, rows of a Gemm/MatMul weight.

    ``consts`` is the known constant value of each position (NaN: unknown).
    A removed position with a known constant is folded into the sink's bias
    where the weight-op table says that is exact (``op.can_fold``) and the
    bias can take it (``bias_note`` is None); elsewhere only constants equal
    to 0 can be removed exactly.  ``bias_note`` says why the bias cannot: a
    bias fed or computed at run time is read as it is, and replacing it by a
    constant would drop what the caller feeds.
    """

    node: ir.Node
    weight_index: int
    weight_axis: int
    atoms: np.ndarray
    consts: np.ndarray
    op: WeightOp
    bias_note: str | None = None

    @property
    def folds_constants(self) -> bool:
        """Whether removed positions of known constant value can be folded into the bias exactly."""
        op = self.op
        return self.bias_note is None and op.fold_delta is not None and op.bias_slot is not None and op.can_fold(self.node)


ChannelEdit = SliceEdit | ArrayEdit | AttributeEdit | Sink
"""What a channel handler records for the pass to rewrite when channels go."""


@dataclass(frozen=True)
class Lock:
    """Atoms that must be kept, and why."""

    reason: str
    atoms: np.ndarray


@dataclass
class ChannelGraph:
    """Everything the channel pass needs to know, found without changing the model.

    ``unit_of_atom`` maps each atom to its unit; ``group_of_unit`` maps units
    to groups.  ``value_units`` lists, for every tracked value, the units it
    carries (the pass keeps at least one of each).
    """

    sources: list[Source]
    slices: list[SliceEdit]
    arrays: list[ArrayEdit]
    attributes: list[AttributeEdit]
    sinks: list[Sink]
    locks: list[Lock]
    tracked: dict[ir.Value, Tracked]
    unit_of_atom: np.ndarray
    group_of_unit: np.ndarray
    unit_locked: np.ndarray
    value_units: list[np.ndarray]
    not_sources: dict[ir.Node, str]
    node_atoms: dict[ir.Node, np.ndarray]
    fixed_atoms: np.ndarray

    @property
    def num_units(self) -> int:
        return len(self.group_of_unit)

    @property
    def num_groups(self) -> int:
        return int(self.group_of_unit.max()) + 1 if len(self.group_of_unit) else 0

    def units_of(self, atoms: np.ndarray) -> np.ndarray:
        """Distinct units of a set of atoms."""
        return np.unique(self.unit_of_atom[atoms]) if len(atoms) else np.zeros(0, dtype=np.int64)

    def lock_reasons(self, units: Iterable[int]) -> list[str]:
        """The distinct reasons that lock any of ``units``, in discovery order."""
        wanted = set(int(unit) for unit in units)
        reasons: dict[str, None] = {}
        for lock in self.locks:
            if len(lock.atoms) and wanted.intersection(self.unit_of_atom[lock.atoms].tolist()):
                reasons[lock.reason] = None
        return list(reasons)
