"""Layer pruning: bypass whole layers and residual branches while the graph's interface stays fixed.

Which layers can go is decided by
:func:`onnxprune.analysis.layer_candidates.find_bypass_candidates`; this
module chooses among them and performs the surgery.

Selection is either by name (``bypass``: node names, output value names or
globs) or automatic.  Automatic selection only weighs candidates whose bypass
saves at least :data:`MIN_MACS_SHARE` of the MACs of the model being pruned:
an activation or a normalisation costs next to nothing to run, so removing it
buys no speed for the harm it does, and leaving such candidates unscored also
saves their scoring time.  Each remaining candidate is scored by the output
drift of the model with it bypassed, on calibration inputs, divided by the
share of MACs it saves: the lowest drift per unit of speed wins, so a block
that saves ten times the work may cost a little more drift than a cheap
layer and still be the better choice.  After each bypass candidates are
scored again on the changed model, because bypasses interact: every new one,
the :data:`RESCORE` best by their earlier score, and more while the
best-ranked one's score dates from before the bypass (see
:class:`_Scoreboard`), so a deep model is not measured once per candidate
per bypass.
``auto`` caps the number of bypasses; ``max_drift`` caps the drift itself
(only candidates that keep the drift within it are chosen from); both may be
given together.

Drift is the metric every score and every report line uses::

    drift = max over graph outputs o of  ||Y'_o - Y_o||_2 / ||Y_o||_2

where ``Y_o`` stacks output ``o`` of the ORIGINAL model over all calibration
inputs and ``Y'_o`` the same for the bypassed model (relative L2 error, 0 for
an identical model).  Each change in the report carries the drift of the
model right after that bypass, so the last one is the drift of the result;
automatic selection also records, for every candidate it measured before
that bypass, its drift, the MACs it saves and its score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.analysis.cost import macs_by_node, model_cost
from onnxprune.analysis.layer_candidates import (
    Candidate,
    Declined,
    bypass_name,
    bypass_shape_facts,
    find_bypass_candidates,
    matches_node,
    names_of,
)
from onnxprune.errors import InputError
from onnxprune.options import LayerOptions
from onnxprune.passes.base import PassReport, PruningPass, PruningResult
from onnxprune.progress import progress
from onnxprune.reconstruct.capture import Feeds
from onnxprune.reconstruct.refit import refit_changed_layers

MIN_MACS_SHARE = 0.01
"""The least share of the model's MACs an automatic bypass must save; a candidate under it is not even scored."""
RESCORE = 16
"""After a bypass, how many of the best-ranked candidates are measured again before one is chosen (see :class:`_Scoreboard`)."""
DRIFT_METRIC = "max over graph outputs of ||y' - y||_2 / ||y||_2 vs the original model, stacked over calibration inputs"
RANDOM_INPUTS_WARNING = (
    "no calibration data given: candidates were ranked on generated random inputs; "
    "real inputs (an .npz) rank layers more faithfully"
)
RANDOM_DRIFT_WARNING = (
    "no calibration data given: drift was measured on generated random inputs; "
    "real inputs (an .npz) measure it more faithfully"
)


class LayerBypassPass(PruningPass):
    """Bypass residual blocks and shape-preserving layers chosen by name or by measured output drift.

    Cases, in the order they are handled:

    1. No selection in the options: nothing changes.
    2. ``bypass`` patterns: every candidate a pattern matches is bypassed,
       residual blocks first (a block swallows the layers inside it); a
       matched layer that cannot be bypassed is reported with its reason; a
       pattern matching nothing is an :class:`InputError`.
    3. ``auto`` / ``max_drift``: greedy by drift per share of MACs saved,
       choosing only on a score measured on the current model; candidates
       that save under :data:`MIN_MACS_SHARE` are skipped.

    Every declined candidate is recorded in the report's ``skipped``; every
    bypass in its ``changes`` with the MACs and parameters it saved and the
    drift the model had right after it.  Shapes are inferred once per run: a
    bypass keeps every remaining value's shape, so the first facts stay true.
    """

    name = "layers"

    def __init__(
        self,
        options: LayerOptions | None = None,
        calibration: Sequence[Feeds] | None = None,
        refit: bool = True,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """``calibration``: batches of real inputs that rank candidates and, with ``refit``, refit the layers after a bypass;
        ``shapes``: input shapes MACs are counted at (for the savings floor and the report), else ``options.input_shapes``."""
        super().__init__()
        self.options = options or LayerOptions()
        self.calibration = list(calibration) if calibration else None
        self.refit = refit
        self.shapes = shapes if shapes is not None else dict(self.options.input_shapes)

    def call(self, model: ir.Model) -> PruningResult:
        report = PassReport(self.name)
        if not self.options.selects_anything:
            report.summary = {"mode": "none", "bypassed": 0}
            return PruningResult(model, False, report, exact=True)
        original = model.clone() if self.refit and self.calibration else None
        original_node = {} if original is None else dict(zip(model.graph, original.graph))
        run = _Run(model, report, self.shapes)
        if self.options.bypass:
            self._bypass_by_name(run)
        else:
            self._bypass_automatically(run)
        if original is not None and self.calibration and report.changes:
            refit = refit_changed_layers(original, model, original_node, set(), self.calibration, rewired=run.rewired)
            refit.add_to(report)
            run.cost = model_cost(model, shapes=self.shapes)
        report.summary.update(
            bypassed=len(report.changes),
            macs_before=run.original_cost.macs,
            macs_after=run.cost.macs,
            params_before=run.original_cost.params,
            params_after=run.cost.params,
            drift_metric=DRIFT_METRIC,
        )
        return PruningResult(model, bool(report.changes), report, exact=not report.changes)

    def _bypass_by_name(self, run: _Run) -> None:
        """Bypass what the patterns select, one at a time, re-checking each on the current graph."""
        model, report = run.model, run.report
        candidates, declined = run.candidates()
        selected: list[Candidate] = []
        for pattern in self.options.bypass:
            hits = [candidate for candidate in candidates if candidate.matches(pattern)]
            misses = [decline for decline in declined if matches_node(decline.node, pattern)]
            if not hits and not misses:
                raise InputError(_no_match_message(pattern, model, candidates))
            selected.extend(candidate for candidate in hits if candidate not in selected)
            for decline in misses:
                if decline.as_skip() not in report.skipped:
                    report.skipped.append(decline.as_skip())
        selected.sort(key=lambda candidate: candidate.kind != "residual")
        meter: DriftMeter | None
        warnings: list[str]
        if selected and self.calibration:
            meter, warnings = DriftMeter(model, self.calibration), []
        else:
            meter, warnings = _drift_meter_or_warning(model, self.options) if selected else (None, [])
        report.summary.update(mode="names", patterns=list(self.options.bypass), warnings=warnings)
        removed_by: dict[ir.Node, str] = {}
        for wanted in selected:
            if wanted.anchor in removed_by:
                report.skip(wanted.name, f"removed together with '{removed_by[wanted.anchor]}'")
                continue
            current, still_declined = run.candidates()
            match = next((candidate for candidate in current if candidate.anchor is wanted.anchor), None)
            if match is None:
                reason = next((d.reason for d in still_declined if d.node is wanted.anchor), "no longer a bypass candidate")
                report.skip(wanted.name, f"after earlier bypasses: {reason}")
                continue
            change = run.apply(match)
            change["drift"] = meter.drift(model) if meter is not None else None
            for node in match.nodes:
                removed_by[node] = match.name
        report.summary["drift"] = report.changes[-1]["drift"] if report.changes else 0.0

    def _bypass_automatically(self, run: _Run) -> None:
        """Greedy: score the candidates worth bypassing on the current model, bypass the best, repeat."""
        model, report = run.model, run.report
        feeds, warnings = (self.calibration, []) if self.calibration else _calibration_feeds(model, self.options)
        meter = DriftMeter(model, feeds)
        savings = _Savings(model, run.original_cost.macs, self.shapes)
        scoreboard = _Scoreboard(model, meter, savings)
        limit = self.options.auto if self.options.auto is not None else math.inf
        max_drift = self.options.max_drift if self.options.max_drift is not None else math.inf
        report.summary.update(
            mode="auto",
            auto=self.options.auto,
            max_drift=self.options.max_drift,
            kinds=list(self.options.kinds),
            min_macs_share=MIN_MACS_SHARE,
            rescore=RESCORE,
            calibration_batches=len(feeds),
            warnings=warnings,
        )
        stopped = f"reached auto={self.options.auto}"
        drift = 0.0
        too_small: set[str] = set()
        while len(report.changes) < limit:
            candidates, declined = run.candidates()
            if not report.changes:
                report.skipped.extend(decline.as_skip() for decline in declined if decline.kind in self.options.kinds)
            pool = [candidate for candidate in candidates if candidate.kind in self.options.kinds]
            if not pool:
                stopped = "no bypass candidates left"
                break
            worth = []
            for candidate in pool:
                saved = savings.of(candidate)
                if savings.share(saved) >= MIN_MACS_SHARE:
                    worth.append((candidate, saved))
                elif candidate.name not in too_small:
                    too_small.add(candidate.name)
                    report.skip(candidate.name, savings.too_small(saved))
            if not worth:
                stopped = savings.none_worth_it()
                break
            best, measured = scoreboard.choose(worth, drift, max_drift, f"round {len(report.changes) + 1}")
            if best is None:
                least = min(measured, key=lambda entry: (entry.drift, entry.candidate.name))
                stopped = (
                    f"the least harmful remaining candidate '{least.candidate.name}' would raise the drift to "
                    f"{least.drift:.4g} > max_drift={self.options.max_drift:g}"
                )
                break
            change = run.apply(best.candidate)
            change["drift"] = drift = best.drift
            change["score"] = best.score
            change["round"] = len(report.changes)
            change["scores"] = {entry.candidate.name: entry.facts() for entry in measured}
        report.summary.update(stopped=stopped, drift=drift, drift_measurements=scoreboard.measurements)


@dataclass(frozen=True)
class _Scored:
    """One candidate weighed for automatic bypass: the drift of the model with it bypassed and the MACs it saves."""

    candidate: Candidate
    drift: float
    macs_saved: int
    share: float
    """``macs_saved`` over the MACs of the model being pruned; at least :data:`MIN_MACS_SHARE`."""

    @property
    def score(self) -> float:
        """Drift per share of MACs saved: what the greedy choice minimises."""
        return self.drift / self.share

    def rank(self) -> tuple[float, int, str]:
        """Lowest score first; on a tie the larger saving, then the name, so the choice is deterministic."""
        return self.score, -self.macs_saved, self.candidate.name

    def facts(self) -> dict[str, float | int]:
        """JSON-ready facts for the report."""
        return {"drift": self.drift, "macs_saved": self.macs_saved, "score": self.score}


_Key = tuple[ir.Node, ir.Value, tuple[ir.Node, ...]]


class _Scoreboard:
    """Drift measurements kept across rounds, so that after a bypass only the likely winners are measured again.

    Measuring a candidate costs a copy of the model, an onnxruntime session
    and a run over the calibration inputs; measuring every candidate again
    after every bypass made the cost grow with the square of a deep model's
    depth.  A measurement taken before the last bypass is stale, because
    bypasses interact: it is carried forward as the drift it added to the
    model of its time, on top of the drift of the model now.  Each round
    every new candidate and the :data:`RESCORE` best-ranked stale ones are
    measured on the current model, then more stale ones, best first, until
    the best candidate within ``max_drift`` has a fresh measurement: a
    candidate is only chosen on a fresh one, and before stopping because
    none stays within ``max_drift``, all are measured afresh.  On the chains
    of residual blocks of ``tools/bench_bypass_scoring.py`` this chooses
    what measuring every candidate every round chooses.
    """

    def __init__(self, model: ir.Model, meter: DriftMeter, savings: _Savings) -> None:
        self._model = model
        self._meter = meter
        self._savings = savings
        self._measured: dict[_Key, tuple[_Scored, float]] = {}
        """Each candidate's latest measurement, and the drift the model had when it was taken."""
        self.measurements = 0

    def choose(
        self, worth: list[tuple[Candidate, int]], drift: float, max_drift: float, label: str
    ) -> tuple[_Scored | None, list[_Scored]]:
        """The best candidate freshly measured within ``max_drift`` (None when none is), and this round's measurements.

        ``drift`` is the drift of the model as it is now.
        """
        pool = {_key(candidate): (candidate, saved) for candidate, saved in worth}
        fresh: set[_Key] = set()

        def current(key: _Key) -> _Scored:
            entry, then = self._measured[key]
            return entry if key in fresh else replace(entry, drift=max(entry.drift - then + drift, 0.0))

        stale = sorted((key for key in pool if key in self._measured), key=lambda key: current(key).rank())
        first = [key for key in pool if key not in self._measured] + stale[:RESCORE]
        with progress(f"scoring {len(first)} bypass candidates ({label})", total=len(first)) as advance:
            for key in first:
                self._measure(key, *pool[key], drift)
                fresh.add(key)
                advance(1)
        while True:
            within = [key for key in pool if current(key).drift <= max_drift]
            if within:
                best = min(within, key=lambda key: current(key).rank())
                if best in fresh:
                    return current(best), [current(key) for key in pool if key in fresh]
                pending = [best]
            else:
                pending = [key for key in pool if key not in fresh]
                if not pending:
                    return None, [current(key) for key in pool]
            for key in pending:
                self._measure(key, *pool[key], drift)
                fresh.add(key)

    def _measure(self, key: _Key, candidate: Candidate, saved: int, drift: float) -> None:
        """Measure the candidate on the model as it is now, whose own drift is ``drift``."""
        entry = _Scored(candidate, self._meter.drift(bypassed_copy(self._model, candidate)), saved, self._savings.share(saved))
        self._measured[key] = entry, drift
        self.measurements += 1


def _key(candidate: Candidate) -> _Key:
    """What identifies a candidate across rounds: the same nodes removed and the same value taking their place."""
    return candidate.anchor, candidate.source, candidate.nodes


class _Savings:
    """MACs a bypass saves, counted per removed weight op on the model being pruned.

    A bypass keeps every remaining value's shape, so the count each node got
    before the first bypass stays true after later ones.  Producers removed
    only because they fed a bypassed node (constant-folding leftovers) are
    not counted.
    """

    def __init__(self, model: ir.Model, total: int, shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        self.total = total
        self._macs = macs_by_node(model, shapes)

    def of(self, candidate: Candidate) -> int:
        """MACs of the nodes the candidate's bypass removes."""
        return sum(self._macs.get(node, 0) for node in candidate.nodes)

    def share(self, macs: int) -> float:
        """``macs`` as a share of the model's MACs; 0 when those are unknown or 0."""
        return macs / self.total if self.total > 0 else 0.0

    def too_small(self, macs: int) -> str:
        """Why a candidate saving ``macs`` is left alone by automatic selection."""
        if self.total <= 0:
            return (
                "saves no measurable MACs: the model's MACs are unknown or 0, "
                f"and an automatic bypass must save {MIN_MACS_SHARE:.0%} of them"
            )
        # Rounded down, so a share just under the floor never prints as the floor itself.
        percent = math.floor(self.share(macs) * 10_000) / 100
        return f"saves {percent:.2f}% of the model's MACs, under the {MIN_MACS_SHARE:.0%} an automatic bypass must save"

    def none_worth_it(self) -> str:
        """Why automatic selection stops when every remaining candidate saves too little."""
        if self.total <= 0:
            return "the model's MACs are unknown or 0, so no candidate saves a measurable share of them"
        return f"no remaining candidate saves {MIN_MACS_SHARE:.0%} of the model's MACs"


class _Run:
    """One run of the pass on one model: its report, the shapes inferred once, and the cost so far.

    Each bypass is costed against the model right before it, which is the
    model right after the previous one: one cost measurement per bypass.
    """

    def __init__(self, model: ir.Model, report: PassReport, input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        self.model = model
        self.report = report
        self.shape_facts = bypass_shape_facts(model, input_shapes)
        self.input_shapes = input_shapes
        self.original_cost = self.cost = model_cost(model, shapes=input_shapes)
        self.rewired: set[ir.Node] = set()
        """Nodes that read a bypassed block's output and now read its source."""

    def candidates(self) -> tuple[list[Candidate], list[Declined]]:
        """Bypass candidates of the model as it is now."""
        return find_bypass_candidates(self.model, self.shape_facts)

    def apply(self, candidate: Candidate) -> dict[str, Any]:
        """Bypass one candidate and record what it removed and saved; the change is returned for more facts."""
        change: dict[str, Any] = candidate.describe()
        self.rewired.update(usage.node for usage in candidate.output.uses())
        change.update(apply_bypass(self.model.graph, candidate))
        after = model_cost(self.model, shapes=self.input_shapes)
        change["macs_saved"] = self.cost.macs - after.macs
        change["params_saved"] = self.cost.params - after.params
        self.cost = after
        self.report.changes.append(change)
        return change


def apply_bypass(graph: ir.Graph, candidate: Candidate) -> dict[str, list[str]]:
    """Rewire the candidate's consumers to its source, then remove it and whatever only fed it.

    A bypassed graph output keeps its name and declared shape: the source
    value takes both (discovery has already refused sources that are graph
    inputs, outputs or initializers, whose names are fixed).
    """
    feeding = [value for node in candidate.nodes for value in node.inputs if value is not None]
    irx.replace_output(graph, candidate.output, candidate.source)
    graph.remove(candidate.nodes, safe=True)
    orphans, initializers = _remove_orphans(graph, feeding)
    return {
        "removed_nodes": [bypass_name(node) for node in candidate.nodes] + orphans,
        "removed_initializers": initializers,
    }


def _remove_orphans(graph: ir.Graph, values: list[ir.Value]) -> tuple[list[str], list[str]]:
    """Remove initializers and producer chains that nothing uses any more, starting from ``values``."""
    nodes: list[str] = []
    initializers: list[str] = []
    pending = list(values)
    while pending:
        value = pending.pop()
        if value.uses() or value.is_graph_output() or value.is_graph_input():
            continue
        if value.is_initializer():
            name = value.name
            if name is not None and graph.initializers.get(name) is value:
                graph.initializers.pop(name)
                initializers.append(name)
            continue
        producer = value.producer()
        if producer is None or producer.graph is not graph:
            continue
        if any(out.uses() or out.is_graph_output() for out in producer.outputs):
            continue
        pending.extend(inp for inp in producer.inputs if inp is not None)
        nodes.append(bypass_name(producer))
        graph.remove(producer, safe=True)
    return nodes, initializers


def bypassed_copy(model: ir.Model, candidate: Candidate) -> ir.Model:
    """A clone of ``model`` with ``candidate`` bypassed; ``model`` is untouched."""
    copy = model.clone()
    apply_bypass(copy.graph, candidate.transferred(model, copy))
    return copy


class DriftMeter:
    """Output drift of models against a reference model's outputs on fixed calibration inputs (see module doc)."""

    def __init__(self, reference: ir.Model, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._reference = self._outputs(reference)

    def _outputs(self, model: ir.Model) -> dict[str, np.ndarray]:
        session = runtime.make_session(model, optimize=False)
        runs = [runtime.run(session, feed) for feed in self._feeds]
        return {name: np.concatenate([np.ravel(run[name]).astype(np.float64) for run in runs]) for name in runs[0]}

    def drift(self, model: ir.Model) -> float:
        """Relative L2 error of ``model``'s outputs, the worst over graph outputs."""
        outputs = self._outputs(model)
        worst = 0.0
        for name, expected in self._reference.items():
            error = float(np.linalg.norm(outputs[name] - expected))
            scale = float(np.linalg.norm(expected))
            if scale > 0:
                worst = max(worst, error / scale)
            elif error > 0:
                worst = math.inf
        return worst


def _calibration_feeds(model: ir.Model, options: LayerOptions) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """Calibration batches from the .npz, or generated ones with a warning that real data ranks better."""
    specs = runtime.input_specs(model, dict(options.input_shapes))
    if options.calibration is None:
        return [runtime.random_inputs(specs, options.seed + index) for index in range(options.samples)], [RANDOM_INPUTS_WARNING]
    arrays = runtime.load_npz_inputs(options.calibration, specs)
    return _batches(model, specs, arrays, options), []


def _batches(
    model: ir.Model, specs: list[runtime.InputSpec], arrays: dict[str, np.ndarray], options: LayerOptions
) -> list[dict[str, np.ndarray]]:
    """Feed an .npz whole when the model's batch dim is symbolic, else split it into at most ``samples`` batches."""
    declared = {value.name: value.shape for value in model.graph.inputs}
    rows = None
    for spec in specs:
        array = arrays[spec.name]
        shape = declared.get(spec.name)
        symbolic_batch = shape is not None and len(shape) > 0 and not isinstance(shape[0], int)
        if array.shape == spec.shape or (symbolic_batch and array.shape[1:] == spec.shape[1:]):
            continue
        batch = spec.shape[0] if spec.shape else 0
        if batch and array.ndim == len(spec.shape) and array.shape[1:] == spec.shape[1:] and array.shape[0] % batch == 0:
            count = array.shape[0] // batch
            rows = count if rows is None else min(rows, count)
            continue
        raise InputError(f"{options.calibration}: '{spec.name}' has shape {list(array.shape)}, the model wants {list(spec.shape)}")
    if rows is None:
        return [arrays]
    batches = []
    for index in range(min(rows, options.samples)):
        feed = {}
        for spec in specs:
            array = arrays[spec.name]
            if array.shape == spec.shape:
                feed[spec.name] = array
            else:
                feed[spec.name] = array[index * spec.shape[0] : (index + 1) * spec.shape[0]]
        batches.append(feed)
    return batches


def _drift_meter_or_warning(model: ir.Model, options: LayerOptions) -> tuple[DriftMeter | None, list[str]]:
    """For name selection drift is informative only.

    A model whose inputs cannot be generated (symbolic dims and no
    ``input_shapes``) is still bypassed, with the drift left unmeasured and a
    warning; a calibration file the user named must load, or it is an error.
    """
    if options.calibration is not None:
        feeds, warnings = _calibration_feeds(model, options)
        return DriftMeter(model, feeds), warnings
    try:
        feeds, _ = _calibration_feeds(model, options)
    except InputError as error:
        return None, [f"drift not measured: {error}"]
    return DriftMeter(model, feeds), [RANDOM_DRIFT_WARNING]


def _no_match_message(pattern: str, model: ir.Model, candidates: list[Candidate]) -> str:
    nodes = [node for node in irx.iter_nodes(model) if matches_node(node, pattern)]
    if nodes:
        found = ", ".join(f"'{bypass_name(node)}' ({node.op_type})" for node in nodes[:5])
        return (
            f"bypass pattern '{pattern}' matches {found}, which is not a layer or residual block this pass can bypass; "
            f"candidates: {names_of(candidates)}"
        )
    return f"bypass pattern '{pattern}' matches no node or value name; candidates: {names_of(candidates)}"
