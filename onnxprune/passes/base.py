"""What every pruning pass shares: the result it returns, with its report of what it did and declined.

The product promise is that nothing is skipped silently, so a pass records a
:class:`Skip` with a human reason for every candidate it leaves alone, and the
report carries those reasons to the user unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import onnx_ir as ir


@dataclass(frozen=True)
class Skip:
    """A candidate (weight, channel group, layer) left alone, and why."""

    target: str
    reason: str


@dataclass
class PassReport:
    """What one pass changed, what it declined, and its totals."""

    name: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def skip(self, target: str, reason: str) -> None:
        """Record a declined candidate."""
        self.skipped.append(Skip(target, reason))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the report file."""
        return asdict(self)


@dataclass
class PruningResult(ir.passes.PassResult):
    """What a pruning pass returns: onnx-ir's result, the pass's report, and whether it was exact.

    ``exact`` is the pass's own declaration that the model still computes the
    same function (cleanup, dead-channel removal, or a lossy pass that changed
    nothing); the pipeline holds exact runs to the equivalence tolerance and
    leaves the drift of lossy ones to the quality gates.
    """

    report: PassReport
    exact: bool


class PruningPass(ir.passes.InPlacePass):
    """An in-place onnx-ir pass whose result carries its :class:`PassReport`."""

    name = "pass"

    def __call__(self, model_or_result: ir.Model | ir.passes.PassResult, /) -> PruningResult:
        result = super().__call__(model_or_result)
        assert isinstance(result, PruningResult), f"{type(self).__name__}.call must return a PruningResult"
        return result

    def call(self, model: ir.Model) -> PruningResult:
        raise NotImplementedError
