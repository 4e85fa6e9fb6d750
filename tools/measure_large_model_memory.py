"""Measure peak memory and time of onnxprune on a synthetic model with more than 2 GB of weights.

The model (a chain of square MatMuls, weights in external data) is built by
``tests/hostile_models.write_large_model``.  Every onnxprune command runs in
its own process, and its peak resident memory comes from ``os.wait4`` for that
process alone, so one measurement never includes another's.  The claim being
checked: loading reads weights lazily (``inspect`` stays far below the
weights' size) and ``prune`` stays well under twice the weights' size.

    python tools/measure_large_model_memory.py --gigabytes 2.2 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TENSORS = 4


def run_measured(argv: list[str]) -> dict[str, float | int]:
    """Run a command; return its exit code, wall time and peak RSS (from the kernel's accounting of that child)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": round(wall, 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # ru_maxrss is in KiB on Linux
        "stderr_tail": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.2, help="total weight size (default 2.2)")
    parser.add_argument("--keep", help="build in this directory and keep the files")
    parser.add_argument("--options", default="--weight-sparsity 0.5 --no-bench", help="prune options")
    arguments = parser.parse_args()

    directory = Path(arguments.keep) if arguments.keep else Path(tempfile.mkdtemp(prefix="onnxprune-large-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        elements = int(arguments.gigabytes * 1e9 / 4 / TENSORS)
        model = directory / "large.onnx"
        build = [sys.executable, "-c", f"from pathlib import Path; from tests.hostile_models import write_large_model; "
                 f"write_large_model(Path({str(model)!r}), {elements}, {TENSORS})"]
        results: dict[str, object] = {"build": run_measured(build)}
        weight_bytes = (model.parent / f"{model.name}.data").stat().st_size
        results["weight_bytes"] = weight_bytes
        cli = [sys.executable, "-m", "onnxprune.cli"]
        results["inspect"] = run_measured([*cli, "inspect", str(model), "--json"])
        output = directory / "pruned.onnx"
        results["prune"] = run_measured([*cli, "prune", str(model), "-o", str(output), *arguments.options.split()])
        results["prune_options"] = arguments.options
        if output.exists():
            results["output_files"] = {path.name: path.stat().st_size for path in directory.glob("pruned.onnx*")}
        for step in ("build", "inspect", "prune"):
            step_result = results[step]
            assert isinstance(step_result, dict)
            step_result["peak_rss_over_weights"] = round(step_result["peak_rss_bytes"] / weight_bytes, 2)
        print(json.dumps(results, indent=2))
        return 0 if all(results[step]["exit_code"] == 0 for step in ("build", "inspect", "prune")) else 1  # type: ignore[index]
    finally:
        if not arguments.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
