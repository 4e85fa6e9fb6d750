"""Tables for people; the JSON report is the same data for scripts.

Everything printed here is read from the report dictionaries the API returns,
so the terminal view and ``--report FILE.json`` cannot tell different stories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onnxprune.analysis.cost import Cost
from onnxprune.bench import Timing
from onnxprune.gates import FLOOR_HINT, Gate
from onnxprune.ir import atomic_output
from onnxprune.validate import Validation


def write_json(data: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a report file atomically."""
    with atomic_output(Path(path)) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def print_json(console: Console, data: Any) -> None:
    """Machine-readable output on stdout, nothing else."""
    console.file.write(json.dumps(data, indent=2, default=str) + "\n")


def inspect_data(model: ir.Model, cost: Cost) -> dict[str, Any]:
    """What ``inspect --json`` prints: interface, size and cost."""
    return {
        "inputs": [_signature(value) for value in model.graph.inputs if not value.is_initializer()],
        "outputs": [_signature(value) for value in model.graph.outputs],
        "opsets": dict(model.opset_imports),
        **cost.to_dict(),
    }


def render_inspect(console: Console, data: dict[str, Any]) -> None:
    """Interface, totals and op histogram as tables."""
    interface = Table(title="interface")
    for column in ("", "name", "type", "shape"):
        interface.add_column(column)
    for kind in ("inputs", "outputs"):
        for entry in data[kind]:
            interface.add_row(kind[:-1], escape(entry["name"]), entry["dtype"], escape(str(entry["shape"])))
    console.print(interface)
    totals = Table(title="cost")
    totals.add_column("measure")
    totals.add_column("value", justify="right")
    totals.add_row("parameters", f"{data['params']:,}")
    totals.add_row("MACs", f"{data['macs']:,}")
    totals.add_row("other ops (elements)", f"{data['elementwise_ops']:,}")
    totals.add_row("nodes", f"{data['nodes']:,}")
    totals.add_row("file size", _bytes(data["file_bytes"]))
    console.print(totals)
    histogram = Table(title="op histogram")
    histogram.add_column("op")
    histogram.add_column("count", justify="right")
    for op, count in sorted(data["op_histogram"].items(), key=lambda item: (-item[1], item[0])):
        histogram.add_row(op, str(count))
    console.print(histogram)
    if data["unknown_shape_nodes"]:
        console.print(
            f"[yellow]MACs not counted (unknown shapes; give --input-shape NAME=D0,D1,...):[/] {escape(', '.join(data['unknown_shape_nodes']))}"
        )


def render_validation(console: Console, validation: Validation, gates: Sequence[Gate] = (), passed: bool | None = None) -> None:
    """Per-output drift, the gates checked and the verdict (``passed``; the validation's own when not given)."""
    if validation.checker_error is not None:
        console.print(f"[red]onnx.checker failed:[/] {escape(validation.checker_error)}")
    for problem in validation.problems:
        console.print(f"[red]{escape(problem)}[/]")
    if validation.outputs:
        table = Table(title=f"outputs vs reference on {validation.data} (rtol {validation.rtol:g}, atol {validation.atol:g})")
        for column in ("output", "shape", "max abs diff", "max rel diff", "cosine", "top-1 agree", "within tol"):
            table.add_column(column, justify="right" if column not in ("output", "shape") else "left")
        for output in validation.outputs:
            table.add_row(
                escape(output.name),
                escape(str(output.shape)),
                f"{output.max_abs_diff:.3g}",
                f"{output.max_rel_diff:.3g}",
                f"{output.cosine:.6f}",
                "-" if output.top1_agreement is None else f"{output.top1_agreement:.1%}",
                ("yes" if output.within_tolerance else "[red]no[/]") + (f" (atol {output.atol:.2g})" if output.atol > validation.atol else ""),
            )
        console.print(table)
    if validation.accuracy is not None:
        console.print(
            f"accuracy: reference {validation.accuracy['reference']:.2%}, candidate {validation.accuracy['candidate']:.2%}"
        )
    _render_gates(console, [gate.to_dict() for gate in gates])
    console.print("[green]PASSED[/]" if (validation.passed if passed is None else passed) else "[red]FAILED[/]")


def _render_gates(console: Console, gates: list[dict[str, Any]]) -> None:
    for gate in gates:
        verdict = "[green]passed[/]" if gate["passed"] else f"[red]FAILED by {abs(gate['margin']):.6g}[/]"
        if gate["default"] and not gate["passed"]:
            verdict += f" ({FLOOR_HINT})"
        console.print(f"gate {escape(gate['name'])}: {gate['value']:.6g} (limit {gate['limit']:.6g}) {verdict}")


def render_bench(console: Console, names: Sequence[str], timings: Sequence[Timing], threads: int) -> None:
    """Latency per model and speedup relative to the first."""
    table = Table(title=f"onnxruntime CPU latency ({timings[0].runs} interleaved runs, {threads} thread(s))")
    for column in ("model", "median ms", "p10 ms", "p90 ms", "speedup vs first"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, timing in zip(names, timings):
        table.add_row(escape(name), f"{timing.median_ms:.3f}", f"{timing.p10_ms:.3f}", f"{timing.p90_ms:.3f}", f"{timing.speedup:.2f}x")
    console.print(table)


def render_prune(console: Console, report: dict[str, Any]) -> None:
    """The before/after table, what each pass did and declined, gates and failures."""
    original, pruned = report["original"], report["pruned"]
    table = Table(title="onnxprune: original vs pruned")
    for column in ("", "original", "pruned", "ratio"):
        table.add_column(column, justify="left" if not column else "right")
    for label, key, formatter in (
        ("parameters", "params", lambda value: f"{value:,}"),
        ("MACs", "macs", lambda value: f"{value:,}"),
        ("file size", "file_bytes", _bytes),
        ("deflated size", "compressed_bytes", _bytes),
        ("nodes", "nodes", lambda value: f"{value:,}"),
    ):
        if original.get(key) is None and pruned.get(key) is None:
            continue  # e.g. deflated size, measured only when weights were pruned
        if key == "macs" and report["macs_ratio"] is None:
            table.add_row(label, "unknown", "unknown", "symbolic dims: give --input-shape")
            continue
        table.add_row(label, formatter(original[key]), formatter(pruned[key]), _ratio(pruned[key], original[key]))
    if report["speedup"] is not None:
        before, after = original["latency_ms"], pruned["latency_ms"]
        threads = report["config"]["threads"]
        table.add_row(
            f"latency median ({threads} thread{'s' if threads != 1 else ''})",
            f"{before['median']:.3f} ms",
            f"{after['median']:.3f} ms",
            _ratio(after["median"], before["median"]),
        )
        table.add_row("latency p90", f"{before['p90']:.3f} ms", f"{after['p90']:.3f} ms", _ratio(after["p90"], before["p90"]))
        table.add_row("speedup", "", "", f"{report['speedup']:.2f}x")
        if report["timed_on"]:
            table.add_row("timed on", "", "", report["timed_on"])
    validation = report["validation"]
    if validation is not None and validation["outputs"]:
        worst_abs = max(output["max_abs_diff"] for output in validation["outputs"])
        worst_cos = min(output["cosine"] for output in validation["outputs"])
        shapes = ", ".join(f"{name} {shape}" for name, shape in validation["input_shapes"].items())
        table.add_row("validated on", "", "", f"{validation['data']}; {'real' if validation['real_data'] else 'RANDOM'} inputs, {shapes}")
        table.add_row("output drift", "", "", f"max abs {worst_abs:.3g}, cosine {worst_cos:.6f}")
        agreements = [output["top1_agreement"] for output in validation["outputs"] if output["top1_agreement"] is not None]
        if agreements:
            table.add_row("top-1 agreement", "", "", f"{min(agreements):.1%}")
        if validation["accuracy"] is not None:
            accuracy = validation["accuracy"]
            table.add_row("accuracy", f"{accuracy['reference']:.2%}", f"{accuracy['candidate']:.2%}", "")
    console.print(table)
    if report.get("config_file"):
        console.print(f"[bold]config[/]: {escape(report['config_file'])}")
    calibration = report.get("calibration")
    if calibration is not None:
        console.print(
            f"[bold]calibration[/]: {escape(calibration['source'])}: tuned on {calibration['fit_samples']} samples, "
            f"{calibration['held_out_samples']} held out{'; ' + escape('; '.join(calibration['notes'])) if calibration['notes'] else ''}"
        )
    target = report.get("target")
    if target is not None:
        groups = target["allocation"]["groups"]
        cuts = ", ".join(f"{escape(name)} keeps {group['keep']}" for name, group in groups.items()) or "nothing cut"
        console.print(
            f"[bold]target[/]: {target['kind']} {target['asked']:g} asked, {target['reached']:.3f} reached "
            f"({len(target['searched'])} allocation(s) measured); {cuts}"
        )
    render_passes(console, report["passes"])
    _render_gates(console, report["gates"])
    for failure in report.get("failures", []):
        if not failure.startswith("gate "):  # failed gates were printed above
            console.print(f"[red]{escape(failure)}[/]")


def render_sensitivity(console: Console, data: dict[str, Any]) -> None:
    """Per group and cut level: channels kept, drift, MACs saved; then the curve when measured."""
    table_data = data["sensitivity"]
    table = Table(title=f"onnxprune sensitivity: {escape(data['model'])}{' (cached)' if data['cached'] else ''}")
    for column in ("group", "channels", "keep", "drift", "MACs saved"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for group in table_data["groups"]:
        for index, level in enumerate(group["levels"]):
            share = level["macs_saved"] / table_data["macs"] if table_data["macs"] else 0.0
            name, channels = (escape(group["name"]), str(group["channels"])) if index == 0 else ("", "")
            table.add_row(name, channels, str(level["keep"]), f"{level['drift']:.4g}", f"{share:.1%}")
    console.print(table)
    console.print(f"drift: {escape(table_data['metric'])} ({table_data['samples']['held_out']} samples); importance {table_data['importance']}")
    curve = data.get("curve")
    if curve is not None:
        metric = curve["metric"]
        for kind in ("uniform", "allocated"):
            for point in curve[kind]:
                quality = point[metric]
                console.print(
                    f"{kind} (ratio {point['ratio']}): MACs {point['macs_ratio']:.3f}, speedup {point['speedup']:.2f}x, "
                    f"{metric} {'n/a' if quality is None else f'{quality:.4f}'}"
                )


def render_passes(console: Console, passes: list[dict[str, Any]]) -> None:
    """One line per pass with its totals, then every declined candidate with its reason."""
    for step in passes:
        # Scalars only: lists of groups and per-tensor tables belong in the JSON report, not on one line.
        summary = ", ".join(
            f"{key}={_short(value)}"
            for key, value in step["summary"].items()
            if key != "note" and isinstance(value, (int, float, str, bool))
        )
        console.print(f"[bold]{step['name']}[/]: {len(step['changes'])} change(s){'; ' + escape(summary) if summary else ''}")
        if "note" in step["summary"]:
            console.print(f"  note: {escape(str(step['summary']['note']))}")
        for skip in step["skipped"]:
            console.print(f"  skipped {escape(skip['target'])}: {escape(skip['reason'])}")


def _signature(value: ir.Value) -> dict[str, Any]:
    shape = None if value.shape is None else [dim if isinstance(dim, int) else str(dim) for dim in value.shape]
    return {"name": value.name, "dtype": value.dtype.name if value.dtype else "?", "shape": shape}


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return str(size)


def _ratio(after: float | None, before: float | None) -> str:
    if not before or after is None:
        return "-"
    return f"{after / before:.3f}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
