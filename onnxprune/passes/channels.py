"""Structured channel pruning across the whole graph: plan, validate, apply.

1. **Plan** (:func:`plan_channel_pruning`, read-only): discover the channel
   dependency groups (:mod:`onnxprune.analysis.dependency_walk`), score every
   prunable channel and choose which to remove
   (:mod:`~onnxprune.passes.channel_selection`), and compute every new
   initializer array, attribute value and shape constant
   (:mod:`~onnxprune.passes.channel_edits`).
2. **Validate**: the plan is applied to a copy of the model, which must pass
   ``onnx.checker`` (full check) and re-infer the channel counts the plan
   expects, with unchanged graph inputs and outputs.  Anything else raises
   :class:`ChannelPlanError` before the real model is touched
   (:mod:`~onnxprune.passes.channel_apply`).
3. **Apply**: the same edits on the model itself, then stale shapes are
   cleared and re-inferred.

A pass returns a :class:`ChannelResult` with its report and plan and keeps no
state of its own.  A plan that fails validation is the pass's own outcome:
the model stays as it was and the report says why.  :class:`DeadChannelPass`
removes only dead channels, which is exact, and says so in every result;
:class:`ChannelPruningPass` is exact only when it changes nothing.

Which channels go:

* ``remove_dead``: a channel whose value is a known constant wherever it is
  consumed (a zero filter and zero bias; a zero filter whose bias becomes
  ``relu(b)``, a BatchNormalization shift, ...) is removed *exactly*: its
  constant is folded into the consuming layer's bias (Conv without padding,
  Gemm), or it was zero anyway.
* ``ratio``: per group (default) the lowest-scoring fraction of its channels,
  or with ``global_ranking`` the lowest-scoring fraction of all prunable
  channels, scores being normalised per layer (see
  :mod:`onnxprune.importance`).  Dead channels count towards the ratio.
* ``overrides``: ``GLOB=RATIO`` per group whose pruned layer (node or output
  name) matches, in either mode; ``GLOB=keep`` leaves the group alone.
* ``min_channels``: every tensor whose channels change keeps at least this
  many.  ``round_to``: a group that loses channels keeps a multiple of this
  many (rounded up, never above the original count), so onnxruntime's
  blocked convolution kernels stay in use.  Dead channels obey the multiple
  too: a few dead channels removed from 64 would leave the layer off the fast
  path and slower, so they are kept until enough of them can go together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.cost import model_cost
from onnxprune.analysis.dependency_walk import discover_channel_groups
from onnxprune.errors import InputError
from onnxprune.options import DEFAULT_ROUND_TO, ChannelOptions
from onnxprune.passes import channel_apply
from onnxprune.passes.base import PassReport, PruningPass, PruningResult
from onnxprune.passes.channel_edits import compute_edits
from onnxprune.passes.channel_plan import ChannelPlan, ChannelPlanError, GroupPlan
from onnxprune.passes.channel_report import fill_report, group_plans, unchanged_weight_layers, unfolded_constants
from onnxprune.passes.channel_selection import select_channels, unit_scores
from onnxprune.reconstruct.capture import Feeds
from onnxprune.reconstruct.refit import refit_changed_layers
from onnxprune.reconstruct.saliency import data_unit_scores

__all__ = [
    "ChannelPlan",
    "ChannelPlanError",
    "ChannelPruningPass",
    "ChannelResult",
    "DeadChannelPass",
    "GroupPlan",
    "plan_channel_pruning",
]


def plan_channel_pruning(
    model: ir.Model, options: ChannelOptions, calibration: Sequence[Feeds] | None = None, scores: np.ndarray | None = None
) -> ChannelPlan:
    """Which channels go and every edit that removes them; the model is not changed.

    ``calibration`` batches are needed by the ``data`` importance (the
    default, ``auto``, uses them when given).  ``scores`` (one per unit, from
    :func:`channel_scores` on a model of the same structure) skips scoring:
    many plans for one model then share one scoring run.
    """
    channels = discover_channel_groups(model, options.exclude)
    criterion = resolved_importance(options, calibration)
    if scores is not None:
        if len(scores) != channels.num_units:
            raise ValueError(f"{len(scores)} precomputed scores for {channels.num_units} channel units: scored on another model")
    elif criterion == "data" and calibration:
        scores = data_unit_scores(model, channels, calibration, unit_scores(channels, "l1"), partial(_greedy_steps, options))
    selection = select_channels(channels, dataclasses.replace(options, importance=criterion) if scores is None else options, scores)
    edits = compute_edits(channels, selection.removed)
    groups = group_plans(channels, selection)
    skipped = unchanged_weight_layers(model, channels, edits.tensors, groups) + unfolded_constants(channels, selection.removed)
    return ChannelPlan(edits.tensors, edits.attributes, edits.cleared, edits.removed_positions, groups, skipped, channels, selection.removed, criterion)


def resolved_importance(options: ChannelOptions, calibration: Sequence[Feeds] | None) -> str:
    """The criterion ``options`` ask for, ``auto`` resolved: ``data`` with calibration data, else ``l1``."""
    criterion = options.importance
    if criterion == "auto":
        criterion = "data" if calibration else "l1"
    if criterion == "data" and not calibration:
        raise InputError("importance 'data' scores channels on calibration data: give --calibration")
    return criterion


def channel_scores(model: ir.Model, options: ChannelOptions, calibration: Sequence[Feeds] | None) -> np.ndarray | None:
    """The data-driven unit scores ``options`` would compute for ``model``, or None when they use a filter criterion."""
    if resolved_importance(options, calibration) != "data" or not calibration:
        return None
    channels = discover_channel_groups(model, options.exclude)
    return data_unit_scores(model, channels, calibration, unit_scores(channels, "l1"), partial(_greedy_steps, options))


def _greedy_steps(options: ChannelOptions, size: int) -> int:
    """How far the data-driven order must be searched in a group of ``size`` channels to cover the selection.

    Per group the ratio (plus what rounding may move); with global ranking a
    group may lose more than the ratio, so the search goes twice as far.
    """
    share = min(1.0, 2 * options.ratio) if options.global_ranking else options.ratio
    share = max([share, *(ratio for _, ratio in options.ratio_overrides())])
    return min(size, math.ceil(share * size) + options.round_to)


@dataclass
class ChannelResult(PruningResult):
    """A channel pass's result; ``plan`` is the plan it applied, None when the plan failed validation."""

    plan: ChannelPlan | None


class ChannelPruningPass(PruningPass):
    """Remove whole channels, with every dependent slice, across the graph; lossy unless nothing changes."""

    name = "channels"

    def __init__(
        self,
        options: ChannelOptions | None = None,
        calibration: Sequence[Feeds] | None = None,
        scores: np.ndarray | None = None,
        quick_refit: bool = False,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """``scores``: precomputed (see :func:`channel_scores`); ``quick_refit``: refit only the layers whose weights the plan edits (an estimate);
        ``shapes``: input shapes the report's MACs are counted at (a model with symbolic H and W counts few MACs without them)."""
        super().__init__()
        self.options = options or ChannelOptions()
        self.calibration = calibration
        self.scores = scores
        self.quick_refit = quick_refit
        self.shapes = shapes

    def call(self, model: ir.Model) -> ChannelResult:
        refit = self.options.reconstruct
        return _prune_channels(
            model,
            self.options,
            self.name,
            always_exact=False,
            calibration=self.calibration,
            refit=refit,
            scores=self.scores,
            quick_refit=self.quick_refit,
            shapes=self.shapes,
        )


class DeadChannelPass(PruningPass):
    """Remove only dead channels (constant wherever consumed, folded into the next layer): always exact.

    Only the options that shape that removal are taken: ``min_channels``,
    ``round_to`` (dead channels stay when removing them would break the
    multiple) and ``exclude``.
    """

    name = "dead_channels"

    def __init__(self, min_channels: int = 1, round_to: int = DEFAULT_ROUND_TO, exclude: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.options = ChannelOptions(min_channels=min_channels, round_to=round_to, exclude=exclude, remove_dead=True)

    def call(self, model: ir.Model) -> ChannelResult:
        return _prune_channels(model, self.options, self.name, always_exact=True)


def _prune_channels(
    model: ir.Model,
    options: ChannelOptions,
    name: str,
    always_exact: bool,
    calibration: Sequence[Feeds] | None = None,
    refit: bool = False,
    scores: np.ndarray | None = None,
    quick_refit: bool = False,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> ChannelResult:
    """Plan, check on a copy, apply, then (``refit``) refit on the ``calibration`` batches; MACs are counted at ``shapes``.

    A plan that fails validation leaves ``model`` alone and says why.
    """
    report = PassReport(name)
    try:
        plan = plan_channel_pruning(model, options, calibration, scores)
        irx.evict_model_pages(model)
        before = model_cost(model, shapes=shapes) if plan.changes_anything else None
        original = model.clone() if refit and calibration and plan.changes_anything else None
        original_node = {} if original is None else dict(zip(model.graph, original.graph))
        if plan.changes_anything:
            channel_apply.apply_checked(plan, model)
    except ChannelPlanError as error:
        report.skip("all channel groups", f"the channel plan failed validation and was not applied: {error}")
        return ChannelResult(model, False, report, exact=True, plan=None)
    refit_report = None
    if original is not None and calibration:
        refit_report = refit_changed_layers(original, model, original_node, plan.edited_nodes(), calibration, plan.kept_outputs(), edited_only=quick_refit)
    fill_report(report, plan, options, None if before is None else (before, model_cost(model, shapes=shapes)))
    if refit_report is not None:
        refit_report.add_to(report)
    modified = plan.changes_anything
    return ChannelResult(model, modified, report, exact=always_exact or not modified, plan=plan)
