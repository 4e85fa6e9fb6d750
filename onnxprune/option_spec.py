"""How an option is declared: one dataclass field says its name, help, bounds and checks.

The option dataclasses of :mod:`onnxprune.options` are the only place an
option is declared.  Each field is made with :func:`option`; the config-file
keys, the command-line flags with their help, and every check are read from
those fields.  One checker (:func:`check_value`) serves both the dataclasses
(when they are built) and the config and command-line path (when a value is
given), so a bound cannot differ between the ways of setting an option, and an
error names the option as the user wrote it: ``--channel-ratio`` on the
command line, ``'channel-ratio'`` in a config file, ``ratio`` in Python.
"""

from __future__ import annotations

import math
import numbers
import types
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, fields, replace
from dataclasses import field as dataclass_field
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from onnxprune.errors import InputError

Check = Callable[[Any, str], Any]
"""A check beyond type and bounds: ``(value, name as written) -> value``, raising :class:`InputError`."""

_SIMPLE_KINDS = (bool, int, float, str)
_SAME = object()
"""``config_default`` when the config default is the dataclass default."""


@dataclass(frozen=True)
class _Declaration:
    """What :func:`option` or :func:`filled_from` wrote into a field's metadata."""

    flag: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: bool = False
    choices: tuple[str, ...] | None = None
    items: str = "strings"
    check: Check | None = None
    config_default: Any = _SAME
    source: tuple[type[OptionFamily], str] | None = None
    path: bool = False


@dataclass(frozen=True)
class Option:
    """One declared option, resolved from its field: how it is named and what it accepts."""

    family: type[OptionFamily]
    field: str
    flag: str
    """The config key and command-line flag the field is read from."""
    kind: Any
    """bool, int, float or str (of each item when ``many``); any other type is left to ``check``."""
    default: Any
    """The value when the option is not given (the config's, where it differs from the dataclass's)."""
    help: str
    nullable: bool = False
    many: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: bool = False
    items: str = "strings"
    check: Check | None = None
    filled: bool = False
    """The field is filled from another family's option ``flag``, not a config key of its own."""
    path: bool = False
    """The value is a file or folder path: a config file's relative path is read from the config file's folder."""

    @property
    def key(self) -> str:
        """The config key as a Python name (``channel_ratio``)."""
        return self.flag.replace("-", "_")


def option(
    default: Any,
    *,
    flag: str,
    help: str,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_maximum: bool = False,
    choices: tuple[str, ...] | None = None,
    items: str = "strings",
    check: Check | None = None,
    config_default: Any = _SAME,
    path: bool = False,
) -> Any:
    """A dataclass field that is also the option ``flag`` (config key and ``--flag``).

    The type comes from the field's annotation (``float | None`` accepts None,
    ``tuple[str, ...]`` is a list option, a ``Literal`` gives the choices).
    ``items`` says what a list holds, for messages.  ``check`` adds a check
    that is not a bound (a pattern's syntax, a registry's names).
    ``config_default`` is the config's value when the option is not given,
    where that differs from the dataclass default: ``channel-ratio`` is None
    (no channel pass) while a ChannelOptions built without it has ratio 0.
    ``path`` marks a file or folder path.
    """
    declaration = _Declaration(flag, help, minimum, maximum, exclusive_maximum, choices, items, check, config_default, path=path)
    return dataclass_field(default=default, metadata={"option": declaration})


def filled_from(source: type[OptionFamily], name: str, default: Any, *, check: Check | None = None) -> Any:
    """A dataclass field that is no option of its own: the config fills it from ``source``'s field ``name``.

    It is checked like that option (same type and bounds, so they cannot
    disagree), unless it holds the value in another form and says with
    ``check`` how to check that form.
    """
    return dataclass_field(default=default, metadata={"option": _Declaration("", "", check=check, source=(source, name))})


@dataclass(frozen=True)
class OptionFamily:
    """Base of the option dataclasses: every field is checked against its declaration when one is built.

    Values are stored normalised (tuples for lists, float for numbers) so the
    options stay hashable and JSON-ready.
    """

    title: ClassVar[str]
    """Heading of the family's group in ``--help``."""
    label: ClassVar[str]
    """How an error names a field when the dataclass is built directly, e.g. ``"weight {}"``."""

    def __post_init__(self) -> None:
        for declared in declarations(type(self)):
            value = check_value(declared, getattr(self, declared.field), self.label.format(declared.field))
            object.__setattr__(self, declared.field, value)
        self.check_together({declared.field: getattr(self, declared.field) for declared in declarations(type(self))}, lambda name: f"'{name}'")

    @classmethod
    def check_together(cls, values: Mapping[str, Any], quoted: Callable[[str], str]) -> None:
        """Checks that involve several fields; ``quoted(field)`` names a field as the user wrote it."""


_DECLARED: dict[type[OptionFamily], tuple[Option, ...]] = {}


def declarations(family: type[OptionFamily]) -> tuple[Option, ...]:
    """The options declared by the fields of ``family``, in field order (resolved once per family)."""
    if family not in _DECLARED:
        hints = get_type_hints(family)
        _DECLARED[family] = tuple(_resolve(family, field, hints[field.name]) for field in fields(family))
    return _DECLARED[family]


def _resolve(family: type[OptionFamily], field: Field[Any], hint: Any) -> Option:
    declaration = field.metadata.get("option")
    if not isinstance(declaration, _Declaration):
        raise TypeError(f"{family.__name__}.{field.name} is not declared with option() or filled_from()")
    if declaration.source is not None and declaration.check is None:
        original = _source(declaration.source)
        return replace(original, family=family, field=field.name, default=field.default, filled=True)
    nullable, many, kind, choices = _parse_hint(hint)
    if kind not in _SIMPLE_KINDS and declaration.check is None:
        raise TypeError(f"{family.__name__}.{field.name}: a {kind} field needs a check")
    default = field.default if declaration.config_default is _SAME else declaration.config_default
    return Option(
        family,
        field.name,
        declaration.flag if declaration.source is None else _source(declaration.source).flag,
        kind,
        default,
        declaration.help,
        nullable,
        many,
        declaration.choices or choices,
        declaration.minimum,
        declaration.maximum,
        declaration.exclusive_maximum,
        declaration.items,
        declaration.check,
        declaration.source is not None,
        declaration.path,
    )


def _source(source: tuple[type[OptionFamily], str]) -> Option:
    family, name = source
    return next(declared for declared in declarations(family) if declared.field == name)


def _parse_hint(hint: Any) -> tuple[bool, bool, Any, tuple[str, ...] | None]:
    """``(nullable, many, kind, choices)`` of an annotation such as ``tuple[str, ...]`` or ``float | None``."""
    nullable = False
    if get_origin(hint) in (Union, types.UnionType):
        members = [member for member in get_args(hint) if member is not type(None)]
        nullable, hint = len(members) < len(get_args(hint)), members[0]
    many = get_origin(hint) is tuple and get_args(hint)[1:] == (Ellipsis,)
    if many:
        hint = get_args(hint)[0]
    if get_origin(hint) is Literal:
        return nullable, many, str, get_args(hint)
    return nullable, many, hint, None


def check_value(option: Option, value: Any, name: str) -> Any:
    """``value`` checked against ``option``'s declaration and normalised, or an InputError that calls it ``name``."""
    if value is None and option.nullable:
        return None
    if option.kind in _SIMPLE_KINDS:
        value = _check_list(option, value, name) if option.many else _check_scalar(option, value, name)
    return value if option.check is None else option.check(value, name)


def _check_list(option: Option, value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{name} must be {expected(option)}, got {value!r}")
    if option.choices is not None:
        unknown = [item for item in value if item not in option.choices]
        if unknown:
            raise InputError(f"{name} must be among {', '.join(option.choices)}, got {unknown[0]!r}")
    return tuple(value)


def _check_scalar(option: Option, value: Any, name: str) -> Any:
    if option.kind is bool or option.kind is str:
        if not isinstance(value, option.kind) or (option.choices is not None and value not in option.choices):
            raise InputError(f"{name} must be {expected(option)}, got {value!r}")
        return value
    number = numbers.Integral if option.kind is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
        raise InputError(f"{name} must be {expected(option)}, got {value!r}")
    value = option.kind(value)
    low, high = option.minimum, option.maximum
    if (low is not None and value < low) or (high is not None and (value >= high if option.exclusive_maximum else value > high)):
        raise InputError(f"{name} must be {_number_text(option, say_kind=False)}, got {value}")
    return value


def expected(option: Option) -> str:
    """What ``option`` accepts, in words: ``'a number in [0, 1)'``, ``"'tensor' or 'global'"``."""
    if option.many:
        return f"a list of {option.items}"
    if option.kind is bool:
        return "true or false"
    if option.choices is not None:
        quoted = [f"'{choice}'" for choice in option.choices]
        return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    if option.kind is str:
        return "a string"
    return _number_text(option, say_kind=True)


def _number_text(option: Option, say_kind: bool) -> str:
    """An interval says by itself that a number is finite ("in [0, 1)"); a one-sided bound needs the kind."""
    kind = "an integer" if option.kind is int else "a number"
    low, high = option.minimum, option.maximum
    if low is not None and high is not None:
        interval = f"in [{low:g}, {high:g}{')' if option.exclusive_maximum else ']'}"
        return f"{kind} {interval}" if say_kind else interval
    if option.kind is float:
        kind = "a finite number"
    if low is not None:
        return f"{kind} >= {low:g}"
    if high is not None:
        return f"{kind} {'<' if option.exclusive_maximum else '<='} {high:g}"
    return kind
