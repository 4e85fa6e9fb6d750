"""Quality gates: the limits a build step sets on what pruning may cost.

Each gate compares one measured number with the user's limit and reports the
margin, so a failed build says which gate failed and by how much.

A lossy run for which the user set no output gate still gets one: the default
quality floor (:data:`FLOOR_COSINE`, :data:`FLOOR_TOP1_AGREEMENT`, checked on
every output), so a build step never ships a destroyed model with exit 0.
Any output gate the user sets replaces the floor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import onnx_ir as ir

from onnxprune.analysis.cost import macs_ratio, model_cost
from onnxprune.bench import benchmark
from onnxprune.config import PruneConfig
from onnxprune.errors import InputError
from onnxprune.validate import Validation, npz_has_labels

NO_CALIBRATION_LABELS = "--min-accuracy: the calibration data has no labels (add a 'labels' array, or give --labels)"

FLOOR_COSINE = 0.95
"""Default floor on each output's cosine similarity with the original (on the validation data).

Data-driven pruning at 2x fewer MACs keeps cosine above 0.99 on the project's
trained models; a cut that destroys the task (a detector finding no text,
a classifier at chance) falls far below 0.95."""

FLOOR_TOP1_AGREEMENT = 0.9
"""Default floor on the share of samples whose top-1 class stays the same, for outputs that are class scores."""

OUTPUT_GATES = ("max_abs_diff", "min_cosine", "min_top1_agreement", "min_accuracy")
"""The gates on what the outputs compute; setting any of them replaces the default floor."""

FLOOR_HINT = "set --min-cosine, --min-top1-agreement, --min-accuracy or --max-abs-diff to accept more drift"


@dataclass
class Gate:
    """One limit and the value it was checked against."""

    name: str
    value: float
    limit: float
    passed: bool
    margin: float
    default: bool = False
    """The default quality floor, not a limit the user set."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def describe(self) -> str:
        """One line for people: which gate, the value, the limit, how far off."""
        verdict = "passed" if self.passed else f"FAILED by {abs(self.margin):.6g}"
        hint = f"; {FLOOR_HINT}" if self.default and not self.passed else ""
        return f"{self.name}: {self.value:.6g} (limit {self.limit:.6g}) {verdict}{hint}"


def check_gate_inputs(config: PruneConfig, calibration_given: bool) -> None:
    """Refuse gate combinations that cannot be measured, before any work is done."""
    if config.min_speedup is not None and not config.bench:
        raise InputError("--min-speedup needs timing; remove --no-bench")
    if not config.validate and sets_output_gate(config):
        raise InputError("output gates (--max-abs-diff, --min-cosine, --min-top1-agreement, --min-accuracy) need validation; remove --no-validate")
    if config.min_accuracy is not None and not calibration_given:
        raise InputError("--min-accuracy needs --calibration data with labels (a 'labels' array, or --labels)")


def check_accuracy_labels(config: PruneConfig, calibration_labelled: bool | None) -> None:
    """``--min-accuracy`` is judged on the validation data's labels: refuse data without any before pruning, not after.

    ``calibration_labelled``: whether the calibration data's held-out part has labels (None: no calibration data).
    """
    if config.min_accuracy is None or not config.validate:
        return
    if config.inputs is not None:
        if npz_has_labels(config.inputs) is False:
            raise InputError(f"--min-accuracy: {config.inputs} has no 'labels' array to measure accuracy against")
    elif calibration_labelled is False:
        raise InputError(NO_CALIBRATION_LABELS)


def sets_output_gate(config: PruneConfig) -> bool:
    """Whether the user set any limit on what the outputs compute."""
    return any(getattr(config, key) is not None for key in OUTPUT_GATES)


def evaluate_gates(
    config: PruneConfig,
    validation: Validation | None,
    speedup: float | None,
    macs_ratio: float | None,
    lossy: bool = False,
) -> list[Gate]:
    """Every gate the config sets, checked against the measurements (and the default floor for a lossy run).

    ``macs_ratio`` is None when MACs could not be counted; a MAC gate is then refused, not judged.
    """
    gates = []
    if lossy and validation is not None and not sets_output_gate(config):
        gates.extend(floor_gates(validation))
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
            raise InputError(NO_CALIBRATION_LABELS)
        gates.append(_lower("min-accuracy", validation.accuracy["candidate"], config.min_accuracy))
    if config.min_speedup is not None and speedup is not None:
        gates.append(_lower("min-speedup", speedup, config.min_speedup))
    if config.max_macs_ratio is not None:
        if macs_ratio is None:
            raise InputError("--max-macs-ratio: the model's MACs cannot be counted (symbolic dims); give --input-shape or --calibration")
        gates.append(_upper("max-macs-ratio", macs_ratio, config.max_macs_ratio))
    return gates


def pair_gates(reference: ir.Model, candidate: ir.Model, config: PruneConfig, validation: Validation) -> list[Gate]:
    """The gates ``config`` sets, judged on a pair that already exists (``onnxprune validate``).

    MACs are counted only for a MAC gate and the pair is timed only for a
    speed gate, so plain output gates stay as cheap as the comparison itself.
    """
    shapes = config.input_shapes()
    macs = macs_ratio(model_cost(reference, shapes=shapes), model_cost(candidate, shapes=shapes)) if config.max_macs_ratio is not None else None
    speedup = None
    if config.min_speedup is not None:
        timings = benchmark([reference, candidate], runs=config.runs, warmup=config.warmup, threads=config.threads, seed=config.seed, shapes=shapes)
        speedup = timings[1].speedup
    return evaluate_gates(config, validation, speedup, macs)


def floor_gates(validation: Validation) -> list[Gate]:
    """The default quality floor, one gate per output and measure."""
    gates = []
    for output in validation.outputs:
        gates.append(replace(_lower(f"default floor: cosine of '{output.name}'", output.cosine, FLOOR_COSINE), default=True))
        if output.top1_agreement is not None:
            agreement = _lower(f"default floor: top-1 agreement of '{output.name}'", output.top1_agreement, FLOOR_TOP1_AGREEMENT)
            gates.append(replace(agreement, default=True))
    return gates


def _upper(name: str, value: float, limit: float) -> Gate:
    return Gate(name, value, limit, value <= limit, limit - value)


def _lower(name: str, value: float, limit: float) -> Gate:
    return Gate(name, value, limit, value >= limit, value - limit)
