"""The build step: load, simplify, prune, re-check, validate, time, gate.

Passes run in a fixed order — layer bypass, channel pruning, weight pruning,
cleanup — because each makes the next one's job smaller: bypassed layers need
no channel plan, removed channels need no weight pruning, and cleanup folds
away what weight pruning left exactly removable.  Nothing is written until
every check and gate has passed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime

from onnxprune import __version__
from onnxprune import ir as irx
from onnxprune.analysis.cost import Cost, model_cost
from onnxprune.bench import Timing, benchmark
from onnxprune.config import PruneConfig
from onnxprune.gates import Gate, check_gate_inputs, evaluate_gates
from onnxprune.options import ChannelOptions, LayerOptions, WeightOptions
from onnxprune.passes.base import PruningPass
from onnxprune.passes.channels import ChannelPlanError, ChannelPruningPass
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.passes.layers import LayerBypassPass
from onnxprune.passes.weights import WeightPruningPass
from onnxprune.progress import progress
from onnxprune.simplify import simplify
from onnxprune.sparse import compressed_size, to_sparse_initializers
from onnxprune.validate import InputSource, Validation, validate


@dataclass
class PruneResult:
    """A pruned model with everything measured about it."""

    model: ir.Model
    report: dict[str, Any]
    config: PruneConfig
    passed: bool
    failures: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> None:
        """Write the pruned model atomically (sparse initializers and external data as configured)."""
        save_model(self.model, path, self.config)


def prune(model: ir.Model | str | os.PathLike, config: PruneConfig | None = None, /, quiet: bool = False, **options: Any) -> PruneResult:
    """Prune ``model`` as ``config`` (or keyword options with the CLI's names) says.

    The input model is never modified: a path is loaded afresh, an
    ``ir.Model`` is cloned.  ``result.passed`` is False when validation or a
    quality gate failed; the caller decides whether to save anyway.
    """
    config = config or PruneConfig()
    if options:
        config = PruneConfig.from_mapping({**config.values, **options})
    check_gate_inputs(config)
    source_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    original = irx.load(source_path) if source_path is not None else model
    original_cost = model_cost(original, source_path)
    candidate = irx.copy_model(original)
    steps: list[dict[str, Any]] = []

    if config.simplify:
        with progress("simplifying with onnxsim", quiet=quiet):
            candidate, warning = simplify(candidate)
        steps.append({"name": "simplify", "changes": [], "skipped": [], "summary": {"warning": warning} if warning else {"applied": True}})
    lossy = False
    for pruning_pass in _passes(config):
        _run_pass(pruning_pass, candidate)
        steps.append(pruning_pass.report.to_dict())
        lossy = lossy or _is_lossy(pruning_pass)
    finalize(candidate)

    pruned_cost = model_cost(candidate)
    pruned_cost.file_bytes, pruned_compressed = serialized_sizes(candidate, config, compress=_prunes_weights(config))
    original_compressed = (
        compressed_size(source_path)
        if pruned_compressed is not None and source_path is not None and not irx.has_external_tensors(original)
        else None
    )
    validation = _validate(original, candidate, config, quiet) if config.validate else None
    timings = _time(original, candidate, config, quiet) if config.bench else None
    macs_ratio = pruned_cost.macs / original_cost.macs if original_cost.macs else 1.0
    gates = evaluate_gates(config, validation, timings[1].speedup if timings else None, macs_ratio)

    failures = [f"gate {gate.describe()}" for gate in gates if not gate.passed]
    if validation is not None:
        failures.extend(_validation_failures(validation, lossy))
    report = build_report(
        (original_cost, pruned_cost), (original_compressed, pruned_compressed), timings, validation, gates, steps, config, lossy, failures
    )
    return PruneResult(candidate, report, config, passed=not failures, failures=failures)


def finalize(model: ir.Model) -> None:
    """Dead-code removal, topological sort, and shape re-inference from scratch."""
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.TopologicalSortPass()(model)
    # Intermediate shapes may be stale after channels changed; infer them anew from the inputs.
    for node in model.graph:
        for value in node.outputs:
            if not value.is_graph_output():
                value.shape = None
    common_passes.ShapeInferencePass(strict_mode=False, data_prop=True)(model)


def save_model(model: ir.Model, path: str | os.PathLike, config: PruneConfig) -> None:
    """Write the model, converting pruned weights to sparse initializers when asked."""
    if config.sparse_storage:
        proto = to_sparse_initializers(irx.to_proto(model))
        irx.save_proto(proto, path)
        return
    irx.save(model, path, external_data=True if config.external_data else None)


def serialized_sizes(model: ir.Model, config: PruneConfig, compress: bool) -> tuple[int, int | None]:
    """Bytes the model will take on disk, and deflated, without writing it.

    The deflated size is what weight pruning gains (zeros compress), so it is
    measured only when weights were pruned (``compress``), and never for models
    whose weights live in external data.
    """
    if irx.needs_external_data(model):
        return irx.weight_bytes(model), None
    proto = irx.to_proto(model)
    if config.sparse_storage:
        proto = to_sparse_initializers(proto)
    data = proto.SerializeToString()
    return len(data), compressed_size(data) if compress else None


def build_report(
    costs: tuple[Cost, Cost],
    compressed: tuple[int | None, int | None],
    timings: list[Timing] | None,
    validation: Validation | None,
    gates: list[Gate],
    steps: list[dict[str, Any]],
    config: PruneConfig,
    lossy: bool,
    failures: list[str],
) -> dict[str, Any]:
    """The JSON report: costs before/after (original first), timing, drift, gates, what each pass did."""
    original, pruned = costs

    def side(cost: Cost, compressed_bytes: int | None, timing: Timing | None) -> dict[str, Any]:
        return {
            "params": cost.params,
            "macs": cost.macs,
            "file_bytes": cost.file_bytes,
            "compressed_bytes": compressed_bytes,
            "nodes": cost.nodes,
            "op_histogram": cost.op_histogram,
            "latency_ms": {"median": timing.median_ms, "p10": timing.p10_ms, "p90": timing.p90_ms} if timing else None,
        }

    return {
        "original": side(original, compressed[0], timings[0] if timings else None),
        "pruned": side(pruned, compressed[1], timings[1] if timings else None),
        "speedup": timings[1].speedup if timings else None,
        "macs_ratio": pruned.macs / original.macs if original.macs else 1.0,
        "lossy": lossy,
        "validation": validation.to_dict() if validation else None,
        "gates": [gate.to_dict() for gate in gates],
        "passes": steps,
        "versions": {
            "onnxprune": __version__,
            "onnx": onnx.__version__,
            "onnx_ir": ir.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": sys.version.split()[0],
        },
        "config": config.to_dict(),
        "failures": failures,
    }


def _passes(config: PruneConfig) -> list[PruningPass]:
    """The passes the config asks for, in the pipeline's fixed order."""
    passes: list[PruningPass] = []
    if config.bypass or config.bypass_auto is not None or config.bypass_max_drift is not None:
        passes.append(
            LayerBypassPass(
                LayerOptions(
                    bypass=config.bypass,
                    auto=config.bypass_auto,
                    max_drift=config.bypass_max_drift,
                    kinds=config.bypass_kinds,
                    calibration=config.calibration,
                    input_shapes=tuple(config.input_shapes().items()),
                    samples=config.samples,
                    seed=config.seed,
                )
            )
        )
    if config.channel_ratio is not None:
        passes.append(_channel_pass(config, config.channel_ratio))
    weights_requested = _prunes_weights(config)
    if weights_requested:
        passes.append(
            WeightPruningPass(
                WeightOptions(
                    threshold=config.weight_threshold,
                    sparsity=config.weight_sparsity,
                    scope=config.weight_scope,
                    pattern=config.weight_pattern,
                    exclude=config.exclude,
                    allow_empty=config.weight_allow_empty,
                )
            )
        )
    passes.append(CleanupPass())
    if weights_requested and config.dead_channels:
        # Weight pruning can zero whole filters; removing them is exact and makes the model faster.
        passes.append(_channel_pass(config, 0.0))
    return passes


def _prunes_weights(config: PruneConfig) -> bool:
    return any(value is not None for value in (config.weight_threshold, config.weight_sparsity, config.weight_pattern))


def _channel_pass(config: PruneConfig, ratio: float) -> PruningPass:
    return ChannelPruningPass(
        ChannelOptions(
            ratio=ratio,
            global_ranking=config.channel_global,
            min_channels=config.min_channels,
            round_to=config.round_to,
            exclude=config.channel_exclude,
            importance=config.importance,
            remove_dead=config.dead_channels,
        )
    )


def _run_pass(pruning_pass: PruningPass, model: ir.Model) -> None:
    """Run one pass; a channel plan that fails its own validation leaves the model as it was, with the reason."""
    try:
        pruning_pass(model)
    except ChannelPlanError as error:
        pruning_pass.report.skip("all channel groups", f"the channel plan failed validation and was not applied: {error}")


def _is_lossy(pruning_pass: PruningPass) -> bool:
    """Whether the pass changed what the model computes (cleanup and dead-channel removal are exact)."""
    if not pruning_pass.report.changes or pruning_pass.name not in ("layers", "channels", "weights"):
        return False
    return not (pruning_pass.name == "channels" and pruning_pass.options.ratio == 0.0)


def _validation_failures(validation: Validation, lossy: bool) -> list[str]:
    """Validation problems that fail the run.

    An invalid model always fails.  Numeric drift fails only when every step
    was meant to be exact; drift from lossy pruning is reported and left to
    the gates.
    """
    if validation.checker_error is not None or validation.problems:
        return [f"validation: {problem}" for problem in validation.problems]
    if lossy:
        return []
    return [
        f"validation: output '{output.name}' drifted (max abs diff {output.max_abs_diff:.3g}) although no lossy pass ran"
        for output in validation.outputs
        if not output.within_tolerance
    ]


def _validate(original: ir.Model, candidate: ir.Model, config: PruneConfig, quiet: bool) -> Validation:
    npz = config.inputs or config.calibration
    source = InputSource(npz_path=npz, samples=config.samples, seed=config.seed, shapes=config.input_shapes())
    with progress("validating against the original", quiet=quiet):
        return validate(original, candidate, source, rtol=config.rtol, atol=config.atol)


def _time(original: ir.Model, candidate: ir.Model, config: PruneConfig, quiet: bool) -> list[Timing]:
    return benchmark(
        [original, candidate],
        runs=config.runs,
        warmup=config.warmup,
        threads=config.threads,
        seed=config.seed,
        shapes=config.input_shapes(),
        quiet=quiet,
    )

