"""Layer pruning: bypassed blocks and layers, declines with reasons, and automatic selection by drift per MACs saved."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.analysis.layer_candidates import bypass_shape_facts, find_bypass_candidates
from onnxprune.errors import InputError
from onnxprune.options import LayerOptions
from onnxprune.passes import layers
from onnxprune.passes.base import PassReport
from onnxprune.passes.layers import MIN_MACS_SHARE, RANDOM_DRIFT_WARNING, RANDOM_INPUTS_WARNING, LayerBypassPass
from tests import hostile_models as hm
from tests.conftest import MODELS_DIR, SAMPLE_MODELS, run_onnx

RTOL, ATOL = 1e-4, 1e-5
CHANNELS, SIDE = 4, 5


# --- tiny models built with onnx.helper -------------------------------------------------------------


def _weight(name: str, seed: int, shape: tuple[int, ...]) -> onnx.TensorProto:
    array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3
    return helper.make_tensor(name, TensorProto.FLOAT, shape, array.ravel())


def _conv(name: str, data: str, out: str, seed: int, initializers: list) -> onnx.NodeProto:
    initializers.append(_weight(f"{name}_w", seed, (CHANNELS, CHANNELS, 3, 3)))
    initializers.append(_weight(f"{name}_b", seed + 1000, (CHANNELS,)))
    return helper.make_node("Conv", [data, f"{name}_w", f"{name}_b"], [out], name=name, pads=[1, 1, 1, 1])


def chain_model(
    blocks: list[tuple[str, bool, bool]], drop: frozenset[int] = frozenset(), head: bool = True
) -> onnx.ModelProto:
    """Stem conv, residual blocks ``(merge op, skip operand first, activation after merge)``, optional head conv.

    Blocks listed in ``drop`` are built as their bypassed form (``h`` or
    ``Relu(h)``) with the same weights everywhere else, which is what the
    pass must produce.
    """
    nodes, initializers = [], []
    nodes.append(_conv("stem", "x", "h0", 1, initializers))
    current = "h0"
    for index, (op, skip_first, activation) in enumerate(blocks):
        merged = f"m{index}"
        if index in drop:
            merged = current
        else:
            nodes.append(_conv(f"b{index}_conv1", current, f"b{index}_c1", 10 + 2 * index, initializers))
            nodes.append(helper.make_node("Relu", [f"b{index}_c1"], [f"b{index}_r"], name=f"b{index}_relu"))
            nodes.append(_conv(f"b{index}_conv2", f"b{index}_r", f"b{index}_f", 11 + 2 * index, initializers))
            operands = [current, f"b{index}_f"] if skip_first else [f"b{index}_f", current]
            nodes.append(helper.make_node(op, operands, [merged], name=f"b{index}_merge"))
        if activation:
            nodes.append(helper.make_node("Relu", [merged], [f"a{index}"], name=f"b{index}_act"))
            merged = f"a{index}"
        current = merged
    if head:
        nodes.append(_conv("head", current, "y", 99, initializers))
    else:
        nodes.append(helper.make_node("Identity", [current], ["y"], name="out_identity"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, SIDE, SIDE])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((1, CHANNELS, SIDE, SIDE)).astype(np.float32)}


def _run_pass(model: onnx.ModelProto | Path, **options) -> tuple[onnx.ModelProto, PassReport, bool]:
    ir_model = irx.load(model) if isinstance(model, Path) else irx.from_proto(model)
    result = LayerBypassPass(LayerOptions(**options))(ir_model)
    assert result.exact == (not result.modified), "a bypass changes what the model computes"
    proto = irx.to_proto(result.model)
    onnx.checker.check_model(proto, full_check=True)
    return proto, result.report, result.modified


def _interface(model: onnx.ModelProto) -> list[tuple]:
    """Names, element types and shapes of the graph inputs and outputs."""
    def describe(values):
        return [
            (v.name, v.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
            for v in values
        ]

    return describe(model.graph.input) + describe(model.graph.output)


def _assert_same_outputs(actual: onnx.ModelProto, expected: onnx.ModelProto, seeds=(0, 1, 2)) -> None:
    for seed in seeds:
        for got, want in zip(run_onnx(actual, _feeds(seed)), run_onnx(expected, _feeds(seed)), strict=True):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


# --- residual blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["Add", "Sum"])
@pytest.mark.parametrize("skip_first", [True, False])
@pytest.mark.parametrize("activation", [True, False])
def test_residual_block_bypass_equals_model_built_without_it(op, skip_first, activation):
    blocks = [("Add", True, True), (op, skip_first, activation), ("Add", False, True)]
    pruned, report, modified = _run_pass(chain_model(blocks), bypass=("b1_merge",))
    expected = chain_model(blocks, drop=frozenset({1}))
    assert modified
    _assert_same_outputs(pruned, expected)
    assert sorted(_ops(pruned)) == sorted(_ops(expected))
    assert {i.name for i in pruned.graph.initializer} == {i.name for i in expected.graph.initializer}
    assert _interface(pruned) == _interface(expected)
    (change,) = report.changes
    assert change["kind"] == "residual"
    assert set(change["removed_nodes"]) == {"b1_conv1", "b1_relu", "b1_conv2", "b1_merge"}
    assert set(change["removed_initializers"]) == {"b1_conv1_w", "b1_conv1_b", "b1_conv2_w", "b1_conv2_b"}
    # Two 3x3 convs of 4->4 channels on a 5x5 map: 2 * 25 * 4 * 4 * 9 MACs, 2 * (144 + 4) weights.
    assert change["macs_saved"] == 2 * SIDE * SIDE * CHANNELS * CHANNELS * 9
    assert change["params_saved"] == 2 * (CHANNELS * CHANNELS * 9 + CHANNELS)
    assert change["drift"] > 0


@pytest.mark.parametrize("activation", [True, False])
def test_bypassed_block_that_feeds_the_graph_output_keeps_the_output_name(activation):
    """Without a head the last merge (or its activation) is what the graph returns."""
    blocks = [("Add", True, True), ("Add", True, activation)]
    model = chain_model(blocks, head=False)
    # Take the Identity away so the merge or activation itself produces the graph output 'y'.
    last = model.graph.node[-1]
    model.graph.node.remove(last)
    model.graph.node[-1].output[0] = "y"
    onnx.checker.check_model(model, full_check=True)
    expected = chain_model(blocks, drop=frozenset({1}), head=False)

    pruned, _, modified = _run_pass(model, bypass=("b1_merge",))

    assert modified
    assert _interface(pruned) == _interface(model)
    assert [o.name for o in pruned.graph.output] == ["y"]
    assert any("y" in node.output for node in pruned.graph.node)
    _assert_same_outputs(pruned, expected)


def test_block_merge_named_by_its_output_value_or_a_glob():
    blocks = [("Add", True, True)] * 3
    by_value, _, _ = _run_pass(chain_model(blocks), bypass=("m2",))
    by_glob, report, _ = _run_pass(chain_model(blocks), bypass=("b[02]_merge",))
    _assert_same_outputs(by_value, chain_model(blocks, drop=frozenset({2})))
    _assert_same_outputs(by_glob, chain_model(blocks, drop=frozenset({0, 2})))
    assert [change["name"] for change in report.changes] == ["b0_merge", "b2_merge"]


@settings(max_examples=25, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(st.sampled_from(["Add", "Sum"]), st.booleans(), st.booleans()), min_size=1, max_size=4
    ),
    data=st.data(),
)
def test_any_subset_of_blocks_bypassed_equals_the_chain_built_without_them(blocks, data):
    drop = data.draw(st.frozensets(st.integers(0, len(blocks) - 1), min_size=1))
    pruned, report, modified = _run_pass(
        chain_model(blocks), bypass=tuple(f"b{index}_merge" for index in sorted(drop))
    )
    assert modified and len(report.changes) == len(drop)
    _assert_same_outputs(pruned, chain_model(blocks, drop=drop), seeds=(0,))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated but still the one asked for
def test_torch_resnet_block_bypass_equals_the_net_without_that_block(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + x)

    class Net(nn.Module):
        def __init__(self, blocks: list[nn.Module] | None = None) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.blocks = nn.Sequential(*(blocks or [Block(8) for _ in range(3)]))
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.blocks(torch.relu(self.stem(x)))).mean((2, 3)))

    torch.manual_seed(0)
    full = Net()
    for module in full.modules():  # non-trivial BN statistics, so folding them is exercised
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    full.eval()
    reduced = copy.deepcopy(full)
    reduced.blocks = nn.Sequential(reduced.blocks[0], reduced.blocks[2])
    sample = torch.randn(1, 3, 12, 12)
    for name, net in (("full", full), ("reduced", reduced)):
        torch.onnx.export(net, (sample,), tmp_path / f"{name}.onnx", dynamo=False, input_names=["x"], output_names=["logits"])

    pruned, report, _ = _run_pass(tmp_path / "full.onnx", bypass=("/blocks/blocks.1/Add",))

    expected = onnx.load(tmp_path / "reduced.onnx")
    assert _interface(pruned) == _interface(expected)
    assert _ops(pruned).count("Conv") == _ops(expected).count("Conv")
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 12, 12)).astype(np.float32)}
        np.testing.assert_allclose(run_onnx(pruned, feeds)[0], run_onnx(expected, feeds)[0], rtol=RTOL, atol=ATOL)
    assert report.changes[0]["removed_nodes"][-1] == "/blocks/blocks.1/Add"


# --- single layers ---------------------------------------------------------------------------------


def _layer_model(nodes, initializers=(), input_shape=(1, CHANNELS, SIDE, SIDE), output_shape=None, input_name="x"):
    graph = helper.make_graph(
        nodes,
        "layers",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape or input_shape))],
        list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_layer_that_feeds_the_graph_output_is_bypassed_and_the_output_keeps_its_name_and_shape():
    initializers: list = []
    model = _layer_model(
        [_conv("conv", "x", "c", 3, initializers), helper.make_node("Relu", ["c"], ["y"], name="relu")], initializers
    )
    expected = _layer_model([_conv("conv", "x", "y", 3, [])], initializers)

    pruned, report, modified = _run_pass(model, bypass=("relu",))

    assert modified and _ops(pruned) == ["Conv"]
    assert _interface(pruned) == _interface(model)
    assert pruned.graph.node[0].output[0] == "y"
    _assert_same_outputs(pruned, expected)
    assert report.changes[0]["replaced_by"] == "c"


def test_same_size_conv_and_batchnorm_bypassed_and_their_weights_removed():
    initializers: list = []
    nodes = [
        _conv("conv1", "x", "c1", 1, initializers),
        _conv("conv2", "c1", "c2", 2, initializers),
        helper.make_node("BatchNormalization", ["c2", "s", "b", "mean", "var"], ["n"], name="bn"),
        _conv("conv3", "n", "y", 3, initializers),
    ]
    initializers += [_weight(name, seed, (CHANNELS,)) for seed, name in enumerate(["s", "b", "mean"])]
    initializers.append(helper.make_tensor("var", TensorProto.FLOAT, [CHANNELS], np.ones(CHANNELS, np.float32)))
    model = _layer_model(nodes, initializers)
    expected_initializers: list = []
    expected = _layer_model(
        [_conv("conv1", "x", "c1", 1, expected_initializers), _conv("conv3", "c1", "y", 3, expected_initializers)],
        expected_initializers,
    )

    pruned, report, _ = _run_pass(model, bypass=("conv2", "bn"))

    _assert_same_outputs(pruned, expected)
    assert {i.name for i in pruned.graph.initializer} == {i.name for i in expected.graph.initializer}
    assert [change["name"] for change in report.changes] == ["conv2", "bn"]


def test_shared_initializer_survives_when_one_of_its_users_is_bypassed():
    initializers: list = []
    first = _conv("conv1", "x", "c1", 1, initializers)
    second = helper.make_node("Conv", ["c1", "conv1_w", "conv1_b"], ["y"], name="conv2", pads=[1, 1, 1, 1])
    model = _layer_model([first, second], initializers)

    pruned, report, _ = _run_pass(model, bypass=("conv1",))

    assert [node.name for node in pruned.graph.node] == ["conv2"]
    assert {i.name for i in pruned.graph.initializer} == {"conv1_w", "conv1_b"}
    assert report.changes[0]["removed_initializers"] == []
    assert report.changes[0]["params_saved"] == 0


def test_clip_bypass_removes_its_constant_nodes():
    nodes = [
        helper.make_node("Constant", [], ["lo"], name="lo", value=helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["hi"], name="hi", value=helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])),
        helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("Sigmoid", ["c"], ["y"], name="sigmoid"),
    ]
    pruned, report, _ = _run_pass(_layer_model(nodes), bypass=("clip",))
    assert _ops(pruned) == ["Sigmoid"]
    assert set(report.changes[0]["removed_nodes"]) == {"clip", "lo", "hi"}


def test_square_gemm_is_bypassed_and_transposed_gemm_declined():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [6, 6], np.eye(6, dtype=np.float32).ravel() * 2)

    def gemm_model(**attributes):
        nodes = [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w"], ["g"], name="fc", **attributes),
            helper.make_node("Sigmoid", ["g"], ["y"], name="sigmoid"),
        ]
        return _layer_model(nodes, [weight], input_shape=(6, 6))

    pruned, _, modified = _run_pass(gemm_model(), bypass=("fc",))
    assert modified and _ops(pruned) == ["Relu", "Sigmoid"] and not pruned.graph.initializer
    assert "transA" in _declined_untouched(gemm_model(transA=1), "fc")


def test_drift_left_unmeasured_with_a_warning_when_inputs_cannot_be_generated():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Sigmoid", ["r"], ["y"], name="sigmoid")]
    model = _layer_model(nodes, input_shape=("N", CHANNELS, "H", "W"))
    _, unmeasured, modified = _run_pass(model, bypass=("relu",))
    assert modified and unmeasured.changes[0]["drift"] is None
    (warning,) = unmeasured.summary["warnings"]
    assert warning.startswith("drift not measured") and "--input-shape" in warning
    _, measured, _ = _run_pass(model, bypass=("relu",), input_shapes={"x": (1, CHANNELS, 3, 3)})
    assert measured.changes[0]["drift"] > 0
    assert measured.summary["warnings"] == [RANDOM_DRIFT_WARNING]


def test_calibration_npz_with_fixed_batch_is_split_into_batches(tmp_path):
    rows = np.random.default_rng(0).standard_normal((5, CHANNELS, SIDE, SIDE)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=rows)
    model = chain_model([("Add", True, True)] * 2)
    _, report, _ = _run_pass(model, auto=1, calibration=str(tmp_path / "calib.npz"), samples=3)
    assert report.summary["calibration_batches"] == 3
    chosen = report.changes[0]
    pruned, _, _ = _run_pass(model, bypass=(chosen["name"],))
    assert chosen["drift"] == pytest.approx(_relative_drift(pruned, model, [{"x": rows[i : i + 1]} for i in range(3)]), rel=1e-6)
    np.savez(tmp_path / "wrong.npz", x=rows[:, :2])
    with pytest.raises(InputError, match=r"'x' has shape \[5, 2, 5, 5\]"):
        _run_pass(model, auto=1, calibration=str(tmp_path / "wrong.npz"))


# --- declines ---------------------------------------------------------------------------------------


def _declined_untouched(model: onnx.ModelProto | Path, pattern: str) -> str:
    """Run a name selection that must be declined; the model's bytes must not change. Returns the reason."""
    ir_model = irx.load(model) if isinstance(model, Path) else irx.from_proto(model)
    before = irx.to_proto(ir_model).SerializeToString()
    result = LayerBypassPass(LayerOptions(bypass=(pattern,)))(ir_model)
    assert not result.modified and result.exact
    assert irx.to_proto(result.model).SerializeToString() == before
    assert result.report.changes == []
    (skip,) = result.report.skipped
    assert skip.target == pattern
    return skip.reason


def test_shape_changing_conv_is_declined_and_the_model_untouched():
    reason = _declined_untouched(MODELS_DIR / "convnet2.onnx", "/conv1/Conv")
    assert "change the shape" in reason
    assert "[1, 3, 32, 32]" in reason and "[1, 64, 32, 32]" in reason


def test_downsample_shortcut_is_declined_with_the_shape_change():
    reason = _declined_untouched(MODELS_DIR / "resnet_mini.onnx", "/layer2/layer2.0/Add")
    assert reason.startswith("downsample shortcut")
    assert "[1, 16, 80, 80]" in reason and "[1, 32, 40, 40]" in reason


def test_layer_between_graph_input_and_graph_output_is_declined():
    model = _layer_model([helper.make_node("Relu", ["x"], ["y"], name="relu")])
    reason = _declined_untouched(model, "relu")
    assert "graph output" in reason and "graph input" in reason


def test_branch_value_used_outside_the_block_is_declined():
    model = chain_model([("Add", True, True)])
    extra = helper.make_node("Relu", ["b0_r"], ["leak"], name="leak")
    model.graph.node.append(extra)
    model.graph.output.append(helper.make_tensor_value_info("leak", TensorProto.FLOAT, [1, CHANNELS, SIDE, SIDE]))
    reason = _declined_untouched(model, "b0_merge")
    assert "'b0_r'" in reason and "outside the block" in reason


def test_broadcast_branch_is_declined():
    """``x + f(x)`` where f(x) is one value per channel: removing f keeps the shape but it is no residual branch."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"], name="pool"),
        helper.make_node("Add", ["x", "pooled"], ["y"], name="merge"),
    ]
    reason = _declined_untouched(_layer_model(nodes), "merge")
    assert "does not keep the block input's shape" in reason and "[1, 4, 1, 1]" in reason


def test_unknown_shape_is_declined():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = _layer_model(nodes, [_weight("w", 0, (CHANNELS, CHANNELS, 3, 3))], input_shape=("N", CHANNELS, "H", "W"))
    reason = _declined_untouched(model, "conv")
    assert reason.startswith("shape unknown")


def test_layer_inside_a_subgraph_is_declined():
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["inner"], name="inner_relu")],
        "then",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [1, CHANNELS, SIDE, SIDE])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["other"], name="inner_sigmoid")],
        "else",
        [],
        [helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, CHANNELS, SIDE, SIDE])],
    )
    nodes = [
        helper.make_node("Constant", [], ["flag"], name="flag", value=helper.make_tensor("f", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["flag"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch),
    ]
    reason = _declined_untouched(_layer_model(nodes), "inner_relu")
    assert "subgraph" in reason


def test_extra_used_output_is_declined():
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "mask"], name="dropout"),
        helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["d", "m"], ["y"], name="add"),
    ]
    reason = _declined_untouched(_layer_model(nodes), "dropout")
    assert "'mask'" in reason


def test_layer_with_a_quantized_weight_is_declined_and_auto_leaves_the_model_alone():
    """Quantized parts are left intact: removing conv2 would drop its DequantizeLinear and int8 weight."""
    model = hm.qdq_weights_model()
    reason = _declined_untouched(model, "conv2")
    assert reason == "Conv 'conv2' reads 'w2' from DequantizeLinear, which the bypass would leave unused; quantized parts are left intact"
    _, report, modified = _run_pass(model, auto=1, samples=1)
    assert not modified and report.summary["stopped"] == "no remaining candidate saves 1% of the model's MACs"


def test_layer_inside_a_bypassed_block_is_reported_as_removed_with_it():
    blocks = [("Add", True, True)] * 2
    pruned, report, _ = _run_pass(chain_model(blocks), bypass=("b1_conv2", "b1_merge"))
    _assert_same_outputs(pruned, chain_model(blocks, drop=frozenset({1})))
    assert [change["name"] for change in report.changes] == ["b1_merge"]
    assert [(skip.target, skip.reason) for skip in report.skipped] == [
        ("b1_conv2", "removed together with 'b1_merge'")
    ]


def test_pattern_matching_nothing_names_the_pattern_and_candidates():
    with pytest.raises(InputError, match=r"'nope\*'.*candidates: .*b0_merge"):
        _run_pass(chain_model([("Add", True, True)]), bypass=("nope*",))


def test_pattern_matching_an_unbypassable_node_says_so():
    with pytest.raises(InputError, match=r"'/pool/MaxPool' \(MaxPool\)"):
        _run_pass(MODELS_DIR / "digits_cnn.onnx", bypass=("/pool/MaxPool",))


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"auto": 0}, "auto"),
        ({"auto": True}, "auto"),
        ({"max_drift": -0.1}, "max_drift"),
        ({"max_drift": math.nan}, "max_drift"),
        ({"bypass": "conv1"}, "bypass"),
        ({"bypass": ("",)}, "bypass"),
        ({"bypass": ("a",), "auto": 1}, "bypass"),
        ({"kinds": ("blocks",)}, "kinds"),
        ({"kinds": ()}, "kinds"),
        ({"samples": 0}, "samples"),
        ({"input_shapes": {"x": (1, 0)}}, "input_shapes"),
    ],
)
def test_invalid_options_name_the_option(options, option):
    with pytest.raises(InputError, match=f"'{option}'"):
        LayerOptions(**options)


def test_options_stay_hashable_with_input_shapes_mapping():
    options = LayerOptions(auto=1, input_shapes={"x": [1, 3, 8, 8]})
    assert options.input_shapes == (("x", (1, 3, 8, 8)),)
    assert hash(options) == hash(LayerOptions(auto=1, input_shapes=(("x", (1, 3, 8, 8)),)))


def test_no_selection_changes_nothing():
    model = irx.from_proto(chain_model([("Add", True, True)]))
    before = irx.to_proto(model).SerializeToString()
    result = LayerBypassPass(LayerOptions())(model)
    assert not result.modified and irx.to_proto(model).SerializeToString() == before


def test_find_bypass_candidates_does_not_change_the_model():
    model = irx.load(MODELS_DIR / "resnet_mini.onnx")
    before = irx.to_proto(model).SerializeToString()
    candidates, declined = find_bypass_candidates(model)
    assert irx.to_proto(model).SerializeToString() == before
    residual = sorted(candidate.name for candidate in candidates if candidate.kind == "residual")
    assert residual == [
        "/layer1/layer1.0/Add",
        "/layer1/layer1.1/Add",
        "/layer2/layer2.1/Add",
        "/layer3/layer3.1/Add",
        "/layer4/layer4.1/Add",
    ]
    assert sum(decline.reason.startswith("downsample shortcut") for decline in declined) == 3


# --- automatic selection ----------------------------------------------------------------------------


def _relative_drift(model: onnx.ModelProto, original: onnx.ModelProto, feeds: list[dict]) -> float:
    """The pass's drift, recomputed here: worst relative L2 error over outputs, stacked over inputs."""
    got = [run_onnx(model, feed) for feed in feeds]
    want = [run_onnx(original, feed) for feed in feeds]
    worst = 0.0
    for index in range(len(want[0])):
        expected = np.concatenate([np.ravel(run[index]).astype(np.float64) for run in want])
        actual = np.concatenate([np.ravel(run[index]).astype(np.float64) for run in got])
        worst = max(worst, float(np.linalg.norm(actual - expected) / np.linalg.norm(expected)))
    return worst


def test_auto_on_resnet_mini_bypasses_the_blocks_with_least_drift_per_macs_saved():
    path = MODELS_DIR / "resnet_mini.onnx"
    original = onnx.load(path)
    specs = runtime.input_specs(irx.load(path))
    feeds = [runtime.random_inputs(specs, seed) for seed in range(2)]
    names = [c.name for c in find_bypass_candidates(irx.load(path))[0] if c.kind == "residual"]
    solo_drift, solo_macs = {}, {}
    for name in names:
        bypassed, by_name, _ = _run_pass(path, bypass=(name,))
        solo_drift[name] = _relative_drift(bypassed, original, feeds)
        solo_macs[name] = by_name.changes[0]["macs_saved"]
    total = by_name.summary["macs_before"]
    solo_score = {name: solo_drift[name] / (solo_macs[name] / total) for name in names}

    pruned, report, modified = _run_pass(path, auto=2, kinds=("residual",), samples=2, seed=0)

    changes = report.changes
    assert modified and [change["kind"] for change in changes] == ["residual", "residual"]
    assert _ops(pruned).count("Add") == _ops(original).count("Add") - 2
    first, second = changes
    assert first["name"] == min(solo_score, key=solo_score.get)
    assert {name: facts["drift"] for name, facts in first["scores"].items()} == pytest.approx(solo_drift, rel=1e-6)
    assert {name: facts["macs_saved"] for name, facts in first["scores"].items()} == solo_macs
    assert {name: facts["score"] for name, facts in first["scores"].items()} == pytest.approx(solo_score, rel=1e-6)
    assert first["score"] == pytest.approx(solo_score[first["name"]], rel=1e-6)
    second_scores = {name: facts["score"] for name, facts in second["scores"].items()}
    assert second["name"] == min(second_scores, key=second_scores.get)
    assert set(second["scores"]) == set(names) - {first["name"]}
    assert second["drift"] == pytest.approx(_relative_drift(pruned, original, feeds), rel=1e-6)
    assert first["macs_saved"] > 0 and second["params_saved"] > 0
    summary = report.summary
    assert summary["macs_before"] - summary["macs_after"] == first["macs_saved"] + second["macs_saved"]
    assert summary["warnings"] == [RANDOM_INPUTS_WARNING]
    assert _interface(pruned) == _interface(original)


def test_max_drift_stops_before_the_threshold_and_says_why():
    path = MODELS_DIR / "resnet_mini.onnx"
    _, probe, _ = _run_pass(path, auto=1, kinds=("residual",), samples=1)
    threshold = probe.changes[0]["drift"] * 1.01
    _, report, modified = _run_pass(path, max_drift=threshold, kinds=("residual",), samples=1)
    assert modified and len(report.changes) == 1
    assert all(change["drift"] <= threshold for change in report.changes)
    assert "would raise the drift" in report.summary["stopped"]
    _, nothing, modified = _run_pass(path, max_drift=0.0, kinds=("residual",), samples=1)
    assert not modified and nothing.changes == []


def test_calibration_npz_is_used_without_the_random_input_warning():
    path = MODELS_DIR / "digits_cnn.onnx"
    pruned, report, modified = _run_pass(path, auto=1, calibration=str(MODELS_DIR / "digits_test.npz"))
    summary = report.summary
    assert modified and summary["warnings"] == [] and summary["calibration_batches"] == 1
    data = np.load(MODELS_DIR / "digits_test.npz")
    drift = _relative_drift(pruned, onnx.load(path), [{"input": data["input"]}])
    assert report.changes[0]["drift"] == pytest.approx(drift, rel=1e-6)


def _model_with_free_activations() -> onnx.ModelProto:
    """Stem conv, a wide Clip, a residual block, ReLU, a second ReLU, head conv.

    The Clip (bounds far outside the values) and the ReLU of a ReLU change
    nothing, so bypassing them costs no drift at all; they also save no MACs.
    """
    initializers: list = [
        helper.make_tensor("lo", TensorProto.FLOAT, [], [-1e3]),
        helper.make_tensor("hi", TensorProto.FLOAT, [], [1e3]),
    ]
    nodes = [
        _conv("stem", "x", "h0", 1, initializers),
        helper.make_node("Clip", ["h0", "lo", "hi"], ["h1"], name="wide_clip"),
        _conv("b0_conv1", "h1", "b0_c1", 10, initializers),
        helper.make_node("Relu", ["b0_c1"], ["b0_r"], name="b0_relu"),
        _conv("b0_conv2", "b0_r", "b0_f", 11, initializers),
        helper.make_node("Add", ["h1", "b0_f"], ["m0"], name="b0_merge"),
        helper.make_node("Relu", ["m0"], ["a0"], name="b0_act"),
        helper.make_node("Relu", ["a0"], ["a1"], name="relu_again"),
        _conv("head", "a1", "y", 99, initializers),
    ]
    return _layer_model(nodes, initializers)


def test_auto_never_bypasses_a_layer_that_saves_under_one_percent_of_the_macs():
    model = _model_with_free_activations()
    zero = "saves 0.00% of the model's MACs, under the 1% an automatic bypass must save"

    pruned, report, modified = _run_pass(model, auto=2, samples=2)

    assert modified and len(report.changes) == 2
    activations = {"wide_clip", "b0_relu", "b0_act", "relu_again"}
    assert not activations & {change["name"] for change in report.changes}
    assert {"Clip", "Relu"} <= set(_ops(pruned))
    for change in report.changes:
        assert change["macs_saved"] >= MIN_MACS_SHARE * report.summary["macs_before"]
        assert not activations & set(change["scores"]), "a candidate under the floor is not even scored"
    skipped = {skip.target: skip.reason for skip in report.skipped}
    assert {name: skipped.get(name) for name in activations} == dict.fromkeys(activations, zero)
    # Asked for by name, the same activation is bypassed: the user chose it.
    by_name, _, modified = _run_pass(model, bypass=("wide_clip",))
    assert modified and "Clip" not in _ops(by_name)


def test_auto_on_a_model_without_macs_bypasses_nothing_and_says_why():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Sigmoid", ["r"], ["y"], name="sigmoid")]
    _, report, modified = _run_pass(_layer_model(nodes), auto=2, samples=1)
    assert not modified and report.changes == []
    assert report.summary["stopped"] == "the model's MACs are unknown or 0, so no candidate saves a measurable share of them"
    assert [(skip.target, skip.reason) for skip in report.skipped] == [
        (name, "saves no measurable MACs: the model's MACs are unknown or 0, and an automatic bypass must save 1% of them")
        for name in ("relu", "sigmoid")
    ]


def _cheap_and_costly_blocks_model() -> onnx.ModelProto:
    """Two residual blocks: a 1x1 conv branch that saves few MACs, then two 3x3 convs that save 18 times as many.

    The branch weights are scaled so that removing the costly block drifts
    the outputs only a little more than removing the cheap one.
    """
    def scaled(name: str, seed: int, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale
        return helper.make_tensor(name, TensorProto.FLOAT, shape, array.ravel())

    initializers = [
        scaled("cheap_w", 5, (CHANNELS, CHANNELS, 1, 1), 0.2),
        scaled("costly1_w", 6, (CHANNELS, CHANNELS, 3, 3), 0.3),
        scaled("costly2_w", 7, (CHANNELS, CHANNELS, 3, 3), 0.08),
    ]
    nodes = [
        _conv("stem", "x", "h0", 1, initializers),
        helper.make_node("Conv", ["h0", "cheap_w"], ["cheap_f"], name="cheap_conv"),
        helper.make_node("Add", ["h0", "cheap_f"], ["h1"], name="cheap_block"),
        helper.make_node("Conv", ["h1", "costly1_w"], ["costly_c"], name="costly_conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["costly_c"], ["costly_r"], name="costly_relu"),
        helper.make_node("Conv", ["costly_r", "costly2_w"], ["costly_f"], name="costly_conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["h1", "costly_f"], ["h2"], name="costly_block"),
        _conv("head", "h2", "y", 99, initializers),
    ]
    return _layer_model(nodes, initializers)


def test_auto_prefers_a_little_more_drift_for_a_much_larger_macs_saving():
    model = _cheap_and_costly_blocks_model()

    _, report, _ = _run_pass(model, auto=1, kinds=("residual",), samples=2)

    (change,) = report.changes
    cheap, costly = change["scores"]["cheap_block"], change["scores"]["costly_block"]
    # The premise: the costly block drifts more, by less than the factor it saves more.
    assert cheap["drift"] < costly["drift"] < cheap["drift"] * costly["macs_saved"] / cheap["macs_saved"]
    assert costly["macs_saved"] == 18 * cheap["macs_saved"]
    assert change["name"] == "costly_block"
    assert change["score"] == costly["score"] < cheap["score"]
    total = report.summary["macs_before"]
    assert costly["score"] == pytest.approx(costly["drift"] / (costly["macs_saved"] / total), rel=1e-9)


def test_max_drift_caps_the_drift_even_when_a_better_score_lies_beyond_it():
    model = _cheap_and_costly_blocks_model()
    _, probe, _ = _run_pass(model, auto=1, kinds=("residual",), samples=2)
    cheap, costly = probe.changes[0]["scores"]["cheap_block"], probe.changes[0]["scores"]["costly_block"]
    cap = (cheap["drift"] + costly["drift"]) / 2

    _, report, _ = _run_pass(model, max_drift=cap, kinds=("residual",), samples=2)

    assert [change["name"] for change in report.changes] == ["cheap_block"]
    assert report.changes[0]["drift"] <= cap
    assert "would raise the drift" in report.summary["stopped"]


def test_after_a_bypass_only_the_likely_winners_are_measured_again_and_the_choice_stays(monkeypatch):
    """Re-measuring only the best few (by their earlier score) picks what re-measuring every candidate picks, with fewer runs."""
    model = chain_model([("Add", True, True)] * 30)
    _, lazy, _ = _run_pass(model, auto=3, kinds=("residual",), samples=1)
    rescore = layers.RESCORE
    monkeypatch.setattr(layers, "RESCORE", 10**6)
    _, full, _ = _run_pass(model, auto=3, kinds=("residual",), samples=1)

    assert [change["name"] for change in lazy.changes] == [change["name"] for change in full.changes]
    assert [len(change["scores"]) for change in full.changes] == [30, 29, 28]
    assert full.summary["drift_measurements"] == 30 + 29 + 28
    first, *later = lazy.changes
    assert len(first["scores"]) == 30
    assert all(rescore <= len(change["scores"]) < 28 for change in later)
    assert lazy.summary["drift_measurements"] == sum(len(change["scores"]) for change in lazy.changes)
    for change in lazy.changes:
        assert change["drift"] == pytest.approx(full.changes[change["round"] - 1]["drift"], rel=1e-9)


@pytest.mark.parametrize("model_path", SAMPLE_MODELS, ids=[path.stem for path in SAMPLE_MODELS])
def test_every_sample_model_stays_valid_and_runnable_after_auto_bypass(model_path):
    original = onnx.load(model_path)
    pruned, report, modified = _run_pass(model_path, auto=1, samples=1)
    if model_path.stem == "convnet2":  # only its two ReLUs keep their shape, and they cost no MACs
        assert not modified and report.summary["stopped"] == "no remaining candidate saves 1% of the model's MACs"
    else:
        assert modified and len(report.changes) == 1
        assert report.changes[0]["macs_saved"] >= MIN_MACS_SHARE * report.summary["macs_before"]
        assert len(pruned.graph.node) < len(original.graph.node)
    assert _interface(pruned) == _interface(original)
    specs = runtime.input_specs(irx.load(model_path))
    feeds = runtime.random_inputs(specs, 7)
    for got, want in zip(run_onnx(pruned, feeds), run_onnx(original, feeds), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype and np.all(np.isfinite(got))


def _symbolic_resolution_residuals() -> tuple[onnx.ModelProto, str, str]:
    """Two residual blocks on an input with symbolic H and W: a conv branch, and a branch that resizes to a fixed 12x12.

    Returns the model and the names of the two merges.
    """
    from tests.test_channels import Net

    net = Net(shape=("N", 3, "H", "W"))
    stem = net.relu(net.conv(net.input, 3, 8))
    conv_merge = net.op("Add", [stem, net.conv(net.relu(net.conv(stem, 8, 8)), 8, 8)])
    empty = net.const("roi", np.zeros(0, np.float32))
    sizes = net.const("sizes", np.array([1, 8, 12, 12], np.int64))
    fixed = net.op("Resize", [net.conv(conv_merge, 8, 8), empty, empty, sizes], mode="nearest")
    resize_merge = net.op("Add", [conv_merge, fixed])
    model = net.model(net.gemm(net.op("Flatten", [net.op("GlobalAveragePool", [resize_merge])]), 8, 4))
    return model, conv_merge.removesuffix("_out"), resize_merge.removesuffix("_out")


def test_residuals_with_symbolic_height_and_width_are_proven_at_the_run_shape_and_at_twice_it() -> None:
    """Inference gives each conv output fresh symbolic dims, so nothing is provable as declared; at the run's
    12x12 both branches keep the block's shape, but the fixed-size Resize does not at 24x24 and stays."""
    model, conv_merge, resize_merge = _symbolic_resolution_residuals()
    ir_model = irx.from_proto(model)

    declared, declined = find_bypass_candidates(ir_model, bypass_shape_facts(ir_model))
    assert not [found for found in declared if found.kind == "residual"]
    assert {decline.target for decline in declined if decline.reason.startswith("shape unknown")} >= {conv_merge, resize_merge}

    found, declined = find_bypass_candidates(ir_model, bypass_shape_facts(ir_model, {"x": (1, 3, 12, 12)}))
    assert [candidate.name for candidate in found if candidate.kind == "residual"] == [conv_merge]
    assert any(decline.target == resize_merge and "free input dims doubled" in decline.reason for decline in declined)


def test_the_layer_pass_bypasses_a_residual_of_a_symbolic_resolution_model_at_the_calibration_shape() -> None:
    model, conv_merge, _ = _symbolic_resolution_residuals()
    calibration = [{"x": np.random.default_rng(seed).standard_normal((4, 3, 12, 12)).astype(np.float32)} for seed in range(2)]
    options = LayerOptions(bypass=(conv_merge,))
    pruned = LayerBypassPass(options, calibration=calibration, shapes={"x": (1, 3, 12, 12)})(irx.from_proto(model))
    assert [change["name"] for change in pruned.report.changes] == [conv_merge]
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 3, 12, 12)).astype(np.float32)}
    assert run_onnx(irx.to_proto(pruned.model), feeds)[0].shape == (2, 4)
