"""Config files, profiles and option checking."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

import onnxprune.options as options_module
from onnxprune.cli import _build_parser, _effective_config, main
from onnxprune.config import OPTIONS, OPTIONS_BY_KEY, PruneConfig, load_config_file, parse_input_shapes
from onnxprune.errors import InputError
from onnxprune.option_spec import Option, OptionFamily, declarations
from onnxprune.options import FAMILIES, ChannelOptions, LayerOptions, WeightOptions


def test_defaults_match_the_option_table() -> None:
    config = PruneConfig()
    for option in OPTIONS:
        assert getattr(config, option.key) == option.default


def test_toml_names_with_dashes_or_underscores(tmp_path: Path) -> None:
    path = tmp_path / "onnxprune.toml"
    path.write_text('channel-ratio = 0.5\nround_to = 8\nexclude = ["head*"]\n')
    config = PruneConfig.from_mapping(load_config_file(path), str(path))
    assert config.channel_ratio == 0.5 and config.round_to == 8 and config.exclude == ("head*",)


def test_profile_overrides_top_level(tmp_path: Path) -> None:
    path = tmp_path / "onnxprune.toml"
    path.write_text('channel-ratio = 0.25\nruns = 10\n[profile.edge]\nchannel-ratio = 0.75\n')
    assert load_config_file(path)["channel-ratio"] == 0.25
    edge = load_config_file(path, "edge")
    assert edge["channel-ratio"] == 0.75 and edge["runs"] == 10
    with pytest.raises(InputError, match="no profile 'cloud' \\(profiles: edge\\)"):
        load_config_file(path, "cloud")


def test_pyproject_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n[tool.onnxprune]\nweight-sparsity = 0.5\n[tool.onnxprune.profile.strict]\nmin-cosine = 0.99\n')
    assert load_config_file(path, "strict") == {"weight-sparsity": 0.5, "min-cosine": 0.99}
    (tmp_path / "other").mkdir()
    bare = tmp_path / "other" / "pyproject.toml"
    bare.write_text('[project]\nname = "x"\n')
    with pytest.raises(InputError, match=r"no \[tool.onnxprune\] table"):
        load_config_file(bare)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"channel-ratoi": 0.5}, "unknown option 'channel-ratoi'"),
        ({"channel-ratio": 1.5}, "'channel-ratio' must be in \\[0, 1\\), got 1.5"),
        ({"channel_ratio": 1.5}, "'channel_ratio' must be in \\[0, 1\\), got 1.5"),
        ({"weight-scope": "layer"}, "'weight-scope' must be 'tensor' or 'global', got 'layer'"),
        ({"runs": 2.5}, "'runs' must be an integer >= 1, got 2.5"),
        ({"simplify": "yes"}, "'simplify' must be true or false, got 'yes'"),
        ({"exclude": [1, 2]}, "'exclude' must be a list of glob patterns, got \\[1, 2\\]"),
        ({"weight-pattern": "4:2"}, "'weight-pattern' must be 'N:M' with 0 < N < M"),
        ({"importance": "magic"}, "'importance' must be one of: .*l1.*; got 'magic'"),
        ({"input-shape": "x=1,0"}, "'input-shape' 'x=1,0': expected NAME=D0,D1"),
    ],
)
def test_bad_keys_and_values_name_the_key(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        PruneConfig.from_mapping(mapping, "cfg.toml")


def test_invalid_toml_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("channel-ratio = = 0.5\n")
    with pytest.raises(InputError, match="invalid TOML"):
        load_config_file(path)


def test_input_shapes_parse_and_reject_garbage() -> None:
    assert parse_input_shapes(("input=1,3,224,224",)) == {"input": (1, 3, 224, 224)}
    with pytest.raises(InputError, match="expected NAME=D0,D1"):
        parse_input_shapes(("input=1,x",))


def test_list_options_check_their_choices() -> None:
    assert PruneConfig.from_mapping({"bypass-kinds": ["residual"]}).bypass_kinds == ("residual",)
    with pytest.raises(InputError, match="'bypass-kinds' must be among residual, layer, got 'block'"):
        PruneConfig.from_mapping({"bypass-kinds": ["residual", "block"]}, "cfg.toml")


# ------------------------------------------------ one declaration, three ways in

# Values that only an option's own check knows to be valid or invalid.
_VALID_TEXT = {"input-shape": "x=1,3", "weight-pattern": "2:4", "importance": "l2", "channel-override": "conv*=0.5"}
_INVALID_TEXT = {"input-shape": "x=1,0", "weight-pattern": "2-4", "importance": "magic", "bypass": " ", "channel-override": "conv*=1.5"}


def _declared(family: type[OptionFamily], name: str) -> Option:
    return next(declared for declared in declarations(family) if declared.field == name)


def _samples(declared: Option) -> tuple[list[Any], list[Any]]:
    """Values the declaration accepts and refuses, each expressible on the command line and in TOML."""
    if declared.kind is bool:
        return [True, False], []
    if declared.kind is str:
        good = declared.choices[0] if declared.choices else _VALID_TEXT.get(declared.flag, "x")
        bad = "nope" if declared.choices else _INVALID_TEXT.get(declared.flag)
        good_values, bad_values = [good], [] if bad is None else [bad]
        return ([[value] for value in good_values], [[value] for value in bad_values]) if declared.many else (good_values, bad_values)
    step = 1 if declared.kind is int else 0.5
    low, high = declared.minimum, declared.maximum
    accepted = [value for value in (low, high if not declared.exclusive_maximum else None) if value is not None] or [declared.kind(1)]
    refused = [value for value in (None if low is None else low - step, None if high is None else high + step) if value is not None]
    if declared.exclusive_maximum:
        refused.append(high)
    return [declared.kind(value) for value in accepted], [declared.kind(value) for value in refused]


def _argv(declared: Option, value: Any) -> list[str]:
    if declared.kind is bool:
        return [f"--{declared.flag}" if value else f"--no-{declared.flag}"]
    items = value if declared.many else [value]
    return [text for item in items for text in (f"--{declared.flag}", str(item))]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return json.dumps(value)


def _from_command_line(declared: Option, value: Any) -> Any:
    arguments = _build_parser().parse_args(["prune", "model.onnx", "-o", "out.onnx", *_argv(declared, value)])
    return _effective_config(arguments)[0].values[declared.key]


def _from_config_file(tmp_path: Path, declared: Option, value: Any) -> Any:
    path = tmp_path / "onnxprune.toml"
    path.write_text(f"{declared.flag} = {_toml(value)}\n")
    return PruneConfig.from_mapping(load_config_file(path), str(path)).values[declared.key]


def _refused_on_command_line(declared: Option, value: Any) -> bool:
    try:
        _from_command_line(declared, value)
    except InputError:
        return True
    except SystemExit as error:  # argparse refuses values outside declared choices itself
        return error.code == 2
    return False


def test_every_option_family_is_listed() -> None:
    defined = {value for value in vars(options_module).values() if isinstance(value, type) and issubclass(value, OptionFamily)}
    assert defined - {OptionFamily} == set(FAMILIES)


@pytest.mark.parametrize(
    ("family", "name"),
    [pytest.param(family, field.name, id=f"{family.__name__}.{field.name}") for family in FAMILIES for field in dataclasses.fields(family)],
)
def test_every_field_is_a_config_key_and_a_flag_with_the_same_bounds(family: type[OptionFamily], name: str, tmp_path: Path) -> None:
    """Every field of every family, including ones added later, reaches the config file and the CLI with its own bounds.

    A field filled from another family's option (``LayerOptions.samples``) is
    set through that option, and checked by the same declaration.
    """
    declared = _declared(family, name)
    assert declared.key in OPTIONS_BY_KEY, f"{family.__name__}.{name} is no config key"
    source = OPTIONS_BY_KEY[declared.key]
    assert source.filled is False and (source.family is family) is not declared.filled
    accepted, refused = _samples(source)
    for value in accepted:
        from_file, from_flags = _from_config_file(tmp_path, source, value), _from_command_line(source, value)
        # A relative path in a config file is read from the file's folder; on the command line, from the current one.
        assert from_file == (str(tmp_path / from_flags) if source.path else from_flags)
        built = family(**{name: value})
        if not declared.filled:
            assert getattr(built, name) == from_flags
    for value in refused:
        with pytest.raises(InputError, match=f"'{source.flag}'"):
            _from_config_file(tmp_path, source, value)
        assert _refused_on_command_line(source, value), f"--{source.flag} {value!r} was accepted"
        with pytest.raises(InputError, match=f"'{name}'|{name}"):
            family(**{name: value})


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_channel_ratio_bound_is_the_same_from_cli_config_and_dataclass(ratio: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = r"must be in \[0, 1\), got"
    with pytest.raises(InputError, match=message):
        ChannelOptions(ratio=ratio)
    declared = _declared(ChannelOptions, "ratio")
    with pytest.raises(InputError, match=f"onnxprune.toml: 'channel-ratio' {message}"):
        _from_config_file(tmp_path, declared, ratio)
    assert main(["prune", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", str(ratio)]) == 2
    assert f"--channel-ratio must be in [0, 1), got {ratio}" in capsys.readouterr().err
    assert ChannelOptions(ratio=0.999).ratio == _from_config_file(tmp_path, declared, 0.999) == _from_command_line(declared, 0.999)


@pytest.mark.parametrize("declared", [option for option in OPTIONS if option.kind is float], ids=lambda option: option.flag)
def test_nan_is_refused_for_every_float_option(declared: Option, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match=f"'{declared.flag}' must be .*, got nan"):
        _from_config_file(tmp_path, declared, math.nan)
    assert main(["prune", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "out.onnx"), f"--{declared.flag}", "nan"]) == 2
    assert f"--{declared.flag} must be" in capsys.readouterr().err
    with pytest.raises(InputError, match=declared.field):
        declared.family(**{declared.field: math.nan})


def test_config_builds_each_pass_options_object() -> None:
    config = PruneConfig.from_mapping({"channel-ratio": 0.5, "round-to": 8, "weight-pattern": "2:4", "exclude": "head*", "bypass-auto": 2})
    assert config.options(ChannelOptions) == ChannelOptions(ratio=0.5, round_to=8)
    assert config.options(WeightOptions) == WeightOptions(pattern="2:4", exclude=("head*",))
    assert PruneConfig().options(ChannelOptions).ratio == 0.0, "no channel-ratio: a ChannelOptions keeps its default"
    config.update({"samples": 2, "seed": 7, "calibration": "cal.npz", "input-shape": ["x=1,3"]}, "cfg.toml")
    layers = config.options(LayerOptions)
    assert (layers.auto, layers.samples, layers.seed, layers.calibration, layers.input_shapes) == (2, 2, 7, "cal.npz", (("x", (1, 3)),))


def test_fields_filled_from_validation_options_are_no_config_keys_of_their_own() -> None:
    filled = {declared.field: declared.flag for declared in declarations(LayerOptions) if declared.filled}
    assert filled == {"calibration": "calibration", "input_shapes": "input-shape", "samples": "samples", "seed": "seed"}
    assert all(option.family is not LayerOptions for option in OPTIONS if option.flag in filled.values())


def test_bypass_by_name_and_automatically_are_refused_with_the_config_names() -> None:
    config = PruneConfig.from_mapping({"bypass": ["conv1"], "bypass-max-drift": 0.1})
    with pytest.raises(InputError, match="'bypass' and 'bypass-auto'/'bypass-max-drift' exclude each other"):
        config.options(LayerOptions)
