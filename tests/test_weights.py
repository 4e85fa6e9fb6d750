"""Weight (unstructured) pruning: which tensors, how many zeros, which pattern, and what is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.errors import InputError
from onnxprune.options import WeightOptions
from onnxprune.passes.base import PassReport
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.passes.weights import DENSE_RUNTIME_NOTE, WeightPruningPass
from tests.conftest import make_model as _make_model
from tests.conftest import run_onnx

SELECTED = ("w1", "w2", "wg", "wm")


def _cnn(seed: int = 0, tiny_scale: float = 1.0) -> onnx.ModelProto:
    """Conv(+bias) -> Relu -> Conv -> pool -> Reshape -> Gemm(transB, C) -> MatMul; ``w2`` scaled by ``tiny_scale``."""
    rng = np.random.default_rng(seed)
    initializers = {
        "w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": (rng.standard_normal((8, 8, 1, 1)) * tiny_scale).astype(np.float32),
        "shape": np.array([0, -1], dtype=np.int64),
        "wg": rng.standard_normal((12, 8)).astype(np.float32),
        "cg": rng.standard_normal(12).astype(np.float32),
        "wm": rng.standard_normal((12, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg", "cg"], ["g"], transB=1, name="fc"),
        helper.make_node("MatMul", ["g", "wm"], ["y"], name="head"),
    ]
    return _make_model(
        nodes,
        initializers,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )


def _prune(proto: onnx.ModelProto, options: WeightOptions) -> tuple[onnx.ModelProto, PassReport]:
    model = irx.from_proto(proto)
    report = WeightPruningPass(options)(model).report
    pruned = irx.to_proto(model)
    onnx.checker.check_model(pruned, full_check=True)
    return pruned, report


def _arrays(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}


def _feeds(seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 4, 6, 6)).astype(np.float32)}


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0, 2.5])
def test_threshold_zeroes_small_weights_and_nothing_else(threshold: float) -> None:
    original = _cnn()
    pruned, report = _prune(original, WeightOptions(threshold=threshold))
    before, after = _arrays(original), _arrays(pruned)
    for name in SELECTED:
        small = np.abs(before[name]) <= threshold
        assert np.all((np.abs(after[name]) > threshold) | (after[name] == 0))
        np.testing.assert_array_equal(after[name][~small], before[name][~small])
        if not small.all():  # a fully small tensor keeps one weight (guard, tested separately)
            assert np.all(after[name][small] == 0)
    for name in ("b1", "shape", "cg"):
        assert after[name].tobytes() == before[name].tobytes() and after[name].dtype == before[name].dtype
    assert report.summary["tensors"] == len(SELECTED)
    run_onnx(pruned, _feeds())


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.77, 0.9, 0.999])
def test_tensor_sparsity_hits_round_s_times_size_with_smallest_magnitudes(sparsity: float) -> None:
    original = _cnn()
    pruned, report = _prune(original, WeightOptions(sparsity=sparsity))
    before, after = _arrays(original), _arrays(pruned)
    for name in SELECTED:
        zeros = int(np.count_nonzero(after[name] == 0))
        target = round(sparsity * before[name].size)
        assert abs(zeros - target) <= 1
        assert zeros == min(target, before[name].size - 1)  # at most one short: the empty-tensor guard
        removed = np.abs(before[name][after[name] == 0])
        kept = np.abs(before[name][after[name] != 0])
        if removed.size and kept.size:
            assert removed.max() <= kept.min()
    entries = {entry["tensor"]: entry for entry in report.changes}
    assert set(entries) == (set(SELECTED) if sparsity > 0 else set())
    if sparsity > 0:
        assert entries["w1"]["nonzero_after"] == int(np.count_nonzero(after["w1"]))
        assert entries["w1"]["shape"] == [8, 4, 3, 3]


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.85])
def test_global_sparsity_hits_overall_target_by_global_rank(sparsity: float) -> None:
    original = _cnn()
    pruned, report = _prune(original, WeightOptions(sparsity=sparsity, scope="global"))
    before, after = _arrays(original), _arrays(pruned)
    total = sum(before[name].size for name in SELECTED)
    zeros = sum(int(np.count_nonzero(after[name] == 0)) for name in SELECTED)
    assert zeros == round(sparsity * total)
    assert report.summary["zeros_after"] == zeros
    assert report.summary["sparsity_after"] == pytest.approx(zeros / total)
    assert not report.summary["guarded"]
    removed = np.concatenate([np.abs(before[name][after[name] == 0]) for name in SELECTED])
    kept = np.concatenate([np.abs(before[name][after[name] != 0]) for name in SELECTED])
    assert removed.max() <= kept.min()


@pytest.mark.parametrize(
    "options",
    [WeightOptions(sparsity=0.5), WeightOptions(sparsity=0.8, scope="global"), WeightOptions(pattern="2:4")],
    ids=["tensor", "global", "2:4"],
)
def test_pruning_is_deterministic(options: WeightOptions) -> None:
    # Integer-valued weights make many magnitudes tie, so the tie-break decides.
    rng = np.random.default_rng(3)
    original = _cnn()
    for tensor in original.graph.initializer:
        if tensor.name in SELECTED:
            shape = tuple(tensor.dims)
            tensor.CopyFrom(numpy_helper.from_array(rng.integers(-3, 4, shape).astype(np.float32), tensor.name))
    first, _ = _prune(original, options)
    second, _ = _prune(original, options)
    assert first.SerializeToString() == second.SerializeToString()


def test_global_guard_keeps_the_largest_weight_of_a_tiny_layer() -> None:
    original = _cnn(tiny_scale=1e-4)
    pruned, report = _prune(original, WeightOptions(sparsity=0.9, scope="global"))
    before, after = _arrays(original), _arrays(pruned)
    assert np.count_nonzero(after["w2"]) == 1
    largest = np.argmax(np.abs(before["w2"]))
    assert after["w2"].ravel()[largest] == before["w2"].ravel()[largest]
    assert report.summary["guarded"] == ["w2"]
    assert [entry["guarded"] for entry in report.changes if entry["tensor"] == "w2"] == [True]
    # The global target is still met exactly: another tensor gives up one more weight instead.
    total = sum(before[name].size for name in SELECTED)
    assert sum(int(np.count_nonzero(after[name] == 0)) for name in SELECTED) == round(0.9 * total)
    run_onnx(pruned, _feeds())


def test_global_allow_empty_lets_a_tiny_layer_be_wiped() -> None:
    original = _cnn(tiny_scale=1e-4)
    pruned, report = _prune(original, WeightOptions(sparsity=0.9, scope="global", allow_empty=True))
    assert not np.any(_arrays(pruned)["w2"])
    assert report.summary["guarded"] == []


def test_threshold_guard_keeps_one_weight_unless_allowed_empty() -> None:
    guarded, _ = _prune(_cnn(), WeightOptions(threshold=100.0))
    assert all(np.count_nonzero(_arrays(guarded)[name]) == 1 for name in SELECTED)
    emptied, _ = _prune(_cnn(), WeightOptions(threshold=100.0, allow_empty=True))
    assert not any(np.any(_arrays(emptied)[name]) for name in SELECTED)


def _groups(array: np.ndarray, axis: int, group: int) -> np.ndarray:
    return np.moveaxis(array, axis, -1).reshape(-1, group)


def _assert_pattern(before: np.ndarray, after: np.ndarray, axis: int, keep: int, group: int) -> None:
    old, new = _groups(before, axis, group), _groups(after, axis, group)
    assert np.all(np.count_nonzero(new, axis=1) <= keep)
    for old_row, new_row in zip(old, new):
        kept = np.abs(old_row[new_row != 0])
        dropped = np.abs(old_row[new_row == 0])
        if kept.size and dropped.size:
            assert dropped.max() <= kept.min()
        np.testing.assert_array_equal(new_row[new_row != 0], old_row[new_row != 0])


@settings(max_examples=25, deadline=None)
@given(
    keep=st.integers(1, 3),
    extra=st.integers(1, 3),
    out_channels=st.integers(1, 4),
    groups_per_row=st.integers(1, 3),
    kernel=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_n_m_pattern_holds_in_every_group_of_a_conv(
    keep: int, extra: int, out_channels: int, groups_per_row: int, kernel: int, seed: int
) -> None:
    group = keep + extra
    in_channels = group * groups_per_row
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, in_channels, kernel, kernel)).astype(np.float32)
    original = _make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        {"w": weight},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 6 - kernel, 6 - kernel])],
    )
    pruned, _ = _prune(original, WeightOptions(pattern=f"{keep}:{group}"))
    after = _arrays(pruned)["w"]
    _assert_pattern(weight, after, axis=1, keep=keep, group=group)
    assert np.count_nonzero(after) == keep * weight.size // group  # random floats: no zeros before


@pytest.mark.parametrize("trans_b", [0, 1])
def test_n_m_pattern_follows_gemm_k_axis_and_matmul_rows(trans_b: int) -> None:
    rng = np.random.default_rng(1)
    gemm_weight = rng.standard_normal((8, 12) if trans_b == 0 else (12, 8)).astype(np.float32)
    matmul_weight = rng.standard_normal((12, 6)).astype(np.float32)
    original = _make_model(
        [
            helper.make_node("Gemm", ["x", "wg"], ["h"], transB=trans_b, name="fc"),
            helper.make_node("MatMul", ["h", "wm"], ["y"], name="head"),
        ],
        {"wg": gemm_weight, "wm": matmul_weight},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
    )
    pruned, _ = _prune(original, WeightOptions(pattern="2:4"))
    after = _arrays(pruned)
    _assert_pattern(gemm_weight, after["wg"], axis=0 if trans_b == 0 else 1, keep=2, group=4)
    _assert_pattern(matmul_weight, after["wm"], axis=0, keep=2, group=4)
    run_onnx(pruned, {"x": rng.standard_normal((3, 8)).astype(np.float32)})


def test_n_m_pattern_skips_an_axis_that_is_not_a_multiple_of_m() -> None:
    pruned, report = _prune(_cnn(), WeightOptions(pattern="2:8"))
    # w1 has 4 input channels, w2 8, wg K=8, wm K=12.
    skipped = {skip.target: skip.reason for skip in report.skipped}
    assert set(skipped) == {"w1", "wm"}
    assert "not a multiple of M=8" in skipped["w1"]
    assert _arrays(pruned)["w1"].tobytes() == _arrays(_cnn())["w1"].tobytes()
    _assert_pattern(_arrays(_cnn())["w2"], _arrays(pruned)["w2"], axis=1, keep=2, group=8)


def _shared_matmuls(trans_b_second: int | None = None) -> onnx.ModelProto:
    """Two layers reading one square weight; the second is a Gemm when ``trans_b_second`` is given."""
    weight = np.random.default_rng(2).standard_normal((8, 8)).astype(np.float32)
    second = (
        helper.make_node("MatMul", ["h", "w"], ["y"], name="second")
        if trans_b_second is None
        else helper.make_node("Gemm", ["h", "w"], ["y"], transB=trans_b_second, name="second")
    )
    return _make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="first"), second],
        {"w": weight},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
    )


def test_shared_weight_is_pruned_once_for_all_its_users() -> None:
    pruned, report = _prune(_shared_matmuls(), WeightOptions(sparsity=0.5))
    assert [entry["tensor"] for entry in report.changes] == ["w"]
    assert report.changes[0]["consumers"] == ["MatMul 'first'", "MatMul 'second'"]
    assert len(pruned.graph.initializer) == 1
    assert np.count_nonzero(_arrays(pruned)["w"] == 0) == 32


def test_shared_weight_with_disagreeing_reduction_axes_is_skipped_for_n_m() -> None:
    _, report = _prune(_shared_matmuls(trans_b_second=1), WeightOptions(pattern="2:4"))
    assert [skip.target for skip in report.skipped] == ["w"]
    assert "different axes" in report.skipped[0].reason
    assert not report.changes
    agreeing, _ = _prune(_shared_matmuls(trans_b_second=0), WeightOptions(pattern="2:4"))
    _assert_pattern(_arrays(_shared_matmuls())["w"], _arrays(agreeing)["w"], axis=0, keep=2, group=4)


@pytest.mark.parametrize(
    ("exclude", "reason"),
    [(("w1",), "(tensor name)"), (("con*1",), "(node 'conv1')"), (("fc", "w?"), "")],
)
def test_exclude_globs_match_tensor_and_node_names(exclude: tuple[str, ...], reason: str) -> None:
    pruned, report = _prune(_cnn(), WeightOptions(sparsity=0.5, exclude=exclude))
    skipped = {skip.target: skip.reason for skip in report.skipped}
    assert "w1" in skipped and reason in skipped["w1"] and "excluded by pattern" in skipped["w1"]
    assert _arrays(pruned)["w1"].tobytes() == _arrays(_cnn())["w1"].tobytes()
    if exclude == ("fc", "w?"):
        assert set(skipped) == set(SELECTED)


def test_weights_that_must_not_change_are_skipped_with_reasons() -> None:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("MatMul", ["x", "w_input"], ["a"], name="from_input"),
        helper.make_node("MatMul", ["a", "w_shared_use"], ["b"], name="shared_use"),
        helper.make_node("Add", ["b", "w_shared_use"], ["c"], name="add_weight"),
        helper.make_node("Cast", ["c"], ["c_int"], to=TensorProto.INT32, name="to_int"),
        helper.make_node("MatMul", ["c_int", "w_int"], ["d_int"], name="int_matmul"),
        helper.make_node("Cast", ["d_int"], ["d"], to=TensorProto.FLOAT, name="to_float"),
        helper.make_node("Identity", ["w_computed_src"], ["w_computed"], name="compute_weight"),
        helper.make_node("Gemm", ["d", "w_computed"], ["y"], name="computed"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4]),
            helper.make_tensor_value_info("w_input", TensorProto.FLOAT, [4, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w_input"),
            numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w_shared_use"),
            numpy_helper.from_array(rng.integers(-3, 3, (4, 4)).astype(np.int32), "w_int"),
            numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w_computed_src"),
        ],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    pruned, report = _prune(original, WeightOptions(sparsity=0.9))
    skipped = {skip.target: skip.reason for skip in report.skipped}
    assert "graph input" in skipped["w_input"]
    assert "also read by Add 'add_weight'" in skipped["w_shared_use"]
    assert "INT32" in skipped["w_int"]
    assert "computed at run time" in skipped["Gemm 'computed'"]
    assert not report.changes
    before, after = _arrays(original), _arrays(pruned)
    assert set(after) == set(before)
    assert all(after[name].tobytes() == before[name].tobytes() for name in before)


def test_weight_inside_a_subgraph_is_skipped() -> None:
    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w_inner")
    branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_inner"], ["inner"], name="inner_matmul")],
        "branch",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [2, 4])],
        [weight],
    )
    original = _make_model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="choose")],
        {},
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    _, report = _prune(original, WeightOptions(sparsity=0.5))
    assert report.skipped and all("subgraph" in skip.reason for skip in report.skipped)
    assert not report.changes


def test_constant_node_weight_becomes_an_initializer_of_the_same_name() -> None:
    weight = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float16)
    original = _make_model(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weight, "w"), name="const"),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        {},
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 6])],
    )
    pruned, _ = _prune(original, WeightOptions(sparsity=0.5))
    assert [node.op_type for node in pruned.graph.node] == ["MatMul"]
    after = _arrays(pruned)["w"]
    assert after.dtype == np.float16 and np.count_nonzero(after == 0) == 12
    x = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float16)
    (result,) = run_onnx(pruned, {"x": x})
    # float16 accumulation order differs between numpy and onnxruntime.
    np.testing.assert_allclose(result, x.astype(np.float32) @ after.astype(np.float32), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.5}, "weight sparsity must be in [0, 1], got 1.5"),
        ({"sparsity": -0.1}, "weight sparsity must be in [0, 1]"),
        ({"sparsity": "half"}, "weight sparsity must be a number"),
        ({"threshold": -1.0}, "weight threshold must be a finite number >= 0"),
        ({"threshold": float("nan")}, "weight threshold must be a finite number >= 0"),
        ({"scope": "layer", "sparsity": 0.5}, "weight scope must be 'tensor' or 'global'"),
        ({"pattern": "4:2"}, "0 < N < M"),
        ({"pattern": "0:4"}, "0 < N < M"),
        ({"pattern": "2-4"}, "weight pattern must be 'N:M'"),
        ({"pattern": "2:4", "exclude": "conv*"}, "weight exclude must be a list of glob patterns"),
    ],
)
def test_invalid_options_raise_input_error_naming_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError) as error:
        WeightOptions(**kwargs)
    assert message in str(error.value)


def test_options_accept_a_list_of_excludes_numpy_numbers_and_parse_the_pattern() -> None:
    options = WeightOptions(pattern=" 2 : 4 ", exclude=["a*"], sparsity=np.float32(0.5))  # type: ignore[arg-type]
    assert options.exclude == ("a*",) and options.n_m == (2, 4)
    assert type(options.sparsity) is float and options.sparsity == 0.5
    assert hash(options) == hash(WeightOptions(pattern=" 2 : 4 ", exclude=("a*",), sparsity=0.5))


def test_report_states_that_dense_runtimes_do_not_speed_up() -> None:
    _, report = _prune(_cnn(), WeightOptions(sparsity=0.5))
    summary = report.summary
    assert summary["note"] == DENSE_RUNTIME_NOTE and "does not run faster" in summary["note"]
    assert summary["params"] == 288 + 64 + 96 + 48
    assert summary["zeros_before"] == 0 and summary["sparsity_after"] == pytest.approx(0.5, abs=1 / 496)
    entry = report.changes[0]
    assert entry["dense_bytes"] == 288 * 4 and entry["coo_bytes"] == entry["nonzero_after"] * 12


def test_nothing_to_do_reports_unmodified_with_no_changes() -> None:
    model = irx.from_proto(_cnn())
    result = WeightPruningPass(WeightOptions(threshold=0.0))(model)
    assert not result.modified and result.exact
    assert result.report.changes == [] and result.report.summary["tensors"] == len(SELECTED)


def test_main_graph_weight_also_read_inside_a_subgraph_is_skipped() -> None:
    branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["inner"], name="inner_matmul")],
        "branch",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [2, 4])],
    )
    original = _make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["a"], name="outer_matmul"),
            helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=branch, name="choose"),
            helper.make_node("Add", ["a", "b"], ["y"], name="merge"),
        ],
        {"w": np.random.default_rng(7).standard_normal((4, 4)).astype(np.float32)},
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    pruned, report = _prune(original, WeightOptions(sparsity=0.5))
    reasons = [skip.reason for skip in report.skipped if skip.target == "w"]
    assert any("read inside a subgraph" in reason for reason in reasons)
    assert _arrays(pruned)["w"].tobytes() == _arrays(original)["w"].tobytes()


def test_plain_graph_input_weight_is_reported() -> None:
    original = _make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        {},
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2, 1, 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
    )
    _, report = _prune(original, WeightOptions(sparsity=0.5))
    assert [(skip.target, skip.reason) for skip in report.skipped] == [
        ("Conv 'conv'", "weight 'w' is a graph input, fed at run time")
    ]


@pytest.mark.parametrize(
    "options",
    [WeightOptions(sparsity=0.5), WeightOptions(pattern="2:4"), WeightOptions(sparsity=0.9, scope="global")],
    ids=["tensor50", "2:4", "global90"],
)
def test_sample_models_stay_valid_and_runnable(sample_model: Path, options: WeightOptions) -> None:
    model = irx.load(sample_model)
    feeds = runtime.random_inputs(runtime.input_specs(model), seed=0)
    expected_shapes = [output.shape for output in run_onnx(irx.to_proto(model), feeds)]
    result = WeightPruningPass(options)(model)
    assert result.modified and not result.exact
    CleanupPass()(model)
    proto = irx.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    outputs = run_onnx(proto, feeds)
    assert [output.shape for output in outputs] == expected_shapes
    assert all(np.all(np.isfinite(output)) for output in outputs)
    summary = result.report.summary
    assert summary["tensors"] > 0 and summary["sparsity_after"] > summary["sparsity_before"]
    if options.sparsity is not None:
        assert summary["sparsity_after"] >= options.sparsity - 1 / summary["params"] * summary["tensors"]
