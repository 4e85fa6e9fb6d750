"""Does rounding channel counts to a multiple of 8 or 16 make pruned models faster in onnxruntime (CPU)?

For every model, the original and one channel-pruned copy per ``--round-to``
value are timed interleaved (``onnxprune.bench.benchmark``: A B C A B C ...,
speedup = median of per-pair ratios against the original) with 1 and 2
threads, next to the MAC reduction of each copy.  The table it prints, and
the command line that produced it, are what ``DEFAULT_ROUND_TO`` in
``onnxprune/options.py`` was chosen from.

    python tools/bench_round_to.py models/resnet_mini.onnx models/vgg_mini.onnx --ratio 0.5
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from onnxprune import ir as irx
from onnxprune.analysis.cost import model_cost
from onnxprune.bench import benchmark
from onnxprune.options import ChannelOptions
from onnxprune.passes.channels import ChannelPruningPass

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[REPO / "models/resnet_mini.onnx", REPO / "models/vgg_mini.onnx"])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--global-ranking", action="store_true")
    args = parser.parse_args(argv)

    print("command:", " ".join(shlex.quote(part) for part in [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]))
    header = f"{'model':<24} {'round_to':>8} {'channels':>9} {'MACs (M)':>9} {'MAC cut':>8}" + "".join(
        f" {f'speedup {threads}t':>11} {f'ms {threads}t':>8}" for threads in args.threads
    )
    print(header)
    print("-" * len(header))
    for path in args.models:
        original = irx.load(path)
        variants, rows = [original], []
        base = model_cost(original)
        for round_to in args.round_to:
            model = irx.copy_model(original)
            options = ChannelOptions(ratio=args.ratio, round_to=round_to, global_ranking=args.global_ranking)
            summary = ChannelPruningPass(options)(model).report.summary
            cost = model_cost(model)
            variants.append(model)
            rows.append((round_to, summary["channels_after"], cost.macs))
        timings = {threads: benchmark(variants, runs=args.runs, threads=threads, quiet=True) for threads in args.threads}
        line = f"{path.stem:<24} {'-':>8} {summary['channels_before']:>9} {base.macs / 1e6:>9.1f} {1.0:>7.2f}x"
        print(line + "".join(f" {1.0:>10.2f}x {timings[t][0].median_ms:>8.2f}" for t in args.threads))
        for index, (round_to, channels, macs) in enumerate(rows, start=1):
            line = f"{path.stem:<24} {round_to:>8} {channels:>9} {macs / 1e6:>9.1f} {base.macs / macs:>7.2f}x"
            print(line + "".join(f" {timings[t][index].speedup:>10.2f}x {timings[t][index].median_ms:>8.2f}" for t in args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
