"""The typed options of each pruning pass, checked when they are built.

A pass reads only its own options object; the pipeline builds them from a
:class:`~onnxprune.config.PruneConfig`.  Invalid values raise
:class:`~onnxprune.errors.InputError` with the option's name.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from onnxprune import importance as importance_lib
from onnxprune.analysis.layer_candidates import KINDS
from onnxprune.errors import InputError

DEFAULT_ROUND_TO = 16
"""Channel counts stay multiples of 16, measured best with ``tools/bench_round_to.py``.

onnxruntime's CPU convolutions run in a blocked (NCHWc) layout whose block is
8 channels with AVX2 and 16 with AVX-512; a tensor whose channel count is not
a multiple of the block is padded to it (wasted work) and needs reorder
copies.  On an AVX-512 Xeon, ratio 0.5, one thread: ResNet-mini MACs fell
3.76x with ``round_to=8`` but latency only 2.16x (8-channel layers computed as
16); with ``round_to=16`` MACs fell 2.00x and latency 1.70x.  VGG-mini: 3.85x
MACs / 2.05x latency against 2.14x / 1.69x.  16 makes the speedup track the
MAC reduction (>= 0.8x of it) and is a multiple of both block sizes; pass 8 or
1 to trade that for more removed channels.
"""


@dataclass(frozen=True)
class ChannelOptions:
    """What the channel pass removes; see the module docstring for the meaning of each field."""

    ratio: float = 0.0
    global_ranking: bool = False
    min_channels: int = 1
    round_to: int = DEFAULT_ROUND_TO
    exclude: tuple[str, ...] = ()
    importance: str = "l1"
    remove_dead: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 <= self.ratio < 1.0:
            raise InputError(f"channel option 'ratio' must be a number in [0, 1), got {self.ratio!r}")
        for name in ("min_channels", "round_to"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"channel option '{name}' must be an integer >= 1, got {value!r}")
        for name in ("global_ranking", "remove_dead"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"channel option '{name}' must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.exclude, str) or not all(isinstance(item, str) for item in self.exclude):
            raise InputError(f"channel option 'exclude' must be a list of glob patterns, got {self.exclude!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.importance not in importance_lib.available_importances():
            raise InputError(
                f"channel option 'importance' must be one of: {', '.join(importance_lib.available_importances())}; got {self.importance!r}"
            )


_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class WeightOptions:
    """How much to prune; ``threshold``, ``sparsity`` and ``pattern`` combine in that order.

    ``threshold``: zero every weight with ``|w| <= threshold``.
    ``sparsity``: fraction in [0, 1] of zeros to reach, per tensor or ``scope="global"``.
    ``pattern``: ``"N:M"`` with ``0 < N < M``, e.g. ``"2:4"``.
    ``exclude``: glob patterns; a weight is left alone when one matches its
    initializer name or the name of a node that reads it.
    ``allow_empty``: let pruning zero a whole tensor (otherwise its largest weight stays).
    """

    threshold: float | None = None
    sparsity: float | None = None
    scope: Literal["tensor", "global"] = "tensor"
    pattern: str | None = None
    exclude: tuple[str, ...] = ()
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real):
                raise InputError(f"weight threshold must be a number >= 0, got {self.threshold!r}")
            if not np.isfinite(self.threshold) or self.threshold < 0:
                raise InputError(f"weight threshold must be a finite number >= 0, got {self.threshold}")
        if self.sparsity is not None:
            if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, numbers.Real):
                raise InputError(f"weight sparsity must be a number in [0, 1], got {self.sparsity!r}")
            if not 0 <= self.sparsity <= 1:
                raise InputError(f"weight sparsity must be in [0, 1], got {self.sparsity}")
        if self.scope not in ("tensor", "global"):
            raise InputError(f"weight scope must be 'tensor' or 'global', got {self.scope!r}")
        if self.pattern is not None:
            _parse_pattern(self.pattern)
        if isinstance(self.exclude, str) or not all(isinstance(glob, str) for glob in self.exclude):
            raise InputError(f"weight exclude must be a list of glob patterns, got {self.exclude!r}")
        # Stored as plain Python values so the options stay hashable and JSON-ready (numpy scalars, lists accepted).
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for name in ("threshold", "sparsity"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def n_m(self) -> tuple[int, int] | None:
        """The parsed ``pattern`` as ``(N, M)``."""
        return None if self.pattern is None else _parse_pattern(self.pattern)


def _parse_pattern(text: object) -> tuple[int, int]:
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(f"weight pattern must be 'N:M' with integers 0 < N < M (e.g. '2:4'), got {text!r}")
    keep, group = int(match.group(1)), int(match.group(2))
    if not 0 < keep < group:
        raise InputError(f"weight pattern must be 'N:M' with 0 < N < M (e.g. '2:4'), got {text!r}")
    return keep, group


@dataclass(frozen=True)
class LayerOptions:
    """What the layer pass bypasses and how it measures harm.

    ``bypass`` selects by name or glob and excludes ``auto``/``max_drift``;
    ``auto`` (at most K bypasses) and ``max_drift`` (stop before the drift
    would exceed X) may be combined.  ``kinds`` limits automatic selection to
    residual blocks and/or single layers.  ``calibration`` is an .npz whose
    keys are the graph's input names; without it ``samples`` random inputs
    are generated from ``seed``.  ``samples`` also caps how many batches of an
    .npz are used when the model's batch size is fixed.  ``input_shapes``
    resolves symbolic input dims for generated inputs (a mapping is accepted
    and stored as sorted pairs so the options stay hashable).
    """

    bypass: tuple[str, ...] = ()
    auto: int | None = None
    max_drift: float | None = None
    kinds: tuple[str, ...] = KINDS
    calibration: str | None = None
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    samples: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bypass", _string_tuple("bypass", self.bypass))
        object.__setattr__(self, "kinds", _string_tuple("kinds", self.kinds))
        object.__setattr__(self, "input_shapes", _shape_pairs(self.input_shapes))
        if any(not pattern.strip() for pattern in self.bypass):
            raise InputError("layer option 'bypass' contains an empty name")
        if self.auto is not None and (isinstance(self.auto, bool) or not isinstance(self.auto, int) or self.auto < 1):
            raise InputError(f"layer option 'auto' must be a positive integer, got {self.auto!r}")
        if self.max_drift is not None and (
            isinstance(self.max_drift, bool)
            or not isinstance(self.max_drift, (int, float))
            or not math.isfinite(self.max_drift)
            or self.max_drift < 0
        ):
            raise InputError(f"layer option 'max_drift' must be a finite number >= 0, got {self.max_drift!r}")
        if self.bypass and (self.auto is not None or self.max_drift is not None):
            raise InputError("layer options 'bypass' and 'auto'/'max_drift' exclude each other: choose by name or automatically")
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown or not self.kinds:
            raise InputError(f"layer option 'kinds' must be a non-empty subset of {', '.join(KINDS)}, got {self.kinds!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise InputError(f"layer option 'samples' must be a positive integer, got {self.samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"layer option 'seed' must be an integer, got {self.seed!r}")
        if self.calibration is not None and not isinstance(self.calibration, str):
            raise InputError(f"layer option 'calibration' must be a path to an .npz file, got {self.calibration!r}")

    @property
    def selects_anything(self) -> bool:
        """Whether these options ask for any bypass at all."""
        return bool(self.bypass) or self.auto is not None or self.max_drift is not None


def _string_tuple(option: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(item, str) for item in value):
        raise InputError(f"layer option '{option}' must be a list of strings, got {value!r}")
    return tuple(value)


def _shape_pairs(value: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = tuple(sorted((str(name), tuple(dims)) for name, dims in items))
    except (TypeError, ValueError):
        raise InputError(f"layer option 'input_shapes' must map input names to dimension lists, got {value!r}") from None
    for name, dims in pairs:
        if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 for dim in dims):
            raise InputError(f"layer option 'input_shapes': '{name}' needs positive integer dims, got {dims!r}")
    return pairs
