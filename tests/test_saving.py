"""Writing a model and its external data file: a crash or a failed run never leaves a mismatched pair behind.

The model at OUT and the data file it points at are replaced as a unit: at
every point of a save, OUT with its data file is either the complete old
model or the complete new one.  A failed run removes OUT together with the
data file it owns, and never a file the input model reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import ir as irx
from onnxprune.cli import main
from tests import hostile_models as hm
from tests.conftest import run_onnx

FEEDS = {"x": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the point where it is raised runs, no ``except Exception`` catches it."""


def _model(seed: int, relu: bool) -> onnx.ModelProto:
    """``x @ w + b`` (then Relu when ``relu``): two such models share their weight layout but not their graph."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a" if relu else "y"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["a"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])],
        [
            numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


OLD, NEW = _model(1, relu=False), _model(2, relu=True)


def _outputs(path: Path) -> np.ndarray:
    """The model's output, after the full check from the file (which reads its data file)."""
    onnx.checker.check_model(str(path), full_check=True)
    return run_onnx(path, FEEDS)[0]


def _kill_at(step: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count renames and deletions (the steps that publish or retire files); raise :class:`Killed` at ``step``.

    Returns the log of steps taken, so a run with ``step=-1`` counts them.
    """
    log: list[str] = []

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(log) == step:
                raise Killed(name)
            log.append(name)
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(os, "replace", wrap("replace", os.replace))
    monkeypatch.setattr(Path, "unlink", wrap("unlink", Path.unlink))
    return log


def _save_old_then_new(directory: Path, step: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    directory.mkdir()
    out = directory / "model.onnx"
    irx.save(irx.from_proto(OLD), out, external_data=True)
    with monkeypatch.context() as patch:
        log = _kill_at(step, patch)
        with contextlib.suppress(Killed):
            irx.save(irx.from_proto(NEW), out, external_data=True)
    return out, log


def test_a_save_killed_at_any_step_leaves_the_old_pair_or_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old_outputs, new_outputs = run_onnx(OLD, FEEDS)[0], run_onnx(NEW, FEEDS)[0]
    assert not np.allclose(old_outputs, new_outputs)
    _, steps = _save_old_then_new(tmp_path / "count", -1, monkeypatch)
    assert "replace" in steps
    seen = set()
    for step in range(len(steps)):
        out, _ = _save_old_then_new(tmp_path / f"kill_{step}", step, monkeypatch)
        outputs = _outputs(out)
        assert np.array_equal(outputs, old_outputs) or np.array_equal(outputs, new_outputs), f"killed at step {step} ({steps[step]})"
        seen.add("new" if np.array_equal(outputs, new_outputs) else "old")
    assert seen == {"old", "new"}


def test_saving_again_replaces_the_data_file_and_same_weights_get_the_same_name(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    irx.save(irx.from_proto(OLD), out, external_data=True)
    (first,) = irx.owned_data_files(out)
    irx.save(irx.from_proto(NEW), out, external_data=True)
    (second,) = irx.owned_data_files(out)
    assert second != first and not first.exists()
    irx.save(irx.from_proto(NEW), out, external_data=True)
    assert irx.owned_data_files(out) == {second}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", second.name]
    np.testing.assert_array_equal(_outputs(out), run_onnx(NEW, FEEDS)[0])


def test_saving_without_external_data_removes_the_previous_data_file(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    irx.save(irx.from_proto(OLD), out, external_data=True)
    irx.save(irx.from_proto(NEW), out, external_data=False)
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]
    np.testing.assert_array_equal(_outputs(out), run_onnx(NEW, FEEDS)[0])


def _prune(source: Path, out: Path, *extra: str) -> int:
    return main(["prune", str(source), "-o", str(out), "--channel-ratio", "0", "--external-data", "--no-bench", *extra])


def test_a_failed_run_removes_the_previous_output_with_its_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "input.onnx", tmp_path / "out.onnx"
    onnx.save(hm.conv_chain(), str(source))
    assert _prune(source, out) == 0
    assert list(tmp_path.glob("out.onnx*.data"))
    assert _prune(source, out, "--max-macs-ratio", "0.01") == 1
    assert [path.name for path in tmp_path.iterdir()] == ["input.onnx"]


@pytest.mark.parametrize("gate", [[], ["--max-macs-ratio", "0.01"]], ids=["passed", "failed"])
def test_the_data_file_the_input_reads_is_never_removed(gate: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The previous OUT was copied to the input: both point at OUT's data file, which the input still needs."""
    out, source = tmp_path / "out.onnx", tmp_path / "input.onnx"
    irx.save(irx.from_proto(hm.conv_chain()), out, external_data=True)
    shutil.copyfile(out, source)
    (data,) = irx.owned_data_files(out)
    before = data.read_bytes()
    _prune(source, out, *gate)
    assert data.read_bytes() == before
    onnx.checker.check_model(str(source), full_check=True)
