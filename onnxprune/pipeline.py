"""The build step: load, simplify, prune, re-check, validate, time, gate.

Passes run in a fixed order — layer bypass, channel pruning, weight pruning,
cleanup — because each makes the next one's job smaller: bypassed layers need
no channel plan, removed channels need no weight pruning, and cleanup folds
away what weight pruning left exactly removable.  Nothing is written until
every check and gate has passed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime

from onnxprune import __version__
from onnxprune import ir as irx
from onnxprune.analysis.cost import Cost, macs_ratio, model_cost
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.bench import Timing, benchmark
from onnxprune.calibration import CalibrationData, load_calibration
from onnxprune.config import PruneConfig
from onnxprune.errors import InputError
from onnxprune.executor import executor_for
from onnxprune.gates import Gate, check_accuracy_labels, check_gate_inputs, evaluate_gates
from onnxprune.model_source import ModelLike, read_model
from onnxprune.options import ChannelOptions, LayerOptions, TargetOptions, TimingOptions, WeightOptions
from onnxprune.passes.base import PruningPass
from onnxprune.passes.channels import ChannelPruningPass, DeadChannelPass, channel_scores
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.passes.layers import LayerBypassPass
from onnxprune.passes.weights import WeightPruningPass
from onnxprune.progress import progress, silenced
from onnxprune.sensitivity import LEVELS, PROBE_FIT_SAMPLES, SensitivityTable, default_cache_dir, first_samples, measure_sensitivity
from onnxprune.simplify import simplify_step
from onnxprune.sparse import compressed_size, to_sparse_storage
from onnxprune.target import TOLERANCE, TargetOutcome, reach_target
from onnxprune.validate import InputSource, Validation, validate


@dataclass
class PruneResult:
    """A pruned model with everything measured about it."""

    model: ir.Model
    report: dict[str, Any]
    """Everything below (and more: each pass's changes and skips, versions, the config) as JSON-ready data."""
    config: PruneConfig
    passed: bool
    """False when validation, a gate (the default quality floor included) or the target failed."""
    failures: list[str] = field(default_factory=list)
    original: Cost | None = None
    """Parameters, MACs, nodes and file size of the input model."""
    pruned: Cost | None = None
    """The same for the pruned model."""
    validation: Validation | None = None
    """The comparison with the original (None with ``validate=False``)."""
    timings: list[Timing] | None = None
    """Latency of the original, then the pruned model (None with ``bench=False``)."""
    gates: list[Gate] = field(default_factory=list)
    """Every gate checked, the default quality floor's included."""

    @property
    def speedup(self) -> float | None:
        """Measured speedup of the pruned model (original median latency over pruned), or None when not timed."""
        return self.timings[1].speedup if self.timings else None

    @property
    def macs_ratio(self) -> float | None:
        """Pruned MACs over original MACs, or None when symbolic dims left them uncounted."""
        return self.report["macs_ratio"]

    def save(self, path: str | os.PathLike, keep: Iterable[str | os.PathLike] = ()) -> None:
        """Write the pruned model atomically (sparse storage and external data as configured).

        ``keep``: files a replaced earlier output's data file must not be
        deleted as, e.g. the input model's (see :func:`onnxprune.ir.save`).
        """
        save_model(self.model, path, self.config, keep)


def prune(model: ModelLike, config: PruneConfig | None = None, /, quiet: bool = True, **options: Any) -> PruneResult:
    """Prune ``model`` as ``config`` (or keyword options with the CLI's names) says.

    ``calibration`` (and ``labels``) may also be data rather than a path: an
    array, a dict of arrays keyed by input name, or an iterable of feed dicts
    (see :func:`onnxprune.calibration.load_calibration`).

    ``model`` is a path, an ``onnx.ModelProto`` or an ``ir.Model``; it is
    never modified (the passes work on a copy).  ``result.passed`` is False
    when validation or a quality gate failed; the caller decides whether to
    save anyway.  Nothing is printed unless ``quiet=False`` asks for progress.
    """
    in_memory = {key: options.pop(key) for key in ("calibration", "labels") if not isinstance(options.get(key), (str, os.PathLike, type(None)))}
    config = config or PruneConfig()
    if options:
        config = PruneConfig.from_mapping({**config.values, **options})
    _refuse_nothing_to_prune(config)
    check_gate_inputs(config, calibration_given=config.calibration is not None or "calibration" in in_memory)
    original, source_path = read_model(model)
    calibration = _calibration(original, config, in_memory)
    check_accuracy_labels(config, None if calibration is None else calibration.held_out_labels is not None)
    # Symbolic dims fixed as the user or the data says, for MAC counts and timing alike.
    cost_shapes = config.input_shapes() or (calibration.shapes_of_one_sample(original) if calibration is not None else {})
    timing_feeds = calibration.timing_feeds(original, cost_shapes) if calibration is not None else None
    original_cost = model_cost(original, source_path, shapes=cost_shapes)
    _refuse_unknown_macs(original_cost, config)
    candidate = irx.copy_model(original)
    steps: list[dict[str, Any]] = []

    if config.simplify:
        with progress("simplifying", quiet=quiet):
            simplified = simplify_step(candidate)
        candidate = simplified.model
        steps.append(simplified.step)
    target = None
    if config.options(TargetOptions).given:
        config, target = _aim_at_target(candidate, config, calibration, cost_shapes, timing_feeds, quiet)
    # Each pass says what it did and whether it kept the function exact; only those answers count here.
    with silenced(quiet):
        results = [pruning_pass(candidate) for pruning_pass in _passes(config, calibration, cost_shapes)]
    steps.extend(result.report.to_dict() for result in results)
    lossy = any(not result.exact for result in results)
    finalize(candidate)

    pruned_cost = model_cost(candidate, shapes=cost_shapes)
    pruned_cost.file_bytes, pruned_compressed = serialized_sizes(candidate, config, compress=_prunes_weights(config))
    original_compressed = (
        compressed_size(source_path)
        if pruned_compressed is not None and source_path is not None and not irx.has_external_tensors(original)
        else None
    )
    validation = _validate(original, candidate, config, calibration, quiet) if config.validate else None
    timings = _time(original, candidate, config, cost_shapes, timing_feeds, quiet) if config.bench else None
    pruned_macs_ratio = macs_ratio(original_cost, pruned_cost)
    gates = evaluate_gates(config, validation, timings[1].speedup if timings else None, pruned_macs_ratio, lossy)

    failures = [f"gate {gate.describe()}" for gate in gates if not gate.passed]
    if validation is not None:
        failures.extend(_validation_failures(validation, lossy))
    target_record = None
    if target is not None:
        params_ratio = pruned_cost.params / original_cost.params if original_cost.params else 1.0
        # A MAC target is refused up front when MACs cannot be counted; an uncountable pruned model misses it.
        target_record = _target_record(target, pruned_macs_ratio if pruned_macs_ratio is not None else math.inf, params_ratio, timings)
        failures.extend(target_record["failures"])
    report = build_report(
        (original_cost, pruned_cost),
        (original_compressed, pruned_compressed),
        timings,
        validation,
        gates,
        steps,
        config,
        lossy,
        failures,
        calibration=_calibration_record(calibration),
        target=target_record,
        timed_on=_timed_on(calibration if timing_feeds is not None else None, config) if timings else None,
    )
    return PruneResult(
        candidate,
        report,
        config,
        passed=not failures,
        failures=failures,
        original=original_cost,
        pruned=pruned_cost,
        validation=validation,
        timings=timings,
        gates=gates,
    )


def finalize(model: ir.Model) -> None:
    """Dead-code removal, topological sort, and shape re-inference from scratch."""
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.TopologicalSortPass()(model)
    # Intermediate shapes may be stale after channels changed; infer them anew from the inputs.
    for node in model.graph:
        for value in node.outputs:
            if not value.is_graph_output():
                value.shape = None
    infer_shapes(model)


def save_model(model: ir.Model, path: str | os.PathLike, config: PruneConfig, keep: Iterable[str | os.PathLike] = ()) -> None:
    """Write the model, storing mostly-zero weights sparse when asked."""
    irx.save(model, path, external_data=True if config.external_data else None, sparse=config.sparse_storage, keep=keep)


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
        proto = to_sparse_storage(proto)
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
    calibration: dict[str, Any] | None = None,
    target: dict[str, Any] | None = None,
    timed_on: str | None = None,
) -> dict[str, Any]:
    """The JSON report: costs before/after (original first), timing and the inputs it ran on, drift, gates, what each pass did."""
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
        "timed_on": timed_on,
        "macs_ratio": macs_ratio(original, pruned),
        "macs_unknown": sorted(set(original.unknown_shape_nodes) | set(pruned.unknown_shape_nodes)),
        "lossy": lossy,
        "calibration": calibration,
        "target": target,
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


def _refuse_nothing_to_prune(config: PruneConfig) -> None:
    """A run that asks for no pruning would write a copy and report success; a build step almost surely lost its options."""
    asks = (
        config.options(LayerOptions).selects_anything,
        config.channel_ratio is not None or bool(config.channel_override),
        _prunes_weights(config),
        config.options(TargetOptions).given,
    )
    if not any(asks):
        raise InputError(
            "nothing to prune: give --channel-ratio (0 removes only dead channels, exactly), --channel-override, --weight-threshold, "
            "--weight-sparsity, --bypass, --bypass-auto or a --target-* option, or set one in the config file"
        )


def _refuse_unknown_macs(cost: Cost, config: PruneConfig) -> None:
    """A MAC gate or target judged on a partial count would pass or fail on garbage: refuse it before any work."""
    if cost.macs_known:
        return
    asked = [flag for flag, value in (("--max-macs-ratio", config.max_macs_ratio), ("--target-macs", config.target_macs)) if value is not None]
    if asked:
        raise InputError(
            f"{asked[0]}: MACs of {len(cost.unknown_shape_nodes)} layer(s) cannot be counted (symbolic dims, e.g. "
            f"{cost.unknown_shape_nodes[0]}); give --input-shape NAME=D0,D1,... or --calibration data"
        )


def _calibration(model: ir.Model, config: PruneConfig, in_memory: dict[str, Any]) -> CalibrationData | None:
    """The calibration data (a path in the config, or arrays given in Python), checked against the model, or None.

    Labels without calibration data are refused: they belong to its samples.
    """
    data = in_memory.get("calibration", config.calibration)
    labels = in_memory.get("labels", config.labels)
    if data is None:
        if labels is not None:
            raise InputError("--labels needs --calibration: the labels belong to its samples")
        return None
    return load_calibration(data, model, labels=labels)


def _aim_at_target(
    candidate: ir.Model,
    config: PruneConfig,
    calibration: CalibrationData | None,
    shapes: dict[str, tuple[int, ...]],
    timing_feeds: dict[str, np.ndarray] | None,
    quiet: bool,
) -> tuple[PruneConfig, TargetOutcome]:
    """The config with channel overrides and bypasses that reach the target (the user's own overrides first, so they win);
    a speed search times on ``timing_feeds``, as the final timing does.

    Bypasses are chosen only when the user selects none: a user's own bypass
    choice runs first and would change what the table measured.
    """
    targets = config.options(TargetOptions)
    kind, _ = targets.asked()
    if calibration is None or not calibration.held_out:
        raise InputError(f"--target-{kind} measures what cutting each channel group costs on calibration data: give --calibration")
    if config.channel_ratio or config.channel_global:
        raise InputError(f"--target-{kind} chooses how many channels each group keeps: drop --channel-ratio/--channel-global")
    channel_options = config.options(ChannelOptions)
    table = sensitivity_table(candidate, config, calibration, quiet)
    bypasses = not config.options(LayerOptions).selects_anything
    scores, fit = None, None
    if kind == "speedup":
        # The models the search times keep the channels the final run keeps (scored once over the deepest cut probed), refit as probes are.
        with progress("scoring channels for the speed search", quiet=quiet), silenced():
            scores = channel_scores(candidate, dataclasses.replace(channel_options, ratio=max(LEVELS), global_ranking=False), calibration.fit)
        fit = first_samples(calibration.fit, PROBE_FIT_SAMPLES)
    timing = config.options(TimingOptions)
    outcome = reach_target(candidate, table, channel_options, targets, timing, shapes, quiet, bypasses, scores, fit, timing_feeds)
    chosen: dict[str, Any] = {"channel_override": tuple(config.channel_override) + outcome.overrides()}
    if outcome.allocation.bypasses:
        chosen["bypass"] = outcome.allocation.bypass_patterns()
    return PruneConfig.from_mapping({**config.values, **chosen}), outcome


def sensitivity_table(model: ir.Model, config: PruneConfig, calibration: CalibrationData, quiet: bool = False) -> SensitivityTable:
    """``model``'s sensitivity under the config's channel options, jobs, cache folder and timing threads."""
    targets = config.options(TargetOptions)
    cache = targets.sensitivity_cache or default_cache_dir()
    return measure_sensitivity(model, config.options(ChannelOptions), calibration, executor_for(targets.jobs), cache, quiet, threads=config.threads)


def _target_record(outcome: TargetOutcome, macs_ratio: float, params_ratio: float, timings: list[Timing] | None) -> dict[str, Any]:
    """What was asked and what the written model reaches; a target missed beyond the tolerance is a failure.

    A MAC or parameter ratio is missed on either side: one far under the
    target cut more than asked, at an accuracy cost nobody asked for.
    """
    record = outcome.to_dict()
    if outcome.kind == "speedup":
        reached = timings[1].speedup if timings else outcome.reached
        missed = reached < outcome.asked * (1 - TOLERANCE)
    else:
        reached = macs_ratio if outcome.kind == "macs" else params_ratio
        missed = abs(reached - outcome.asked) > outcome.asked * TOLERANCE
    record["reached"] = reached
    why = f" ({outcome.note})" if outcome.note else ""
    record["failures"] = [f"target {outcome.kind} {outcome.asked:g} not reached: {reached:.3f}{why}"] if missed or not outcome.met else []
    return record


def _calibration_record(calibration: CalibrationData | None) -> dict[str, Any] | None:
    """The report's record of the calibration data: where from, how it was split, what was converted."""
    if calibration is None:
        return None
    return {
        "source": calibration.source,
        "fit_samples": calibration.fit_samples,
        "held_out_samples": calibration.held_out_samples,
        "labels": calibration.fit_labels is not None,
        "notes": list(calibration.notes),
    }


def _passes(config: PruneConfig, calibration: CalibrationData | None, shapes: dict[str, tuple[int, ...]]) -> list[PruningPass]:
    """The passes the config asks for, in the pipeline's fixed order; lossy ones tune on the calibration fit part and count MACs at ``shapes``."""
    passes: list[PruningPass] = []
    fit = calibration.fit if calibration is not None else None
    layers = config.options(LayerOptions)
    if layers.selects_anything:
        passes.append(LayerBypassPass(layers, calibration=fit, refit=config.reconstruct, shapes=shapes))
    if config.channel_ratio is not None or config.channel_override:
        passes.append(ChannelPruningPass(config.options(ChannelOptions), calibration=fit, shapes=shapes))
    weights_requested = _prunes_weights(config)
    if weights_requested:
        passes.append(WeightPruningPass(config.options(WeightOptions)))
    passes.append(CleanupPass())
    if weights_requested and config.dead_channels:
        # Weight pruning can zero whole filters; removing them is exact and makes the model faster.
        channels = config.options(ChannelOptions)
        passes.append(DeadChannelPass(min_channels=channels.min_channels, round_to=channels.round_to, exclude=channels.exclude))
    return passes


def _prunes_weights(config: PruneConfig) -> bool:
    """Whether any weight-pruning option is set (zeroed weights also make the compressed size worth measuring)."""
    return config.options(WeightOptions).prunes_anything


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
        f"validation: output '{output.name}' drifted (max abs diff {output.max_abs_diff:.3g}, tolerance atol {output.atol:.3g}) although no lossy pass ran"
        for output in validation.outputs
        if not output.within_tolerance
    ]


def _validate(original: ir.Model, candidate: ir.Model, config: PruneConfig, calibration: CalibrationData | None, quiet: bool) -> Validation:
    """Compare on ``--inputs``, else on the held-out calibration samples (never seen by pruning), else on random inputs."""
    if config.inputs is None and calibration is not None and calibration.held_out:
        source = InputSource(
            batches=calibration.held_out,
            labels=calibration.held_out_labels,
            description=f"{calibration.held_out_samples} held-out samples of {calibration.source} (fit on {calibration.fit_samples})",
        )
    else:
        source = InputSource(npz_path=config.inputs, samples=config.samples, seed=config.seed, shapes=config.input_shapes())
    with progress("validating against the original", quiet=quiet):
        return validate(original, candidate, source, rtol=config.rtol, atol=config.atol)


def _timed_on(calibration: CalibrationData | None, config: PruneConfig) -> str:
    """What the timing ran on, for the report: the calibration sample it was given, else random inputs."""
    return f"one sample of {calibration.source}" if calibration is not None else f"random inputs (seed {config.seed})"


def _time(
    original: ir.Model, candidate: ir.Model, config: PruneConfig, shapes: dict[str, tuple[int, ...]], feeds: dict[str, np.ndarray] | None, quiet: bool
) -> list[Timing]:
    """Time both models on one calibration sample when there is calibration data, else on seeded random inputs."""
    return benchmark(
        [original, candidate],
        runs=config.runs,
        warmup=config.warmup,
        threads=config.threads,
        seed=config.seed,
        shapes=shapes,
        quiet=quiet,
        feeds=feeds,
    )
