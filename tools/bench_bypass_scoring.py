"""How long does automatic layer bypass take to score its candidates as a model gets deeper?

Builds chains of residual blocks (3x3 conv, ReLU, 3x3 conv, Add, ReLU) of a
few channels on a small map, where the run time of ``--bypass-auto`` is all
scoring, and runs :class:`onnxprune.passes.layers.LayerBypassPass` on each.
Every row gives the wall time, how many bypassed models were measured
(drift runs), the drift of the result and which candidates were chosen, so
two versions of the pass can be compared row by row: run it from each
checkout (``PYTHONPATH=. python tools/bench_bypass_scoring.py``).
``RESCORE`` in ``onnxprune/passes/layers.py`` was set with it: at 16 the pass
chose what re-measuring every candidate after every bypass chose on every
chain tried (10 to 80 blocks with ``--auto 3``, 40 and 80 with ``--auto 10``,
30 and 60 with ``--auto 8`` for seeds 0 to 3); at 8 it did not always.

    python tools/bench_bypass_scoring.py --blocks 10 20 40 80 --auto 3
    python tools/bench_bypass_scoring.py --blocks 60 --max-drift 0.5
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from unittest.mock import patch

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune import ir as irx
from onnxprune.options import LayerOptions
from onnxprune.passes.layers import DriftMeter, LayerBypassPass
from onnxprune.progress import silenced


def residual_chain(blocks: int, channels: int, side: int, seed: int = 0) -> onnx.ModelProto:
    """Stem conv, ``blocks`` residual blocks, head conv; every conv keeps ``channels`` channels on a ``side``² map."""
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(name: str, data: str, out: str, scale: float) -> None:
        weight = (rng.standard_normal((channels, channels, 3, 3)) * scale).astype(np.float32)
        initializers.append(helper.make_tensor(f"{name}_w", TensorProto.FLOAT, weight.shape, weight.ravel()))
        nodes.append(helper.make_node("Conv", [data, f"{name}_w"], [out], name=name, pads=[1, 1, 1, 1]))

    conv("stem", "x", "h0", 0.3)
    current = "h0"
    for index in range(blocks):
        conv(f"b{index}_conv1", current, f"b{index}_c1", 0.3)
        nodes.append(helper.make_node("Relu", [f"b{index}_c1"], [f"b{index}_r"], name=f"b{index}_relu"))
        # Branches of growing weight: the blocks differ in how much they matter, as trained ones do.
        conv(f"b{index}_conv2", f"b{index}_r", f"b{index}_f", 0.02 + 0.1 * rng.random())
        nodes.append(helper.make_node("Add", [current, f"b{index}_f"], [f"b{index}_m"], name=f"b{index}_merge"))
        nodes.append(helper.make_node("Relu", [f"b{index}_m"], [f"b{index}_a"], name=f"b{index}_act"))
        current = f"b{index}_a"
    conv("head", current, "y", 0.3)
    shape = [1, channels, side, side]
    graph = helper.make_graph(
        nodes,
        "residual_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--side", type=int, default=8)
    parser.add_argument("--auto", type=int, default=3)
    parser.add_argument("--max-drift", type=float, default=None, help="bypass until the drift would pass this (instead of --auto)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the block weights")
    args = parser.parse_args(argv)

    print("command:", " ".join(shlex.quote(part) for part in [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]))
    print(f"{'blocks':>6} {'nodes':>6} {'seconds':>8} {'drift runs':>10} {'drift':>8}  chosen")
    for blocks in args.blocks:
        model = irx.from_proto(residual_chain(blocks, args.channels, args.side, args.seed))
        nodes = sum(1 for _ in model.graph)
        stop = {"max_drift": args.max_drift} if args.max_drift is not None else {"auto": args.auto}
        options = LayerOptions(samples=args.samples, **stop)
        # Counted by wrapping the method, so that any version of the pass can be measured the same way.
        with patch.object(DriftMeter, "drift", autospec=True, side_effect=DriftMeter.drift) as drift:
            start = time.perf_counter()
            with silenced():
                result = LayerBypassPass(options)(model)
            seconds = time.perf_counter() - start
        chosen = ", ".join(change["name"] for change in result.report.changes)
        final = result.report.summary["drift"]
        print(f"{blocks:>6} {nodes:>6} {seconds:>8.2f} {drift.call_count:>10} {final:>8.4f}  {chosen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
