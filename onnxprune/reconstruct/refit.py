"""Sequential least-squares reconstruction of the layers after a pruning edit.

After channels are removed (or layers bypassed), every weight layer whose
input changed is refit so that, on the *pruned* model's inputs, it reproduces
what the ORIGINAL layer computed on the original model's inputs (see
:mod:`~onnxprune.reconstruct.normal_equations`).  Layers are taken in waves
along the graph: a wave holds the layers with no other changed layer upstream
that is not refit yet, so each layer is fit on inputs that already include
every earlier refit, and errors do not accumulate layer after layer.  One
wave costs one run of each model, cut off after the values that wave reads.

Only the *fit* part of the calibration data is used here; validation judges
the result on the held-out part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weight_ops import weight_op
from onnxprune.ir import node_label
from onnxprune.passes.base import PassReport
from onnxprune.progress import progress
from onnxprune.reconstruct.capture import MIN_ROWS, Feeds, ValueReader, in_chunks, row_budget, shuffled
from onnxprune.reconstruct.linear import LinearLayer, linear_layer
from onnxprune.reconstruct.normal_equations import WELL_POSED_ROWS_PER_FEATURE, ChannelwiseEquations, NormalEquations

ROWS_PER_FEATURE = 2 * WELL_POSED_ROWS_PER_FEATURE
"""Rows sampled per feature (plus :data:`MIN_ROWS`): a well-posed fit, few enough rows to stay fast."""
CHECK_EVERY = 5
"""Every fifth chunk of calibration samples is kept out of the fit and checks it: the ridge strength is chosen
on unseen rows (on MTCNN ONet at 5.8x fewer MACs, a fixed ridge overfit the dense layer and lost 5 points).
The layer is then solved with that strength on the fit and check rows together: a layer that sees one row per
sample is short of rows, and the check rows are a fifth more."""
RIDGE_STRENGTHS = (1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)
"""Multiples of the default λ tried against the check rows."""


@dataclass
class RefitReport:
    """Per refit layer, its input features and its relative output error before and after; refused layers with why."""

    layers: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    waves: int = 0
    batches: int = 0

    def add_to(self, report: PassReport) -> None:
        """Record the refit in a pass's report: refused layers as skips, totals (mean relative output error of the
        refit layers before and after) in the summary, every layer under ``reconstruction``."""
        for target, reason in self.skipped:
            report.skip(target, reason)
        report.summary["refit_layers"] = len(self.layers)
        if self.layers:
            report.summary["refit_error_before"] = float(np.mean([layer["error_before"] for layer in self.layers]))
            report.summary["refit_error_after"] = float(np.mean([layer["error_after"] for layer in self.layers]))
        report.summary["reconstruction"] = {"refit_layers": len(self.layers), "waves": self.waves, "batches": self.batches, "layers": self.layers}


@dataclass(frozen=True)
class _Target:
    layer: LinearLayer
    original: LinearLayer
    wave: int


def refit_changed_layers(
    original: ir.Model,
    pruned: ir.Model,
    original_node: dict[ir.Node, ir.Node],
    edited: set[ir.Node],
    batches: Sequence[Feeds],
    kept_outputs: dict[ir.Node, np.ndarray] | None = None,
    rewired: set[ir.Node] | None = None,
    seed: int = 0,
    edited_only: bool = False,
) -> RefitReport:
    """Refit, in ``pruned``, every layer downstream of the ``edited`` nodes.

    ``original_node`` maps pruned nodes to the original's; ``kept_outputs``
    gives, for a layer whose own output channels were pruned too, which of
    the original's it kept (a layer missing there is refit only when it kept
    them all).  ``rewired`` nodes read a different value than in the
    original (the consumers of a bypassed block): they are refit themselves
    and count as edited.  ``edited_only`` refits only layers among ``edited``
    (a quick estimate: those read the pruned channels and repair most of
    the damage; the layers after them only correct what they left).
    """
    batches = in_chunks(pruned, batches)
    report = RefitReport(batches=len(batches))
    rewired = rewired or set()
    targets = _targets(pruned, original_node, edited | rewired, kept_outputs or {}, rewired, report)
    if not targets or not batches:
        return report
    if edited_only:
        targets = [target for target in targets if target.layer.node in edited]
        if not targets:
            return report
    report.waves = max(target.wave for target in targets) + 1
    rng = np.random.default_rng(seed)
    with progress(f"refitting {len(targets)} layer(s) in {report.waves} wave(s) on {len(batches)} batch(es)", total=report.waves) as advance:
        for wave in range(report.waves):
            wave_targets = [target for target in targets if target.wave == wave]
            if wave_targets:
                _refit_wave(wave_targets, original, pruned, batches, rng, report)
            advance(1)
    return report


def _targets(
    pruned: ir.Model,
    original_node: dict[ir.Node, ir.Node],
    edited: set[ir.Node],
    kept_outputs: dict[ir.Node, np.ndarray],
    rewired: set[ir.Node],
    report: RefitReport,
) -> list[_Target]:
    """The refittable layers whose data input depends on an edit, each with its wave."""
    changed: set[ir.Value] = set()
    level: dict[ir.Value, int] = {}
    targets: list[_Target] = []
    for node in pruned.graph:
        inputs = [value for value in node.inputs if value is not None]
        depth = max((level.get(value, 0) for value in inputs), default=0)
        data = node.inputs[0] if node.inputs else None
        refit = False
        if data is not None and (data in changed or node in rewired) and node in original_node:
            layer, original = linear_layer(node), linear_layer(original_node[node])
            if isinstance(layer, str) or isinstance(original, str):
                if weight_op(node) is not None:
                    report.skipped.append((node_label(node), f"not refit: {layer if isinstance(layer, str) else original}"))
            elif layer.weight.shape[0] != original.weight.shape[0] and len(kept_outputs.get(node, ())) != layer.weight.shape[0]:
                report.skipped.append((node_label(node), "not refit: which of its output channels were kept is not known"))
            else:
                if layer.weight.shape[0] != original.weight.shape[0]:
                    original = original.with_outputs(kept_outputs[node])
                targets.append(_Target(layer, original, depth))
                refit = True
        if node in edited or any(value in changed for value in inputs):
            changed.update(node.outputs)
        for value in node.outputs:
            level[value] = depth + int(refit)
    return targets


def _equations(layer: LinearLayer) -> NormalEquations | ChannelwiseEquations:
    if layer.kind == "depthwise":
        return ChannelwiseEquations(layer.weight.shape[0], layer.features)
    return NormalEquations(layer.features, layer.weight.shape[0], layer.bias is not None)


def _refit_wave(targets: list[_Target], original: ir.Model, pruned: ir.Model, batches: Sequence[Feeds], rng: np.random.Generator, report: RefitReport) -> None:
    """Accumulate each layer's sums on fit chunks and on check chunks, then keep the ridge the check rows prefer."""
    pruned_reader = ValueReader(pruned, [target.layer.data for target in targets])
    original_reader = ValueReader(original, [target.original.data for target in targets])
    fits = [_equations(target.layer) for target in targets]
    checks = [_equations(target.layer) for target in targets]
    budgets = [row_budget(ROWS_PER_FEATURE * target.original.features + MIN_ROWS, batches) for target in targets]
    for index, feeds in enumerate(shuffled(batches, rng)):
        if all(equations.rows >= budget.total for equations, budget in zip(fits, budgets)):
            break
        sums = checks if index % CHECK_EVERY == CHECK_EVERY - 1 else fits
        for target, equations, budget, pruned_data, original_data in zip(targets, sums, budgets, pruned_reader.read(feeds), original_reader.read(feeds)):
            positions = target.layer.positions(pruned_data.shape, budget.per_chunk, rng)
            wanted = target.original.outputs(target.original.rows(original_data, positions))
            equations.add(target.layer.rows(pruned_data, positions), wanted)
    for target, fit, check in zip(targets, fits, checks):
        _refit_layer(target, fit, check if check.rows else fit, pruned, report)


def _refit_layer(
    target: _Target, fit: NormalEquations | ChannelwiseEquations, check: NormalEquations | ChannelwiseEquations, pruned: ir.Model, report: RefitReport
) -> None:
    """Solve with each ridge strength; the one with the least error on the check rows solves again on all rows.

    The start stays when no strength beats it on the check rows.  The error
    reported after is that check-row error: the weight written saw those
    rows too, so no unseen rows are left to judge it by.
    """
    layer = target.layer
    start = layer.weight if layer.bias is None else np.hstack([layer.weight, layer.bias[:, None]])
    before = check.relative_error(start)
    after, strength, solved = min(
        ((check.relative_error(weight), strength, weight) for strength in RIDGE_STRENGTHS for weight in [fit.solve(start, strength)]),
        key=lambda candidate: candidate[0],
    )
    if after >= before:
        report.skipped.append((node_label(layer.node), f"not refit: no fit lowered its output error on check samples ({before:.4g})"))
        return
    if check is not fit:
        solved = fit.pooled(check).solve(start, strength)
    layer.write(solved[:, : layer.features], None if layer.bias is None else solved[:, -1], pruned.graph)
    report.layers.append(
        {
            "layer": node_label(layer.node),
            "features": layer.features,
            "original_features": target.original.features,
            "rows": fit.rows,
            "check_rows": check.rows if check is not fit else 0,
            "ridge_strength": strength,
            "error_before": before,
            "error_after": after,
        }
    )
