"""Fuzzing: mutated models never crash onnxprune and never lead it to write an invalid model.

Hypothesis takes a valid seed model and damages it the way files get damaged
or hand-edited: an input dropped, a dims list corrupted, a value renamed to a
dangling one, an op type swapped.  Every command must then either succeed
(and any model it writes passes the full checker and runs) or exit 2 with a
one-line reason; validating the damaged model against its original may also
exit 1, the verdict "they differ".  The command line's last-resort
"cannot process this model" line counts as a crash.

CI runs a bounded number of examples; set ``ONNXPRUNE_FUZZ_EXAMPLES`` for a
longer hunt.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile_models as hm
from tests.conftest import feeds_for, run_onnx
from tests.test_robustness import CRASH_MARKER

EXAMPLES = int(os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES", "25"))
PRUNE_OPTIONS = ["--weight-sparsity", "0.5", "--bypass-auto", "1", "--no-bench", "--samples", "1", "--channel-ratio", "0.5"]

SEEDS: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv_chain": hm.conv_chain,
    "sum_residual": hm.sum_residual,
    "multiple_inputs_outputs": hm.multiple_inputs_outputs,
    "nhwc_transposed_convs": hm.nhwc_transposed_convs,
    "if_model": hm.if_model,
    "qlinearconv_model": hm.qlinearconv_model,
}
_SEED_BYTES = {name: build().SerializeToString() for name, build in SEEDS.items()}

# Swapping in ops with other arities and attribute sets is what makes the damage interesting.
UNARY_OPS = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Identity", "Softsign"]
OP_TYPES = ["Relu", "Sigmoid", "Identity", "Conv", "Add", "Sum", "Concat", "Transpose", "MaxPool", "Gemm", "Flatten", "Softmax", "NoSuchOp"]


def _mutate(model: onnx.ModelProto, data: st.DataObject) -> str:
    """Apply one random mutation in place; return its description."""
    graph = model.graph
    kind = data.draw(
        st.sampled_from(["swap_unary", "symbolic_dim", "swap_op", "drop_output", "corrupt_dims", "dangling_name", "drop_node", "drop_input"])
    )
    # Damage that keeps the model valid, so the pruning passes (not only the loader) meet odd graphs.
    unary = [node for node in graph.node if node.op_type in UNARY_OPS]
    if kind == "swap_unary" and unary:
        node = data.draw(st.sampled_from(unary))
        old, node.op_type = node.op_type, data.draw(st.sampled_from(UNARY_OPS))
        return f"{node.name} {old} -> {node.op_type}"
    if kind == "symbolic_dim" and graph.input and graph.input[0].type.tensor_type.shape.dim:
        dims = graph.input[0].type.tensor_type.shape.dim
        axis = data.draw(st.integers(0, len(dims) - 1))
        dims[axis].dim_param = data.draw(st.sampled_from(["N", "height", "batch"]))
        return f"input dim {axis} -> {dims[axis].dim_param}"
    if kind == "drop_input" and len(graph.input) > 0:
        index = data.draw(st.integers(0, len(graph.input) - 1))
        name = graph.input[index].name
        del graph.input[index]
        return f"dropped input {name}"
    if kind == "drop_output" and len(graph.output) > 0:
        index = data.draw(st.integers(0, len(graph.output) - 1))
        name = graph.output[index].name
        del graph.output[index]
        return f"dropped output {name}"
    if kind == "corrupt_dims" and (graph.input or graph.output or graph.initializer):
        targets = [("input", value) for value in graph.input] + [("output", value) for value in graph.output]
        targets += [("initializer", init) for init in graph.initializer]
        where, target = data.draw(st.sampled_from(targets))
        new_dims = data.draw(st.lists(st.integers(-2, 20), min_size=0, max_size=5))
        if where == "initializer":
            del target.dims[:]
            target.dims.extend(new_dims)
        else:
            shape = target.type.tensor_type.shape
            shape.ClearField("dim")
            for dim in new_dims:
                shape.dim.add().dim_value = dim
        return f"{where} {target.name} dims -> {new_dims}"
    if not graph.node:
        return "no-op (no nodes left)"
    if kind == "dangling_name":
        node = data.draw(st.sampled_from(list(graph.node)))
        if not node.input:
            return "no-op"
        index = data.draw(st.integers(0, len(node.input) - 1))
        old = node.input[index]
        node.input[index] = f"{old}_dangling"
        return f"{node.name} input {index} {old} -> dangling"
    if kind == "drop_node" and len(graph.node) > 0:
        index = data.draw(st.integers(0, len(graph.node) - 1))
        name = graph.node[index].name
        del graph.node[index]
        return f"dropped node {name}"
    node = data.draw(st.sampled_from(list(graph.node)))
    old = node.op_type
    node.op_type = data.draw(st.sampled_from(OP_TYPES))
    return f"{node.name} {old} -> {node.op_type}"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from onnxprune.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    return code, capsys.readouterr().err


def _assert_clean(code: int, err: str, allowed: tuple[int, ...], what: str) -> None:
    assert code in allowed, f"{what}: exit {code}: {err}"
    assert "Traceback" not in err, f"{what}: {err}"
    assert CRASH_MARKER not in err, f"{what}: a code path crashed: {err}"
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("onnxprune: error:")]
        assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], f"{what}: {err}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_mutated_models_never_crash_or_produce_invalid_output(seed: str, data: st.DataObject, capsys: pytest.CaptureFixture[str]) -> None:
    mutated = onnx.ModelProto.FromString(_SEED_BYTES[seed])
    what = f"{seed}: " + "; ".join(_mutate(mutated, data) for _ in range(data.draw(st.integers(1, 2))))
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        source, reference, output = folder / "mutated.onnx", folder / "original.onnx", folder / "pruned.onnx"
        source.write_bytes(mutated.SerializeToString())
        reference.write_bytes(_SEED_BYTES[seed])

        code, err = _run(["inspect", str(source), "--json"], capsys)
        _assert_clean(code, err, (0, 2), f"inspect {what}")
        code, err = _run(["validate", str(reference), str(source), "--samples", "1"], capsys)
        _assert_clean(code, err, (0, 1, 2), f"validate {what}")
        code, err = _run(["prune", str(source), "-o", str(output), *PRUNE_OPTIONS], capsys)
        _assert_clean(code, err, (0, 2), f"prune {what}")
        if code == 0:
            onnx.checker.check_model(str(output), full_check=True)
            written = onnx.load(str(output))
            feeds = feeds_for(written)
            run_onnx(written, feeds)
        else:
            assert not output.exists(), f"prune {what}: refused but wrote {output}"
            assert sorted(path.name for path in folder.iterdir()) == ["mutated.onnx", "original.onnx"]
