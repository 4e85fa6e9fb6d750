"""Where a model's run time goes, per weight layer, from one onnxruntime profile.

MACs are a poor guide to time: a convolution over a large, thin activation
and one over a small, wide activation may have equal MACs and very different
run times.  A cut's time saving is modelled as

    Σ over weight layers w of  time(w) · (1 - MACs_after(w) / MACs_before(w))

with ``time(w)`` measured once on the original model, in a session
optimised as a deployment would be (fused activations, NCHWc layout), on the
threads the user times with.  Optimised kernels are named after the node
(``fused <node>``) or the value they compute (``<value>_nchwc``); a kernel is charged to the
weight layer it starts from, found by following the first input of what
produced it upstream through at most a few ops (an activation fused into a
convolution is named after the activation's output).  Kernels that belong to
no weight layer (layout reorders, pooling, element-wise ops) are left out of
the saving and counted in ``unattributed_ms``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir
import onnxruntime as ort

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.analysis.weight_ops import weight_op

PROFILED_RUNS = 20
UPSTREAM_STEPS = 4
"""How far a kernel is traced back to its weight layer (Conv → BatchNorm → activation → Mul covers the fusions seen)."""


@dataclass(frozen=True)
class LayerTimes:
    """Milliseconds per run of each weight layer (by node name), and of everything else together."""

    per_layer: dict[str, float]
    unattributed_ms: float

    @property
    def total_ms(self) -> float:
        return sum(self.per_layer.values()) + self.unattributed_ms

    def saved_ms(self, macs_before: Mapping[str, int], macs_after: Mapping[str, int]) -> float:
        """Modelled time saved when each layer's MACs fall from ``macs_before`` to ``macs_after`` (absent: unchanged)."""
        saved = 0.0
        for name, milliseconds in self.per_layer.items():
            before, after = macs_before.get(name, 0), macs_after.get(name, macs_before.get(name, 0))
            if before > 0:
                saved += milliseconds * max(0.0, 1.0 - after / before)
        return saved


def profile_layer_times(model: ir.Model, shapes: Mapping[str, tuple[int, ...]], threads: int = 1, runs: int = PROFILED_RUNS) -> LayerTimes:
    """Profile ``model`` on random inputs of ``shapes`` and charge each kernel's median time to its weight layer."""
    feeds = runtime.random_inputs(runtime.input_specs(model, dict(shapes)), seed=0)
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(irx.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            durations[event["name"].removesuffix("_kernel_time")].append(event["dur"] / 1000.0)
    owner = _kernel_owner(model)
    per_layer: dict[str, float] = defaultdict(float)
    unattributed = 0.0
    for kernel, times in durations.items():
        median = statistics.median(times)  # the first run's allocations and warm-up do not count
        layer = owner(kernel)
        if layer is None:
            unattributed += median
        else:
            per_layer[layer] += median
    return LayerTimes(dict(per_layer), unattributed)


def _kernel_owner(model: ir.Model) -> Callable[[str], str | None]:
    """Maps a kernel name of the optimised session to the weight layer it belongs to (None: to none)."""
    nodes = {node.name: node for node in model.graph if node.name}
    producers = {value.name: node for node in model.graph for value in node.outputs if value.name}

    def owner(kernel: str) -> str | None:
        kernel = kernel.removeprefix("fused ")  # a Gemm or Conv fused with its activation
        node = nodes.get(kernel) or producers.get(kernel.removesuffix("_nchwc")) or producers.get(kernel)
        for _ in range(UPSTREAM_STEPS):
            if node is None:
                return None
            if weight_op(node) is not None:
                return node.name
            data = node.inputs[0] if node.inputs else None
            node = data.producer() if data is not None else None
        return None

    return owner

