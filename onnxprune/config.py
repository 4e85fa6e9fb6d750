"""Every option of ``onnxprune prune``, from the command line, a TOML file or pyproject.toml.

One table (:data:`OPTIONS`) defines each option once — its type, default,
allowed values and help — and both the argument parser and the config-file
reader are built from it, so the two can never disagree on a name or a check.
Config files use the command-line names (``channel-ratio = 0.5``; underscores
are accepted too).  Command-line values override the file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from onnxprune.errors import InputError
from onnxprune.options import DEFAULT_ROUND_TO


@dataclass(frozen=True)
class Option:
    """One option: its name on the command line and in config files, and how to check it."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    many: bool = False
    group: str = "pipeline"

    @property
    def key(self) -> str:
        """The Python attribute name."""
        return self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    # Pipeline steps.
    Option("simplify", bool, True, "simplify with onnxsim first (folds Constant weights into initializers)"),
    Option("validate", bool, True, "compare the pruned model with the original in onnxruntime"),
    Option("bench", bool, True, "time the pruned model against the original in onnxruntime"),
    # Layer bypass.
    Option("bypass", str, (), "bypass layers or residual branches by node or value name (glob)", many=True, group="layers"),
    Option("bypass-auto", int, None, "bypass the K layers whose removal changes the outputs least", minimum=1, group="layers"),
    Option("bypass-kinds", str, ("residual", "layer"), "what --bypass-auto/--bypass-max-drift may remove", choices=("residual", "layer"), many=True, group="layers"),
    Option("bypass-max-drift", float, None, "bypass greedily while the relative output drift stays under X", minimum=0.0, group="layers"),
    # Channel pruning.
    Option("channel-ratio", float, None, "fraction of each channel group's channels to remove", minimum=0.0, maximum=0.99, group="channels"),
    Option("channel-global", bool, False, "rank channels across groups and remove the ratio of all prunable channels", group="channels"),
    Option("min-channels", int, 1, "never leave a group with fewer channels than this", minimum=1, group="channels"),
    Option("round-to", int, DEFAULT_ROUND_TO, "keep channel counts a multiple of K (onnxruntime's blocked CPU kernels); 1 disables", minimum=1, group="channels"),
    Option("channel-exclude", str, (), "leave channels of matching nodes or values alone (glob)", many=True, group="channels"),
    Option("importance", str, "l1", "channel importance criterion: l1 or l2 (or one registered with onnxprune.importance)", group="channels"),
    Option("dead-channels", bool, True, "remove channels whose output is constant, folding it exactly into the next layer", group="channels"),
    # Weight pruning.
    Option("weight-threshold", float, None, "zero every selected weight with |w| <= T", minimum=0.0, group="weights"),
    Option("weight-sparsity", float, None, "zero the smallest-magnitude fraction S of the weights", minimum=0.0, maximum=1.0, group="weights"),
    Option("weight-scope", str, "tensor", "reach the sparsity per tensor or over all weights together", choices=("tensor", "global"), group="weights"),
    Option("weight-pattern", str, None, "N:M pattern: at most N of every M weights along the reduction axis", group="weights"),
    Option("weight-allow-empty", bool, False, "allow global sparsity to zero a whole tensor", group="weights"),
    Option("exclude", str, (), "leave matching weights (initializer or node name, glob) alone", many=True, group="weights"),
    Option("sparse-storage", bool, False, "store pruned weights as ONNX sparse initializers where smaller", group="weights"),
    # Validation inputs and tolerances.
    Option("inputs", str, None, "npz of inputs for validation (keys = input names)", group="validation"),
    Option("calibration", str, None, "npz of inputs (and optional 'labels') for scoring layers and measuring accuracy", group="validation"),
    Option("input-shape", str, (), "NAME=D0,D1,... for inputs with symbolic dims", many=True, group="validation"),
    Option("samples", int, 3, "generated input samples when no npz is given", minimum=1, group="validation"),
    Option("seed", int, 0, "seed for generated inputs", minimum=0, group="validation"),
    Option("rtol", float, 1e-4, "relative tolerance of the equivalence check", minimum=0.0, group="validation"),
    Option("atol", float, 1e-5, "absolute tolerance of the equivalence check", minimum=0.0, group="validation"),
    # Timing.
    Option("runs", int, 50, "timed runs per model", minimum=1, group="timing"),
    Option("warmup", int, 5, "untimed warm-up runs per model", minimum=0, group="timing"),
    Option("threads", int, 1, "onnxruntime intra-op threads", minimum=1, group="timing"),
    # Quality gates.
    Option("max-abs-diff", float, None, "fail when any output differs by more than X", minimum=0.0, group="gates"),
    Option("min-cosine", float, None, "fail when an output's cosine similarity falls below C", minimum=-1.0, maximum=1.0, group="gates"),
    Option("min-top1-agreement", float, None, "fail when top-1 classes agree on less than this fraction", minimum=0.0, maximum=1.0, group="gates"),
    Option("min-accuracy", float, None, "fail when accuracy on --calibration labels falls below A", minimum=0.0, maximum=1.0, group="gates"),
    Option("min-speedup", float, None, "fail when the measured speedup is below S", minimum=0.0, group="gates"),
    Option("max-macs-ratio", float, None, "fail when pruned MACs exceed R times the original", minimum=0.0, group="gates"),
    # Output.
    Option("external-data", bool, False, "store weights in OUT.data beside the model", group="output"),
)

OPTIONS_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}


@dataclass
class PruneConfig:
    """The effective options of one run, with every value checked."""

    values: dict[str, Any] = field(default_factory=lambda: {option.key: option.default for option in OPTIONS})

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], source: str = "options") -> PruneConfig:
        """Build from keyword arguments or a config table, checking every key and value."""
        config = cls()
        config.update(mapping, source)
        return config

    def update(self, mapping: Mapping[str, Any], source: str) -> None:
        """Override values; unknown keys and bad values raise :class:`InputError` naming them."""
        for raw_key, raw_value in mapping.items():
            key = raw_key.replace("-", "_")
            option = OPTIONS_BY_KEY.get(key)
            if option is None:
                raise InputError(f"{source}: unknown option '{raw_key}' (known: {', '.join(sorted(o.name for o in OPTIONS))})")
            self.values[key] = check_value(option, raw_value, source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with command-line names."""
        return {option.name: _jsonable(self.values[option.key]) for option in OPTIONS}

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """``--input-shape`` values parsed into a name -> shape map."""
        return parse_input_shapes(self.values["input_shape"])


def check_value(option: Option, value: Any, source: str) -> Any:
    """Coerce and range-check one value, or raise an error naming the option and what it accepts."""
    if value is None:
        return option.default if option.many else None
    if option.many:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            raise InputError(f"{source}: '{option.name}' takes a string or a list of strings, got {value!r}")
        unknown = [item for item in items if option.choices is not None and item not in option.choices]
        if unknown:
            raise InputError(f"{source}: '{option.name}' must be among {', '.join(option.choices)}, got '{unknown[0]}'")
        return tuple(items)
    if option.kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{source}: '{option.name}' takes true or false, got {value!r}")
        return value
    if option.kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (option.kind is int and not isinstance(value, int)):
            raise InputError(f"{source}: '{option.name}' takes {'an integer' if option.kind is int else 'a number'}, got {value!r}")
        value = option.kind(value)
        if option.minimum is not None and value < option.minimum or option.maximum is not None and value > option.maximum:
            raise InputError(f"{source}: '{option.name}' must be in {_range_text(option)}, got {value}")
        return value
    if not isinstance(value, str):
        raise InputError(f"{source}: '{option.name}' takes a string, got {value!r}")
    if option.choices is not None and value not in option.choices:
        raise InputError(f"{source}: '{option.name}' must be one of {', '.join(option.choices)}, got '{value}'")
    return value


def load_config_file(path: str | Path, profile: str | None = None) -> dict[str, Any]:
    """The option table of a TOML file or of ``[tool.onnxprune]`` in a pyproject.toml.

    Profiles (``[profile.NAME]``, or ``[tool.onnxprune.profile.NAME]``) override
    the top-level options of the same file when selected.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read config file ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: invalid TOML ({error})") from None
    if path.name == "pyproject.toml":
        document = document.get("tool", {}).get("onnxprune")
        if document is None:
            raise InputError(f"{path}: no [tool.onnxprune] table")
    table = dict(document)
    profiles = table.pop("profile", {})
    if not isinstance(profiles, dict):
        raise InputError(f"{path}: 'profile' must be a table of named profiles")
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            raise InputError(f"{path}: no profile '{profile}' (profiles: {known})")
        table.update(profiles[profile])
    return table


def parse_input_shapes(items: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=1,3,224,224`` entries."""
    shapes = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            shape = tuple(int(dim) for dim in dims.split(","))
        except ValueError:
            shape = ()
        if not name or not shape or any(dim < 1 for dim in shape):
            raise InputError(f"--input-shape '{item}': expected NAME=D0,D1,... with positive integers")
        shapes[name] = shape
    return shapes


def _range_text(option: Option) -> str:
    low = "-inf" if option.minimum is None else f"{option.minimum:g}"
    high = "inf" if option.maximum is None else f"{option.maximum:g}"
    return f"[{low}, {high}]"


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

