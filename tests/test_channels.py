"""Channel pruning: graph surgery proven exact by construction, locks, dead channels, sample models.

Equivalence by construction: the channels the plan will remove are zeroed
first (filter and bias, and whatever makes their value zero downstream), so
removing them must not change the outputs at all; any mistake in the
surgery (a wrong slice, a missed consumer, a shifted Concat offset) shows up
as an output difference far above the tolerance.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import ChannelGraph
from onnxprune.errors import InputError
from onnxprune.options import ChannelOptions
from onnxprune.passes import channels as channel_pass_module
from onnxprune.passes.channel_plan import ChannelEdits, ChannelPlan
from onnxprune.passes.channels import ChannelPruningPass, ChannelResult, DeadChannelPass, plan_channel_pruning
from tests.conftest import MODELS_DIR, SAMPLE_MODELS, feeds_for, run_onnx

RTOL, ATOL = 1e-4, 1e-5


class Net:
    """Builds a small ONNX model op by op, with seeded random weights."""

    def __init__(self, shape: tuple[int, ...] = (1, 3, 8, 8), seed: int = 0, opset: int = 18) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape = shape
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.extra_inputs: list[onnx.ValueInfoProto] = []
        self.extra_opsets: list[onnx.OperatorSetIdProto] = []
        self.count = 0
        self.input = "x"

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape).astype(np.float32) * 0.5

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, domain: str = "", **attributes) -> str | list[str]:
        name = self.name(op_type.lower())
        names = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, domain=domain, **attributes))
        return names if outputs > 1 else names[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, pad: int | None = None, group: int = 1, bias: bool = True, stride: int = 1) -> str:
        pad = k // 2 if pad is None else pad
        inputs = [x, self.const("w", self.weight(cout, cin // group, k, k))]
        if bias:
            inputs.append(self.const("b", self.weight(cout)))
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=[pad] * 4, group=group, strides=[stride, stride])

    def bn(self, x: str, c: int) -> str:
        scale = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        shift, mean = self.const("bb", self.weight(c)), self.const("m", self.weight(c))
        return self.op("BatchNormalization", [x, self.const("s", scale), shift, mean, self.const("v", var)])

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def gemm(self, x: str, fin: int, fout: int, trans_b: int = 1) -> str:
        weight = self.weight(fout, fin) if trans_b else self.weight(fin, fout)
        return self.op("Gemm", [x, self.const("fw", weight), self.const("fb", self.weight(fout))], transB=trans_b)

    def matmul(self, x: str, fin: int, fout: int) -> str:
        return self.op("MatMul", [x, self.const("mw", self.weight(fin, fout))])

    def model(self, *outputs: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "net",
            [helper.make_tensor_value_info(self.input, TensorProto.FLOAT, list(self.shape)), *self.extra_inputs],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset), *self.extra_opsets])
        model.ir_version = 8
        if self.extra_opsets:  # custom ops: nothing to infer or check
            return model
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        return model


def prune(model: onnx.ModelProto, options: ChannelOptions) -> tuple[onnx.ModelProto, ChannelResult]:
    ir_model = irx.from_proto(model)
    result = ChannelPruningPass(options)(ir_model)
    return irx.to_proto(ir_model), result


# Input slots whose removed entries must be zero for a removed channel to be exactly zero downstream:
# the producing filter and bias, normalisation shifts and scales, additive per-channel constants.
_ZEROED_SLOTS = {
    ("Conv", 1, 0), ("Conv", 2, 0), ("ConvTranspose", 1, 1), ("ConvTranspose", 2, 0),
    ("Gemm", 2, 0), ("MatMul", 1, 1), ("BatchNormalization", 1, 0), ("BatchNormalization", 2, 0),
    ("InstanceNormalization", 2, 0), ("Add", 0, None), ("Add", 1, None), ("Sub", 0, None), ("Sub", 1, None),
}


def zero_planned_channels(model: onnx.ModelProto, options: ChannelOptions) -> onnx.ModelProto:
    """A copy of ``model`` in which every channel the plan removes is already exactly zero."""
    plan = plan_channel_pruning(irx.from_proto(model), options)
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    nodes = {node.name: node for node in zeroed.graph.node}
    tensors = {tensor.name: tensor for tensor in zeroed.graph.initializer}
    for (node_name, index, axis), removed in plan.removed_positions.items():
        node = nodes[node_name]
        gemm_out_axis = 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
        slot_axis = gemm_out_axis if (node.op_type, index) == ("Gemm", 1) else axis
        if (node.op_type, index, slot_axis) not in _ZEROED_SLOTS and (node.op_type, index, None) not in _ZEROED_SLOTS and not (
            (node.op_type, index) == ("Gemm", 1) and axis == gemm_out_axis
        ):
            continue
        tensor = tensors[node.input[index]]
        array = numpy_helper.to_array(tensor).copy()
        index_tuple = [slice(None)] * array.ndim
        index_tuple[axis] = removed
        array[tuple(index_tuple)] = 0
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return zeroed


def assert_equivalent_by_construction(model: onnx.ModelProto, options: ChannelOptions, seeds=(0, 1, 2)) -> ChannelResult:
    """Zero what the plan removes, prune the zeroed model, and compare outputs and shapes exactly.

    Per-group selection on the zeroed model picks the same channels (zeroed
    filters score lowest, budgets depend only on sizes), so the same options
    are used.  Global ranking renormalises scores and budgets before
    rounding, so its selection on the zeroed model may differ; there the
    zeroed channels are removed as dead channels (ratio 0), which must
    remove exactly the planned set (unused channels, removed as dead by
    both plans, included).
    """
    surgery = options if options.global_ranking else dataclasses.replace(options, remove_dead=False)
    expected_plan = plan_channel_pruning(irx.from_proto(model), surgery)
    zeroed = zero_planned_channels(model, surgery)
    pruned, result = prune(zeroed, ChannelOptions(round_to=1) if options.global_ranking else surgery)
    assert [group.kept for group in result.plan.groups] == [group.kept for group in expected_plan.groups]
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == [i.name for i in zeroed.graph.input]
    for seed in seeds:
        feeds = feeds_for(zeroed, seed)
        before, after = run_onnx(zeroed, feeds), run_onnx(pruned, feeds)
        assert [a.shape for a in before] == [a.shape for a in after]
        for expected, actual in zip(before, after):
            # Removing zero terms reorders float32 sums; the rounding that changes scales with the summands,
            # which reach hundreds in these random nets, so atol follows the output's range (rtol stays 1e-4).
            scale = max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale)
    return result


def removed_channels(result: ChannelResult) -> int:
    return sum(group.channels_before - group.channels_after for group in result.plan.groups)


HALF = ChannelOptions(ratio=0.5, round_to=1)


# ---------------------------------------------------------------- graph shapes


def chain() -> onnx.ModelProto:
    net = Net()
    y = net.relu(net.conv(net.input, 3, 8))
    y = net.relu(net.conv(y, 8, 12))
    return net.model(net.conv(y, 12, 4))


def with_bn_and_activations() -> onnx.ModelProto:
    net = Net(seed=1)
    y = net.bn(net.conv(net.input, 3, 8, bias=False), 8)
    y = net.op("PRelu", [y, net.const("slope", net.rng.uniform(0.1, 0.3, (8, 1, 1)).astype(np.float32))])
    y = net.conv(y, 8, 8)
    y = net.op("LeakyRelu", [y], alpha=0.2)
    y = net.op("Clip", [y, net.const("lo", np.array(0, np.float32)), net.const("hi", np.array(6, np.float32))])
    y = net.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = net.op("Identity", [net.op("Tanh", [y])])
    y = net.op("AveragePool", [net.conv(y, 8, 6)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = net.op("Pad", [net.op("Relu", [y]), net.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
    y = net.op("Resize", [y, "", net.const("scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    return net.model(net.conv(y, 6, 3))


def residual() -> onnx.ModelProto:
    net = Net(seed=2)
    stem = net.relu(net.conv(net.input, 3, 8))
    branch = net.conv(net.relu(net.conv(stem, 8, 6)), 6, 8)
    merged = net.relu(net.op("Add", [stem, branch]))
    shortcut = net.conv(merged, 8, 12, k=1, pad=0)
    branch2 = net.conv(net.relu(net.conv(merged, 8, 12)), 12, 12)
    other = net.conv(merged, 8, 12, k=1, pad=0)
    merged2 = net.relu(net.op("Sum", [shortcut, branch2, other]))
    pooled = net.op("Flatten", [net.op("GlobalAveragePool", [merged2])])
    return net.model(net.gemm(pooled, 12, 5))


def squeeze_excitation() -> onnx.ModelProto:
    net = Net(seed=3)
    x = net.relu(net.conv(net.input, 3, 16))
    squeezed = net.op("Flatten", [net.op("GlobalAveragePool", [x])])
    gate = net.op("Sigmoid", [net.gemm(net.relu(net.gemm(squeezed, 16, 8)), 8, 16)])
    gate = net.op("Reshape", [gate, net.const("shape", np.array([1, 16, 1, 1], np.int64))])
    y = net.op("Mul", [x, gate])
    conv_gate = net.op("Sigmoid", [net.conv(net.op("GlobalAveragePool", [y]), 16, 16, k=1, pad=0)])
    y = net.op("Mul", [y, conv_gate])
    return net.model(net.conv(y, 16, 4))


def concat_split_slice() -> onnx.ModelProto:
    net = Net(seed=4)
    a = net.relu(net.conv(net.input, 3, 8))
    b = net.relu(net.conv(net.input, 3, 6))
    joined = net.op("Concat", [a, net.input, b], axis=1)
    c = net.relu(net.conv(joined, 17, 10))
    first, second = net.op("Split", [c, net.const("sizes", np.array([4, 6], np.int64))], outputs=2, axis=1)
    bounds = [net.const(name, np.array([value], np.int64)) for name, value in (("st", 1), ("en", 5), ("ax", 1))]
    sliced = net.op("Slice", [second, *bounds])
    d = net.conv(first, 4, 5)
    e = net.conv(sliced, 4, 5)
    return net.model(net.op("Add", [d, e]))


def depthwise_and_grouped() -> onnx.ModelProto:
    net = Net(seed=5)
    y = net.relu(net.conv(net.input, 3, 16, k=1, pad=0))
    y = net.relu(net.conv(y, 16, 32, group=16))  # depthwise with multiplier 2
    y = net.relu(net.conv(y, 32, 16, k=1, pad=0))
    y = net.relu(net.conv(y, 16, 16, group=4))  # grouped: locked
    return net.model(net.conv(y, 16, 4))


def flatten_gemm() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 8, 8), seed=6)
    y = net.op("MaxPool", [net.relu(net.conv(net.input, 3, 8))], kernel_shape=[2, 2], strides=[2, 2])
    y = net.op("Flatten", [net.relu(net.conv(y, 8, 6))])
    y = net.relu(net.gemm(y, 6 * 16, 20))
    return net.model(net.gemm(y, 20, 3))


def reshape_matmul() -> onnx.ModelProto:
    net = Net(shape=(1, 3, 6, 6), seed=7)
    y = net.relu(net.conv(net.input, 3, 8, stride=2))
    y = net.op("Reshape", [y, net.const("shape", np.array([1, 8 * 9], np.int64))])
    y = net.relu(net.matmul(y, 72, 16))
    return net.model(net.matmul(y, 16, 4))


def transpose_gemm() -> onnx.ModelProto:
    net = Net(shape=(1, 3, 4, 4), seed=8)
    y = net.relu(net.conv(net.input, 3, 8))
    y = net.op("Transpose", [y], perm=[0, 2, 3, 1])
    y = net.relu(net.matmul(y, 8, 10))  # per-pixel linear layer on the channel axis
    y = net.op("Reshape", [y, net.const("shape", np.array([1, -1], np.int64))])
    return net.model(net.gemm(y, 160, 3))


GRAPHS = {
    "chain": chain,
    "bn_activations": with_bn_and_activations,
    "residual_sum": residual,
    "squeeze_excitation": squeeze_excitation,
    "concat_split_slice": concat_split_slice,
    "depthwise_grouped": depthwise_and_grouped,
    "flatten_gemm": flatten_gemm,
    "reshape_matmul": reshape_matmul,
    "transpose_gemm": transpose_gemm,
}


@pytest.mark.parametrize("build", GRAPHS.values(), ids=GRAPHS.keys())
@pytest.mark.parametrize("global_ranking", [False, True], ids=["per_group", "global"])
def test_equivalent_by_construction(build, global_ranking: bool) -> None:
    options = dataclasses.replace(HALF, global_ranking=global_ranking)
    result = assert_equivalent_by_construction(build(), options)
    assert removed_channels(result) > 0


def test_residual_couples_both_branches() -> None:
    plan = plan_channel_pruning(irx.from_proto(residual()), HALF)
    coupled = [group for group in plan.groups if len(group.sources) > 1]
    assert sorted(len(group.sources) for group in coupled) == [2, 3]
    for group in coupled:
        kept = list(group.kept.values())
        assert all(indices == kept[0] for indices in kept), "coupled layers must keep the same channels"
        assert group.channels_after == group.channels_before - group.channels_before // 2


def test_concat_offsets_and_split_sizes_rewritten() -> None:
    pruned, result = prune(concat_split_slice(), HALF)
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in pruned.graph.initializer}
    consumers = [node for node in pruned.graph.node if node.op_type == "Conv" and node.input[0].startswith("concat")]
    # 8 + 6 conv channels halve to 4 + 3; the 3 graph-input channels in between stay.
    assert tensors[consumers[0].input[1]].shape[1] == 4 + 3 + 3
    split = next(node for node in pruned.graph.node if node.op_type == "Split")
    assert tensors[split.input[1]].sum() == tensors[consumers[0].input[1]].shape[0]
    assert result.report.summary["channels_after"] < result.report.summary["channels_before"]


def test_depthwise_group_attribute_follows_channels() -> None:
    pruned, _ = prune(depthwise_and_grouped(), HALF)
    convs = [node for node in pruned.graph.node if node.op_type == "Conv"]
    groups = [next((a.i for a in node.attribute if a.name == "group"), 1) for node in convs]
    assert groups[1] == 8  # depthwise: 16 -> 8 channels, multiplier 2 kept
    assert groups[3] == 4  # grouped conv untouched


def test_grouped_convolution_is_locked_with_reason() -> None:
    result = ChannelPruningPass(HALF)(irx.from_proto(depthwise_and_grouped()))
    reasons = " ".join(skip.reason for skip in result.report.skipped)
    assert "grouped convolution (group=4)" in reasons


def test_reshape_target_shape_rewritten() -> None:
    pruned, _ = prune(reshape_matmul(), HALF)
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in pruned.graph.initializer}
    reshape = next(node for node in pruned.graph.node if node.op_type == "Reshape")
    assert tensors[reshape.input[1]].tolist() == [1, 4 * 9]


# ---------------------------------------------------------------- the article's example


def test_convnet2_keeps_top_l1_filters_of_conv1() -> None:
    path = MODELS_DIR / "convnet2.onnx"
    original = onnx.load(path)
    model = irx.load(path)
    conv1, conv2 = [node for node in model.graph if node.op_type == "Conv"]
    w1 = irx.constant_array(conv1.inputs[1]).copy()
    w2 = irx.constant_array(conv2.inputs[1]).copy()
    assert w1.shape[0] == 64 and w2.shape[:2] == (128, 64)
    expected = np.sort(np.argsort(-np.abs(w1).reshape(64, -1).sum(axis=1), kind="stable")[:32])

    result = ChannelPruningPass(ChannelOptions(ratio=0.5, round_to=1))(model)

    group = next(group for group in result.plan.groups if conv1.name in group.sources)
    assert group.kept[conv1.name] == expected.tolist()
    np.testing.assert_array_equal(irx.constant_array(conv1.inputs[1]), w1[expected])
    np.testing.assert_array_equal(irx.constant_array(conv2.inputs[1]), w2[:, expected])
    assert irx.constant_array(conv2.inputs[1]).shape == (128, 32, 3, 3)
    # conv2 feeds the graph output: its own output channels are locked, and the report says so.
    conv2_group = next(group for group in result.plan.groups if conv2.name in group.sources)
    assert conv2_group.channels_after == 128 and any("graph output" in reason for reason in conv2_group.lock_reasons)
    assert group.channels_before == 64 and group.channels_after == 32
    assert result.report.summary["macs_after"] < result.report.summary["macs_before"]
    pruned = irx.to_proto(model)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = feeds_for(original, 0)
    assert run_onnx(pruned, feeds)[0].shape == run_onnx(original, feeds)[0].shape


# ---------------------------------------------------------------- locks


def test_unknown_op_locks_group() -> None:
    net = Net(seed=9)
    y = net.relu(net.conv(net.input, 3, 8))
    y = net.op("Softmax", [y], axis=1)  # normalises across channels: removing one changes all others
    model = net.model(net.conv(y, 8, 4))
    pruned, result = prune(model, HALF)
    first = pruned.graph.node[0]
    assert next(t for t in pruned.graph.initializer if t.name == first.input[1]).dims[0] == 8
    reasons = " ".join(skip.reason for skip in result.report.skipped)
    assert "Softmax" in reasons and "across the channel axis" in reasons


def test_custom_domain_op_locks_group() -> None:
    net = Net(seed=10)
    y = net.relu(net.conv(net.input, 3, 8))
    net.extra_opsets.append(helper.make_opsetid("custom.ops", 1))
    mystery = net.op("Mystery", [y], domain="custom.ops")
    model = net.model(mystery)
    plan = plan_channel_pruning(irx.from_proto(model), HALF)
    assert not plan.changes_anything
    assert any("custom.ops.Mystery" in reason for group in plan.groups for reason in group.lock_reasons)


def test_graph_output_locks_group_but_not_upstream() -> None:
    net = Net(seed=11)
    y = net.relu(net.conv(net.input, 3, 8))
    z = net.relu(net.conv(y, 8, 6))
    model = net.model(z, y)
    plan = plan_channel_pruning(irx.from_proto(model), HALF)
    assert not plan.changes_anything
    reasons = [reason for group in plan.groups for reason in group.lock_reasons]
    assert any("graph output" in reason for reason in reasons)


def test_value_used_in_subgraph_locks_group() -> None:
    net = Net(seed=12)
    y = net.relu(net.conv(net.input, 3, 8))
    then_out = helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)
    then_branch = helper.make_graph([helper.make_node("Identity", [y], ["then_out"])], "then", [], [then_out])
    else_branch = helper.make_graph([helper.make_node("Neg", [y], ["else_out"])], "else", [], [else_out])
    net.extra_inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    chosen = net.op("If", ["flag"], then_branch=then_branch, else_branch=else_branch)
    out = net.conv(net.op("Relu", [chosen]), 8, 4)
    model = net.model(out)
    before = plan_channel_pruning(irx.from_proto(model), HALF)
    assert any("subgraph" in reason for group in before.groups for reason in group.lock_reasons)
    first_conv = before.groups[0]
    assert first_conv.channels_after == first_conv.channels_before


def test_exclude_pattern_locks_matching_layer() -> None:
    model = chain()
    first_conv = model.graph.node[0].name
    plan = plan_channel_pruning(irx.from_proto(model), dataclasses.replace(HALF, exclude=(first_conv,)))
    group = next(group for group in plan.groups if first_conv in group.sources)
    assert group.channels_after == group.channels_before
    assert any("exclude pattern" in reason for reason in group.lock_reasons)
    assert any(g.channels_after < g.channels_before for g in plan.groups)



def _channels_after(plan: ChannelPlan, *layers: str) -> dict[str, int]:
    return {group.sources[0]: group.channels_after for group in plan.groups if group.sources[0] in layers}


def test_override_sets_one_groups_ratio_and_keep_leaves_it_alone() -> None:
    model = chain()
    first, second = model.graph.node[0].name, model.graph.node[2].name
    plan = plan_channel_pruning(irx.from_proto(model), dataclasses.replace(HALF, overrides=(f"{first}=0.25", f"{second}=keep")))
    assert _channels_after(plan, first, second) == {first: 6, second: 12}
    kept = next(group for group in plan.groups if group.sources == [second])
    assert kept.note == f"override '{second}': ratio=0.0 and none of its channels is dead"


def test_override_alone_prunes_only_its_group_and_first_match_wins() -> None:
    model = chain()
    first, second = model.graph.node[0].name, model.graph.node[2].name
    options = ChannelOptions(round_to=1, overrides=(f"{second}=0.5", "conv*=0.75"))
    assert _channels_after(plan_channel_pruning(irx.from_proto(model), options), first, second) == {first: 2, second: 6}
    alone = ChannelOptions(round_to=1, overrides=(f"{second}=0.5",))
    assert _channels_after(plan_channel_pruning(irx.from_proto(model), alone), first, second) == {first: 8, second: 6}


def test_override_is_honoured_by_global_ranking() -> None:
    model = chain()
    first, second = model.graph.node[0].name, model.graph.node[2].name
    options = dataclasses.replace(HALF, global_ranking=True, overrides=(f"{first}=keep",))
    after = _channels_after(plan_channel_pruning(irx.from_proto(model), options), first, second)
    assert after[first] == 8 and after[second] < 12


@pytest.mark.parametrize("text", ["conv=1.0", "conv=-0.1", "conv=half", "=0.5", "conv", "conv=nan"])
def test_override_that_is_not_glob_equals_ratio_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="expected GLOB=RATIO"):
        ChannelOptions(overrides=(text,))


# ---------------------------------------------------------------- dead channels


def _dead_model(padding: int) -> tuple[onnx.ModelProto, int]:
    """conv1 with some all-zero filters: zero bias (output 0), positive bias (relu -> constant), negative bias (relu -> 0)."""
    net = Net(seed=13)
    y = net.relu(net.conv(net.input, 3, 10))
    y = net.bn(net.conv(y, 10, 8, pad=padding), 8)
    y = net.op("Flatten", [net.relu(y)])
    side = 8 - 2 * (1 - padding)
    model = net.model(net.gemm(y, 8 * side * side, 4))
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    conv1, conv2 = [node for node in model.graph.node if node.op_type == "Conv"]
    w1 = numpy_helper.to_array(tensors[conv1.input[1]]).copy()
    b1 = numpy_helper.to_array(tensors[conv1.input[2]]).copy()
    w1[[1, 4, 7]] = 0
    b1[[1, 4, 7]] = [0.0, 0.7, -0.3]
    w2 = numpy_helper.to_array(tensors[conv2.input[1]]).copy()
    w2[[2, 5]] = 0  # two conv2 filters zero: their BN output is a constant, then relu, then Gemm (foldable)
    for name, array in ((conv1.input[1], w1), (conv1.input[2], b1), (conv2.input[1], w2)):
        tensors[name].CopyFrom(numpy_helper.from_array(array, name))
    return model, 3


@pytest.mark.parametrize("padding", [0, 1], ids=["no_padding", "padded"])
def test_dead_channels_removed_exactly(padding: int) -> None:
    model, _ = _dead_model(padding)
    pruned, result = prune(model, ChannelOptions(round_to=1))
    groups = result.plan.groups
    conv1_group, conv2_group = groups[0], groups[1]
    # Bias 0 and bias -0.3 give relu(...) == 0: always removable.  Bias 0.7 gives a constant 0.7, which only a
    # conv without zero padding can absorb into its bias.
    assert conv1_group.channels_after == (7 if padding == 0 else 8)
    assert conv2_group.channels_after == 6  # Gemm absorbs any constant
    assert conv1_group.dead_removed == 10 - conv1_group.channels_after
    for seed in (0, 1, 2):
        feeds = feeds_for(model, seed)
        np.testing.assert_allclose(run_onnx(pruned, feeds)[0], run_onnx(model, feeds)[0], rtol=RTOL, atol=ATOL)


def test_dead_channels_stay_when_removing_them_breaks_round_to() -> None:
    model, _ = _dead_model(0)
    plan = plan_channel_pruning(irx.from_proto(model), ChannelOptions(round_to=4))
    conv1_group, conv2_group = plan.groups[0], plan.groups[1]
    # conv1: 3 removable dead channels of 10 -> 7 is no multiple of 4, so only 2 go (8 kept).
    assert conv1_group.channels_after == 8 and conv1_group.dead_removed == 2
    # conv2: 2 dead of 8 -> 6 is no multiple of 4, and 4 would need live channels: all stay, with the reason.
    assert conv2_group.channels_after == 8
    assert "dead channel(s) stay" in conv2_group.note and "round_to=4" in conv2_group.note


def test_dead_channel_removal_can_be_turned_off() -> None:
    model, _ = _dead_model(0)
    plan = plan_channel_pruning(irx.from_proto(model), ChannelOptions(remove_dead=False))
    assert not plan.changes_anything
    assert all(group.note == "ratio is 0 and none of its channels is dead" for group in plan.groups if group.locked_channels == 0)


def test_dead_channel_pass_is_declared_exact_and_the_ratio_pass_is_not() -> None:
    model, _ = _dead_model(0)
    dead = DeadChannelPass(round_to=1)(irx.from_proto(model))
    by_ratio_pass = ChannelPruningPass(ChannelOptions(round_to=1))(irx.from_proto(model))
    assert dead.report.name == "dead_channels" and by_ratio_pass.report.name == "channels"
    assert [group.kept for group in dead.plan.groups] == [group.kept for group in by_ratio_pass.plan.groups]
    assert dead.modified and dead.exact
    assert by_ratio_pass.modified and not by_ratio_pass.exact
    nothing_dead = chain()
    assert DeadChannelPass()(irx.from_proto(nothing_dead)).exact
    unchanged = ChannelPruningPass(ChannelOptions())(irx.from_proto(nothing_dead))
    assert not unchanged.modified and unchanged.exact


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "field, value",
    [
        ("ratio", 1.0), ("ratio", -0.1), ("ratio", "half"), ("min_channels", 0), ("round_to", 0),
        ("importance", "magic"), ("exclude", "conv*"), ("remove_dead", "yes"),
    ],
)
def test_invalid_options_name_the_option(field: str, value) -> None:
    with pytest.raises(InputError, match=field):
        ChannelOptions(**{field: value})


def test_round_to_keeps_multiples() -> None:
    net = Net(seed=14)
    y = net.relu(net.conv(net.input, 3, 40))
    model = net.model(net.conv(y, 40, 4))
    plan = plan_channel_pruning(irx.from_proto(model), ChannelOptions(ratio=0.7, round_to=8))
    assert plan.groups[0].channels_after == 16  # 40 - 28 = 12, rounded up to 16
    plan = plan_channel_pruning(irx.from_proto(model), ChannelOptions(ratio=0.7, round_to=1, min_channels=20))
    assert plan.groups[0].channels_after == 20


@pytest.mark.parametrize(
    ("options", "note"),
    [
        (ChannelOptions(ratio=0.02, round_to=1), "ratio=0.02 of its 40 channels is less than one channel"),
        (ChannelOptions(ratio=0.5, min_channels=40), "it has 40 channels, not more than min_channels=40"),
        (ChannelOptions(ratio=0.5, round_to=64), "keeping a multiple of round_to=64 channels keeps all 40"),
        (ChannelOptions(ratio=0.5, exclude=("conv*",)), "locked: "),
    ],
    ids=["ratio_below_one_channel", "min_channels", "round_to", "locked"],
)
def test_group_that_keeps_every_channel_says_why(options: ChannelOptions, note: str) -> None:
    net = Net(seed=14)
    y = net.relu(net.conv(net.input, 3, 40))
    plan = plan_channel_pruning(irx.from_proto(net.model(net.conv(y, 40, 4))), options)
    group = plan.groups[0]
    assert group.channels_after == group.channels_before
    assert group.note is not None and group.note.startswith(note)
    assert any(note in reason for _, reason in plan.skipped)


def test_l2_and_registered_importance(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune import importance
    from onnxprune.importance import register_importance

    monkeypatch.setattr(importance, "_REGISTRY", dict(importance._REGISTRY))  # the registration ends with the test
    model = chain()
    conv = model.graph.node[0]
    weight = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == conv.input[1])).reshape(8, -1)
    plan = plan_channel_pruning(irx.from_proto(model), dataclasses.replace(HALF, importance="l2"))
    expected = np.sort(np.argsort(-np.sqrt((weight.astype(np.float64) ** 2).sum(axis=1)), kind="stable")[:4])
    assert plan.groups[0].kept[conv.name] == expected.tolist()
    register_importance("first_channels", lambda filters: np.arange(filters.shape[0], 0, -1, dtype=np.float64))
    plan = plan_channel_pruning(irx.from_proto(model), dataclasses.replace(HALF, importance="first_channels"))
    assert plan.groups[0].kept[conv.name] == [0, 1, 2, 3]


def test_plan_does_not_change_the_model() -> None:
    model = irx.from_proto(residual())
    before = irx.to_proto(model).SerializeToString()
    plan = plan_channel_pruning(model, HALF)
    assert plan.changes_anything
    assert irx.to_proto(model).SerializeToString() == before


def test_plan_that_fails_its_trial_leaves_the_model_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check on a copy is what keeps a wrong plan out of the model.

    The edit computation is made to keep every filter of one pruned layer
    while its bias and its consumers shrink as planned: that layer's output
    would carry more channels than everything downstream expects.  The pass
    must refuse the plan, leave the model byte for byte as it was, and say why;
    without the trial check the broken edits would be written into the model.
    """
    compute_edits = channel_pass_module.compute_edits

    def edits_with_one_weight_unpruned(channels: ChannelGraph, removed_units: np.ndarray) -> ChannelEdits:
        edits = compute_edits(channels, removed_units)
        source = next(source for source in channels.sources if (source.node, source.weight_index) in edits.tensors)
        edits.tensors[(source.node, source.weight_index)] = irx.constant_array(source.node.inputs[source.weight_index])
        return edits

    monkeypatch.setattr(channel_pass_module, "compute_edits", edits_with_one_weight_unpruned)
    model = irx.from_proto(chain())
    before = irx.to_proto(model).SerializeToString()
    result = ChannelPruningPass(HALF)(model)
    assert not result.modified and result.exact and result.plan is None
    assert [skip.target for skip in result.report.skipped] == ["all channel groups"]
    assert "the channel plan failed validation and was not applied: " in result.report.skipped[0].reason
    assert "the plan expects 4" in result.report.skipped[0].reason
    assert irx.to_proto(model).SerializeToString() == before


# ---------------------------------------------------------------- sample models


@pytest.mark.skipif(not SAMPLE_MODELS, reason="models/ not generated")
def test_sample_models_prune_at_half(sample_model: Path) -> None:
    original = onnx.load(sample_model)
    model = irx.load(sample_model)
    convs_before = {node.name: irx.constant_array(node.inputs[1]).shape for node in model.graph if node.op_type == "Conv"}
    result = ChannelPruningPass(ChannelOptions(ratio=0.5))(model)
    assert result.modified
    pruned = irx.to_proto(model)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = feeds_for(original, 0)
    for before, after in zip(run_onnx(original, feeds), run_onnx(pruned, feeds)):
        assert before.shape == after.shape
        assert np.all(np.isfinite(after))
    skipped = {skip.target for skip in result.report.skipped}
    for node in model.graph:
        if node.op_type == "Conv" and irx.constant_array(node.inputs[1]).shape == convs_before[node.name]:
            assert node.name in skipped, f"{node.name} was not pruned and the report does not say why"
    summary = result.report.summary
    assert summary["channels_after"] < summary["channels_before"]
    assert summary["params_after"] < summary["params_before"]


def test_model_with_external_weights_prunes(tmp_path: Path) -> None:
    """Weights kept in a .data file beside the model stay readable through planning, trial and apply."""
    import onnx_ir as ir

    path = tmp_path / "model.onnx"
    ir.save(irx.from_proto(chain()), path, external_data="model.onnx.data", size_threshold_bytes=0)
    model = irx.load(path)
    assert ChannelPruningPass(HALF)(model).modified
    out = tmp_path / "pruned.onnx"
    irx.save(model, out)
    onnx.checker.check_model(str(out), full_check=True)
    feeds = feeds_for(chain(), 0)
    assert run_onnx(out, feeds)[0].shape == run_onnx(chain(), feeds)[0].shape
