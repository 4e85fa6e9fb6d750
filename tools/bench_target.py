"""Target mode against uniform ratios on the labeled models: accuracy at equal measured speedup.

    python tools/bench_target.py [tasks...] [--speedups 1.5 2.0] [--ratios 0.15 0.25 0.35 0.5] [--macs 0.5 0.286] [--jobs 2]

For each task of ``tools/eval_tasks.py`` (build them first; ``bash tools/setup_bench.sh``):

- **uniform**: ``channel_ratio=r`` for every ratio, data-driven selection and refit on the task's calibration data;
- **target**: ``target_speedup=s`` for every speedup (per-group cuts from the sensitivity table, see
  ``onnxprune/target.py``), same calibration data, same defaults otherwise;
- **target_macs**: ``target_macs=m`` for every MAC ratio (the MAC targets of ``tools/bench_accuracy.py``).

All pruned models of a task and the original are then timed together by
``onnxprune.benchmark`` (interleaved, one thread, fed one calibration sample as
the target runs are; speedup = median of per-run ratios), and evaluated on the task's labeled
evaluation data.  MACs are counted at the calibration shape.  Writes
``benchmarks/target.{md,json}`` and per task ``benchmarks/sensitivity_<task>.png``
(drift against the share of a group's channels cut) and
``benchmarks/tradeoff_<task>.png`` (accuracy against measured speedup, uniform and target).
``--update`` replaces only the tasks named and keeps the others' results as they were; every
task's section says which command produced it, when, and at which commit.  ``--round-to K`` prunes
every model with that channel rounding (pruned models, cache and plots then go under names
ending in ``_round_to<K>``; use ``--out`` to keep its results apart).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from eval_common import REPO  # noqa: E402
from eval_tasks import TASKS, build_task  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.calibration import load_calibration  # noqa: E402
from onnxprune.plots import plot_sensitivity, plot_tradeoff  # noqa: E402

RESULTS = REPO / "benchmarks"
WORK = REPO / "build" / "target"
RUNS = {"ppocr_rec": 30, "ppocr_det": 20}
"""Timed runs per model where one run is slow; 200 elsewhere."""


KNOB = {"uniform": "channel_ratio", "target": "target_speedup", "target_macs": "target_macs"}


def _saved_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows pruned by an earlier run (``--reuse``): their models are timed and evaluated again, not pruned again."""
    saved = folder / "rows.json"
    return json.loads(saved.read_text()) if saved.is_file() else []


def file_tag(name: str, round_to: int | None) -> str:
    """The name a task's models, cache and plots go under: a run with its own channel rounding is kept apart."""
    return name if round_to is None else f"{name}_round_to{round_to}"


def run_task(name: str, knobs: dict[str, list[float]], jobs: int, plots: bool, reuse: bool, round_to: int | None = None) -> dict[str, Any]:
    task = build_task(name)
    tag = file_tag(name, round_to)
    folder = WORK / tag
    folder.mkdir(parents=True, exist_ok=True)
    original = onnxprune.load(task.model)
    calibration = load_calibration(str(task.calibration), original)
    shapes = calibration.shapes_of_one_sample(original)
    base_macs = onnxprune.model_cost(original, shapes=shapes).macs
    cache = str(WORK / "cache")
    done = {(row["method"], row["knob"]): row for row in _saved_rows(folder)} if reuse else {}
    rows: list[dict[str, Any]] = []
    for method, values in knobs.items():
        for knob in values:
            path = folder / f"{method}_{knob}.onnx"
            if (method, knob) in done and path.is_file():
                row = done[(method, knob)]
                pruned = onnxprune.load(path)
            else:
                options: dict[str, Any] = {KNOB[method]: knob, **({} if round_to is None else {"round_to": round_to})}
                if method != "uniform":
                    options.update(jobs=jobs, sensitivity_cache=cache)
                start = time.perf_counter()
                result = onnxprune.prune(task.model, calibration=str(task.calibration), validate=False, bench=False, quiet=True, **options)
                row = {"method": method, "knob": knob, "path": str(path), "prune_s": time.perf_counter() - start}
                if method != "uniform":
                    row["target"] = {key: result.report["target"][key] for key in ("reached_in_search", "allocation", "searched")}
                row["failures"] = result.failures
                result.save(path)
                pruned = result.model
            row["macs_ratio"] = onnxprune.model_cost(pruned, shapes=shapes).macs / base_macs
            rows.append(row)
            redone = {(other["method"], other["knob"]) for other in rows}
            (folder / "rows.json").write_text(json.dumps(rows + [old for key, old in done.items() if key not in redone], indent=1))
            print(f"{name}: {method} {knob}: MACs {row['macs_ratio']:.3f}, {row['prune_s']:.0f} s", flush=True)
    models = [original, *(onnxprune.load(row["path"]) for row in rows)]
    timings = onnxprune.benchmark(models, runs=RUNS.get(name, 200), warmup=5, threads=1, quiet=True, feeds=calibration.timing_feeds(original))
    baseline = task.evaluate(task.model)
    for row, timing in zip(rows, timings[1:]):
        row.update(speedup=timing.speedup, ms=timing.median_ms, metrics=task.evaluate(Path(row["path"])))
    table = _table_of(original, task, cache, round_to)
    record = {"task": name, "baseline": baseline, "original_ms": timings[0].median_ms, "shapes": shapes, "rows": rows, "sensitivity": table}
    if round_to is not None:
        record["round_to"] = round_to
    if not plots:
        return record
    plot_sensitivity(table, RESULTS / f"sensitivity_{tag}.png", title=f"{tag}: drift per channel group")
    metric = next(iter(baseline))
    plot_tradeoff(
        {method: [(row["speedup"], row["metrics"][metric]) for row in rows if row["method"] == method] for method in knobs if knobs[method]},
        baseline[metric],
        RESULTS / f"tradeoff_{tag}.png",
        title=f"{tag}: {metric} against measured speedup (1 thread)",
        metric=metric,
    )
    return record


def _table_of(original: Any, task: Any, cache: str, round_to: int | None) -> dict[str, Any]:
    """The sensitivity table the target runs used (from the cache: measured once per task)."""
    from onnxprune.options import ChannelOptions
    from onnxprune.sensitivity import measure_sensitivity
    from onnxprune.simplify import simplify

    simplified, _ = simplify(original.clone())
    options = ChannelOptions() if round_to is None else ChannelOptions(round_to=round_to)
    return measure_sensitivity(simplified, options, load_calibration(str(task.calibration), simplified), cache_dir=cache, quiet=True).to_dict()


def markdown(records: list[dict[str, Any]], command: str, seconds: float, plots: bool) -> str:
    lines = [
        "# Target mode against uniform ratios: accuracy at measured speedup",
        "",
        f"Last written by `{command}` in {seconds / 60:.1f} min on {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, onnxprune {onnxprune.__version__}; each task's section names the run that produced it.",
        "",
        "- **uniform**: `channel_ratio=r`, data-driven channel selection and least-squares refit on the task's calibration data.",
        "- **target**: `target_speedup=s`: per-group cuts chosen from the measured sensitivity table (squared drift per "
        "modelled millisecond saved), searched on measured latency; then the same data-driven selection and refit.",
        "- **target_macs**: `target_macs=m`: the same, by squared drift per MAC saved, settled on counted MACs.",
        "",
        "Speedup: `onnxprune.benchmark` of the original and every pruned model of the task, interleaved, one thread, one calibration sample; "
        "median of per-run ratios. MACs at the calibration shape. Accuracy on the task's labeled evaluation data "
        "(never used for calibration). **best uniform at >= s** is the most accurate uniform row whose measured speedup "
        "is at least the target row's.",
        "",
    ]
    for record in records:
        metric = next(iter(record["baseline"]))
        run = record["run"]
        took = f", {run['minutes']:.1f} min" if run.get("minutes") is not None else ""
        rounding = f" Every model pruned with `round_to={record['round_to']}`." if "round_to" in record else ""
        lines += [f"## {record['task']}", "", f"Run: `{run['command']}` on {run['date']} (commit {run['commit']}){took}.{rounding}", ""]
        lines += [f"Original: {metric} {record['baseline'][metric]:.4f}, {record['original_ms']:.3f} ms.", ""]
        lines += [f"| method | knob | MACs ratio | speedup | {metric} | prune s |", "|---|---|---|---|---|---|"]
        for row in record["rows"]:
            lines.append(
                f"| {row['method']} | {row['knob']} | {row['macs_ratio']:.3f} | {row['speedup']:.2f}x | {row['metrics'][metric]:.4f} | {row['prune_s']:.0f} |"
            )
        lines.append("")
        for row in (row for row in record["rows"] if row["method"] != "uniform"):
            rivals = [other for other in record["rows"] if other["method"] == "uniform" and other["speedup"] >= row["speedup"]]
            best = max((other["metrics"][metric] for other in rivals), default=None)
            verdict = "no uniform row is as fast" if best is None else f"best uniform at >= {row['speedup']:.2f}x: {best:.4f}"
            failed = f" The run FAILED: {'; '.join(row['failures'])}." if row.get("failures") else ""
            lines.append(f"- {row['method']} {row['knob']}: measured {row['speedup']:.2f}x, {metric} {row['metrics'][metric]:.4f}; {verdict}.{failed}")
        lines.append("")
        if plots:
            tag = file_tag(record["task"], record.get("round_to"))
            lines += [f"![sensitivity](sensitivity_{tag}.png) ![tradeoff](tradeoff_{tag}.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--ratios", nargs="*", type=float, default=[0.15, 0.25, 0.35, 0.5])
    parser.add_argument("--speedups", nargs="*", type=float, default=[1.5, 2.0])
    parser.add_argument("--macs", nargs="*", type=float, default=[])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="target", help="results go to benchmarks/OUT.md and OUT.json")
    parser.add_argument("--no-plots", action="store_true", help="do not (re)draw the per-task PNGs")
    parser.add_argument("--reuse", action="store_true", help="keep models an earlier run pruned (build/target/TASK/rows.json); time and evaluate all again")
    parser.add_argument("--update", action="store_true", help="keep the results of tasks not named from benchmarks/OUT.json")
    parser.add_argument("--round-to", type=int, default=None, help="channel rounding for every prune (default: onnxprune's, 16)")
    arguments = parser.parse_args()
    start = time.perf_counter()
    RESULTS.mkdir(exist_ok=True)
    command = ("python tools/bench_target.py " + " ".join(sys.argv[1:])).strip()
    saved = RESULTS / f"{arguments.out}.json"
    records = [record for record in json.loads(saved.read_text()) if record["task"] not in arguments.tasks] if arguments.update and saved.is_file() else []
    for name in arguments.tasks:
        knobs = {"uniform": arguments.ratios, "target": arguments.speedups, "target_macs": arguments.macs}
        task_start = time.perf_counter()
        record = run_task(name, knobs, arguments.jobs, not arguments.no_plots, arguments.reuse, arguments.round_to)
        record["run"] = {"command": command, "date": datetime.date.today().isoformat(), "commit": _commit(), "minutes": (time.perf_counter() - task_start) / 60}
        records.append(record)
        partial = WORK / f"{arguments.out}.partial.json"
        partial.write_text(json.dumps(records, indent=1))
    records.sort(key=lambda record: TASKS.index(record["task"]))
    saved.write_text(json.dumps(records, indent=1))
    (RESULTS / f"{arguments.out}.md").write_text(markdown(records, command, time.perf_counter() - start, not arguments.no_plots))


def _commit() -> str:
    """The checked-out commit, with ``+changes`` when the package or the tools differ from it (results and docs may)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or "unknown"
    status = ["git", "status", "--porcelain", "--untracked-files=no", "--", "onnxprune", "tools"]
    dirty = subprocess.run(status, cwd=REPO, capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


if __name__ == "__main__":
    main()
