"""Data-driven channel scores: how much output error a channel's removal leaves once its consumers are refit.

For one consumer layer with input features ``X`` (im2col patches, or rows)
and weight ``W``, removing the features ``F_u`` of a channel ``u`` and
refitting the rest by least squares raises the squared output error by

    Δ_u = tr( W[:, F_u] · ((G⁻¹)[F_u, F_u])⁻¹ · W[:, F_u]ᵀ ),   G = XᵀX / rows,

the block form of Optimal Brain Surgeon's saliency (Hassibi & Stork; the
least-squares view of He et al. 2017 and ThiNet).  It is what the refit in
:mod:`~onnxprune.reconstruct.refit` will recover, so a channel that is large
but redundant (its information is carried by others) scores low, and a small
one that nothing else carries scores high: the L1 norm of a filter cannot
tell these apart.

Each consumer's Δ is divided by its output energy ``tr(W G Wᵀ)``, so
consumers count alike whatever their scale; a channel read by several
consumers (a residual stream, a Concat) sums its shares.  ``G`` is measured
on the ORIGINAL model, in one pass over the fit data.  A group none of whose
consumers can be measured this way (a ConvTranspose, a grouped conv) keeps
the filter-norm score it would have had without data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import ChannelGraph, Sink
from onnxprune.progress import progress
from onnxprune.reconstruct.capture import MIN_ROWS, Feeds, ValueReader, in_chunks, row_budget, shuffled
from onnxprune.reconstruct.linear import LinearLayer, linear_layer
from onnxprune.reconstruct.normal_equations import WELL_POSED_ROWS_PER_FEATURE

DAMPING = 1e-2
"""Added to G's diagonal, relative to its mean: keeps G⁻¹ finite when features are collinear (as in OBS/GPTQ)."""


def data_unit_scores(
    model: ir.Model,
    channels: ChannelGraph,
    batches: Sequence[Feeds],
    fallback: np.ndarray,
    steps: Callable[[int], int],
    seed: int = 0,
) -> np.ndarray:
    """Per unit of ``channels``: a score that orders removals greedily by the error they leave after refit.

    Per group, ``steps(size)`` units are removed one at a time, each time the
    one whose removal (after the removals before it) leaves the least error,
    and scored by the largest error seen so far, so scores rise along the
    removal order and compare across groups; units the greedy search did
    not reach score above all it removed.  ``fallback`` scores groups
    without a measurable consumer, and locked or sourceless units.
    """
    sinks = [
        (sink, layer)
        for sink in channels.sinks
        if not isinstance(layer := linear_layer(sink.node), str) and layer.kind != "depthwise" and _block(sink, layer)
    ]
    if not sinks or not batches:
        return fallback
    grams = _grams(model, sinks, in_chunks(model, batches), seed)
    feature_units = [channels.unit_of_atom[np.repeat(sink.atoms, _block(sink, layer))] for sink, layer in sinks]
    scores = fallback.copy()
    candidates = ~channels.unit_locked & np.isfinite(fallback)
    with progress(f"ordering channels by the error they leave ({channels.num_groups} group(s))", total=channels.num_groups) as advance:
        for group in range(channels.num_groups):
            units = np.flatnonzero((channels.group_of_unit == group) & candidates)
            touching = [index for index, features in enumerate(feature_units) if np.isin(features, units).any()]
            if len(units) and touching:
                states = [_Consumer(sinks[index][1].weight, grams[index], feature_units[index]) for index in touching]
                scores[units] = _greedy_order(units, states, steps(len(units)))
            advance(1)
    return scores


class _Consumer:
    """One consumer during the greedy search: its refit weight and the inverse Gram of its remaining features."""

    def __init__(self, weight: np.ndarray, gram: np.ndarray, units: np.ndarray) -> None:
        damped = gram + DAMPING * max(float(np.mean(np.diag(gram))), 1e-12) * np.eye(len(gram))
        self.inverse = np.linalg.inv(damped)
        self.weight = weight.copy()
        self.units = units
        self.energy = float(np.einsum("oi,ij,oj->", weight, gram, weight)) or 1.0

    def errors(self, units: np.ndarray) -> np.ndarray:
        """Per unit, the error (relative to this consumer's output energy) its removal would add; 0 for units not read here."""
        errors = np.zeros(len(units))
        members = [np.flatnonzero(self.units == unit) for unit in units]
        for size in {len(indices) for indices in members} - {0}:
            chosen = [position for position, indices in enumerate(members) if len(indices) == size]
            index = np.stack([members[position] for position in chosen])
            blocks = self.inverse[index[:, :, None], index[:, None, :]]
            columns = self.weight[:, index].transpose(1, 0, 2)
            solved = np.linalg.solve(blocks, columns.transpose(0, 2, 1))
            errors[chosen] = np.einsum("uos,uso->u", columns, solved) / self.energy
        return errors

    def remove(self, unit: int) -> None:
        """Drop the unit's features and move the optimal refit weight and the inverse Gram onto the rest (OBS update)."""
        index = np.flatnonzero(self.units == unit)
        if not len(index):
            return
        rows = self.inverse[index]
        coupling = np.linalg.solve(self.inverse[np.ix_(index, index)], rows)
        self.weight -= self.weight[:, index] @ coupling
        self.inverse -= rows.T @ coupling
        self.weight[:, index] = 0.0
        self.inverse[index] = 0.0
        self.inverse[:, index] = 0.0
        self.inverse[index, index] = 1.0
        self.units = np.where(self.units == unit, -1, self.units)


def _greedy_order(units: np.ndarray, consumers: list[_Consumer], steps: int) -> np.ndarray:
    """Scores of ``units``: the running maximum of the error at which each was removed; unreached units above all."""
    scores = np.full(len(units), np.nan)
    alive = np.ones(len(units), dtype=bool)
    worst = 0.0
    errors = np.zeros(len(units))
    for _ in range(min(steps, len(units))):
        errors = sum((consumer.errors(units) for consumer in consumers), np.zeros(len(units)))
        errors[~alive] = np.inf
        position = int(np.argmin(errors))
        worst = max(worst, float(errors[position]))
        scores[position] = worst
        alive[position] = False
        for consumer in consumers:
            consumer.remove(int(units[position]))
    if alive.any():
        errors = sum((consumer.errors(units) for consumer in consumers), np.zeros(len(units)))
        scores[alive] = worst + 1.0 + errors[alive]
    return scores


def _block(sink: Sink, layer: LinearLayer) -> int:
    """Features per channel position at this consumer (k·k for a Conv, H·W after a Flatten); 0 if they do not tile."""
    positions = len(sink.atoms)
    return layer.features // positions if positions and layer.features % positions == 0 else 0


def _grams(model: ir.Model, sinks: list[tuple[Sink, LinearLayer]], batches: Sequence[Feeds], seed: int) -> list[np.ndarray]:
    """``XᵀX / rows`` of every consumer's input features on the original model, in one pass over the batches."""
    rng = np.random.default_rng(seed)
    reader = ValueReader(model, [layer.data for _, layer in sinks])
    sums = [np.zeros((layer.features, layer.features)) for _, layer in sinks]
    rows = [0] * len(sinks)
    budgets = [row_budget(WELL_POSED_ROWS_PER_FEATURE * layer.features + MIN_ROWS, batches) for _, layer in sinks]
    with progress(f"measuring the inputs of {len(sinks)} consumer(s) on up to {len(batches)} batch(es)", total=len(batches)) as advance:
        for feeds in shuffled(batches, rng):
            if all(count >= budget.total for count, budget in zip(rows, budgets)):
                break
            for index, ((_, layer), budget, data) in enumerate(zip(sinks, budgets, reader.read(feeds))):
                features = layer.rows(data, layer.positions(data.shape, budget.per_chunk, rng)).astype(np.float32)
                sums[index] += features.T @ features
                rows[index] += len(features)
            advance(1)
    return [total / max(count, 1) for total, count in zip(sums, rows)]
