"""Property: on random conv graphs, channel pruning is valid, keeps the interface, and is exact by construction.

The graphs mix the shapes that make channel pruning hard: residual merges,
channel concatenation, depthwise convolutions, pooling and a flatten into a
Gemm head.  Every drawn model is checked with ``onnx.checker`` (full check),
run in onnxruntime, and compared with its channel-zeroed twin
(see :func:`tests.test_channels.assert_equivalent_by_construction`).
"""

from __future__ import annotations

import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxprune.options import ChannelOptions
from tests.test_channels import Net, assert_equivalent_by_construction

BLOCKS = ("conv", "bn", "residual", "concat", "depthwise", "pool")


@st.composite
def conv_graphs(draw) -> onnx.ModelProto:
    net = Net(seed=draw(st.integers(0, 2**16)))
    channels, side = draw(st.integers(2, 10)), 8
    x = net.relu(net.conv(net.input, 3, channels))
    for block in draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5)):
        if block == "conv":
            out = draw(st.integers(2, 12))
            x, channels = net.relu(net.conv(x, channels, out, k=draw(st.sampled_from([1, 3])))), out
        elif block == "bn":
            x = net.relu(net.bn(x, channels))
        elif block == "residual":
            inner = draw(st.integers(2, 10))
            branch = net.conv(net.relu(net.conv(x, channels, inner)), inner, channels)
            x = net.relu(net.op("Add", [x, branch]))
        elif block == "concat":
            left, right = draw(st.integers(2, 8)), draw(st.integers(2, 8))
            parts = [net.relu(net.conv(x, channels, left, k=1)), net.relu(net.conv(x, channels, right))]
            x, channels = net.op("Concat", parts, axis=1), left + right
        elif block == "depthwise":
            x = net.relu(net.conv(x, channels, channels, group=channels))
        elif side >= 4:
            x, side = net.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), side // 2
    gemm_head = draw(st.booleans())
    return net.model(net.gemm(net.op("Flatten", [x]), channels * side * side, 5) if gemm_head else net.conv(x, channels, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=conv_graphs(),
    ratio=st.sampled_from([0.25, 0.5, 0.75]),
    global_ranking=st.booleans(),
    round_to=st.sampled_from([1, 2, 4]),
)
def test_random_graphs_prune_exactly(model: onnx.ModelProto, ratio: float, global_ranking: bool, round_to: int) -> None:
    options = ChannelOptions(ratio=ratio, global_ranking=global_ranking, round_to=round_to)
    assert_equivalent_by_construction(model, options, seeds=(0, 1))
