"""Least squares in streaming form: the sums a refit needs, accumulated batch by batch.

A refit looks for the weight ``W`` (and bias) of a layer of the pruned model
whose output on the pruned model's inputs ``X`` best matches what the
ORIGINAL layer produced on the original model's inputs, ``Y``:

    minimise  ||[X, 1] Wᵀ - Y||² + λ ||W - W₀||²

where ``W₀`` is where the refit starts (the original weight with the removed
input channels sliced out).  Only ``[X, 1]ᵀ[X, 1]`` (features × features),
``[X, 1]ᵀY`` (features × outputs) and ``||Y||²`` are kept, so the activations
themselves are never held beyond one batch, and the residual of any candidate
weight can be computed from the same sums (to report the error before and
after the refit).

λ pulls toward ``W₀``.  It is negligible while the layer sees at least
:data:`WELL_POSED_ROWS_PER_FEATURE` rows per feature (so a fit that can be exact is
exact) and grows with how underdetermined the fit is below that: a layer
that sees fewer rows than it has features (the dense layer after a flatten
sees one row per sample) stays close to its start instead of fitting noise.
The bias column is not pulled.
"""

from __future__ import annotations

import copy
from typing import Self

import numpy as np

BASE_RIDGE = 1e-6
"""λ relative to the mean feature energy when the fit is well posed: only keeps the system solvable."""
WELL_POSED_ROWS_PER_FEATURE = 4
"""Below this many rows per feature λ grows with the square of the shortfall (measured on the digits CNN:
a linear or no penalty loses 0.5-3 points of accuracy on its underdetermined dense layer)."""


def relative_ridge(features: int, rows: int) -> float:
    """λ relative to the mean feature energy: :data:`BASE_RIDGE`, plus the square of the shortfall below
    :data:`WELL_POSED_ROWS_PER_FEATURE` rows per feature."""
    crowding = max(0.0, features / max(rows, 1) - 1.0 / WELL_POSED_ROWS_PER_FEATURE)
    return BASE_RIDGE + crowding**2


class _RunningSums:
    """What both kinds of equations keep are sums over rows (``gram``, ``cross``, ``target_energy``, ``rows``),
    so two sets of rows pool by adding them."""

    _SUMS = ("gram", "cross", "target_energy", "rows")

    def pooled(self, other: _RunningSums) -> Self:
        """These sums and ``other``'s (the same kind, for the same layer) together: as if every row had been added to one."""
        pooled = copy.copy(self)
        for name in self._SUMS:
            setattr(pooled, name, getattr(self, name) + getattr(other, name))
        return pooled


class NormalEquations(_RunningSums):
    """Running sums for one layer's refit; ``bias`` adds the constant column."""

    def __init__(self, features: int, outputs: int, bias: bool) -> None:
        width = features + int(bias)
        self.bias = bias
        self.gram = np.zeros((width, width))
        self.cross = np.zeros((width, outputs))
        self.target_energy = 0.0
        self.rows = 0

    def add(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """One batch: ``inputs`` (rows × features) of the pruned model, ``targets`` (rows × outputs) of the original."""
        if self.bias:
            inputs = np.hstack([inputs, np.ones((len(inputs), 1))])
        single = inputs.astype(np.float32)
        self.gram += single.T @ single
        self.cross += (single.T @ targets.astype(np.float32)).astype(np.float64)
        self.target_energy += float(np.square(targets).sum())
        self.rows += len(inputs)

    def ridge(self) -> float:
        """λ for this fit: scaled to the features' energy and to features per row."""
        features = self.gram.shape[0] - int(self.bias)
        diagonal = np.diag(self.gram)[:features]
        energy = float(diagonal.mean()) if features else 0.0
        return energy * relative_ridge(features, self.rows) or 1e-12

    def solve(self, start: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """The refit weight (outputs × features[+1]), pulled toward ``start`` (same layout) by ``strength`` × λ."""
        penalty = np.full(self.gram.shape[0], strength * self.ridge())
        if self.bias:
            penalty[-1] = 0.0
        system = self.gram + np.diag(penalty)
        right = self.cross + penalty[:, None] * start.T
        try:
            return np.linalg.solve(system, right).T
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(system, right, rcond=None)[0].T

    def relative_error(self, weight: np.ndarray) -> float:
        """``||[X, 1] Wᵀ - Y||² / ||Y||²`` over every row added, for a weight in the solve layout."""
        if self.target_energy == 0.0:
            return 0.0
        fitted = float(np.einsum("oi,ij,oj->", weight, self.gram, weight))
        residual = fitted - 2.0 * float(np.einsum("oi,io->", weight, self.cross)) + self.target_energy
        return max(residual, 0.0) / self.target_energy


class ChannelwiseEquations(_RunningSums):
    """The same least squares for a depthwise layer: one independent fit per channel, from its own input channel.

    Inputs are ``(rows, channels, features)``, targets ``(rows, channels)``;
    each channel gets the bias column and the ridge rule of
    :class:`NormalEquations`.
    """

    def __init__(self, channels: int, features: int) -> None:
        width = features + 1
        self.gram = np.zeros((channels, width, width))
        self.cross = np.zeros((channels, width))
        self.target_energy = np.zeros(channels)
        self.rows = 0

    def add(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """One batch: ``inputs`` (rows × channels × features) of the pruned model, ``targets`` (rows × channels)."""
        inputs = np.concatenate([inputs, np.ones((*inputs.shape[:2], 1))], axis=2)
        self.gram += np.einsum("nci,ncj->cij", inputs, inputs)
        self.cross += np.einsum("nci,nc->ci", inputs, targets)
        self.target_energy += np.square(targets).sum(axis=0)
        self.rows += len(inputs)

    def solve(self, start: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Per channel, the refit ``[weights, bias]`` (channels × features+1), pulled toward ``start`` by ``strength`` × λ."""
        features = self.gram.shape[1] - 1
        energy = np.einsum("cii->c", self.gram[:, :features, :features]) / max(features, 1)
        penalty = (strength * energy * relative_ridge(features, self.rows))[:, None] * np.r_[np.ones(features), 0.0]
        system = self.gram + penalty[:, :, None] * np.eye(features + 1) + 1e-12 * np.eye(features + 1)
        return np.linalg.solve(system, (self.cross + penalty * start)[:, :, None])[:, :, 0]

    def relative_error(self, weight: np.ndarray) -> float:
        """Squared error over all channels relative to the target's energy, for ``[weights, bias]`` per channel."""
        total = float(self.target_energy.sum())
        if total == 0.0:
            return 0.0
        fitted = float(np.einsum("ci,cij,cj->", weight, self.gram, weight))
        residual = fitted - 2.0 * float(np.einsum("ci,ci->", weight, self.cross)) + total
        return max(residual, 0.0) / total
