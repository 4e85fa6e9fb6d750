"""Channel dependency discovery: sources, coupling, index mapping and locks, read without changing the model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.channel_graph import ChannelGraph, Tracked
from onnxprune.analysis.dependency_walk import discover_channel_groups
from onnxprune.options import ChannelOptions
from onnxprune.passes.channels import plan_channel_pruning
from tests.test_channels import HALF, Net, assert_equivalent_by_construction, removed_channels, residual


def discover(model: onnx.ModelProto) -> tuple[ChannelGraph, ir.Model]:
    ir_model = irx.from_proto(model)
    return discover_channel_groups(ir_model), ir_model


def tracked_by_name(channels: ChannelGraph, name: str) -> Tracked:
    return next(tracked for value, tracked in channels.tracked.items() if value.name == name)


def reasons(channels: ChannelGraph) -> str:
    return " | ".join(lock.reason for lock in channels.locks)


def test_chain_has_one_group_per_conv_and_locks_the_output() -> None:
    net = Net()
    y = net.relu(net.conv(net.input, 3, 8))
    model = net.model(net.conv(y, 8, 4))
    channels, _ = discover(model)
    assert [len(source.atoms) for source in channels.sources] == [8, 4]
    assert channels.num_groups == 2 and channels.num_units == 12
    assert channels.unit_locked.tolist() == [False] * 8 + [True] * 4
    assert "graph output" in reasons(channels)


def test_residual_merges_couple_sources_into_one_group() -> None:
    channels, _ = discover(residual())
    sizes = sorted(np.bincount(channels.group_of_unit).tolist())
    # stem+branch end (8, coupled), branch inner (6), Sum of three 12-channel convs (coupled), inner (12), gemm (5).
    assert sizes == [5, 6, 8, 12, 12]
    coupled = [
        group for group in range(channels.num_groups)
        if sum(1 for source in channels.sources if channels.group_of_unit[channels.unit_of_atom[source.atoms[0]]] == group) > 1
    ]
    assert len(coupled) == 2


def test_concat_maps_offsets_and_fixes_foreign_channels() -> None:
    net = Net()
    a = net.relu(net.conv(net.input, 3, 4))
    joined = net.op("Concat", [a, net.input], axis=1)
    model = net.model(net.conv(joined, 7, 2))
    channels, _ = discover(model)
    layout = tracked_by_name(channels, joined)
    first = channels.sources[0].atoms
    assert layout.atoms[:4].tolist() == first.tolist()
    assert set(layout.atoms[4:].tolist()) == set(channels.fixed_atoms.tolist())
    assert channels.unit_locked[channels.unit_of_atom[layout.atoms[4:]]].all()
    assert not channels.unit_locked[channels.unit_of_atom[first]].any()


def test_flatten_turns_each_channel_into_a_block_of_features() -> None:
    net = Net(shape=(1, 3, 4, 4))
    y = net.op("Flatten", [net.relu(net.conv(net.input, 3, 5))])
    model = net.model(net.gemm(y, 80, 2))
    channels, _ = discover(model)
    layout = tracked_by_name(channels, y)
    assert layout.atoms.tolist() == np.repeat(channels.sources[0].atoms, 16).tolist()
    assert channels.sinks[0].weight_axis == 1  # transB=1: the Gemm weight's columns are input features


def test_depthwise_passes_channels_through_and_updates_group() -> None:
    net = Net()
    y = net.relu(net.conv(net.input, 3, 6))
    dw = net.conv(y, 6, 6, group=6)
    model = net.model(net.conv(net.relu(dw), 6, 2))
    channels, _ = discover(model)
    assert len(channels.sources) == 2  # the depthwise conv opens no space of its own
    assert tracked_by_name(channels, dw).atoms.tolist() == channels.sources[0].atoms.tolist()
    assert [edit.name for edit in channels.attributes] == ["group"]


def test_shape_read_of_batch_is_harmless_but_of_channels_locks() -> None:
    for index, locked in ((0, False), (1, True)):
        net = Net()
        y = net.relu(net.conv(net.input, 3, 4))
        dim = net.op("Gather", [net.op("Shape", [y]), net.const("i", np.array(index, np.int64))], axis=0)
        size = net.op("Cast", [dim], to=onnx.TensorProto.FLOAT)
        model = net.model(size, net.conv(y, 4, 2))
        channels, _ = discover(model)
        first = channels.unit_of_atom[channels.sources[0].atoms]
        assert channels.unit_locked[first].any() == locked
        if locked:
            assert "read at run time" in reasons(channels)


def test_softmax_over_spatial_axis_passes_through() -> None:
    net = Net()
    y = net.op("Softmax", [net.relu(net.conv(net.input, 3, 4))], axis=-1)
    model = net.model(net.conv(y, 4, 2))
    channels, _ = discover(model)
    assert not channels.unit_locked[channels.unit_of_atom[channels.sources[0].atoms]].any()


def test_reduce_over_channels_locks_and_over_space_passes() -> None:
    net = Net()
    y = net.relu(net.conv(net.input, 3, 4))
    spatial = net.op("ReduceMean", [y, net.const("axes", np.array([2, 3], np.int64))], keepdims=1)
    across = net.op("ReduceMax", [y, net.const("axes", np.array([1], np.int64))], keepdims=1)
    model = net.model(net.conv(spatial, 4, 2, k=1, pad=0), across)
    channels, _ = discover(model)
    assert "reduces over the channel axis" in reasons(channels)
    assert tracked_by_name(channels, spatial).size == 4


def test_reshape_that_splits_channels_locks() -> None:
    net = Net(shape=(1, 3, 4, 4))
    y = net.relu(net.conv(net.input, 3, 8))
    shuffled = net.op("Reshape", [y, net.const("shape", np.array([1, 2, 4, 4, 4], np.int64))])
    model = net.model(shuffled)
    channels, _ = discover(model)
    assert "splits or scatters the channel axis" in reasons(channels)


def test_equal_split_gets_explicit_sizes() -> None:
    net = Net()
    y = net.relu(net.conv(net.input, 3, 8))
    left, right = net.op("Split", [y], outputs=2, axis=1, num_outputs=2)
    model = net.model(net.op("Add", [net.conv(left, 4, 3), net.conv(right, 4, 3)]))
    assert_equivalent_by_construction(model, HALF)
    plan = plan_channel_pruning(irx.from_proto(model), HALF)
    split_sizes = [array for (node, index), array in plan.tensors.items() if node.op_type == "Split"]
    assert len(split_sizes) == 1 and split_sizes[0].sum() == 4 and split_sizes[0].min() >= 1


def test_shared_per_channel_constant_is_copied_not_corrupted() -> None:
    net = Net()
    shift = net.const("shift", net.weight(1, 6, 1, 1))
    a = net.op("Add", [net.relu(net.conv(net.input, 3, 6)), shift])
    b = net.op("Add", [net.relu(net.conv(net.input, 3, 6)), shift])
    model = net.model(net.conv(a, 6, 2), net.conv(b, 6, 2))
    # Each branch keeps different channels, so the shared constant must be split into two copies.
    assert_equivalent_by_construction(model, HALF)


def test_discovery_does_not_change_the_model() -> None:
    ir_model = irx.from_proto(residual())
    before = irx.to_proto(ir_model).SerializeToString()
    discover_channel_groups(ir_model)
    plan_channel_pruning(ir_model, ChannelOptions(ratio=0.5))
    assert irx.to_proto(ir_model).SerializeToString() == before


def test_reshape_with_run_time_batch_and_constant_channel_entry() -> None:
    """``x.view(x.size(0), -1)`` as exported with a dynamic batch: Shape -> Gather -> Concat -> Reshape."""
    net = Net(shape=(2, 3, 4, 4))
    y = net.relu(net.conv(net.input, 3, 8))
    batch = net.op("Gather", [net.op("Shape", [y]), net.const("zero", np.array([0], np.int64))], axis=0)
    target = net.op("Concat", [batch, net.const("rest", np.array([-1], np.int64))], axis=0)
    flat = net.op("Reshape", [y, target])
    model = net.model(net.gemm(flat, 8 * 16, 3))
    channels, _ = discover(model)
    assert not channels.unit_locked[channels.unit_of_atom[channels.sources[0].atoms]].any()
    assert_equivalent_by_construction(model, HALF)


def test_reshape_to_minus_one_and_channels_after_a_global_pool_prunes_like_a_flatten() -> None:
    """A Paddle head: ``GlobalAveragePool`` then ``Reshape(x, [-1, C])`` with a symbolic batch, then the dense layer.

    Inference names the Reshape's batch dim anew, so only the target's ``-1``, worked out as the
    input's symbolic batch, shows that the channel axis lands whole in the second axis.
    """
    net = Net(shape=("N", 3, 4, 4))
    pooled = net.op("GlobalAveragePool", [net.relu(net.conv(net.input, 3, 8))])
    flat = net.op("Reshape", [pooled, net.const("target", np.array([-1, 8], np.int64))])
    model = net.model(net.gemm(flat, 8, 3))
    _, ir_model = discover(model)
    batch = next(node for node in ir_model.graph if node.op_type == "Reshape").outputs[0].shape[0]
    assert not isinstance(batch, int) and batch != ir_model.graph.inputs[0].shape[0], (
        "inference is expected to name the batch anew; otherwise this test does not test the resolution"
    )
    channels, _ = discover(model)
    assert not channels.unit_locked[channels.unit_of_atom[channels.sources[0].atoms]].any()
    result = assert_equivalent_by_construction(model, HALF)
    assert removed_channels(result) == 4


def test_a_reshape_whose_output_dims_cannot_be_worked_out_locks_without_claiming_a_split() -> None:
    """A CTC head as Paddle exports it: ``[N, C, 1, W]`` to ``[N, W, C]``, then ``Reshape(x, [-1, C])``.

    The ``-1`` stands for the batch times the width, two symbolic dims that inference names anew as one;
    the group locks, and the reason says the dims could not be matched rather than that channels are split.
    """
    net = Net(shape=("N", 3, 1, "W"))
    features = net.op("Squeeze", [net.relu(net.conv(net.input, 3, 8, k=1)), net.const("axis", np.array([2], np.int64))])
    sequence = net.op("Transpose", [features], perm=[0, 2, 1])
    model = net.model(net.gemm(net.op("Reshape", [sequence, net.const("rows", np.array([-1, 8], np.int64))]), 8, 5, trans_b=0))
    channels, _ = discover(model)
    assert channels.unit_locked[channels.unit_of_atom[channels.sources[0].atoms]].all()
    assert "Reshape" in reasons(channels) and "output dims cannot be matched" in reasons(channels) and "splits" not in reasons(channels)


def test_permute_then_view_with_a_symbolic_batch_prunes_through_the_transposed_flatten() -> None:
    """MTCNN's ``x.permute(0, 3, 2, 1).reshape(x.size(0), -1)`` before its dense layer, batch symbolic.

    Inference leaves the Reshape's output dims unknown; the target's entries (a batch copied from
    the shape, then -1) say channel ``c`` lands at feature ``position * 8 + c``.
    """
    net = Net(shape=("N", 3, 4, 4))
    y = net.relu(net.conv(net.input, 3, 8))
    moved = net.op("Transpose", [y], perm=[0, 3, 2, 1])
    index = net.const("zero", np.array(0, np.int64))
    batch = net.op("Unsqueeze", [net.op("Gather", [net.op("Shape", [moved]), index], axis=0), net.const("axes", np.array([0], np.int64))])
    target = net.op("Concat", [batch, net.const("rest", np.array([-1], np.int64))], axis=0)
    model = net.model(net.gemm(net.op("Reshape", [moved, target]), 16 * 8, 3))
    _, ir_model = discover(model)
    assert [dim if isinstance(dim, int) else None for dim in next(node for node in ir_model.graph if node.op_type == "Reshape").outputs[0].shape] == [
        None,
        None,
    ], "inference is expected to leave these dims unknown; otherwise this test does not test the resolution"
    channels, _ = discover(model)
    assert not channels.unit_locked[channels.unit_of_atom[channels.sources[0].atoms]].any()
    assert_equivalent_by_construction(model, HALF)
