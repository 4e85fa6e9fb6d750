"""Channel importance criteria: how much each output channel of a layer matters.

A criterion maps a layer's filters — one row per output channel, the weight
reshaped to ``[channels, fan_in]`` — to one non-negative score per channel.
L1 (the classic recipe of Li et al., "Pruning Filters for Efficient
ConvNets") is the default; L2 is offered; anything else can be registered by
name with :func:`register_importance`.

Scores of different layers live on different scales, so before channels of
several layers are compared (a residual group couples several layers; global
ranking compares all groups) each layer's scores are divided by their mean:
an average channel scores 1.0 in every layer.  The score of a coupled channel
is the mean of its members' normalised scores (see :func:`group_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from onnxprune.errors import InputError

ImportanceFn = Callable[[np.ndarray], np.ndarray]
"""``filters [channels, fan_in] -> scores [channels]``, larger means more important."""


def l1_importance(filters: np.ndarray) -> np.ndarray:
    """Sum of absolute weights of each channel's filter."""
    return np.abs(filters).sum(axis=1, dtype=np.float64)


def l2_importance(filters: np.ndarray) -> np.ndarray:
    """Euclidean norm of each channel's filter."""
    return np.sqrt(np.square(filters, dtype=np.float64).sum(axis=1))


_REGISTRY: dict[str, ImportanceFn] = {"l1": l1_importance, "l2": l2_importance}


def register_importance(name: str, function: ImportanceFn) -> None:
    """Make ``function`` selectable as ``ChannelOptions(importance=name)``."""
    if not name or not callable(function):
        raise InputError("register_importance needs a non-empty name and a callable")
    _REGISTRY[name] = function


def available_importances() -> tuple[str, ...]:
    """Names accepted by ``ChannelOptions.importance``."""
    return tuple(sorted(_REGISTRY))


def get_importance(name: str) -> ImportanceFn:
    """The criterion registered under ``name``."""
    if name not in _REGISTRY:
        raise InputError(f"importance '{name}' is not known; choose one of: {', '.join(available_importances())}")
    return _REGISTRY[name]


def layer_scores(function: ImportanceFn, filters: np.ndarray) -> np.ndarray:
    """Scores of one layer's channels, normalised so that their mean is 1.

    A criterion that returns the wrong shape or a negative / non-finite score
    is a bug in that criterion, reported as an input error naming it.
    """
    scores = np.asarray(function(filters), dtype=np.float64)
    if scores.shape != (filters.shape[0],) or not np.all(np.isfinite(scores)) or np.any(scores < 0):
        raise InputError(f"importance criterion returned {scores.shape} scores; expected {filters.shape[0]} finite non-negative values")
    mean = scores.mean() if scores.size else 0.0
    return scores / mean if mean > 0 else np.zeros_like(scores)


def group_scores(unit_of_atom: np.ndarray, num_units: int, members: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Score of each unit: the mean of the normalised scores of the source channels it couples.

    ``members`` holds, per source layer, its atoms and their normalised
    scores.  Units with no source channel (channels that come from outside
    any prunable layer) score +inf, so they are never chosen.
    """
    total = np.zeros(num_units)
    count = np.zeros(num_units)
    for atoms, scores in members:
        units = unit_of_atom[atoms]
        np.add.at(total, units, scores)
        np.add.at(count, units, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1.0), np.inf)
