"""Quality gates: the limits a build step sets on what pruning may cost.

Each gate compares one measured number with the user's limit and reports the
margin, so a failed build says which gate failed and by how much.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from onnxprune.config import PruneConfig
from onnxprune.errors import InputError
from onnxprune.validate import Validation


@dataclass
class Gate:
    """One limit and the value it was checked against."""

    name: str
    value: float
    limit: float
    passed: bool
    margin: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def describe(self) -> str:
        """One line for people: which gate, the value, the limit, how far off."""
        verdict = "passed" if self.passed else f"FAILED by {abs(self.margin):.6g}"
        return f"{self.name}: {self.value:.6g} (limit {self.limit:.6g}) {verdict}"


def check_gate_inputs(config: PruneConfig, calibration_given: bool) -> None:
    """Refuse gate combinations that cannot be measured, before any work is done."""
    if config.min_speedup is not None and not config.bench:
        raise InputError("--min-speedup needs timing; remove --no-bench")
    needs_validation = ("max_abs_diff", "min_cosine", "min_top1_agreement", "min_accuracy")
    if not config.validate and any(getattr(config, key) is not None for key in needs_validation):
        raise InputError("output gates (--max-abs-diff, --min-cosine, --min-top1-agreement, --min-accuracy) need validation; remove --no-validate")
    if config.min_accuracy is not None and not calibration_given:
        raise InputError("--min-accuracy needs --calibration data with labels (a 'labels' array, or --labels)")


def evaluate_gates(
    config: PruneConfig,
    validation: Validation | None,
    speedup: float | None,
    macs_ratio: float,
) -> list[Gate]:
    """Every gate the config sets, checked against the measurements."""
    gates = []
    if config.max_abs_diff is not None and validation is not None:
        gates.append(_upper("max-abs-diff", validation.worst("max_abs_diff") or 0.0, config.max_abs_diff))
    if config.min_cosine is not None and validation is not None:
        gates.append(_lower("min-cosine", validation.worst("cosine") or 0.0, config.min_cosine))
    if config.min_top1_agreement is not None and validation is not None:
        agreement = validation.worst("top1_agreement")
        if agreement is None:
            raise InputError("--min-top1-agreement: no model output looks like class scores ([batch, classes])")
        gates.append(_lower("min-top1-agreement", agreement, config.min_top1_agreement))
    if config.min_accuracy is not None and validation is not None:
        if validation.accuracy is None:
            raise InputError("--min-accuracy: the calibration data has no labels (add a 'labels' array, or give --labels)")
        gates.append(_lower("min-accuracy", validation.accuracy["candidate"], config.min_accuracy))
    if config.min_speedup is not None and speedup is not None:
        gates.append(_lower("min-speedup", speedup, config.min_speedup))
    if config.max_macs_ratio is not None:
        gates.append(_upper("max-macs-ratio", macs_ratio, config.max_macs_ratio))
    return gates


def _upper(name: str, value: float, limit: float) -> Gate:
    return Gate(name, value, limit, value <= limit, limit - value)


def _lower(name: str, value: float, limit: float) -> Gate:
    return Gate(name, value, limit, value >= limit, value - limit)
