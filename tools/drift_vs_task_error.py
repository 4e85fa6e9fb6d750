"""How the sensitivity drift relates to task errors, per probe: why the allocation adds drifts in quadrature.

    python tools/drift_vs_task_error.py [task]      # default ppocr_rec; build the tasks first (bash tools/setup_bench.sh)

Every probe of ``onnxprune/sensitivity.py`` (one channel group cut to one
level, data-driven selection, quick refit on 32 calibration samples) is
measured on the held-out calibration samples three ways: the drift the
sensitivity table records (relative L2 of the outputs), the share of output
rows (for rec: timesteps) whose top-1 class flips, and the mean KL divergence
of the original's class distribution from the cut model's.  The output must
hold class probabilities on its last axis.  Prints one line per probe and the
correlation of each task error with drift and with drift squared; writes
``benchmarks/drift_vs_task_error_<task>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from onnx_ir.passes import common as common_passes

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from eval_common import REPO  # noqa: E402
from eval_tasks import build_task  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune import ir as irx  # noqa: E402
from onnxprune import runtime, sensitivity  # noqa: E402
from onnxprune.calibration import load_calibration  # noqa: E402
from onnxprune.options import ChannelOptions  # noqa: E402
from onnxprune.passes.channels import channel_scores  # noqa: E402
from onnxprune.simplify import simplify  # noqa: E402


def _class_probabilities(model: object, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output on the held-out batches, one row per class distribution."""
    session = runtime.make_session(model, optimize=False)
    name = session.get_outputs()[0].name
    outputs = np.concatenate([runtime.run(session, feed)[name] for feed in feeds]).astype(np.float64)
    return outputs.reshape(-1, outputs.shape[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default="ppocr_rec")
    arguments = parser.parse_args()
    task = build_task(arguments.task)
    model, _ = simplify(onnxprune.load(task.model))
    calibration = load_calibration(str(task.calibration), model)
    options = dataclasses.replace(ChannelOptions(), ratio=0.0, global_ranking=False, remove_dead=False)
    fit = sensitivity.first_samples(calibration.fit, sensitivity.PROBE_FIT_SAMPLES)
    probe = sensitivity._Probe(irx.to_proto(model).SerializeToString(), options, fit, calibration.held_out, calibration.shapes_of_one_sample(model))
    probe.scores = channel_scores(model, options, calibration.fit)
    reference = _class_probabilities(model, calibration.held_out)
    rows = []
    for name, _, channels, keeps in sensitivity._group_levels(model, options):
        for keep in keeps:
            cut = probe._cut(name, (channels - keep) / channels)
            common_passes.RemoveUnusedNodesPass()(cut)
            outputs = _class_probabilities(cut, calibration.held_out)
            drift = float(np.linalg.norm(outputs - reference) / np.linalg.norm(reference))
            flips = float(np.mean(outputs.argmax(axis=1) != reference.argmax(axis=1)))
            kl = float(np.mean(np.sum(reference * (np.log(reference + 1e-12) - np.log(outputs + 1e-12)), axis=1)))
            rows.append({"group": name, "keep": keep, "channels": channels, "drift": drift, "flips": flips, "kl": kl})
            print(f"{name} keep {keep}/{channels}: drift {drift:.3f}, top-1 flips {flips:.4f}, KL {kl:.4f}", flush=True)
    drift = np.array([row["drift"] for row in rows])
    summary = {
        error: {"r_with_drift": float(np.corrcoef(drift, values)[0, 1]), "r_with_drift_squared": float(np.corrcoef(drift**2, values)[0, 1])}
        for error in ("flips", "kl")
        for values in [np.array([row[error] for row in rows])]
    }
    for error, correlation in summary.items():
        print(f"{error}: r with drift {correlation['r_with_drift']:.3f}, with drift squared {correlation['r_with_drift_squared']:.3f} ({len(rows)} probes)")
    record = {"task": arguments.task, "command": "python tools/drift_vs_task_error.py " + arguments.task, "summary": summary, "probes": rows}
    (REPO / "benchmarks" / f"drift_vs_task_error_{arguments.task}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
