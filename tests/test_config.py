"""Config files, profiles and option checking."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxprune.config import OPTIONS, PruneConfig, load_config_file, parse_input_shapes
from onnxprune.errors import InputError


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
    with pytest.raises(InputError, match="no \\[tool.onnxprune\\] table"):
        load_config_file(bare)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"channel-ratoi": 0.5}, "unknown option 'channel-ratoi'"),
        ({"channel-ratio": 1.5}, "'channel-ratio' must be in \\[0, 0.99\\], got 1.5"),
        ({"weight-scope": "layer"}, "'weight-scope' must be one of tensor, global, got 'layer'"),
        ({"runs": 2.5}, "'runs' takes an integer"),
        ({"simplify": "yes"}, "'simplify' takes true or false"),
        ({"exclude": [1, 2]}, "'exclude' takes a string or a list of strings"),
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
