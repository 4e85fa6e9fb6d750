"""Accuracy, MACs, speed and pruning cost of onnxprune against onnxsim's Wanda pruning, on trained models with real data.

    python tools/bench_accuracy.py [tasks...] [--targets 0.5 0.286] [--runs N]

For every task of ``tools/eval_tasks.py`` (all by default) and every MAC
target (pruned MACs / original MACs), three pruned models are made at the same
MAC budget and scored on the task's labeled evaluation data:

- ``onnxprune l1``: weight-magnitude ranking, no calibration, no refit;
- ``onnxprune data``: the defaults with ``--calibration`` (data-driven ranking
  and least-squares refit);
- ``onnxsim wanda+ft``: onnxsim's ``apply_structured_wanda_pruning`` (L2 weight
  norm x activation norm) then ``apply_pruning_finetune`` (ridge refit of
  MatMul/Gemm), on the same calibration batches.

How the budget is matched: onnxprune removes a uniform fraction of every
channel group (``channel_ratio``), onnxsim a uniform fraction of every matched
chain (``sparsity``); each knob is bisected until the MACs ratio is the largest
one not above the target (or, if the target cannot be reached, the smallest
one reachable). The channel *counts* depend only on the knob, never on the
data, so onnxprune's search uses the cheap L1 mode and onnxsim's uses one
small calibration batch; the MACs of the final models are counted again and
compared with the search's, so a mismatch would show.

MACs are counted by ``onnxprune.model_cost`` on a copy whose inputs are fixed
to the calibration shape with batch 1: PP-OCR's inputs have symbolic height
and width, and without concrete shapes most of its convolutions count as 0.

Every prune runs in its own child process (``python tools/bench_accuracy.py
--child SPEC``), so its wall time and peak memory are its own. Peak memory is
the child's ``VmHWM`` (``/proc/self/status``), not ``ru_maxrss``: on Linux,
``ru_maxrss`` of an exec'd child inherits the peak of the parent that spawned
it, which here is this benchmark with its models and onnxruntime sessions.

The onnxprune package is copied to ``build/accuracy/onnxprune_snapshot/`` at
the start and imported from there by this process and every child
(``--no-snapshot`` uses the live package): others edit it while a run of tens
of minutes goes on, and without a frozen copy one table could mix versions, or
a child could import a file half-written.

Pruned models go to ``build/accuracy/<task>/``; the results to
``benchmarks/accuracy.md`` and ``benchmarks/accuracy.json``, rewritten after
each task so that a long run interrupted part-way keeps what it finished.
``--update`` reruns only the tasks named and keeps the others' results from
``accuracy.json``; every task says which command, date and onnxprune
produced it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))  # the tools import each other by module name

from eval_common import REPO, Metrics, Task, load_npz  # noqa: E402

Shapes = dict[str, tuple[int, ...]]

DEFAULT_TARGETS = (0.5, 0.286)
METHODS = ("onnxprune_l1", "onnxprune_data", "onnxsim_wanda_ft")
CONTROL = "original_control"
METHOD_LABELS = {
    "onnxprune_l1": "onnxprune l1",
    "onnxprune_data": "onnxprune data",
    "onnxsim_wanda_ft": "onnxsim wanda+ft",
    CONTROL: "original, timed again last (control)",
}
KNOB_NAMES = {"onnxprune_l1": "channel_ratio", "onnxprune_data": "channel_ratio", "onnxsim_wanda_ft": "sparsity"}
SEARCH_HIGH = 0.95
"""Upper end of both knobs' search: removing more than 95% of every group is not a model worth timing."""
SEARCH_STEPS = 10
"""Bisection steps: 0.95 / 2**10 < 0.001, finer than one channel of any group these models have."""
CALIBRATION_BATCH = 32
SEARCH_SAMPLES = 4
"""Calibration samples for onnxsim's search runs: its channel counts do not depend on the data, only its ranking does."""
RUNS = {"digits": 200, "mtcnn_rnet": 200, "mtcnn_onet": 200, "ppocr_cls": 200, "ppocr_rec": 30, "ppocr_det": 30}
WARMUP = 5
CHILD_TIMEOUT_S = 1800
WORKDIR = Path("build/accuracy")
SNAPSHOT = "onnxprune_snapshot"
OUTPUT = Path("benchmarks/accuracy.md")
HEADLINE_NOTES = {
    "digits": "top-1 accuracy on the 450-image scikit-learn digits test split",
    "mtcnn_rnet": "face/non-face accuracy on 100 LFW faces + 100 backgrounds (24x24)",
    "mtcnn_onet": "face/non-face accuracy on 100 LFW faces + 100 backgrounds (48x48)",
    "ppocr_cls": "0/180 degree orientation accuracy on rendered text lines",
    "ppocr_rec": "exact-match rate of the CTC-decoded text of rendered lines",
    "ppocr_det": "text-mask IoU against the original model's mask on rendered pages",
}


# --- child processes: one prune or one search each -------------------------------------------------


def _import_everything() -> None:
    """Both tools' stacks, in every child, so the memory baseline before pruning is the same whichever tool runs."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxsim  # noqa: F401

    import onnxprune  # noqa: F401


def _status_mb(key: str) -> float:
    """A ``VmHWM``/``VmRSS`` line of ``/proc/self/status`` in MiB; per address space, so not inherited from the parent."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def calibration_batches(path: Path, size: int = CALIBRATION_BATCH, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """The task's calibration npz as onnxsim wants it: consecutive ``{input: array}`` batches of ``size`` samples."""
    arrays = load_npz(path)
    count = len(next(iter(arrays.values())))
    if limit is not None:
        count = min(count, limit)
    return [{name: array[start : min(start + size, count)] for name, array in arrays.items()} for start in range(0, count, size)]


def onnxprune_options(method: str, calibration: Path, round_to: int | None) -> dict[str, Any]:
    """The API options of an onnxprune method; no timing or validation, which would only add to the prune time."""
    common: dict[str, Any] = {"bench": False, "validate": False}
    if round_to is not None:
        common["round_to"] = round_to
    if method == "onnxprune_l1":
        return {**common, "importance": "l1", "reconstruct": False}
    if method == "onnxprune_data":
        return {**common, "calibration": str(calibration)}
    raise ValueError(f"not an onnxprune method: {method}")


def prune_onnxprune(model: Path, knob: float, method: str, calibration: Path, round_to: int | None) -> Any:
    """``onnxprune.prune`` at ``channel_ratio=knob``; returns the ``ir.Model``."""
    import onnxprune

    return onnxprune.prune(model, channel_ratio=knob, quiet=True, **onnxprune_options(method, calibration, round_to)).model


def prune_onnxsim(model: Path, knob: float, batches: Sequence[Mapping[str, np.ndarray]], finetune: bool) -> Any:
    """onnxsim's structured Wanda pruning at ``sparsity=knob``, then its ridge refit; returns the ``ModelProto``."""
    import onnx
    import onnxsim

    original = onnx.load(str(model))
    pruned = onnxsim.apply_structured_wanda_pruning(original, calibration_data=list(batches), sparsity=knob, importance_norm="l2")
    if finetune:
        pruned = onnxsim.apply_pruning_finetune(original, pruned, calibration_data=list(batches))
    return pruned


def child_prune(spec: dict[str, Any]) -> dict[str, Any]:
    """Prune once and save; the clock and the memory peak cover loading, pruning and refitting, not imports or saving."""
    import onnx

    import onnxprune

    method, model, calibration = spec["method"], Path(spec["model"]), Path(spec["calibration"])
    batches = calibration_batches(calibration) if method == "onnxsim_wanda_ft" else []
    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    if method == "onnxsim_wanda_ft":
        proto = prune_onnxsim(model, spec["knob"], batches, finetune=True)
        seconds = time.perf_counter() - start
        peak = _status_mb("VmHWM")
        onnx.save(proto, spec["output"])
    else:
        pruned = prune_onnxprune(model, spec["knob"], method, calibration, spec["round_to"])
        seconds = time.perf_counter() - start
        peak = _status_mb("VmHWM")
        onnxprune.save(pruned, spec["output"])
    ru_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"prune_s": seconds, "peak_mb": peak, "rss_before_mb": rss_before, "ru_maxrss_mb": ru_maxrss_mb}


def child_search(spec: dict[str, Any]) -> dict[str, Any]:
    """Bisect a method's knob to the MAC target; MACs only, so onnxprune runs in L1 mode and onnxsim on a few samples."""
    import onnxprune
    from onnxprune import ir as irx

    model, calibration = Path(spec["model"]), Path(spec["calibration"])
    shapes = {name: tuple(dims) for name, dims in spec["shapes"].items()}
    original_macs = onnxprune.model_cost(onnxprune.load(model), shapes=shapes).macs
    if spec["method"] == "onnxsim_wanda_ft":
        batches = calibration_batches(calibration, size=SEARCH_SAMPLES, limit=SEARCH_SAMPLES)

        def macs_ratio(knob: float) -> float:
            return onnxprune.model_cost(irx.from_proto(prune_onnxsim(model, knob, batches, finetune=False)), shapes=shapes).macs / original_macs

    else:

        def macs_ratio(knob: float) -> float:
            pruned = prune_onnxprune(model, knob, "onnxprune_l1", calibration, spec["round_to"])
            return onnxprune.model_cost(pruned, shapes=shapes).macs / original_macs

    return asdict(bisect_knob(macs_ratio, spec["target"]))


def run_child(spec: dict[str, Any]) -> None:
    """Entry point of ``--child``: one JSON line on stdout, the last thing printed."""
    _import_everything()
    import onnxprune

    result = child_search(spec) if spec["job"] == "search" else child_prune(spec)
    result["onnxprune_file"] = onnxprune.__file__
    sys.stdout.flush()
    print(json.dumps(result))


class ChildError(RuntimeError):
    """A child process failed; the message is one line, for the table."""


def spawn(spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Run a child job; its JSON answer and the process's whole wall time (start-up and imports included)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=REPO, check=False)
    except subprocess.TimeoutExpired as error:
        raise ChildError(f"timed out after {CHILD_TIMEOUT_S} s") from error
    elapsed = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ChildError(last_error_line(done.stderr) or f"exit status {done.returncode}")
    answer = json.loads(lines[-1])
    check_same_onnxprune(answer.pop("onnxprune_file"))
    return answer, elapsed


def check_same_onnxprune(child_file: str) -> None:
    """Refuse a child's answer if it imported another onnxprune than this process (the snapshot, unless --no-snapshot)."""
    import onnxprune

    if Path(child_file).resolve().parent != Path(onnxprune.__file__).resolve().parent:
        raise ChildError(f"the child imported onnxprune from {child_file}, not from {onnxprune.__file__}")


def last_error_line(stderr: str) -> str:
    """The exception line of a traceback (the last non-empty line), shortened for a table cell."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# --- MACs and the knob search --------------------------------------------------------------------


def input_shapes(calibration: Path) -> Shapes:
    """Each input's calibration shape with batch 1: the concrete shape that MACs are counted and models timed at."""
    return {name: (1, *array.shape[1:]) for name, array in load_npz(calibration).items()}


@dataclass
class Search:
    """Where a knob bisection ended and every point it tried (knob, MACs ratio)."""

    target: float
    knob: float
    macs_ratio: float
    reached: bool
    tried: list[tuple[float, float]] = field(default_factory=list)


def bisect_knob(macs_ratio: Callable[[float], float], target: float, high: float = SEARCH_HIGH, steps: int = SEARCH_STEPS) -> Search:
    """The lowest knob whose MACs ratio is the largest not above ``target``; if none is, the lowest with the smallest ratio.

    MACs fall in steps as the knob grows (channel counts are rounded), so a
    bisection finds the lowest knob of the step under the goal. When even
    ``high`` stays above the target, the goal becomes ``high``'s ratio, so the
    model pruned is the least damaged one among those with the fewest MACs
    reachable. The final choice is made over every point tried, which stays
    right even if a pruner's counts were not monotonic in the knob. A pruner
    that removes nothing even at ``high`` is left at ``high``.
    """
    tried = [(high, macs_ratio(high))]
    goal = max(target, tried[0][1])
    if goal < 1.0:
        low = 0.0
        for _ in range(steps):
            middle = (low + high) / 2
            ratio = macs_ratio(middle)
            tried.append((middle, ratio))
            low, high = (low, middle) if ratio <= goal else (middle, high)
    below = [point for point in tried if point[1] <= goal]
    knob, ratio = min(below, key=lambda point: (-point[1], point[0]))
    return Search(target=target, knob=knob, macs_ratio=ratio, reached=ratio <= target, tried=tried)


# --- one task ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One model of a task's table: what made it, what it costs and how well it does."""

    method: str
    target: float | None = None
    knob: float | None = None
    search_macs_ratio: float | None = None
    target_reached: bool | None = None
    path: str | None = None
    macs: int | None = None
    macs_ratio: float | None = None
    elementwise_ratio: float | None = None
    """Other ops' output elements (activations, adds, pools...) / the original's: time that MACs do not show."""
    unknown_shape_nodes: int | None = None
    """Weight ops whose MACs could not be counted (no inferred shape); counted as 0 in ``macs``."""
    metrics: Metrics = field(default_factory=dict)
    median_ms: float | None = None
    speedup: float | None = None
    prune_s: float | None = None
    process_s: float | None = None
    peak_mb: float | None = None
    rss_before_mb: float | None = None
    ru_maxrss_mb: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Settings:
    """What the command line chose, passed down to every task."""

    targets: tuple[float, ...]
    runs: int | None
    round_to: int | None
    workdir: Path


def job_spec(task: Task, job: str, method: str, settings: Settings, **extra: Any) -> dict[str, Any]:
    """The JSON a child process gets: what to do, to which model, with which data."""
    return {"job": job, "method": method, "model": str(task.model), "calibration": str(task.calibration), "round_to": settings.round_to, **extra}


def search_knob(task: Task, method: str, target: float, shapes: Shapes, settings: Settings) -> Search:
    """Run a knob search in a child process (a crash in a pruner's native code then costs one row, not the run)."""
    answer, _ = spawn(job_spec(task, "search", method, settings, target=target, shapes=shapes))
    answer["tried"] = [tuple(point) for point in answer["tried"]]
    return Search(**answer)


def prune_row(task: Task, method: str, search: Search, folder: Path, settings: Settings) -> Row:
    """Prune at the searched knob in a child process, save, and record its time and memory."""
    output = folder / f"macs{search.target:g}_{method}.onnx"
    row = Row(method, search.target, search.knob, search.macs_ratio, search.reached, str(output.relative_to(REPO)))
    answer, row.process_s = spawn(job_spec(task, "prune", method, settings, knob=search.knob, output=str(output)))
    row.prune_s, row.peak_mb, row.rss_before_mb, row.ru_maxrss_mb = (answer[key] for key in ("prune_s", "peak_mb", "rss_before_mb", "ru_maxrss_mb"))
    return row


def target_rows(task: Task, target: float, shapes: Shapes, folder: Path, settings: Settings) -> list[Row]:
    """The three methods at one MAC target; a failing method gives a row with its error and the others go on."""
    rows: list[Row] = []
    searches: dict[str, Search] = {}
    for method in METHODS:
        search_method = "onnxprune_l1" if method.startswith("onnxprune") else method
        try:
            if search_method not in searches:
                searches[search_method] = search_knob(task, search_method, target, shapes, settings)
            rows.append(prune_row(task, method, searches[search_method], folder, settings))
        except Exception as error:  # a pruner failing on a model is a result, not a reason to stop
            rows.append(Row(method, target, error=one_line(error)))
        log(f"  {task.name} {target:g} {method}: " + (rows[-1].error or f"{KNOB_NAMES[method]}={rows[-1].knob:.4f} in {rows[-1].prune_s:.1f} s"))
    return rows


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, for a table cell."""
    text = " ".join(str(error).split())
    return text if isinstance(error, ChildError) else f"{type(error).__name__}: {text}"[:300]


def measure(task: Task, rows: list[Row], shapes: Shapes, runs: int) -> None:
    """MACs and metrics of every model that exists, then all of them timed together against the original."""
    import onnxprune

    original = onnxprune.load(task.model)
    original_cost = onnxprune.model_cost(original, shapes=shapes)
    original_macs = original_cost.macs
    rows[0].macs, rows[0].macs_ratio, rows[0].metrics = original_macs, 1.0, task.evaluate(task.model)
    rows[0].elementwise_ratio, rows[0].unknown_shape_nodes = 1.0, len(original_cost.unknown_shape_nodes)
    models = [original]
    timed = [rows[0]]
    for row in rows[1:]:
        if row.error is not None or row.path is None:
            continue
        try:
            model = onnxprune.load(REPO / row.path)
            cost = onnxprune.model_cost(model, shapes=shapes)
            row.macs, row.macs_ratio, row.unknown_shape_nodes = cost.macs, cost.macs / original_macs, len(cost.unknown_shape_nodes)
            row.elementwise_ratio = cost.elementwise_ops / max(original_cost.elementwise_ops, 1)
            row.metrics = task.evaluate(REPO / row.path)
        except Exception as error:
            row.error = one_line(error)
            continue
        models.append(model)
        timed.append(row)
    # The original again, timed last: the "speedup" of an identical model shows the noise and any bias of position.
    control = Row(CONTROL, macs=original_macs, macs_ratio=1.0)
    rows.append(control)
    # Timed on a real sample: onnxruntime's time can depend on the values (PP-OCRv5 rec's refit cut ran 1.5x slower on random inputs).
    sample = {name: array[:1] for name, array in load_npz(task.calibration).items()}
    timings = onnxprune.benchmark([*models, original.clone()], runs=runs, warmup=WARMUP, threads=1, quiet=True, feeds=sample)
    for row, timing in zip([*timed, control], timings):
        row.median_ms, row.speedup = timing.median_ms, timing.speedup


def run_task(name: str, settings: Settings) -> dict[str, Any]:
    """Every method at every target for one task, measured; returns the task's JSON record."""
    from eval_tasks import build_task

    start = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    task = build_task(name)
    shapes = input_shapes(task.calibration)
    folder = REPO / settings.workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = [Row("original", path=str(Path(task.model).resolve().relative_to(REPO)))]
    for target in settings.targets:
        rows.extend(target_rows(task, target, shapes, folder, settings))
    task_runs = settings.runs or RUNS.get(name, 50)
    measure(task, rows, shapes, task_runs)
    return {
        "task": name,
        "headline": next(iter(rows[0].metrics)),
        "input_shapes": shapes,
        "calibration_samples": len(next(iter(load_npz(task.calibration).values()))),
        "file_sha256": {str(Path(path).resolve().relative_to(REPO)): file_sha256(Path(path)) for path in (task.model, task.calibration)},
        "runs": task_runs,
        "data_macs_match_l1": macs_checks(rows),
        "rows": [asdict(row) for row in rows],
        "seconds": time.perf_counter() - start,
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
    }


def macs_checks(rows: Sequence[Row]) -> dict[str, bool | None]:
    """Per target: does the data-driven model have the MACs of the L1 model at the same ratio (the search's assumption)?"""
    by_key = {(row.target, row.method): row for row in rows}
    checks: dict[str, bool | None] = {}
    for target in sorted({row.target for row in rows if row.target is not None}, reverse=True):
        l1, data = by_key.get((target, "onnxprune_l1")), by_key.get((target, "onnxprune_data"))
        checks[f"{target:g}"] = None if l1 is None or data is None or l1.macs is None or data.macs is None else l1.macs == data.macs
    return checks


# --- report --------------------------------------------------------------------------------------


def git(*args: str) -> str:
    """A git command's output in the repository, or '' where git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def file_sha256(path: Path) -> str:
    """A file's hash: the task data under build/ is generated and cached, and may be regenerated between runs."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_sha256(folder: Path) -> str:
    """One hash of every file's relative path and bytes, so two runs can tell whether they ran the same onnxprune."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def onnxprune_source(workdir: Path, snapshot: bool) -> dict[str, Any]:
    """Freeze the onnxprune package for this run (see the module docstring) and say which one it is.

    Must run before anything imports onnxprune: the copy goes first on
    ``sys.path`` for this process and on ``PYTHONPATH`` for the children.
    """
    if "onnxprune" in sys.modules:
        raise RuntimeError("onnxprune was imported before its snapshot was taken")
    package = REPO / "onnxprune"
    if snapshot:
        folder = REPO / workdir / SNAPSHOT
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(package, folder / "onnxprune", ignore=shutil.ignore_patterns("__pycache__"))
        sys.path.insert(0, str(folder))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
        package = folder / "onnxprune"
    import onnxprune

    imported = Path(onnxprune.__file__).resolve().parent
    if imported != package.resolve():
        raise RuntimeError(f"onnxprune was imported from {imported}, not from {package}")
    return {
        "snapshot": snapshot,
        "path": str(package.relative_to(REPO)),
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_at_start": git("status", "--porcelain", "--", "onnxprune").splitlines(),
        "tree_sha256": tree_sha256(package),
    }


def environment() -> dict[str, Any]:
    """Versions and machine, for the header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {name: importlib.metadata.version(name) for name in ("onnxprune", "onnxsim", "onnxruntime", "onnx", "onnx-ir", "numpy")}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """A number for a cell, or a dash when there is none."""
    return "–" if value is None else f"{value:{spec}}{suffix}"


def table(record: dict[str, Any]) -> list[str]:
    """One task's markdown table: the original, then each target's three methods."""
    headline = record["headline"]
    lines = [
        f"| MAC target | method | knob | MACs ratio | {headline} | other metrics | speedup | ms | prune s | peak MiB | +MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        target = "–" if row["target"] is None else f"{row['target']:g}"
        label = METHOD_LABELS.get(row["method"], row["method"])
        if row["error"] is not None:
            lines.append(f"| {target} | {label} | | | failed: {row['error'].replace('|', '/')} | | | | | | |")
            continue
        knob = "–" if row["knob"] is None else f"{KNOB_NAMES[row['method']]}={row['knob']:.3f}"
        if row["target_reached"] is False:
            knob += " (pruned nothing)" if row["macs_ratio"] is not None and row["macs_ratio"] >= 1.0 else " (target not reached)"
        others = ", ".join(f"{key} {value:.4f}" for key, value in list(row["metrics"].items())[1:])
        grown = None if row["peak_mb"] is None else row["peak_mb"] - row["rss_before_mb"]
        cells = [target, label, knob, fmt(row["macs_ratio"], ".3f"), fmt(row["metrics"].get(headline), ".4f"), others]
        cells += [fmt(row["speedup"], ".2f", "x"), fmt(row["median_ms"], ".3f"), fmt(row["prune_s"], ".2f"), fmt(row["peak_mb"], ".0f"), fmt(grown, ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def baseline_mb(records: Sequence[dict[str, Any]]) -> str:
    """The range of the children's resident memory before pruning, e.g. ``305-310``."""
    values = [row["rss_before_mb"] for record in records for row in record.get("rows", []) if row["rss_before_mb"] is not None]
    return f"{min(values):.0f}-{max(values):.0f}" if values else "–"


def macs_check_text(record: dict[str, Any]) -> str:
    """Whether the search's assumption held: the data-driven model has the L1 model's MACs at each target."""
    checks = record.get("data_macs_match_l1") or {}
    if not checks:
        return ""
    answers = ", ".join(f"{target}: {'yes' if same else 'no' if same is False else 'n/a'}" for target, same in checks.items())
    return f"Same MACs for onnxprune data and l1 at the same ratio: {answers}."


def load_text(record: dict[str, Any]) -> str:
    """``; load average a -> b`` for a task's header, so noisy timings can be told from real ones."""
    load = record.get("load_average_1min")
    return f"; load average {load['start']:.1f} -> {load['end']:.1f} on {os.cpu_count()} cores" if load else ""


def source_line(source: dict[str, Any]) -> str:
    """Which onnxprune code ran: commit, uncommitted files, and the hash of the tree that was imported."""
    where = "a copy of the working tree taken at the start of the run" if source["snapshot"] else "the live working tree"
    changed = len(source["uncommitted_at_start"])
    dirty = f" with uncommitted changes to {changed} file(s)" if changed else ""
    return f"{where}, commit {source['commit'][:12] or 'unknown'}{dirty} (tree sha256 {source['tree_sha256'][:12]})"


def markdown(command: str, env: dict[str, Any], records: Sequence[dict[str, Any]], settings: Settings, seconds: float) -> str:
    """The whole ``accuracy.md``."""
    targets = settings.targets
    round_to = f"`round_to={settings.round_to}`" if settings.round_to is not None else "the default `round_to=16`"
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    kept = [record["task"] for record in records if record.get("run", {}).get("command") != command]
    earlier = f" Kept from earlier runs: {', '.join(kept)} (each task names its run)." if kept else ""
    out = [
        "# Accuracy at equal MACs: onnxprune vs onnxsim structured Wanda",
        "",
        f"Produced by `{command}` in {seconds / 60:.1f} min on {env['cores']} CPU cores ({env['cpu']}), Python {env['python']}; {versions}.{earlier}",
        f"onnxprune: {source_line(env['onnxprune_source'])}.",
        "Pruned models and evaluation data are regenerated under `build/` (git-ignored); `accuracy.json` beside this file has every number.",
        "",
        f"Each MAC target ({', '.join(f'{t:g}' for t in targets)} = pruned MACs / original MACs) is met by three methods:",
        "",
        "- **onnxprune l1**: `channel_ratio` with `importance='l1', reconstruct=False`, no calibration data.",
        "- **onnxprune data**: the same `channel_ratio` with the defaults and `calibration=` the task's calibration npz "
        "(data-driven channel ranking and least-squares refit).",
        "- **onnxsim wanda+ft**: `onnxsim.apply_structured_wanda_pruning(sparsity=s, importance_norm='l2')` then "
        f"`apply_pruning_finetune` (ridge refit of MatMul/Gemm only), both on the same calibration npz in batches of {CALIBRATION_BATCH}.",
        "",
        f"Both onnxprune rows use {round_to}: kept channel counts are rounded to that multiple, so a group of 16 channels or fewer "
        "is kept whole or not pruned at all, and on small models the MACs ratio moves in large steps.",
        "",
        "The knob (onnxprune's `channel_ratio`, onnxsim's `sparsity`, uniform over groups) is bisected for the largest MACs ratio not above "
        f'the target (knob at most {SEARCH_HIGH}); "target not reached" means even that left more MACs. onnxprune\'s search uses the L1 mode: '
        "channel counts depend on the ratio only, and the data-driven model's MACs are checked to be the same (`data_macs_match_l1` in the JSON).",
        "",
        "Columns:",
        "",
        "- **MACs ratio**: multiply-accumulates of the model / the original's, counted by `onnxprune.model_cost` with inputs fixed to the "
        "calibration shape at batch 1 (PP-OCR's inputs are symbolic; unfixed, most of its convolutions would count 0). A weight op whose "
        "shapes cannot be inferred counts 0 (`unknown_shape_nodes` in the JSON: only PP-OCR cls's 200x2 classifier MatMul, 400 MACs).",
        "- **headline metric** (first metric of `tools/eval_tasks.py`) and **other metrics** on the task's labeled evaluation data, "
        "in onnxruntime on one thread. digits: top-1 accuracy; MTCNN RNet/ONet: face/non-face accuracy; PP-OCR cls: 0/180 accuracy; "
        "PP-OCR rec: exact-match rate of decoded lines; PP-OCR det: text-mask IoU against the original model's mask.",
        "- **speedup**, **ms**: `onnxprune.benchmark` of the original and all pruned models of the task, interleaved, one thread, batch 1 at the "
        "calibration shape, fed the first calibration sample (real data: on random inputs PP-OCRv5 rec's refit cut at 0.5 ran 1.5x slower); "
        "speedup = median of per-run ratios against the original. The original always runs first in a round; "
        'the last row of each table times it again, last, as a control: its "speedup" shows the timing noise plus the bias of position. '
        "Other processes may share the cores (the 1-minute load average at the start and end of each task is given).",
        "- **prune s**: wall time of loading the model and pruning (and refitting) in a fresh child process; imports and saving excluded.",
        "- **peak MiB**: that child's peak resident memory (`VmHWM`, not `ru_maxrss`, which an exec'd child inherits from its parent), "
        "including the Python interpreter with onnx, onnxruntime, onnxsim and onnxprune imported in every child "
        f"({baseline_mb(records)} MiB before any work); **+MiB**: peak minus the resident memory just before loading the model.",
        "",
    ]
    for record in records:
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in record["input_shapes"].items())
        out += [
            f"## {record['task']}",
            "",
            f"{HEADLINE_NOTES.get(record['task'], '')}. Input {shapes}; "
            f"{record['calibration_samples']} calibration samples; {record['runs']} timed runs per model{load_text(record)}. "
            f"{macs_check_text(record)}",
            "",
            *run_lines(record),
        ]
        out += record.get("error_lines", []) or table(record)
        out.append("")
    return "\n".join(out)


def run_lines(record: dict[str, Any]) -> list[str]:
    """Which run produced a task's numbers: with ``--update`` the tasks of one report may come from several."""
    run = record.get("run")
    if not run:
        return []
    date = f" on {run['date']}" if run.get("date") else ""
    return [f"Run: `{run['command']}`{date}; onnxprune: {run['onnxprune']}.", ""]


def kept_records(output: Path, tasks: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
    """The saved records of the tasks not rerun, each with the run that produced it; refuses other targets or rounding."""
    saved = (output if output.is_absolute() else REPO / output).with_suffix(".json")
    if not saved.is_file():
        return []
    payload = json.loads(saved.read_text())
    if payload["targets"] != list(settings.targets) or payload["round_to"] != settings.round_to:
        raise SystemExit(f"error: --update needs the saved run's targets {payload['targets']} and round_to {payload['round_to']}")
    earlier = {"command": payload["command"], "date": None, "onnxprune": source_line(payload["environment"]["onnxprune_source"])}
    return [{"run": earlier, **record} for record in payload["tasks"] if record["task"] not in tasks]


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(message, file=sys.stderr, flush=True)


def write_outputs(output: Path, command: str, env: dict[str, Any], records: list[dict[str, Any]], settings: Settings, seconds: float) -> None:
    """Rewrite the markdown and the JSON with every task finished so far."""
    output = output if output.is_absolute() else REPO / output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(command, env, records, settings, seconds))
    payload = {"command": command, "environment": env, "targets": list(settings.targets), "round_to": settings.round_to, "seconds": seconds, "tasks": records}
    output.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_child(json.loads(argv[1]))
        return 0
    from eval_tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", metavar="task", help=f"tasks to run (default: all of {', '.join(TASKS)})")
    parser.add_argument("--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS), help="MAC ratios to prune to (pruned / original)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per model (default: 200, 30 for ppocr_rec and ppocr_det)")
    parser.add_argument("--round-to", type=int, default=None, help="onnxprune's round_to (default: its own default, 16)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="where pruned models go (relative to the repository root)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="markdown report; the JSON goes beside it")
    parser.add_argument("--no-snapshot", action="store_true", help="import the live onnxprune package instead of a copy taken at the start")
    parser.add_argument("--update", action="store_true", help="keep the saved results of the tasks not named")
    args = parser.parse_args(argv)
    unknown = [name for name in args.tasks if name not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    settings = Settings(tuple(args.targets), args.runs, args.round_to, args.workdir)
    command = " ".join(shlex.quote(part) for part in ["python", "tools/bench_accuracy.py", *argv])
    env = {**environment(), "onnxprune_source": onnxprune_source(args.workdir, not args.no_snapshot)}
    names = args.tasks or list(TASKS)
    records = kept_records(args.output, names, settings) if args.update else []
    run = {"command": command, "date": datetime.date.today().isoformat(), "onnxprune": source_line(env["onnxprune_source"])}
    start = time.perf_counter()
    for name in names:
        log(f"{name} ...")
        try:
            records.append({**run_task(name, settings), "run": run})
        except Exception as error:  # one broken task must not lose the others
            traceback.print_exc()
            failed = {"task": name, "error": one_line(error), "error_lines": [f"Failed: {one_line(error)}"], "input_shapes": {}, "calibration_samples": 0}
            records.append({**failed, "runs": 0, "run": run})
        log(f"{name} done after {time.perf_counter() - start:.0f} s")
        records.sort(key=lambda record: TASKS.index(record["task"]))
        write_outputs(args.output, command, env, records, settings, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
