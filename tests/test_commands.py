"""inspect, validate and bench on real models, and bad input to every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.cli import main
from tests.conftest import MODELS_DIR

CONVNET = MODELS_DIR / "convnet2.onnx"
DIGITS = MODELS_DIR / "digits_cnn.onnx"


def _perturbed_copy(source: Path, target: Path) -> None:
    """Copy a model with one weight nudged, the smallest real difference."""
    model = onnx.load(str(source))
    weight = next(init for init in model.graph.initializer if len(init.dims) == 4)
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(target))


def test_inspect_json_reports_interface_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(CONVNET), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert data["op_histogram"]["Conv"] == 2
    # conv1: 64*32*32 outputs x 3*3*3; conv2: 128*32*32 outputs x 64*3*3
    assert data["macs"] == 64 * 32 * 32 * 27 + 128 * 32 * 32 * 576
    assert data["params"] == 64 * 3 * 9 + 64 + 128 * 64 * 9 + 128
    assert data["file_bytes"] == CONVNET.stat().st_size
    assert data["unknown_shape_nodes"] == []


def test_inspect_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(CONVNET)]) == 0
    out = capsys.readouterr().out
    assert "op histogram" in out and "Conv" in out


def test_validate_passes_an_identical_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(CONVNET.read_bytes())
    assert main(["validate", str(CONVNET), str(copy), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and result["outputs"][0]["max_abs_diff"] == 0.0


def test_validate_catches_one_perturbed_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    changed = tmp_path / "changed.onnx"
    _perturbed_copy(CONVNET, changed)
    assert main(["validate", str(CONVNET), str(changed), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["passed"]
    assert result["outputs"][0]["max_abs_diff"] > 1e-3
    assert not result["outputs"][0]["within_tolerance"]


def test_validate_with_npz_reports_accuracy_and_top1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    changed = tmp_path / "changed.onnx"
    _perturbed_copy(DIGITS, changed)
    npz = MODELS_DIR / "digits_test.npz"
    main(["validate", str(DIGITS), str(changed), "--inputs", str(npz), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert 0.9 <= result["accuracy"]["reference"] <= 1.0
    assert result["outputs"][0]["top1_agreement"] is not None
    with np.load(npz) as archive:
        assert result["outputs"][0]["shape"] == [len(archive["labels"]), 10]


def test_validate_symbolic_dim_needs_input_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx.load(str(CONVNET))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[2].dim_param = "height"
        value.type.tensor_type.shape.dim[3].dim_param = "width"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    assert main(["validate", str(dynamic), str(dynamic)]) == 2
    assert "height" in capsys.readouterr().err
    assert main(["validate", str(dynamic), str(dynamic), "--input-shape", "input=1,3,16,16"]) == 0


def test_bench_times_two_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(CONVNET), str(CONVNET), "--runs", "5", "--warmup", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    assert all(row["median_ms"] > 0 and row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] for row in rows)
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] > 0


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(CONVNET.read_bytes()[:5000])
    return {
        "missing": tmp_path / "missing.onnx",
        "directory": tmp_path,
        "empty": empty,
        "garbage": garbage,
        "truncated": truncated,
    }


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "garbage", "truncated"])
@pytest.mark.parametrize("command", ["inspect", "validate", "bench", "prune"])
def test_bad_input_is_one_line_and_exit_2(command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = str(_bad_files(tmp_path)[kind])
    out = tmp_path / "out.onnx"
    argv = {
        "inspect": ["inspect", bad],
        "validate": ["validate", str(CONVNET), bad],
        "bench": ["bench", bad],
        "prune": ["prune", bad, "-o", str(out)],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxprune: error:") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not out.exists()


def test_console_script_bad_input_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onnxprune.cli", "inspect", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"onnxprune: error: {tmp_path / 'nope.onnx'}: no such file"


def test_usage_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(CONVNET)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
