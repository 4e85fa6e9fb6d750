"""The build step: gates, exit codes, config files, determinism, never touching the input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import onnx_ir as ir
import pytest

from onnxprune import ir as irx
from onnxprune.cli import main
from onnxprune.passes.base import PruningResult
from onnxprune.passes.cleanup import CleanupPass
from tests.conftest import MODELS_DIR, REPO

CONVNET = MODELS_DIR / "convnet2.onnx"
DIGITS = MODELS_DIR / "digits_cnn.onnx"
DIGITS_NPZ = MODELS_DIR / "digits_test.npz"
FAST = ["--runs", "3", "--warmup", "0"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prune(tmp_path: Path, *argv: str, model: Path = DIGITS) -> tuple[int, dict, Path]:
    out = tmp_path / "out.onnx"
    report = tmp_path / "report.json"
    code = main(["prune", str(model), "-o", str(out), "--report", str(report), *FAST, *argv])
    return code, json.loads(report.read_text()), out


LOSSY = ["--weight-sparsity", "0.9"]
EXACT = ["--channel-ratio", "0"]


@pytest.mark.parametrize(
    ("gate", "passing", "failing", "extra"),
    [
        ("--max-abs-diff", "1e9", "1e-9", LOSSY),
        ("--min-cosine", "0.0", "0.999999", LOSSY),
        ("--min-top1-agreement", "0.0", "1.0", ["--weight-sparsity", "0.97"]),
        ("--min-accuracy", "0.5", "1.0", ["--calibration", str(DIGITS_NPZ), "--weight-sparsity", "0.5"]),
        ("--min-speedup", "0.01", "100", EXACT),
        ("--max-macs-ratio", "1.0", "0.5", EXACT),
    ],
)
def test_each_gate_passes_and_fails(gate: str, passing: str, failing: str, extra: list[str], tmp_path: Path) -> None:
    code, report, out = _prune(tmp_path, gate, passing, *extra)
    assert code == 0 and out.exists()
    assert report["gates"] and all(entry["passed"] for entry in report["gates"])

    out.unlink()
    code, report, out = _prune(tmp_path, gate, failing, *extra)
    assert code == 1
    assert not out.exists(), "a failed gate must not leave a model behind"
    failed = [entry for entry in report["gates"] if not entry["passed"]]
    assert [entry["name"] for entry in failed] == [gate.lstrip("-")]
    assert report["failures"] and gate.lstrip("-") in report["failures"][0]


def test_failed_gate_removes_a_stale_output(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(DIGITS.read_bytes())
    code, _, out = _prune(tmp_path, "--max-macs-ratio", "0.1", *EXACT)
    assert code == 1 and not out.exists()


def test_report_has_the_documented_fields(tmp_path: Path) -> None:
    code, report, _ = _prune(tmp_path, "--weight-sparsity", "0.5", "--calibration", str(DIGITS_NPZ))
    assert code == 0
    for side in ("original", "pruned"):
        assert set(report[side]) >= {"params", "macs", "file_bytes", "compressed_bytes", "nodes", "latency_ms"}
        assert set(report[side]["latency_ms"]) >= {"median", "p90"}
    assert report["speedup"] > 0
    output = report["validation"]["outputs"][0]
    assert set(output) >= {"max_abs_diff", "max_rel_diff", "cosine", "top1_agreement"}
    assert set(report["validation"]["accuracy"]) == {"reference", "candidate"}
    assert set(report["versions"]) >= {"onnxprune", "onnx", "onnxruntime"}
    assert report["config"]["weight-sparsity"] == 0.5
    assert [step["name"] for step in report["passes"]][:2] == ["simplify", "weights"]


def test_exact_steps_only_write_an_equivalent_model(tmp_path: Path) -> None:
    code, report, out = _prune(tmp_path, *EXACT, model=CONVNET)
    assert code == 0 and out.exists()
    assert report["validation"]["passed"] and not report["lossy"]
    assert report["validation"]["outputs"][0]["max_abs_diff"] <= 1e-5


def test_same_input_gives_byte_identical_output(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    argv = ["--weight-sparsity", "0.5", "--no-bench", "--no-validate"]
    assert _prune(first, *argv)[0] == 0
    assert _prune(second, *argv)[0] == 0
    assert _sha(first / "out.onnx") == _sha(second / "out.onnx")


def test_input_file_is_never_modified_and_cannot_be_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(DIGITS.read_bytes())
    before = _sha(model)
    assert main(["prune", str(model), "-o", str(tmp_path / "out.onnx"), "--weight-sparsity", "0.5", "--min-cosine", "-1", *FAST]) == 0
    assert _sha(model) == before
    assert main(["prune", str(model), "-o", str(model), "--weight-sparsity", "0.5"]) == 2
    assert "overwrite the input model" in capsys.readouterr().err
    assert _sha(model) == before


def test_config_file_and_pyproject_match_the_command_line(tmp_path: Path) -> None:
    options = {"weight-sparsity": 0.5, "weight-scope": "global", "seed": 3}
    command_line = tmp_path / "cli"
    command_line.mkdir()
    argv = ["--weight-sparsity", "0.5", "--weight-scope", "global", "--seed", "3", "--no-bench"]
    assert _prune(command_line, *argv)[0] == 0

    toml = tmp_path / "onnxprune.toml"
    toml.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items()))
    from_toml = tmp_path / "toml"
    from_toml.mkdir()
    code, report, _ = _prune(from_toml, "--config", str(toml), "--no-bench")
    assert code == 0 and report["config"]["weight-scope"] == "global"

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        "[tool.onnxprune]\nweight-sparsity = 0.1\n[tool.onnxprune.profile.ci]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())
    )
    code, _, _ = _prune(project, "--config", str(project / "pyproject.toml"), "--profile", "ci", "--no-bench")
    assert code == 0
    digests = {_sha(folder / "out.onnx") for folder in (command_line, from_toml, project)}
    assert len(digests) == 1


def test_command_line_overrides_the_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "onnxprune.toml"
    toml.write_text("weight-sparsity = 0.9\n")
    code, report, _ = _prune(tmp_path, "--config", str(toml), "--weight-sparsity", "0.25", "--no-bench")
    assert code == 0 and report["config"]["weight-sparsity"] == 0.25


def test_bad_config_key_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "onnxprune.toml"
    toml.write_text("weight-sparsty = 0.5\n")
    assert main(["prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'weight-sparsty'" in err and err.count("\n") == 1
    assert not (tmp_path / "out.onnx").exists()


def test_gate_that_cannot_be_measured_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", str(DIGITS), "-o", str(tmp_path / "out.onnx"), "--min-speedup", "1.5", "--no-bench", *EXACT]) == 2
    assert "--min-speedup needs timing" in capsys.readouterr().err


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(REPO)
    from onnxprune.analysis.channel_handlers import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the README's op registration ends with the test
    for block in blocks:
        exec(compile(block.replace("digits_cnn.pruned.onnx", str(tmp_path / "pruned.onnx")), "README.md", "exec"), {})
    assert (tmp_path / "pruned.onnx").exists()


def test_drift_after_only_exact_passes_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that declares itself exact but changes the function must not get through: the run fails, nothing is written."""
    exact_call = CleanupPass.call

    def perturbing_call(self: CleanupPass, model: ir.Model) -> PruningResult:
        result = exact_call(self, model)
        weight = next(node.inputs[1] for node in model.graph if node.op_type == "Conv")
        irx.set_constant(weight, irx.constant_array(weight) * 2)
        assert result.exact
        return result

    monkeypatch.setattr(CleanupPass, "call", perturbing_call)
    code, report, out = _prune(tmp_path, "--no-bench", *EXACT, model=CONVNET)
    assert code == 1 and not out.exists()
    assert report["lossy"] is False and not report["validation"]["passed"]
    assert report["failures"] and all("although no lossy pass ran" in failure for failure in report["failures"])
    assert "drifted" in report["failures"][0]


def test_failed_channel_plan_leaves_the_model_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune.passes import channel_apply
    from onnxprune.passes.channel_plan import ChannelPlanError

    def failing_check(*_: object) -> None:
        raise ChannelPlanError("shapes disagree after the trial")

    monkeypatch.setattr(channel_apply, "check_on_copy", failing_check)
    code, report, out = _prune(tmp_path, "--channel-ratio", "0.5", model=CONVNET)
    assert code == 0 and out.exists()
    step = next(step for step in report["passes"] if step["name"] == "channels")
    assert "shapes disagree after the trial" in step["skipped"][0]["reason"]
    assert report["pruned"]["macs"] == report["original"]["macs"]


def test_weight_pruning_reports_smaller_compressed_size(tmp_path: Path) -> None:
    code, report, _ = _prune(tmp_path, "--weight-sparsity", "0.9", "--min-cosine", "-1", "--no-dead-channels", "--no-bench")
    assert code == 0
    original, pruned = report["original"], report["pruned"]
    assert pruned["params"] == original["params"], "zeroed weights stay stored dense"
    assert pruned["file_bytes"] == pytest.approx(original["file_bytes"], rel=0.01)
    assert pruned["compressed_bytes"] < 0.5 * original["compressed_bytes"]
    weights = next(step for step in report["passes"] if step["name"] == "weights")
    assert "does not run faster" in weights["summary"]["note"]


def test_calibration_tunes_on_the_fit_part_and_validates_on_the_held_out_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """No sample that validation judges is ever read by channel scoring or the refit."""
    import numpy as np

    import onnxprune
    from onnxprune.calibration import held_out_mask
    from onnxprune.reconstruct import capture

    seen: list[np.ndarray] = []
    read = capture.ValueReader.read

    def recording_read(self: capture.ValueReader, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(feeds["input"])
        return read(self, feeds)

    monkeypatch.setattr(capture.ValueReader, "read", recording_read)
    data = MODELS_DIR / "digits_test.npz"
    result = onnxprune.prune(MODELS_DIR / "digits_cnn.onnx", channel_ratio=0.5, calibration=str(data), bench=False, quiet=True)
    samples = np.load(data)["input"]
    held_out = held_out_mask(len(samples), 0.25)
    read_rows = {row.tobytes() for batch in seen for row in batch}
    assert seen and read_rows == {row.tobytes() for row in samples[~held_out]}
    validation = result.report["validation"]
    assert validation["data"].startswith(f"{held_out.sum()} held-out samples of {data}")
    assert validation["accuracy"]["candidate"] > 0.9  # labels of the held-out part line up with its samples
    channels = next(step for step in result.report["passes"] if step["name"] == "channels")
    assert channels["summary"]["importance"] == "data" and channels["summary"]["refit_layers"] >= 1


def test_labels_without_calibration_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prune", str(MODELS_DIR / "digits_cnn.onnx"), "-o", str(tmp_path / "out.onnx"), "--channel-ratio", "0.5", "--labels", "x.npy"])
    assert code == 2 and "--labels needs --calibration" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


def test_quiet_prune_prints_nothing_even_from_data_driven_passes(capsys: pytest.CaptureFixture[str]) -> None:
    import onnxprune

    onnxprune.prune(
        MODELS_DIR / "digits_cnn.onnx", channel_ratio=0.5, calibration=str(MODELS_DIR / "digits_calibration.npz"), bench=False, quiet=True
    )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"wrong": (4, 1, 8, 8)}, "'wrong' is not an input of the model"),
        ({"input": (4, 8, 8)}, "'input' has rank 3"),
        ({"input": (1, 1, 8, 8)}, "sample"),
    ],
)
def test_calibration_that_does_not_fit_the_model_is_one_line_and_exit_2(
    arrays: dict[str, tuple[int, ...]], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    data = tmp_path / "calibration.npz"
    np.savez(data, **{name: np.zeros(shape, np.float32) for name, shape in arrays.items()})
    out = tmp_path / "out.onnx"
    code = main(["prune", str(MODELS_DIR / "digits_cnn.onnx"), "-o", str(out), "--channel-ratio", "0.5", "--calibration", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_latency_is_timed_on_a_calibration_sample_when_there_is_calibration_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's time can depend on the values, so a run with calibration data times both models on one of its samples.

    Every timed run is recorded: with calibration data each one is fed the
    first calibration sample; without, seeded random inputs (not a sample of
    the data), and the report says which.
    """
    import numpy as np

    import onnxprune
    from onnxprune import pipeline, runtime

    fed: list[np.ndarray] = []
    timing = [False]
    run, benchmark = runtime.run, pipeline.benchmark

    def recording_run(session: object, feeds: dict[str, np.ndarray]) -> object:
        if timing[0]:
            fed.append(feeds["input"])
        return run(session, feeds)  # type: ignore[arg-type]

    def timing_benchmark(*args: object, **kwargs: object) -> object:
        timing[0] = True
        try:
            return benchmark(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            timing[0] = False

    monkeypatch.setattr(runtime, "run", recording_run)
    monkeypatch.setattr(pipeline, "benchmark", timing_benchmark)
    calibration = np.load(DIGITS_NPZ)["input"]
    result = onnxprune.prune(MODELS_DIR / "digits_cnn.onnx", channel_ratio=0.5, calibration=calibration, validate=False, runs=3, warmup=1, quiet=True)
    assert len(fed) == 2 * (3 + 1) and all(np.array_equal(feeds, calibration[:1]) for feeds in fed)
    assert result.report["timed_on"] == "one sample of arrays given in Python"
    fed.clear()
    result = onnxprune.prune(MODELS_DIR / "digits_cnn.onnx", channel_ratio=0.5, validate=False, runs=3, warmup=1, quiet=True)
    assert len(fed) == 8 and not any(np.array_equal(feeds, calibration[:1]) for feeds in fed)
    assert result.report["timed_on"] == "random inputs (seed 0)"


def test_timing_inputs_must_be_the_graphs_inputs_in_its_dtypes() -> None:
    import numpy as np

    import onnxprune
    from onnxprune.errors import InputError

    model = MODELS_DIR / "digits_cnn.onnx"
    with pytest.raises(InputError, match=r"^timing inputs \['x'\] are not the graph's inputs \['input'\]$"):
        onnxprune.benchmark([model], runs=1, feeds={"x": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(InputError, match=r"^timing input 'input' is float64 \[1, 1, 8, 8\], the graph takes float32 \[1, 1, 8, 8\]$"):
        onnxprune.benchmark([model], runs=1, feeds={"input": np.zeros((1, 1, 8, 8))})


def test_the_passes_count_macs_at_the_calibration_shape_when_height_and_width_are_symbolic() -> None:
    """The layer and channel passes report MACs (and the layer pass sizes bypass savings) at the shape the run
    counts at: without it, every conv of a model with symbolic H and W counts nothing."""
    import numpy as np

    import onnxprune
    from tests.test_channels import Net

    net = Net(shape=("N", 3, "H", "W"))
    stem = net.relu(net.conv(net.input, 3, 8))
    merged = net.op("Add", [stem, net.conv(net.relu(net.conv(stem, 8, 8)), 8, 8)])
    model = net.model(net.gemm(net.op("Flatten", [net.op("GlobalAveragePool", [net.relu(merged)])]), 8, 4))
    calibration = {"x": np.random.default_rng(0).standard_normal((16, 3, 12, 12)).astype(np.float32)}
    options = {"bypass": (merged.removesuffix("_out"),), "channel_ratio": 0.5, "round_to": 1, "simplify": False, "bench": False, "quiet": True}

    report = onnxprune.prune(model, calibration=calibration, **options).report

    summaries = {step["name"]: step["summary"] for step in report["passes"]}
    assert report["original"]["macs"] == (8 * 3 * 9 + 2 * 8 * 8 * 9) * 12 * 12 + 8 * 4
    assert summaries["layers"]["macs_before"] == report["original"]["macs"]
    assert summaries["layers"]["macs_after"] == 8 * 3 * 9 * 12 * 12 + 8 * 4, "the residual branch is bypassed, proven at 12x12 and 24x24"
    assert summaries["channels"]["macs_before"] == summaries["layers"]["macs_after"]
    assert summaries["channels"]["macs_after"] == report["pruned"]["macs"] < report["original"]["macs"]
