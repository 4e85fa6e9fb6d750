"""What every pruning pass shares: its report of what it did and what it declined.

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


class PruningPass(ir.passes.InPlacePass):
    """An in-place onnx-ir pass that keeps a :class:`PassReport` of its last run."""

    name = "pass"

    def __init__(self) -> None:
        super().__init__()
        self.report = PassReport(self.name)
