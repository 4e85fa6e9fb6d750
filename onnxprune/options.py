"""Every option of onnxprune, declared once: a typed dataclass per family.

A pass reads only its own options object (:class:`LayerOptions`,
:class:`ChannelOptions`, :class:`WeightOptions`); the pipeline-level families
say which steps run, how validation and timing are done, which quality gates
apply and how the output is stored.  Each field is declared with
:func:`~onnxprune.option_spec.option` — its config key and ``--flag``, help,
bounds and checks — and :mod:`onnxprune.config` and :mod:`onnxprune.cli` are
built from these declarations.  To add an option, add one field here and list
a new family in :data:`FAMILIES`.  Invalid values raise
:class:`~onnxprune.errors.InputError` naming the option.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from onnxprune import importance as importance_lib
from onnxprune.analysis.layer_candidates import KINDS
from onnxprune.errors import InputError
from onnxprune.option_spec import OptionFamily, filled_from, option
from onnxprune.validate import DEFAULT_ATOL, DEFAULT_RTOL

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


def parse_input_shapes(items: tuple[str, ...], name: str = "--input-shape") -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=1,3,224,224`` entries into a name -> shape map."""
    shapes = {}
    for item in items:
        input_name, _, dims = item.partition("=")
        try:
            shape = tuple(int(dim) for dim in dims.split(","))
        except ValueError:
            shape = ()
        if not input_name or not shape or any(dim < 1 for dim in shape):
            raise InputError(f"{name} '{item}': expected NAME=D0,D1,... with positive integers")
        shapes[input_name] = shape
    return shapes


def _check_input_shapes(items: tuple[str, ...], name: str) -> tuple[str, ...]:
    parse_input_shapes(items, name)
    return items


@dataclass(frozen=True)
class StepOptions(OptionFamily):
    """The steps around pruning that can be switched off."""

    title: ClassVar[str] = "pipeline steps"
    label: ClassVar[str] = "step '{}'"

    simplify: bool = option(
        True, flag="simplify", help="fold computed weights into initializers first (onnxsim; onnxscript for external data; skipped when nothing folds)"
    )
    validate: bool = option(True, flag="validate", help="compare the pruned model with the original in onnxruntime")
    bench: bool = option(True, flag="bench", help="time the pruned model against the original in onnxruntime")


@dataclass(frozen=True)
class ValidationOptions(OptionFamily):
    """Inputs of validation (and of layer scoring), and the tolerances of the equivalence check."""

    title: ClassVar[str] = "validation inputs and tolerances"
    label: ClassVar[str] = "validation option '{}'"

    inputs: str | None = option(None, flag="inputs", help="npz of inputs for validation (keys = input names)", path=True)
    calibration: str | None = option(
        None,
        flag="calibration",
        help="calibration samples: an npz or a folder of npz/npy files, keyed by input name (optional 'labels'); "
        "a fit part tunes pruning, a held-out part validates",
        path=True,
    )
    labels: str | None = option(
        None,
        flag="labels",
        help="labels for --calibration samples (.npy, or .npz with a 'labels' array): validation reports task accuracy on the held-out part",
        path=True,
    )
    input_shape: tuple[str, ...] = option(
        (), flag="input-shape", help="NAME=D0,D1,... for inputs with symbolic dims", items="NAME=D0,D1,... strings", check=_check_input_shapes
    )
    samples: int = option(3, flag="samples", help="generated input samples when no npz is given", minimum=1)
    seed: int = option(0, flag="seed", help="seed for generated inputs", minimum=0)
    rtol: float = option(DEFAULT_RTOL, flag="rtol", help="relative tolerance of the equivalence check", minimum=0.0)
    atol: float = option(DEFAULT_ATOL, flag="atol", help="absolute tolerance of the equivalence check", minimum=0.0)


def _no_empty_names(patterns: tuple[str, ...], name: str) -> tuple[str, ...]:
    if any(not pattern.strip() for pattern in patterns):
        raise InputError(f"{name} contains an empty name")
    return patterns


def _not_empty(items: tuple[str, ...], name: str) -> tuple[str, ...]:
    if not items:
        raise InputError(f"{name} must not be empty")
    return items


def _shape_pairs(value: Any, name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Input shapes as sorted ``(name, dims)`` pairs, so the options stay hashable.

    Accepts a mapping, pairs, or the ``NAME=D0,D1,...`` strings of ``--input-shape``.
    """
    if isinstance(value, (tuple, list)) and all(isinstance(item, str) for item in value):
        value = parse_input_shapes(tuple(value), name)
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = tuple(sorted((str(input_name), tuple(dims)) for input_name, dims in items))
    except (TypeError, ValueError):
        raise InputError(f"{name} must map input names to dimension lists, got {value!r}") from None
    for input_name, dims in pairs:
        if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 for dim in dims):
            raise InputError(f"{name}: '{input_name}' needs positive integer dims, got {dims!r}")
    return pairs


@dataclass(frozen=True)
class LayerOptions(OptionFamily):
    """What the layer pass bypasses and how it measures harm.

    ``bypass`` selects by name or glob and excludes ``auto``/``max_drift``;
    ``auto`` (at most K bypasses) and ``max_drift`` (stop before the drift
    would exceed X) may be combined.  ``kinds`` limits automatic selection to
    residual blocks and/or single layers.  The other fields are filled from
    the validation options: ``calibration`` is an .npz whose keys are the
    graph's input names; without it ``samples`` random inputs are generated
    from ``seed``.  ``samples`` also caps how many batches of an .npz are used
    when the model's batch size is fixed.  ``input_shapes`` resolves symbolic
    input dims for generated inputs (a mapping is accepted and stored as
    sorted pairs so the options stay hashable).
    """

    title: ClassVar[str] = "layer bypass"
    label: ClassVar[str] = "layer option '{}'"

    bypass: tuple[str, ...] = option(
        (), flag="bypass", help="bypass layers or residual branches by node or value name (glob)", check=_no_empty_names
    )
    auto: int | None = option(None, flag="bypass-auto", help="bypass the K layers whose removal changes the outputs least", minimum=1)
    max_drift: float | None = option(
        None, flag="bypass-max-drift", help="bypass greedily while the relative output drift stays under X", minimum=0.0
    )
    kinds: tuple[str, ...] = option(KINDS, flag="bypass-kinds", help="what --bypass-auto/--bypass-max-drift may remove", choices=KINDS, check=_not_empty)
    calibration: str | None = filled_from(ValidationOptions, "calibration", None)
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = filled_from(ValidationOptions, "input_shape", (), check=_shape_pairs)
    samples: int = filled_from(ValidationOptions, "samples", 4)
    seed: int = filled_from(ValidationOptions, "seed", 0)

    @classmethod
    def check_together(cls, values: Mapping[str, Any], quoted: Callable[[str], str]) -> None:
        """Choosing by name and choosing automatically exclude each other."""
        if values.get("bypass") and (values.get("auto") is not None or values.get("max_drift") is not None):
            raise InputError(
                f"layer options {quoted('bypass')} and {quoted('auto')}/{quoted('max_drift')} exclude each other: choose by name or automatically"
            )

    @property
    def selects_anything(self) -> bool:
        """Whether these options ask for any bypass at all."""
        return bool(self.bypass) or self.auto is not None or self.max_drift is not None


DATA_IMPORTANCE = ("auto", "data")
"""Importance names beside the registered filter criteria: ``data`` scores channels on calibration data
(:mod:`onnxprune.reconstruct.saliency`); ``auto`` is ``data`` when calibration data is given, else ``l1``."""


KEEP = "keep"
"""The override value that leaves a group's channels alone."""


def parse_channel_overrides(items: tuple[str, ...], name: str = "--channel-override") -> tuple[tuple[str, float], ...]:
    """``GLOB=RATIO`` / ``GLOB=keep`` entries as ``(glob, ratio)`` pairs, ``keep`` being ratio 0."""
    pairs = []
    for item in items:
        pattern, _, text = item.rpartition("=")
        try:
            ratio = 0.0 if text.strip() == KEEP else float(text)
        except ValueError:
            ratio = math.nan
        if not pattern.strip() or not 0.0 <= ratio < 1.0:
            raise InputError(f"{name} '{item}': expected GLOB=RATIO with 0 <= RATIO < 1, or GLOB={KEEP}")
        pairs.append((pattern, ratio))
    return tuple(pairs)


def _check_channel_overrides(items: tuple[str, ...], name: str) -> tuple[str, ...]:
    parse_channel_overrides(items, name)
    return items


def _registered_importance(name_of_criterion: str, name: str) -> str:
    known = (*DATA_IMPORTANCE, *importance_lib.available_importances())
    if name_of_criterion not in known:
        raise InputError(f"{name} must be one of: {', '.join(known)}; got {name_of_criterion!r}")
    return name_of_criterion


@dataclass(frozen=True)
class ChannelOptions(OptionFamily):
    """What the channel pass removes; the help of each field says what it means."""

    title: ClassVar[str] = "channel pruning"
    label: ClassVar[str] = "channel option '{}'"

    ratio: float = option(
        0.0,
        flag="channel-ratio",
        help="fraction of each channel group's channels to remove",
        minimum=0.0,
        maximum=1.0,
        exclusive_maximum=True,
        config_default=None,
    )
    global_ranking: bool = option(
        False, flag="channel-global", help="rank channels across groups and remove the ratio of all prunable channels"
    )
    min_channels: int = option(1, flag="min-channels", help="never leave a group with fewer channels than this", minimum=1)
    round_to: int = option(
        DEFAULT_ROUND_TO, flag="round-to", help="keep channel counts a multiple of K (onnxruntime's blocked CPU kernels); 1 disables", minimum=1
    )
    exclude: tuple[str, ...] = option(
        (), flag="channel-exclude", help="leave channels of matching nodes or values alone (glob)", items="glob patterns"
    )
    overrides: tuple[str, ...] = option(
        (),
        flag="channel-override",
        help="GLOB=RATIO or GLOB=keep: the ratio for the groups whose pruned layer matches (first match wins), in every mode",
        items="GLOB=RATIO strings",
        check=_check_channel_overrides,
    )
    importance: str = option(
        "auto",
        flag="importance",
        help="channel importance: data (error left after refit, on --calibration), l1 or l2 (or one registered with "
        "onnxprune.importance); auto: data with --calibration, else l1",
        check=_registered_importance,
    )
    remove_dead: bool = option(
        True, flag="dead-channels", help="remove channels whose output is constant, folding it exactly into the next layer"
    )
    reconstruct: bool = option(
        True,
        flag="reconstruct",
        help="with --calibration: refit every layer after a pruned channel by least squares so it reproduces the original's output",
    )

    def ratio_overrides(self) -> tuple[tuple[str, float], ...]:
        """``overrides`` parsed: ``(glob, ratio)`` pairs in the order given."""
        return parse_channel_overrides(self.overrides, "channel option 'overrides'")


_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def _parse_pattern(text: object, name: str = "weight pattern") -> tuple[int, int]:
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(f"{name} must be 'N:M' with integers 0 < N < M (e.g. '2:4'), got {text!r}")
    keep, group = int(match.group(1)), int(match.group(2))
    if not 0 < keep < group:
        raise InputError(f"{name} must be 'N:M' with 0 < N < M (e.g. '2:4'), got {text!r}")
    return keep, group


def _check_pattern(text: str, name: str) -> str:
    _parse_pattern(text, name)
    return text


@dataclass(frozen=True)
class WeightOptions(OptionFamily):
    """How much to prune; ``threshold``, ``sparsity`` and ``pattern`` combine in that order.

    ``threshold``: zero every weight with ``|w| <= threshold``.
    ``sparsity``: fraction in [0, 1] of zeros to reach, per tensor or ``scope="global"``.
    ``pattern``: ``"N:M"`` with ``0 < N < M``, e.g. ``"2:4"``.
    ``exclude``: glob patterns; a weight is left alone when one matches its
    initializer name or the name of a node that reads it.
    ``allow_empty``: let pruning zero a whole tensor (otherwise its largest weight stays).
    """

    title: ClassVar[str] = "weight pruning"
    label: ClassVar[str] = "weight {}"

    threshold: float | None = option(None, flag="weight-threshold", help="zero every selected weight with |w| <= T", minimum=0.0)
    sparsity: float | None = option(
        None, flag="weight-sparsity", help="zero the smallest-magnitude fraction S of the weights", minimum=0.0, maximum=1.0
    )
    scope: Literal["tensor", "global"] = option("tensor", flag="weight-scope", help="reach the sparsity per tensor or over all weights together")
    pattern: str | None = option(
        None, flag="weight-pattern", help="N:M pattern: at most N of every M weights along the reduction axis", check=_check_pattern
    )
    exclude: tuple[str, ...] = option(
        (), flag="exclude", help="leave matching weights (initializer or node name, glob) alone", items="glob patterns"
    )
    allow_empty: bool = option(False, flag="weight-allow-empty", help="allow global sparsity to zero a whole tensor")

    @property
    def n_m(self) -> tuple[int, int] | None:
        """The parsed ``pattern`` as ``(N, M)``."""
        return None if self.pattern is None else _parse_pattern(self.pattern)

    @property
    def prunes_anything(self) -> bool:
        """Whether these options ask for any weight to be zeroed."""
        return any(value is not None for value in (self.threshold, self.sparsity, self.pattern))


@dataclass(frozen=True)
class TargetOptions(OptionFamily):
    """A target instead of a ratio: the channel cut that reaches it with the least drift (see :mod:`onnxprune.target`)."""

    title: ClassVar[str] = "target mode"
    label: ClassVar[str] = "target option '{}'"

    speedup: float | None = option(
        None, flag="target-speedup", help="cut channels until onnxruntime runs the model S times faster (measured, --threads)", minimum=1.0
    )
    macs: float | None = option(
        None, flag="target-macs", help="cut channels until MACs are at most R times the original's", minimum=0.0, maximum=1.0, exclusive_maximum=True
    )
    params: float | None = option(
        None, flag="target-params", help="cut channels until parameters are at most R times the original's", minimum=0.0, maximum=1.0, exclusive_maximum=True
    )
    jobs: int = option(1, flag="jobs", help="local processes that probe channel groups' sensitivity in parallel", minimum=1)
    sensitivity_cache: str | None = option(
        None, flag="sensitivity-cache", help="folder of cached sensitivity tables (default: $ONNXPRUNE_CACHE_DIR or ~/.cache/onnxprune)", path=True
    )

    @classmethod
    def check_together(cls, values: Mapping[str, Any], quoted: Callable[[str], str]) -> None:
        """One target at a time: they would pull the search in different directions."""
        given = [name for name in ("speedup", "macs", "params") if values.get(name) is not None]
        if len(given) > 1:
            raise InputError(f"target options {' and '.join(quoted(name) for name in given)} exclude each other: ask for one target")

    def asked(self) -> tuple[str, float]:
        """The target given, as (kind, value); kind is ``speedup``, ``macs`` or ``params``."""
        for kind in ("speedup", "macs", "params"):
            value = getattr(self, kind)
            if value is not None:
                return kind, float(value)
        raise ValueError("no target given")

    @property
    def given(self) -> bool:
        return any(value is not None for value in (self.speedup, self.macs, self.params))


@dataclass(frozen=True)
class TimingOptions(OptionFamily):
    """How the original and the pruned model are timed against each other."""

    title: ClassVar[str] = "timing"
    label: ClassVar[str] = "timing option '{}'"

    runs: int = option(50, flag="runs", help="timed runs per model", minimum=1)
    warmup: int = option(5, flag="warmup", help="untimed warm-up runs per model", minimum=0)
    threads: int = option(1, flag="threads", help="onnxruntime intra-op threads", minimum=1)


@dataclass(frozen=True)
class GateOptions(OptionFamily):
    """The quality gates: limits a build step sets on what pruning may cost (None: no gate)."""

    title: ClassVar[str] = "quality gates"
    label: ClassVar[str] = "gate '{}'"

    max_abs_diff: float | None = option(None, flag="max-abs-diff", help="fail when any output differs by more than X", minimum=0.0)
    min_cosine: float | None = option(
        None, flag="min-cosine", help="fail when an output's cosine similarity falls below C", minimum=-1.0, maximum=1.0
    )
    min_top1_agreement: float | None = option(
        None, flag="min-top1-agreement", help="fail when top-1 classes agree on less than this fraction", minimum=0.0, maximum=1.0
    )
    min_accuracy: float | None = option(
        None, flag="min-accuracy", help="fail when accuracy on --calibration labels falls below A", minimum=0.0, maximum=1.0
    )
    min_speedup: float | None = option(None, flag="min-speedup", help="fail when the measured speedup is below S", minimum=0.0)
    max_macs_ratio: float | None = option(None, flag="max-macs-ratio", help="fail when pruned MACs exceed R times the original", minimum=0.0)


@dataclass(frozen=True)
class OutputOptions(OptionFamily):
    """How the pruned model is written."""

    title: ClassVar[str] = "output"
    label: ClassVar[str] = "output option '{}'"

    sparse_storage: bool = option(False, flag="sparse-storage", help="store mostly-zero weights in sparse form (Constant sparse_value) where smaller")
    external_data: bool = option(False, flag="external-data", help="store weights in OUT.<content hash>.data beside the model")


FAMILIES: tuple[type[OptionFamily], ...] = (
    StepOptions,
    LayerOptions,
    ChannelOptions,
    TargetOptions,
    WeightOptions,
    ValidationOptions,
    TimingOptions,
    GateOptions,
    OutputOptions,
)
"""Every option family, in the order of the config keys, the report and ``--help``."""
