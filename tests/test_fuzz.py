"""Fuzzing: mutated models never crash onnxprune and never lead it to write an invalid model.

Hypothesis takes a valid seed model and damages it the way files get damaged
or hand-edited: an input dropped, a dims list corrupted, a value renamed to a
dangling one, an op type swapped.  Every command must then either succeed
(and any model it writes passes the full checker, runs, and declares the
same graph inputs and outputs) or exit 2 with a one-line reason; validating
the damaged model against its original may also exit 1, the verdict "they
differ".  The command line's last-resort "cannot process this model" line
counts as a crash.

Structural variants keep a model valid but give it what exporters and
hand edits give real models: a bias fed at run time (a graph input, or an
initializer also listed as one), node names that a pass's derived names
collide with (or no node names at all) next to an all-zero layer, symbolic
or unknown output dims.  They mix into the damage above, and on their own
the exact steps (dead channels, cleanup, simplification) must keep every
output, with run-time inputs fed values of their own.

CI runs a bounded number of examples; set ``ONNXPRUNE_FUZZ_EXAMPLES`` for a
longer hunt.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from tests import hostile_models as hm
from tests.conftest import feeds_for, run_onnx
from tests.test_robustness import CRASH_MARKER

EXAMPLES = int(os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES", "25"))
PRUNE_OPTIONS = ["--weight-sparsity", "0.5", "--bypass-auto", "1", "--no-bench", "--samples", "1", "--channel-ratio", "0.5", "--min-cosine", "-1"]

SEEDS: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv_chain": hm.conv_chain,
    "sum_residual": hm.sum_residual,
    "multiple_inputs_outputs": hm.multiple_inputs_outputs,
    "nhwc_transposed_convs": hm.nhwc_transposed_convs,
    "if_model": hm.if_model,
    "qlinearconv_model": hm.qlinearconv_model,
    "dead_channels": hm.dead_channels,
}
_SEED_BYTES = {name: build().SerializeToString() for name, build in SEEDS.items()}

# Swapping in ops with other arities and attribute sets is what makes the damage interesting.
UNARY_OPS = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Identity", "Softsign"]
OP_TYPES = ["Relu", "Sigmoid", "Identity", "Conv", "Add", "Sum", "Concat", "Transpose", "MaxPool", "Gemm", "Flatten", "Softmax", "NoSuchOp"]

EXACT_OPTIONS = ["--channel-ratio", "0", "--round-to", "1", "--no-bench", "--samples", "1"]
# Structural variants are drawn per seed, so that every seed (the one with foldable dead channels too) meets them.
STRUCTURAL_EXAMPLES = max(4, EXAMPLES // len(SEEDS))
RTOL, ATOL = 1e-4, 1e-5
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def _bias_fed_at_run_time(graph: onnx.GraphProto, data: st.DataObject) -> str:
    """Each Conv/Gemm bias stays, becomes a graph input, or stays an initializer also listed as one (old IR style)."""
    initializers = _initializers(graph)
    listed = {value.name for value in graph.input}
    biases = dict.fromkeys(
        node.input[2] for node in graph.node
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in initializers and node.input[2] not in listed
    )  # fmt: skip
    changed = []
    for name in biases:
        # Shrinking moves towards the first choice: a bias fed at run time is the default, keeping it the exception.
        how = data.draw(st.sampled_from(["graph input", "initializer listed as graph input", "kept"]))
        if how == "kept":
            continue
        bias = initializers[name]
        graph.input.append(helper.make_tensor_value_info(name, bias.data_type, list(bias.dims)))
        if how == "graph input":
            graph.initializer.remove(bias)
        changed.append(f"bias {name} -> {how}")
    return "; ".join(changed) or "no bias fed at run time"


def _names_taken(graph: onnx.GraphProto, data: st.DataObject) -> str:
    """Weights made all zero (cleanup replaces their layers), and the names cleanup derives from them taken, or no node named."""
    initializers = _initializers(graph)
    weighted = [node for node in graph.node if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in initializers]
    if not weighted:
        return "no-op (no constant weight)"
    zeroed = data.draw(st.lists(st.sampled_from(weighted), min_size=1, max_size=2, unique_by=id))
    for node in zeroed:
        weight = initializers[node.input[1]]
        weight.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(weight)), weight.name))
    what = f"weights of {', '.join(node.name or node.op_type for node in zeroed)} zeroed"
    if data.draw(st.booleans()):
        for node in graph.node:
            node.name = ""
        return f"{what}; every node unnamed"
    node = zeroed[0]
    others = [other for other in graph.node if other is not node]
    if not others:
        return what
    other = data.draw(st.sampled_from(others))
    other.name = f"{node.name}_{data.draw(st.sampled_from(['zero_weight', 'input_shape', 'output_shape']))}"
    return f"{what}; {other.op_type} renamed {other.name}"


def _symbolic_output_dim(graph: onnx.GraphProto, data: st.DataObject) -> str:
    """An output dim declared symbolic (``N``, ``classes``) or unknown."""
    outputs = [value for value in graph.output if value.type.tensor_type.shape.dim]
    if not outputs:
        return "no-op (no output dims)"
    value = data.draw(st.sampled_from(outputs))
    dims = value.type.tensor_type.shape.dim
    axis = data.draw(st.integers(0, len(dims) - 1))
    name = data.draw(st.sampled_from(["N", "classes", ""]))
    dims[axis].Clear()
    if name:
        dims[axis].dim_param = name
    return f"output {value.name} dim {axis} -> {name or 'unknown'}"


STRUCTURAL: dict[str, Callable[[onnx.GraphProto, st.DataObject], str]] = {
    "bias_fed_at_run_time": _bias_fed_at_run_time,
    "names_taken": _names_taken,
    "symbolic_output_dim": _symbolic_output_dim,
}
"""Valid variants real models come in, each of which once led onnxprune to change outputs or write an invalid model."""


def _mutate(model: onnx.ModelProto, data: st.DataObject) -> str:
    """Apply one random mutation in place; return its description."""
    graph = model.graph
    kind = data.draw(
        st.sampled_from(
            ["swap_unary", "symbolic_dim", "swap_op", "drop_output", "corrupt_dims", "dangling_name", "drop_node", "drop_input", *STRUCTURAL]
        )
    )
    if kind in STRUCTURAL:
        return STRUCTURAL[kind](graph, data)
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
            _assert_same_interface(mutated, written, f"prune {what}")
            feeds = feeds_for(written)
            run_onnx(written, feeds)
        else:
            assert not output.exists(), f"prune {what}: refused but wrote {output}"
            assert sorted(path.name for path in folder.iterdir()) == ["mutated.onnx", "original.onnx"]


@settings(
    max_examples=STRUCTURAL_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_structural_variants_keep_outputs_and_interface(seed: str, data: st.DataObject, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx.ModelProto.FromString(_SEED_BYTES[seed])
    kinds = data.draw(st.lists(st.sampled_from(sorted(STRUCTURAL)), min_size=1, max_size=len(STRUCTURAL), unique=True))
    what = f"{seed}: " + "; ".join(STRUCTURAL[kind](model.graph, data) for kind in kinds)
    onnx.checker.check_model(model, full_check=True)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        source, exact, lossy = folder / "variant.onnx", folder / "exact.onnx", folder / "lossy.onnx"
        source.write_bytes(model.SerializeToString())

        code, err = _run(["prune", str(source), "-o", str(exact), *EXACT_OPTIONS], capsys)
        _assert_clean(code, err, (0,), f"exact prune {what}")
        written = _written(exact, model, f"exact prune {what}")
        feeds = _feeds_overriding_initializers(model)
        for expected, actual in zip(run_onnx(model, feeds), run_onnx(written, feeds), strict=True):
            # Removing zero terms reorders float sums: the rounding scales with the output's range.
            scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale, err_msg=f"exact prune {what}")

        code, err = _run(["prune", str(source), "-o", str(lossy), *PRUNE_OPTIONS], capsys)
        _assert_clean(code, err, (0,), f"prune {what}")
        run_onnx(_written(lossy, model, f"prune {what}"), feeds)


def _written(path: Path, source: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """The model a run wrote, after the full checker and the interface check."""
    onnx.checker.check_model(str(path), full_check=True)
    written = onnx.load(str(path))
    _assert_same_interface(source, written, what)
    return written


def _assert_same_interface(source: onnx.ModelProto, written: onnx.ModelProto, what: str) -> None:
    """Graph inputs and outputs keep their names, types and declared dims (symbolic and unknown ones too)."""

    def declared(model: onnx.ModelProto) -> list[tuple[str, onnx.TypeProto]]:
        return [(value.name, value.type) for value in (*model.graph.input, *model.graph.output)]

    assert declared(written) == declared(source), what


def _feeds_overriding_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Seeded inputs; an initializer also listed as a graph input gets a value of its own, which the result must use."""
    feeds = feeds_for(model)
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for value in model.graph.input:
        array = initializers.get(value.name)
        if array is not None and np.issubdtype(array.dtype, np.floating):
            feeds[value.name] = (array * 1.5 + 0.25).astype(array.dtype)
    return feeds
