"""A build step that never ships a broken model silently: the default floor, config discovery, honest MAC gates, errors.

Each test here fails when the behaviour it names is removed.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.cli import main
from onnxprune.errors import InputError
from tests import hostile_models as hm
from tests.conftest import MODELS_DIR

validate_module = importlib.import_module("onnxprune.validate")  # the package exports a function of the same name
DIGITS = MODELS_DIR / "digits_cnn.onnx"
DIGITS_CALIBRATION = MODELS_DIR / "digits_calibration.npz"
DIGITS_TEST = MODELS_DIR / "digits_test.npz"
FAST = ["--no-bench"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_info:  # argparse's own usage errors
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


# --- the default quality floor -------------------------------------------------------------------------------


def test_a_destroyed_model_fails_the_default_floor_and_is_not_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """L1 at ratio 0.5 with no calibration data wrecks the digits CNN (top-1 agreement about 2/3); no gate was set."""
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code, stdout, _ = _run(capsys, "prune", str(DIGITS), "-o", str(out), "--channel-ratio", "0.5", "--report", str(report), "--no-config", *FAST)
    assert code == 1 and not out.exists()
    failed = [gate for gate in _report(report)["gates"] if not gate["passed"]]
    assert failed and all(gate["default"] for gate in failed)
    assert "--min-cosine" in stdout, "the failure must name the flag that accepts the drift"


def test_a_gate_the_user_sets_replaces_the_floor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    argv = ["prune", str(DIGITS), "-o", str(out), "--channel-ratio", "0.5", "--report", str(report), "--no-config", *FAST]
    code, _, _ = _run(capsys, *argv, "--min-cosine", "0.5")
    assert code == 0 and out.exists()
    assert [gate["name"] for gate in _report(report)["gates"]] == ["min-cosine"]


@pytest.mark.parametrize("validated_on", ["calibration", "inputs"])
def test_min_accuracy_without_labels_is_refused_before_pruning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, validated_on: str
) -> None:
    """digits_calibration.npz has no labels; as --inputs it is the validation data too."""
    monkeypatch.setattr("onnxprune.pipeline._passes", lambda *args: pytest.fail("pruning ran before the refusal"))
    out = tmp_path / "out.onnx"
    argv = ["prune", str(DIGITS), "-o", str(out), "--channel-ratio", "0.5", "--calibration", str(DIGITS_CALIBRATION), "--no-config", *FAST]
    if validated_on == "inputs":
        argv += ["--inputs", str(DIGITS_CALIBRATION), "--labels", str(tmp_path / "unused.npy")]
        np.save(tmp_path / "unused.npy", np.zeros(256, np.int64))
    code, _, err = _run(capsys, *argv, "--min-accuracy", "0.9")
    assert code == 2 and not out.exists()
    expected = "has no 'labels' array" if validated_on == "inputs" else "the calibration data has no labels"
    assert len(err.strip().splitlines()) == 1 and "--min-accuracy" in err and expected in err


def test_exact_runs_are_held_to_equivalence_not_to_the_floor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    code, _, _ = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", "0", "--report", str(report), "--no-config", *FAST)
    assert code == 0 and _report(report)["gates"] == []


def test_the_readme_first_command_passes_the_floor_honestly() -> None:
    """The shipped model, its calibration data and its test split: faster, accuracy kept, every floor gate passed."""
    result = onnxprune.prune(DIGITS, channel_ratio=0.5, calibration=str(DIGITS_CALIBRATION), inputs=str(DIGITS_TEST), bench=False)
    assert result.passed, result.failures
    floor = [gate for gate in result.gates if gate.default]
    assert floor and all(gate.passed for gate in floor)
    assert result.validation is not None and result.validation.accuracy is not None
    assert result.validation.accuracy["candidate"] >= result.validation.accuracy["reference"] - 0.01


def test_the_table_states_what_validation_ran_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    argv = [
        "prune",
        str(DIGITS),
        "-o",
        str(tmp_path / "out.onnx"),
        "--weight-sparsity",
        "0.3",
        "--report",
        str(report),
        "--no-config",
        "--runs",
        "3",
        "--warmup",
        "0",
    ]
    code, stdout, _ = _run(capsys, *argv)
    validation = _report(report)["validation"]
    assert code == 0 and not validation["real_data"] and validation["input_shapes"] == {"input": [1, 1, 8, 8]}
    assert "RANDOM" in stdout and "latency median (1 thread)" in stdout
    code, stdout, _ = _run(capsys, *argv, "--inputs", str(DIGITS_TEST))
    validation = _report(report)["validation"]
    assert code == 0 and validation["real_data"] and validation["input_shapes"] == {"input": [450, 1, 8, 8]}
    assert "RANDOM" not in stdout


# --- config discovery ----------------------------------------------------------------------------------------


def _pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(f"[tool.onnxprune]\n{body}")
    return path


def test_pyproject_is_found_upward_from_the_current_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = _pyproject(tmp_path, "channel-ratio = 0.5\nmin-cosine = 0.999\nbench = false\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "deep")
    report = tmp_path / "report.json"
    code, _, _ = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--report", str(report))
    assert code == 1, "the config's strict gate must fail the L1 cut"
    data = _report(report)
    assert data["config_file"] == str(config)
    assert [gate["name"] for gate in data["gates"]] == ["min-cosine"]
    assert data["macs_ratio"] < 0.5
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--no-config")
    assert code == 2 and "nothing to prune" in err


def test_onnxprune_toml_wins_and_a_pyproject_without_the_table_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune.config import find_config_file

    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    outer = _pyproject(tmp_path, "channel-ratio = 0.5\n")
    assert find_config_file(tmp_path / "inner") == outer
    dedicated = tmp_path / "onnxprune.toml"
    dedicated.write_text("channel-ratio = 0.25\n")
    assert find_config_file(tmp_path / "inner") == dedicated


def test_relative_paths_in_a_config_file_are_read_from_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "calibration.npz").write_bytes(DIGITS_CALIBRATION.read_bytes())
    _pyproject(project, 'channel-ratio = 0.5\ncalibration = "data/calibration.npz"\nbench = false\n')
    elsewhere = project / "build"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = tmp_path / "report.json"
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--report", str(report))
    assert code == 0, err
    assert _report(report)["calibration"]["source"] == str(project / "data" / "calibration.npz")


def test_a_run_that_asks_for_no_pruning_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.onnx"
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(out), "--no-config", "--min-cosine", "0.9")
    assert code == 2 and not out.exists()
    assert err.startswith("onnxprune: error: nothing to prune") and err.count("\n") == 1
    with pytest.raises(InputError, match="nothing to prune"):
        onnxprune.prune(DIGITS)


def test_a_malformed_profile_names_the_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "onnxprune.toml"
    config.write_text("channel-ratio = 0.5\n[profile]\nedge = 5\n")
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--config", str(config), "--profile", "edge")
    assert code == 2
    assert err == f"onnxprune: error: {config}: profile 'edge' must be a table of options ([profile.edge]), got 5\n"


# --- MAC counts on models with symbolic dims -----------------------------------------------------------------


def test_a_mac_gate_is_refused_when_macs_cannot_be_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "symbolic.onnx"
    onnx.save(hm.symbolic_dims(), model)
    argv = ["prune", str(model), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", "0", "--max-macs-ratio", "1.0", "--no-config", *FAST]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "cannot be counted" in err and "--input-shape" in err
    report = tmp_path / "report.json"
    code, _, err = _run(capsys, *argv, "--input-shape", "input=1,3,12,12", "--report", str(report))
    assert code == 0, err
    data = _report(report)
    assert data["original"]["macs"] > 0 and data["macs_ratio"] == pytest.approx(1.0)


def test_an_unknown_mac_count_is_not_a_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "symbolic.onnx"
    onnx.save(hm.symbolic_dims(), model)
    report = tmp_path / "report.json"
    argv = ["prune", str(model), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", "0", "--report", str(report), "--no-config", "--no-validate"]
    code, stdout, _ = _run(capsys, *argv, *FAST)
    assert code == 0
    assert _report(report)["macs_ratio"] is None and _report(report)["macs_unknown"]
    assert "symbolic dims: give --input-shape" in stdout


# --- the Python API ------------------------------------------------------------------------------------------


def test_the_api_takes_a_model_proto_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    proto = onnx.load(DIGITS)
    before = proto.SerializeToString()
    result = onnxprune.prune(proto, channel_ratio=0.5, calibration=str(DIGITS_CALIBRATION), runs=3, warmup=0)
    assert capsys.readouterr() == ("", "")
    assert proto.SerializeToString() == before, "the caller's protobuf must not change"
    assert result.passed and result.original is not None and result.pruned is not None
    assert result.pruned.macs < result.original.macs and result.macs_ratio == pytest.approx(result.pruned.macs / result.original.macs)
    assert result.speedup is not None and result.speedup == result.report["speedup"]
    assert onnxprune.model_cost(proto).macs == result.original.macs
    assert onnxprune.validate(proto, str(DIGITS)).passed
    timings = onnxprune.benchmark([proto, DIGITS], runs=3, warmup=0)
    assert len(timings) == 2
    assert capsys.readouterr() == ("", "")


def test_the_api_refuses_what_is_not_a_model() -> None:
    with pytest.raises(InputError, match=r"expected a model path, an onnx\.ModelProto or an onnx_ir\.Model, got int"):
        onnxprune.model_cost(3)  # type: ignore[arg-type]


def test_bench_says_when_models_take_different_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.onnx"
    onnx.save(hm.conv_chain(), other)
    code, _, err = _run(capsys, "bench", str(DIGITS), str(other), "--runs", "2")
    assert code == 2 and "model 2 takes inputs" in err and "same inputs" in err


# --- validate applies the same gates as prune ----------------------------------------------------------------


def test_validate_judges_a_lossy_pair_by_its_gates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pruned = tmp_path / "pruned.onnx"
    assert main(["prune", str(DIGITS), "-o", str(pruned), "--channel-ratio", "0.5", "--calibration", str(DIGITS_CALIBRATION), "--no-config", *FAST]) == 0
    capsys.readouterr()
    code, _, _ = _run(capsys, "validate", str(DIGITS), str(pruned), "--inputs", str(DIGITS_TEST))
    assert code == 1, "without gates a lossy pair is not equivalent"
    code, stdout, _ = _run(capsys, "validate", str(DIGITS), str(pruned), "--inputs", str(DIGITS_TEST), "--min-accuracy", "0.95", "--max-macs-ratio", "0.3")
    assert code == 0 and "gate min-accuracy" in stdout and "gate max-macs-ratio" in stdout
    code, _, _ = _run(capsys, "validate", str(DIGITS), str(pruned), "--inputs", str(DIGITS_TEST), "--min-cosine", "0.99999")
    assert code == 1


# --- errors ----------------------------------------------------------------------------------------------------


def test_a_refusal_after_progress_is_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels that do not match the --inputs samples are found only when validation compares, after pruning announced itself."""
    with np.load(DIGITS_TEST) as test:
        inputs = tmp_path / "inputs.npz"
        np.savez(inputs, input=test["input"][:10], labels=test["labels"][:5])
    argv = ["prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", "0.5", "--calibration", str(DIGITS_CALIBRATION)]
    code, stdout, err = _run(capsys, *argv, "--inputs", str(inputs), "--no-config", *FAST)
    assert code == 2 and "simplifying" in stdout
    assert err.count("\n") == 1 and err.startswith("onnxprune: error: labels has 5 entries")


def test_a_mistyped_flag_or_key_gets_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--chanel-ratio", "0.5")
    assert code == 2 and "did you mean '--channel-ratio'?" in err and err.count("\n") == 1
    config = tmp_path / "onnxprune.toml"
    config.write_text("chanel-ratio = 0.5\n")
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--config", str(config))
    assert code == 2 and "unknown option 'chanel-ratio' (did you mean 'channel-ratio'?)" in err


def test_abbreviated_flags_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.onnx"
    code, _, err = _run(capsys, "prune", str(DIGITS), "-o", str(out), "--channel-rat", "0", "--no-config", *FAST)
    assert code == 2 and "unrecognized arguments: --channel-rat" in err and not out.exists()


@pytest.mark.parametrize("clash", ["input", "output", "calibration", "missing_folder"])
def test_the_report_path_gets_the_output_protections(clash: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, out, calibration = tmp_path / "model.onnx", tmp_path / "out.onnx", tmp_path / "calibration.npz"
    model.write_bytes(DIGITS.read_bytes())
    calibration.write_bytes(DIGITS_CALIBRATION.read_bytes())
    report = {"input": model, "output": out, "calibration": calibration, "missing_folder": tmp_path / "nope" / "r.json"}[clash]
    originals = {path: path.read_bytes() for path in (model, calibration)}
    argv = ["prune", str(model), "-o", str(out), "--channel-ratio", "0", "--calibration", str(calibration), "--report", str(report)]
    code, _, err = _run(capsys, *argv, "--no-config", *FAST)
    assert code == 2 and err.count("\n") == 1
    assert not out.exists(), "refused before any work"
    assert all(path.read_bytes() == content for path, content in originals.items())


# --- exactness tolerance scaled to the output's precision ---------------------------------------------------


def _add_model(constant: np.ndarray, dtype: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", dtype, [2, 64])],
        [helper.make_tensor_value_info("y", dtype, [2, 64])],
        [numpy_helper.from_array(constant, "c")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_float16_output_is_held_to_its_own_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exact rewrite of a float16 model may round one step differently (9.8e-4 near 1.0)."""
    one = np.ones(64, dtype=np.float16)
    reference = _add_model(one, TensorProto.FLOAT16)
    candidate = _add_model(np.nextafter(one, np.float16(2)), TensorProto.FLOAT16)
    source = onnxprune.InputSource(samples=2)
    assert onnxprune.validate(reference, candidate, source).passed
    monkeypatch.setattr(validate_module, "PRECISION_STEPS", 0)
    assert not onnxprune.validate(reference, candidate, source).passed


def _cancelling_conv_bn(fold: bool) -> onnx.ModelProto:
    """``BN(conv(x)) - conv'(x)`` where conv' is the BN folded into the conv: about zero, from intermediates in the hundreds.

    With ``fold`` the BN is folded as an exact rewrite would fold it, leaving
    only rounding: the same rounding onnxruntime's own BN fusion shows.
    """
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((8, 8, 3, 3)) * 30).astype(np.float32)
    scale, shift, mean, variance = (np.full(8, value, dtype=np.float32) for value in (0.7, 0.1, 5.0, 1.0))
    factor = scale / np.sqrt(variance + np.float32(1e-5))
    folded = (weight * factor[:, None, None, None]).astype(np.float32)
    folded_bias = (shift - mean * factor).astype(np.float32)
    initializers = [numpy_helper.from_array(folded, "wf"), numpy_helper.from_array(folded_bias, "bf")]
    if fold:
        nodes = [helper.make_node("Conv", ["x", "wf", "bf"], ["a"], pads=[1, 1, 1, 1])]
    else:
        nodes = [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "variance"], ["a"]),
        ]
        initializers += [
            numpy_helper.from_array(array, name) for array, name in ((weight, "w"), (scale, "scale"), (shift, "shift"), (mean, "mean"), (variance, "variance"))
        ]
    nodes += [helper.make_node("Conv", ["x", "wf", "bf"], ["b"], pads=[1, 1, 1, 1]), helper.make_node("Sub", ["a", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_an_exact_rewrite_may_drift_as_much_as_onnxruntime_own_fusions(monkeypatch: pytest.MonkeyPatch) -> None:
    reference, candidate = _cancelling_conv_bn(fold=False), _cancelling_conv_bn(fold=True)
    source = onnxprune.InputSource(samples=2)
    strict = onnxprune.validate(reference, candidate, source, atol=0.0, rtol=0.0)
    assert strict.passed and strict.outputs[0].atol > 0, "the BN fold's rounding is within the original's own noise"
    monkeypatch.setattr(validate_module, "NOISE_FACTOR", 0.0)
    assert not onnxprune.validate(reference, candidate, source, atol=0.0, rtol=0.0).passed


# --- a batch declared as -1 ------------------------------------------------------------------------------------


def test_calibration_fills_a_batch_declared_minus_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hm.conv_chain()
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_value = -1
    path, calibration = tmp_path / "paddle_style.onnx", tmp_path / "calibration.npz"
    onnx.save(model, path)
    np.savez(calibration, input=np.random.default_rng(0).standard_normal((64, 3, 12, 12)).astype(np.float32))
    report = tmp_path / "report.json"
    argv = ["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", "0.25", "--round-to", "1", "--calibration", str(calibration)]
    code, _, err = _run(capsys, *argv, "--report", str(report), "--min-cosine", "-1", "--no-config", *FAST)
    assert code == 0, err
    assert _report(report)["pruned"]["macs"] < _report(report)["original"]["macs"]


def _paddle_style_classifier_head() -> onnx.ModelProto:
    """Pool, then a Reshape whose target is computed through int32 casts from Constant nodes at opset 11 (as Paddle writes it), then MatMul, Add, Softmax."""
    constants = {"zero": [0], "one": [1]}
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype=np.int64), name)) for name, value in constants.items()
    ]
    nodes += [
        helper.make_node("Constant", [], ["features32"], value=numpy_helper.from_array(np.array([8], dtype=np.int32), "features32")),
        helper.make_node("Cast", ["features32"], ["features"], to=TensorProto.INT64),
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Shape", ["pooled"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape32"], to=TensorProto.INT32),
        helper.make_node("Slice", ["shape32", "zero", "one", "zero", "one"], ["batch32"]),
        helper.make_node("Cast", ["batch32"], ["batch"], to=TensorProto.INT64),
        helper.make_node("Concat", ["batch", "features"], ["target"], axis=0),
        helper.make_node("Reshape", ["pooled", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["scores"]),
        helper.make_node("Add", ["scores", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.ones((8, 2), dtype=np.float32), "w"),
        numpy_helper.from_array(np.zeros(2, dtype=np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_macs_behind_a_run_time_reshape_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shape inference stops at the int32 casts; the shapes are read off one onnxruntime run instead."""
    cost_module = importlib.import_module("onnxprune.analysis.cost")
    model = _paddle_style_classifier_head()
    cost = onnxprune.model_cost(model, shapes={"x": (3, 8, 4, 4)})
    assert cost.unknown_shape_nodes == [] and cost.macs == 3 * 8 * 2
    monkeypatch.setattr(cost_module, "_measure_missing_shapes", lambda model: None)
    assert onnxprune.model_cost(model, shapes={"x": (3, 8, 4, 4)}).unknown_shape_nodes
