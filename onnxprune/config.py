"""Every option of ``onnxprune prune``, from the command line, a TOML file or pyproject.toml.

The options are declared once, as fields of the dataclasses in
:mod:`onnxprune.options`.  :data:`OPTIONS` lists the fields that are config
keys; the argument parser and the config-file reader are both built from it
and check values with the same checker as the dataclasses, so no name or bound
can differ between them.  Config files use the command-line names
(``channel-ratio = 0.5``; underscores are accepted too).  Command-line values
override the file.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from onnxprune.errors import InputError
from onnxprune.option_spec import Option, OptionFamily, check_value, declarations
from onnxprune.options import FAMILIES, parse_input_shapes

OPTIONS: tuple[Option, ...] = tuple(declared for family in FAMILIES for declared in declarations(family) if not declared.filled)
"""Every config key / command-line option, family by family."""

OPTIONS_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}

COMMAND_LINE = "command line"
"""The ``source`` of values given as flags; their errors name the flag (``--channel-ratio``)."""

Family = TypeVar("Family", bound=OptionFamily)


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
        """Override values; unknown keys and bad values raise :class:`InputError` naming them as written.

        None means "not given": the option's default applies.  A single string
        stands for a one-item list (``exclude = "head*"`` in a config file).
        """
        for raw_key, value in mapping.items():
            key = raw_key.replace("-", "_")
            option = OPTIONS_BY_KEY.get(key)
            if option is None:
                raise InputError(f"{source}: unknown option '{raw_key}'{did_you_mean(raw_key.replace('_', '-'), [o.flag for o in OPTIONS])}")
            if value is None:
                self.values[key] = option.default
                continue
            if option.many and isinstance(value, str):
                value = (value,)
            name = f"--{option.flag}" if source == COMMAND_LINE else f"{source}: '{raw_key}'"
            self.values[key] = check_value(option, value, name)

    def options(self, family: type[Family]) -> Family:
        """``family``'s options object (``config.options(ChannelOptions)``), from this config's values.

        Keys left at None (``channel-ratio`` when no channel pass is asked for)
        leave the dataclass default in place.
        """
        sources = {declared.field: declared for declared in declarations(family)}
        values = {name: self.values[declared.key] for name, declared in sources.items() if self.values[declared.key] is not None}
        family.check_together(values, lambda name: f"'{sources[name].flag}'")
        return family(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with command-line names."""
        return {option.flag: _jsonable(self.values[option.key]) for option in OPTIONS}

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """``--input-shape`` values parsed into a name -> shape map."""
        return parse_input_shapes(self.values["input_shape"])


CONFIG_FILE_NAMES = ("onnxprune.toml", "pyproject.toml")
"""Looked for in each folder from the current one upward; in one folder, onnxprune.toml wins."""


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest ``onnxprune.toml``, or ``pyproject.toml`` with a ``[tool.onnxprune]`` table, from ``start`` upward.

    Found the way ruff finds its settings, so a project's build step is
    configured by the file it already has: a pyproject.toml without the table
    is passed over and the search goes on to the parent folder.
    """
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        for name in CONFIG_FILE_NAMES:
            candidate = folder / name
            if candidate.is_file() and (name != "pyproject.toml" or _tool_table(_read_toml(candidate)) is not None):
                return candidate
    return None


def load_config_file(path: str | Path, profile: str | None = None) -> dict[str, Any]:
    """The option table of a TOML file or of ``[tool.onnxprune]`` in a pyproject.toml.

    Profiles (``[profile.NAME]``, or ``[tool.onnxprune.profile.NAME]``) override
    the top-level options of the same file when selected.  Relative paths
    (``calibration = "data/calib.npz"``) are resolved against the file's
    folder, so the run does not depend on where it was started.
    """
    path = Path(path)
    document = _read_toml(path)
    if path.name == "pyproject.toml":
        document = _tool_table(document)
        if document is None:
            raise InputError(f"{path}: no [tool.onnxprune] table")
    table = dict(document)
    profiles = table.pop("profile", {})
    if not isinstance(profiles, dict):
        raise InputError(f"{path}: 'profile' must be a table of named profiles ([profile.NAME])")
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            raise InputError(f"{path}: no profile '{profile}' (profiles: {known})")
        if not isinstance(profiles[profile], dict):
            raise InputError(f"{path}: profile '{profile}' must be a table of options ([profile.{profile}]), got {profiles[profile]!r}")
        table.update(profiles[profile])
    return _resolve_paths(table, path.parent)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string when none is close."""
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read config file ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: invalid TOML ({error})") from None


def _tool_table(document: dict[str, Any]) -> Any:
    tool = document.get("tool")
    return tool.get("onnxprune") if isinstance(tool, dict) else None


def _resolve_paths(table: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``table`` with the relative paths of path options joined to ``folder`` (other values are checked later)."""
    resolved = dict(table)
    for raw_key, value in table.items():
        option = OPTIONS_BY_KEY.get(raw_key.replace("-", "_"))
        if option is not None and option.path and isinstance(value, str) and not Path(value).is_absolute():
            resolved[raw_key] = str(folder / value)
    return resolved


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

