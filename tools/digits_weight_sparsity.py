"""Measure what weight pruning costs in accuracy and saves on disk for the digits model.

    python tools/digits_weight_sparsity.py [--model models/digits_cnn.onnx] [--data models/digits_test.npz]

For each setting it prints test accuracy, the sparsity reached, the file size
stored dense, its deflate-compressed size, and the size with sparse
initializers.  MACs and parameter count do not change with unstructured
pruning (tensors keep their shapes), which the table shows too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from onnxprune import ir as irx  # noqa: E402
from onnxprune import runtime  # noqa: E402
from onnxprune.analysis.cost import model_cost  # noqa: E402
from onnxprune.options import WeightOptions  # noqa: E402
from onnxprune.passes.cleanup import CleanupPass  # noqa: E402
from onnxprune.passes.weights import WeightPruningPass  # noqa: E402
from onnxprune.sparse import compressed_size, to_sparse_storage  # noqa: E402

SETTINGS: list[tuple[str, WeightOptions | None]] = [
    ("dense (original)", None),
    ("50% per tensor", WeightOptions(sparsity=0.5)),
    ("2:4 pattern", WeightOptions(pattern="2:4")),
    ("90% per tensor", WeightOptions(sparsity=0.9)),
    ("90% global", WeightOptions(sparsity=0.9, scope="global")),
]


def accuracy(model_path: Path, data_path: Path, options: WeightOptions | None) -> dict[str, object]:
    """Prune a fresh copy with ``options`` (then clean up) and measure it."""
    model = irx.load(model_path)
    sparsity = 0.0
    if options is not None:
        sparsity = WeightPruningPass(options)(model).report.summary["sparsity_after"]
        CleanupPass()(model)
    with np.load(data_path) as archive:
        images, labels = archive["input"], archive["labels"]
    session = runtime.make_session(model, optimize=False)
    (logits,) = runtime.run(session, {session.get_inputs()[0].name: images}).values()
    proto = irx.to_proto(model)
    dense_bytes = proto.SerializeToString()
    cost = model_cost(_batch_of_one(model))
    return {
        "accuracy": float(np.mean(np.argmax(logits, axis=1) == labels)),
        "sparsity": sparsity,
        "file": len(dense_bytes),
        "deflated": compressed_size(dense_bytes),
        "sparse_file": to_sparse_storage(proto).ByteSize(),
        "params": cost.params,
        "macs": cost.macs,
    }


def _batch_of_one(model: ir.Model) -> ir.Model:
    """A copy with the symbolic batch fixed to 1, because the cost model counts MACs on static shapes."""
    fixed = model.clone()
    for value in fixed.graph.inputs:
        if value.shape is not None:
            value.shape = ir.Shape([1, *value.shape[1:]])
    for node in fixed.graph:
        for output in node.outputs:
            output.shape = None
    for value in fixed.graph.outputs:
        value.shape = None
    return fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "digits_cnn.onnx")
    parser.add_argument("--data", type=Path, default=REPO / "models" / "digits_test.npz")
    args = parser.parse_args()
    header = (
        f"{'setting':<18} {'accuracy':>8} {'sparsity':>8} {'file B':>8} {'deflate B':>9} {'sparse B':>8} "
        f"{'params':>7} {'MACs@1':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, options in SETTINGS:
        row = accuracy(args.model, args.data, options)
        print(
            f"{label:<18} {row['accuracy']:>8.4f} {row['sparsity']:>8.3f} {row['file']:>8} {row['deflated']:>9} "
            f"{row['sparse_file']:>8} {row['params']:>7} {row['macs']:>8}"
        )
    print("\nonnxruntime on CPU runs dense kernels: zeros cost the same time as any weight.")


if __name__ == "__main__":
    main()
