"""Benchmark onnxprune against onnxsim's own pruning functions, in one run.

Every sample model in ``models/`` is pruned by both tools at the same ratios:

* structured: ``onnxprune`` ``channel_ratio`` (with its default rounding of
  channel counts to multiples of 16, and without it) vs
  ``onnxsim.apply_structured_pruning`` (all rank channels by the L1 norm of
  their filters),
* unstructured: ``onnxprune`` ``weight_sparsity`` vs ``onnxsim.apply_magnitude_pruning``,

and every result is measured the same way, by this script, from the model the
tool returned: Conv layers touched and channels removed (weight shapes before
and after), parameters, MACs, file size raw and zlib-compressed, onnxruntime
CPU latency (every variant of a model timed interleaved with the original,
median of many runs, 1 and 2 threads), output fidelity against the original,
the digits model's test accuracy, and the tool's own wall time.  A tool that
fails on a model is recorded with its error message.

A second part times ``onnxprune prune`` on synthetic Gemm stacks of growing
size, in subprocesses, against a plain ``onnx.load`` + ``onnx.save`` of the
same file, so the cost of pruning itself and its growth are visible.

Run from the repository root::

    python tools/benchmark.py            # full run, writes benchmarks/
    python tools/benchmark.py --quick    # smoke subset in a temp dir, well under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import onnxsim
from onnx import helper, numpy_helper

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

import onnxprune  # noqa: E402
from onnxprune import ir as irx  # noqa: E402
from onnxprune import runtime  # noqa: E402
from onnxprune.validate import InputSource, compare_arrays, comparison_batches  # noqa: E402

CHANNEL_RATIOS = (0.25, 0.5, 0.75)
WEIGHT_SPARSITIES = (0.5, 0.9)
DIGITS_MODEL = "digits_cnn"
DIGITS_TEST = "digits_test.npz"
# Tolerances are only used for the within_tolerance flag; pruning is lossy, so fidelity is judged by the numbers.
RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Variant:
    """One way of producing a model: a tool, its pruning method and the ratio asked for."""

    tool: str  # "original", "onnxprune" or "onnxsim"
    method: str  # "none", "channels" or "weights"
    ratio: float | None

    @property
    def label(self) -> str:
        return "original" if self.tool == "original" else f"{self.tool} {self.method} {self.ratio:g}"


Pruned = tuple[onnx.ModelProto, dict[str, Any]]


def _onnxprune(path: Path, **options: Any) -> Pruned:
    """The pruned model and, per pass, how many changes it made and candidates it declined (with reasons, in its report)."""
    result = onnxprune.prune(path, quiet=True, validate=False, bench=False, **options)
    passes = {step["name"]: {"changes": len(step["changes"]), "skipped": len(step["skipped"])} for step in result.report["passes"]}
    return irx.to_proto(result.model), {"passes": passes}


def _onnxprune_channels(path: Path, ratio: float) -> Pruned:
    return _onnxprune(path, channel_ratio=ratio)


def _onnxprune_channels_unrounded(path: Path, ratio: float) -> Pruned:
    """Without the default rounding of channel counts to multiples of 16: the same cut onnxsim makes."""
    return _onnxprune(path, channel_ratio=ratio, round_to=1)


def _onnxprune_weights(path: Path, ratio: float) -> Pruned:
    return _onnxprune(path, weight_sparsity=ratio)


def _onnxsim_channels(path: Path, ratio: float) -> Pruned:
    # L1 like onnxprune's default, so both rank channels by the same criterion.
    return onnxsim.apply_structured_pruning(str(path), sparsity=ratio, importance_norm="l1", global_sparsity=False), {}


def _onnxsim_weights(path: Path, ratio: float) -> Pruned:
    return onnxsim.apply_magnitude_pruning(str(path), sparsity=ratio, global_sparsity=False), {}


# In the order variants are listed and timed.
PRUNERS: dict[tuple[str, str], Callable[[Path, float], Pruned]] = {
    ("onnxprune", "channels"): _onnxprune_channels,
    ("onnxprune round-to 1", "channels"): _onnxprune_channels_unrounded,
    ("onnxsim", "channels"): _onnxsim_channels,
    ("onnxprune", "weights"): _onnxprune_weights,
    ("onnxsim", "weights"): _onnxsim_weights,
}


TOOLS = tuple(dict.fromkeys(tool for tool, _ in PRUNERS))


def variants(channel_ratios: tuple[float, ...], weight_sparsities: tuple[float, ...]) -> list[Variant]:
    """The original first (timing speedups are relative to it), then each tool at each ratio."""
    result = [Variant("original", "none", None)]
    for method, ratios in (("channels", channel_ratios), ("weights", weight_sparsities)):
        for ratio in ratios:
            result.extend(Variant(tool, method, ratio) for tool, kind in PRUNERS if kind == method)
    return result


# --- Static measurements ------------------------------------------------------


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant tensor of the main graph by name: initializers and Constant node outputs."""
    arrays = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    arrays[node.output[0]] = numpy_helper.to_array(attribute.t)
    return arrays


def _used_names(proto: onnx.ModelProto) -> set[str]:
    names = {name for node in proto.graph.node for name in node.input}
    names.update(output.name for output in proto.graph.output)
    return names


def _without_unused_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without initializers no node reads (onnxsim's magnitude pruning leaves the originals behind)."""
    used = _used_names(proto)
    clean = onnx.ModelProto()
    clean.CopyFrom(proto)
    kept = [tensor for tensor in clean.graph.initializer if tensor.name in used]
    del clean.graph.initializer[:]
    clean.graph.initializer.extend(kept)
    return clean


def _conv_weights(proto: onnx.ModelProto, constants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Conv weight arrays keyed by node name (position when a Conv has no name)."""
    weights = {}
    for index, node in enumerate(node for node in proto.graph.node if node.op_type == "Conv"):
        if len(node.input) > 1 and node.input[1] in constants:
            weights[node.name or f"#{index}"] = constants[node.input[1]]
    return weights


def conv_changes(original: dict[str, np.ndarray], pruned: dict[str, np.ndarray]) -> dict[str, int]:
    """How many Conv layers each tool reached, and how many output channels it removed.

    A layer counts as shrunk when its weight shape changed and as sparsified
    when its weight gained zeros; a layer missing from the pruned model was
    removed whole and its channels count as removed.
    """
    shrunk = sparsified = removed_layers = channels_removed = 0
    for name, weight in original.items():
        after = pruned.get(name)
        if after is None:
            removed_layers += 1
            channels_removed += weight.shape[0]
            continue
        if after.shape != weight.shape:
            shrunk += 1
            channels_removed += weight.shape[0] - after.shape[0]
        if np.count_nonzero(after == 0) / after.size > np.count_nonzero(weight == 0) / weight.size:
            sparsified += 1
    return {
        "convs": len(original),
        "convs_shrunk": shrunk,
        "convs_sparsified": sparsified,
        "convs_removed": removed_layers,
        "conv_channels": int(sum(weight.shape[0] for weight in original.values())),
        "conv_channels_removed": int(channels_removed),
    }


def static_metrics(original: onnx.ModelProto, proto: onnx.ModelProto) -> dict[str, Any]:
    """Size and cost of ``proto`` as the tool returned it, and of it with unused initializers dropped."""
    constants = _constants(proto)
    used = _used_names(proto)
    weights = [array for name, array in constants.items() if name in used and np.issubdtype(array.dtype, np.floating)]
    raw = proto.SerializeToString()
    clean = _without_unused_initializers(proto).SerializeToString()
    return {
        "params": int(sum(array.size for array in weights)),
        "nonzero_params": int(sum(np.count_nonzero(array) for array in weights)),
        "macs": int(onnxprune.model_cost(irx.from_proto(_for_costing(proto))).macs),
        "file_bytes": len(raw),
        "zlib_bytes": len(zlib.compress(raw, 9)),
        "unused_initializer_bytes": len(raw) - len(clean),
        "zlib_bytes_without_unused": len(zlib.compress(clean, 9)),
        "nodes": len(proto.graph.node),
        **conv_changes(_conv_weights(original, _constants(original)), _conv_weights(proto, constants)),
    }


def _for_costing(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy the cost model can infer fresh shapes on.

    Stored ``value_info`` is dropped (a tool may leave stale pre-pruning shapes
    there, which makes shape inference fail and MACs come out wrong), and a
    symbolic leading input dim becomes 1 so MACs are per image, as for the
    static models.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    del fixed.graph.value_info[:]
    for value in fixed.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return fixed


def checker_error(proto: onnx.ModelProto) -> str | None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # the checker raises several types; any of them means "invalid"
        return _first_line(error)
    return None


# --- Fidelity and accuracy ----------------------------------------------------


def _run_batches(proto: onnx.ModelProto, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output over every batch, stacked along a leading axis of batches."""
    session = runtime.make_session(irx.from_proto(proto), optimize=False)
    outputs = [next(iter(runtime.run(session, feeds).values())) for feeds in batches]
    return np.stack([np.asarray(output) for output in outputs])


def fidelity(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """How far the candidate's output drifted, by the measures lossy pruning is judged by (and accuracy when labelled)."""
    comparison = compare_arrays("output", reference, candidate, RTOL, ATOL)
    result = {
        "cosine": comparison.cosine,
        "max_abs_diff": comparison.max_abs_diff,
        "top1_agreement": comparison.top1_agreement,
    }
    if labels is not None:
        scores = candidate.reshape(-1, candidate.shape[-1])
        result["accuracy"] = float(np.mean(scores.argmax(axis=1) == labels))
    return result


# --- One model ----------------------------------------------------------------


def benchmark_model(path: Path, plan: list[Variant], runs: int, warmup: int, threads: tuple[int, ...], samples: int) -> list[dict[str, Any]]:
    """Produce every variant of one model, measure it, and time all of them interleaved."""
    original = onnx.load(str(path))
    rows: list[dict[str, Any]] = []
    protos: list[onnx.ModelProto | None] = []
    for variant in plan:
        row: dict[str, Any] = {"model": path.stem, "tool": variant.tool, "method": variant.method, "ratio": variant.ratio, "label": variant.label}
        proto: onnx.ModelProto | None = original
        if variant.tool != "original":
            start = time.perf_counter()
            try:
                proto, details = PRUNERS[(variant.tool, variant.method)](path, variant.ratio)
                row.update(details)
            except Exception as error:  # a peer's failure is a result to record, not a crash
                proto = None
                row["error"] = f"{type(error).__name__}: {_first_line(error)}"
            row["prune_seconds"] = time.perf_counter() - start
        if proto is not None:
            row.update(static_metrics(original, proto))
            row["checker_error"] = checker_error(proto)
        rows.append(row)
        protos.append(proto)
        _log(f"  {variant.label}: {row.get('error') or 'ok'}")

    _measure_fidelity(path, original, rows, protos, samples)
    for count in threads:
        _measure_latency(rows, protos, runs, warmup, count)
    return rows


def _measure_fidelity(path: Path, original: onnx.ModelProto, rows: list[dict], protos: list, samples: int) -> None:
    """Compare every variant with the original on the same inputs: the test split for digits, else random ones."""
    npz = path.parent / DIGITS_TEST if path.stem == DIGITS_MODEL else None
    source = InputSource(npz_path=str(npz) if npz else None, samples=samples, seed=0)
    batches, labels = comparison_batches(irx.from_proto(original), source)
    reference = _run_batches(original, batches)
    for row, proto in zip(rows, protos):
        if proto is None:
            continue
        try:
            row.update(fidelity(reference, _run_batches(proto, batches), labels))
        except Exception as error:  # onnxruntime refusing a pruned model is a result too
            row["run_error"] = _first_line(error)


def _measure_latency(rows: list[dict], protos: list, runs: int, warmup: int, threads: int) -> None:
    """Time every runnable variant interleaved with the original (which comes first)."""
    runnable = [index for index, proto in enumerate(protos) if proto is not None and "run_error" not in rows[index]]
    models = [irx.from_proto(protos[index]) for index in runnable]
    try:
        timings = onnxprune.benchmark(models, runs=runs, warmup=warmup, threads=threads, quiet=True)
    except Exception as error:  # e.g. a variant onnxruntime cannot optimise; keep the rest of the run
        for index in runnable:
            rows[index][f"latency_error_{threads}t"] = _first_line(error)
        return
    for index, timing in zip(runnable, timings):
        rows[index][f"latency_ms_{threads}t"] = timing.median_ms
        rows[index][f"latency_p10_ms_{threads}t"] = timing.p10_ms
        rows[index][f"latency_p90_ms_{threads}t"] = timing.p90_ms
        rows[index][f"speedup_{threads}t"] = timing.speedup


# --- Tool scaling -------------------------------------------------------------


def gemm_stack(params: int, layers: int = 4) -> onnx.ModelProto:
    """``layers`` square Gemm + Relu layers holding about ``params`` weights (random, seeded)."""
    width = round((params / layers) ** 0.5)
    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    current = "input"
    for layer in range(layers):
        weight = rng.standard_normal((width, width), dtype=np.float32) / np.float32(width**0.5)
        bias = np.zeros(width, dtype=np.float32)
        initializers += [numpy_helper.from_array(weight, f"fc{layer}.weight"), numpy_helper.from_array(bias, f"fc{layer}.bias")]
        output = "output" if layer == layers - 1 else f"fc{layer}_relu"
        gemm_out = output if layer == layers - 1 else f"fc{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"fc{layer}.weight", f"fc{layer}.bias"], [gemm_out], name=f"fc{layer}", transB=1))
        if layer < layers - 1:
            nodes.append(helper.make_node("Relu", [gemm_out], [output], name=f"relu{layer}"))
        current = output
    graph = helper.make_graph(
        nodes,
        f"gemm_stack_{params}",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, width])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# Linux carries a process's peak RSS across fork and exec, so a child forked from
# this (large) process would report at least our own size.  A small launcher
# process runs the command instead and reports its child's figures.
_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
completed = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
lines = completed.stderr.decode(errors="replace").strip().splitlines()
print(json.dumps({
    "seconds": seconds,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
    "returncode": completed.returncode,
    "error": (lines[-1][:300] if lines else f"exit {completed.returncode}") if completed.returncode else None,
}))
"""


def measure_subprocess(command: list[str]) -> dict[str, Any]:
    """Wall time and peak resident memory of ``command`` run in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    completed = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True, env=env, check=True)
    result = json.loads(completed.stdout)
    if result["error"] is None:
        del result["error"]
    return result


SCALING_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "onnx load+save": lambda source, target: [
        sys.executable, "-c", "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])", str(source), str(target)
    ],
    "onnxprune import only": lambda source, target: [sys.executable, "-c", "import onnxprune.cli"],
    "onnxprune channels 0.5": lambda source, target: [
        sys.executable, "-m", "onnxprune.cli", "prune", str(source), "-o", str(target),
        "--channel-ratio", "0.5", "--no-validate", "--no-bench",
    ],
    "onnxprune weights 0.5": lambda source, target: [
        sys.executable, "-m", "onnxprune.cli", "prune", str(source), "-o", str(target),
        "--weight-sparsity", "0.5", "--no-validate", "--no-bench",
    ],
    "onnxsim channels 0.5": lambda source, target: [
        sys.executable, "-c",
        "import onnx, onnxsim, sys; onnx.save(onnxsim.apply_structured_pruning(sys.argv[1], sparsity=0.5, importance_norm='l1'), sys.argv[2])",
        str(source), str(target),
    ],
}


def scaling(sizes: list[int]) -> list[dict[str, Any]]:
    """Each command on each synthetic model, in a fresh process; ratios are to plain load+save."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for params in sizes:
            source = Path(directory) / f"gemm_{params}.onnx"
            onnx.save(gemm_stack(params), str(source))
            baseline = None
            for name, command in SCALING_COMMANDS.items():
                target = Path(directory) / "out.onnx"
                measured = measure_subprocess(command(source, target))
                # The output size shows the command really pruned (a channel cut shrinks the file, zeros do not).
                measured["output_bytes"] = target.stat().st_size if target.exists() else None
                target.unlink(missing_ok=True)
                baseline = baseline or measured
                row = {"params": params, "file_bytes": source.stat().st_size, "command": name, **measured}
                row["time_ratio"] = measured["seconds"] / baseline["seconds"]
                row["memory_ratio"] = measured["peak_rss_mb"] / baseline["peak_rss_mb"]
                rows.append(row)
                _log(f"  {params / 1e6:g}M params, {name}: {measured['seconds']:.2f} s, {measured['peak_rss_mb']:.0f} MB {measured.get('error', '')}")
            source.unlink()
    return rows


# --- Output -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model_name = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model_name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), "")
    return {
        "cpu": model_name or platform.processor(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": [os.getloadavg()[0]],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "onnxsim": getattr(onnxsim, "__version__", "?"),
        "onnxprune": onnxprune.__version__,
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (tool, method, ratio): geometric-mean speedup and MACs ratio, mean fidelity, over the models it ran on."""
    originals = {row["model"]: row for row in rows if row["tool"] == "original"}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["tool"] != "original":
            groups.setdefault((row["method"], row["ratio"], row["tool"]), []).append(row)
    summary = []
    for (method, ratio, tool), members in sorted(groups.items()):
        ok = [row for row in members if "macs" in row and "run_error" not in row]
        entry = {"tool": tool, "method": method, "ratio": ratio, "models": len(members), "failed": len(members) - len(ok)}
        if ok:
            entry["convs_shrunk_fraction"] = sum(row["convs_shrunk"] for row in ok) / max(1, sum(row["convs"] for row in ok))
            entry["convs_sparsified_fraction"] = sum(row["convs_sparsified"] for row in ok) / max(1, sum(row["convs"] for row in ok))
            entry["channels_removed_fraction"] = sum(row["conv_channels_removed"] for row in ok) / max(1, sum(row["conv_channels"] for row in ok))
            entry["macs_ratio_geomean"] = _geomean([row["macs"] / originals[row["model"]]["macs"] for row in ok])
            entry["params_ratio_geomean"] = _geomean([row["params"] / originals[row["model"]]["params"] for row in ok])
            entry["zlib_ratio_geomean"] = _geomean([row["zlib_bytes"] / originals[row["model"]]["zlib_bytes"] for row in ok])
            for key in ("speedup_1t", "speedup_2t"):
                values = [row[key] for row in ok if key in row]
                entry[f"{key}_geomean"] = _geomean(values) if values else None
            entry["cosine_mean"] = float(np.mean([row["cosine"] for row in ok]))
            entry["cosine_min"] = float(np.min([row["cosine"] for row in ok]))
            agreements = [row["top1_agreement"] for row in ok if row.get("top1_agreement") is not None]
            entry["top1_agreement_mean"] = float(np.mean(agreements)) if agreements else None
            entry["checker_failures"] = sum(1 for row in ok if row.get("checker_error"))
            entry["prune_seconds_mean"] = float(np.mean([row["prune_seconds"] for row in ok]))
        summary.append(entry)
    return summary


def _geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    settings = results["settings"]
    lines = [
        "# onnxprune vs onnxsim pruning — benchmark results",
        "",
        f"Generated by `{settings['command']}` on {info['cpu']} ({info['cores_available']} cores available, "
        f"1-minute load average {min(info['load_average_1min']):.1f} to {max(info['load_average_1min']):.1f} while it ran, "
        "sampled after each model, the benchmark's own threads included), "
        f"onnxruntime {info['onnxruntime']} CPU, onnxsim {info['onnxsim']}, onnxprune {info['onnxprune']}. "
        f"Total run time {results['seconds'] / 60:.1f} min.",
        "",
        f"Latency: onnxruntime CPU, full graph optimisation, batch 1, every variant of a model timed interleaved with the "
        f"original (A B C … A B C …), {settings['runs']} runs after {settings['warmup']} warm-up runs; the median is shown, and "
        "speedup is the median of per-round ratios to the original. Fidelity: the first output compared with the original's "
        f"on {settings['samples']} seeded random inputs (the 450-image test split for `digits_cnn`), graph optimisations off. "
        "onnxprune runs with its defaults (onnxsim simplification first, channel counts rounded to multiples of 16, "
        "dead-channel removal after weight pruning), and for channels also with `round_to=1` (no rounding, the same cut "
        "onnxsim makes); "
        "onnxsim's functions run with `importance_norm='l1'` (onnxprune's default criterion) and per-layer sparsity. "
        "Both tools start from the model file. Only `digits_cnn` has trained weights; the other sample models carry "
        "PyTorch's random initialisation, so their cosine and top-1 numbers show how much each cut perturbs the function, "
        "not how much accuracy a trained network would lose.",
        *_load_warning(info),
        "",
        "## Summary (over all models each tool ran on)",
        "",
        "| method | ratio | tool | convs shrunk | convs sparsified | channels removed | MACs × (geomean) | params × | zlib size × "
        "| speedup 1 thread | speedup 2 threads | mean cosine | min cosine | mean top-1 agree | failed | checker fails | prune s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in results["summary"]:
        if "macs_ratio_geomean" not in entry:
            lines.append(f"| {entry['method']} | {entry['ratio']:g} | {entry['tool']} | | | | | | | | | | | | {entry['failed']}/{entry['models']} | | |")
            continue
        lines.append(
            f"| {entry['method']} | {entry['ratio']:g} | {entry['tool']} | {entry['convs_shrunk_fraction']:.0%} | {entry['convs_sparsified_fraction']:.0%} "
            f"| {entry['channels_removed_fraction']:.0%} | {entry['macs_ratio_geomean']:.3f} | {entry['params_ratio_geomean']:.3f} "
            f"| {entry['zlib_ratio_geomean']:.3f} | {_fmt(entry['speedup_1t_geomean'], '.2f')} | {_fmt(entry['speedup_2t_geomean'], '.2f')} "
            f"| {entry['cosine_mean']:.4f} | {entry['cosine_min']:.4f} | {_fmt(entry['top1_agreement_mean'], '.2f')} "
            f"| {entry['failed']}/{entry['models']} | {entry['checker_failures']} | {entry['prune_seconds_mean']:.2f} |"
        )
    lines += ["", *digits_accuracy_table(results["models"])]
    lines += [
        "",
        "Convs shrunk / sparsified: the fraction of Conv layers whose weight lost output or input channels / gained zeros. "
        "Channels removed: Conv output channels removed, as a fraction of all Conv output channels. "
        "Ratios (×) are pruned / original, geometric mean over models.",
        "",
        "![fidelity vs speedup](fidelity_vs_speedup.png)",
        "",
        "![latency vs MACs](latency_vs_macs.png)",
        "",
        "![digits accuracy vs MACs](digits_accuracy_vs_macs.png)",
        "",
        "## Per model",
        "",
        "| model | variant | convs shrunk | channels removed | params | nonzero | MMACs | file KB | zlib KB | zlib KB w/o unused "
        "| ms 1t | speedup 1t | speedup 2t | cosine | max abs diff | top-1 agree | accuracy | prune s | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["models"]:
        if "macs" not in row:
            empty = "| " * 15
            lines.append(f"| {row['model']} | {row['label']} {empty}| {_fmt(row.get('prune_seconds'), '.2f')} | failed: {_escape(row['error'])} |")
            continue
        notes = []
        if row.get("checker_error"):
            notes.append(f"checker: {_escape(row['checker_error'])}")
        if row.get("run_error"):
            notes.append(f"onnxruntime: {_escape(row['run_error'])}")
        if row["method"] == "channels" and not row["convs_shrunk"]:
            notes.append("no Conv layer pruned")
        if row["unused_initializer_bytes"]:
            notes.append(f"{row['unused_initializer_bytes'] / 1024:.0f} KB of unused initializers left in the file")
        lines.append(
            f"| {row['model']} | {row['label']} | {row['convs_shrunk']}/{row['convs']} | {row['conv_channels_removed']}/{row['conv_channels']} "
            f"| {row['params']:,} | {row['nonzero_params']:,} | {row['macs'] / 1e6:.1f} | {row['file_bytes'] / 1024:.0f} | {row['zlib_bytes'] / 1024:.0f} "
            f"| {row['zlib_bytes_without_unused'] / 1024:.0f} | {_fmt(row.get('latency_ms_1t'), '.2f')} | {_fmt(row.get('speedup_1t'), '.2f')} "
            f"| {_fmt(row.get('speedup_2t'), '.2f')} | {_fmt(row.get('cosine'), '.4f')} | {_fmt(row.get('max_abs_diff'), '.3g')} "
            f"| {_fmt(row.get('top1_agreement'), '.2f')} | {_fmt(row.get('accuracy'), '.2%')} | {_fmt(row.get('prune_seconds'), '.2f')} | {'; '.join(notes)} |"
        )
    if results["scaling"]:
        lines += [
            "",
            "## Tool scaling",
            "",
            "Synthetic stacks of 4 square Gemm + Relu layers with random weights. Each command runs in a fresh Python process "
            "(interpreter start and imports included); peak memory is that process's maximum resident set. "
            "onnxprune runs `onnxprune prune MODEL -o OUT --no-validate --no-bench` with the option shown.",
            "",
            "| params | file MB | command | seconds | × load+save | peak MB | × load+save | output MB | status |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in results["scaling"]:
            lines.append(
                f"| {row['params'] / 1e6:g}M | {row['file_bytes'] / 2**20:.0f} | {row['command']} | {row['seconds']:.2f} | {row['time_ratio']:.1f} "
                f"| {row['peak_rss_mb']:.0f} | {row['memory_ratio']:.1f} | {_fmt(row['output_bytes'] / 2**20 if row.get('output_bytes') else None, '.1f')} "
                f"| {_escape(row.get('error', 'ok'))} |"
            )
        lines += ["", "![tool scaling](scaling.png)"]
    return "\n".join(lines) + "\n"


def _load_warning(info: dict[str, Any]) -> list[str]:
    """Flag a run whose machine had more runnable work than cores: 2-thread timings then mostly measure contention."""
    highest = max(info["load_average_1min"])
    if highest <= info["cores_available"]:
        return []
    return [
        "",
        f"**Caution:** the 1-minute load average reached {highest:.1f} on {info['cores_available']} cores during this run. "
        "Interleaving keeps the 1-thread speedups comparable, but 2-thread latencies (onnxruntime's worker threads spin "
        "while waiting) compete for the same 2 cores and should not be read as deployment numbers.",
    ]


def digits_accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    """Test accuracy of the one trained model, per method, ratio and tool."""
    digits = {(row["tool"], row["method"], row["ratio"]): row for row in rows if row["model"] == DIGITS_MODEL}
    if not digits:
        return []
    original = digits.get(("original", "none", None), {}).get("accuracy")
    lines = [
        f"`digits_cnn` test accuracy (450 images; original {_fmt(original, '.2%')}):",
        "",
        "| method | ratio | " + " | ".join(TOOLS) + " |",
        "|---|---:|" + "---:|" * len(TOOLS),
    ]
    for method, ratio in sorted({(method, ratio) for _, method, ratio in digits if method != "none"}):
        cells = []
        for tool in TOOLS:
            row = digits.get((tool, method, ratio))
            cells.append("–" if row is None else "failed" if "error" in row else _fmt(row.get("accuracy"), ".2%"))
        lines.append(f"| {method} | {ratio:g} | " + " | ".join(cells) + " |")
    return lines


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


TOOL_COLOURS = {"original": "black", "onnxprune": "tab:blue", "onnxprune round-to 1": "tab:green", "onnxsim": "tab:orange"}
RATIO_MARKERS = {0.25: "o", 0.5: "s", 0.75: "^", 0.9: "D"}


def plots(results: dict[str, Any], out: Path) -> None:
    """fidelity_vs_speedup.png, latency_vs_macs.png and scaling.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in results["models"] if "speedup_1t" in row and "cosine" in row]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for axis, method in zip(axes, ("channels", "weights")):
        for row in rows:
            if row["method"] != method:
                continue
            axis.scatter(row["speedup_1t"], row["cosine"], color=TOOL_COLOURS[row["tool"]], marker=RATIO_MARKERS.get(row["ratio"], "o"), alpha=0.8)
        axis.axvline(1.0, color="grey", linewidth=0.8)
        axis.set_title(f"{method} pruning")
        axis.set_xlabel("speedup over the original (1 thread, interleaved median)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("cosine similarity of outputs with the original")
    _legend(axes[1], plt, ratios=True)
    figure.suptitle("Output fidelity vs onnxruntime CPU speedup, all sample models")
    figure.tight_layout()
    figure.savefig(out / "fidelity_vs_speedup.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    for row in results["models"]:
        if "latency_ms_1t" in row:
            original = row["tool"] == "original"
            axis.scatter(
                row["macs"] / 1e6, row["latency_ms_1t"], color=TOOL_COLOURS[row["tool"]], marker="*" if original else RATIO_MARKERS[row["ratio"]],
                s=140 if original else 36, alpha=0.8, zorder=3 if original else 2,
            )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("MMACs (Conv/Gemm/MatMul)")
    axis.set_ylabel("median latency, ms (1 thread)")
    axis.set_title("onnxruntime CPU latency vs MACs, every model and variant")
    axis.grid(alpha=0.3, which="both")
    _legend(axis, plt, ratios=True, original=True)
    figure.tight_layout()
    figure.savefig(out / "latency_vs_macs.png", dpi=110)
    plt.close(figure)

    digits = [row for row in results["models"] if row["model"] == DIGITS_MODEL and "accuracy" in row]
    if digits:
        original_macs = next(row["macs"] for row in digits if row["tool"] == "original")
        figure, axis = plt.subplots(figsize=(7.5, 5))
        for row in digits:
            original = row["tool"] == "original"
            axis.scatter(
                row["macs"] / original_macs, row["accuracy"] * 100, color=TOOL_COLOURS[row["tool"]],
                marker="*" if original else RATIO_MARKERS[row["ratio"]], s=140 if original else 50,
                facecolors="none" if row["method"] == "weights" else None, alpha=0.9,
            )
        axis.set_xlabel("MACs, fraction of the original")
        axis.set_ylabel("test accuracy, % (450 images)")
        axis.set_title("digits_cnn (trained): accuracy vs compute; hollow = weight pruning")
        axis.grid(alpha=0.3)
        _legend(axis, plt, ratios=True, original=True)
        figure.tight_layout()
        figure.savefig(out / "digits_accuracy_vs_macs.png", dpi=110)
        plt.close(figure)

    if results["scaling"]:
        figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for command in SCALING_COMMANDS:
            points = [row for row in results["scaling"] if row["command"] == command and row["returncode"] == 0]
            if points:
                axes[0].plot([row["params"] for row in points], [row["seconds"] for row in points], marker="o", label=command)
                axes[1].plot([row["params"] for row in points], [row["peak_rss_mb"] for row in points], marker="o", label=command)
        for axis, label in zip(axes, ("wall time, s", "peak resident memory, MB")):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("parameters")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3, which="both")
        axes[0].legend()
        figure.suptitle("Cost of pruning a Gemm stack, fresh process per command")
        figure.tight_layout()
        figure.savefig(out / "scaling.png", dpi=110)
        plt.close(figure)


def _legend(axis: Any, plt: Any, ratios: bool, original: bool = False) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colour, marker="*" if tool == "original" else "o", linestyle="", label=tool)
        for tool, colour in TOOL_COLOURS.items()
        if original or tool != "original"
    ]
    if ratios:
        handles += [Line2D([], [], color="grey", marker=marker, linestyle="", label=f"ratio {ratio:g}") for ratio, marker in RATIO_MARKERS.items()]
    axis.legend(handles=handles, fontsize=8, loc="best")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPOSITORY / "models", help="directory of .onnx models")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.json, results.md and plots go (default benchmarks/; quick: a temp dir, so a smoke run never overwrites published results)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke subset: two models, one ratio each, few runs, 1M-parameter scaling only")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per variant (default 200, quick 20)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--samples", type=int, default=16, help="random inputs for fidelity")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md and the plots from the results.json already in --out")
    parser.add_argument(
        "--scaling",
        type=float,
        nargs="*",
        default=None,
        help="synthetic model sizes in millions of params (default 1 10 100; quick 1; the flag alone skips scaling)",
    )
    args = parser.parse_args(argv)

    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "onnxprune-benchmark-quick" if args.quick else REPOSITORY / "benchmarks"
    if args.render_only:
        results = json.loads((args.out / "results.json").read_text())
        (args.out / "results.md").write_text(markdown(results))
        plots(results, args.out)
        return 0

    started = time.perf_counter()
    paths = sorted(args.models.glob("*.onnx"))
    if args.quick:
        paths = [path for path in paths if path.stem in ("convnet2", DIGITS_MODEL)]
        plan = variants((0.5,), (0.5,))
    else:
        plan = variants(CHANNEL_RATIOS, WEIGHT_SPARSITIES)
    runs = args.runs or (20 if args.quick else 200)
    sizes = [int(size * 1e6) for size in (args.scaling if args.scaling is not None else ([1] if args.quick else [1, 10, 100]))]
    command = shlex.join(["python", "tools/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {"command": command, "runs": runs, "warmup": args.warmup, "samples": args.samples, "threads": args.threads,
                     "channel_ratios": sorted({v.ratio for v in plan if v.method == "channels"}),
                     "weight_sparsities": sorted({v.ratio for v in plan if v.method == "weights"})},
        "models": [],
    }
    for path in paths:
        _log(f"{path.name}")
        results["models"].extend(benchmark_model(path, plan, runs, args.warmup, tuple(args.threads), args.samples))
        results["machine"]["load_average_1min"].append(os.getloadavg()[0])
    results["summary"] = summarize(results["models"])
    _log("tool scaling")
    results["scaling"] = scaling(sizes)
    results["machine"]["load_average_1min"].append(os.getloadavg()[0])
    results["seconds"] = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    plots(results, args.out)
    _log(f"wrote {args.out}/results.json, results.md and plots in {results['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
