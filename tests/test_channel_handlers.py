"""The channel-handler registry: unknown ops lock, a registered handler makes them prunable, duplicates are refused."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from onnxprune import ir as irx
from onnxprune.analysis.channel_handlers import (
    ChannelHandler,
    Tracked,
    Walk,
    channel_handler,
    register_channel_handler,
    register_elementwise_unary,
    unregister_channel_handler,
)
from onnxprune.analysis.dependency_walk import discover_channel_groups
from onnxprune.errors import InputError
from onnxprune.passes.channels import plan_channel_pruning
from tests.test_channels import HALF, Net

DOMAIN = "custom.ops"


def mystery_model() -> onnx.ModelProto:
    """conv (8 channels) -> Relu -> custom.ops.Mystery -> conv: the first conv's channels all pass the custom op."""
    net = Net(seed=21)
    net.extra_opsets.append(helper.make_opsetid(DOMAIN, 1))
    y = net.op("Mystery", [net.relu(net.conv(net.input, 3, 8))], domain=DOMAIN)
    return net.model(net.conv(y, 8, 4))


def first_conv_units(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Whether each channel of the first conv is locked, and the lock reasons of its units."""
    channels = discover_channel_groups(irx.from_proto(model))
    units = channels.units_of(channels.sources[0].atoms)
    return units, channels.unit_locked[units], channels.lock_reasons(units)


def pass_through(walk: Walk, node: ir.Node) -> None:
    """A handler written against the Walk interface: channels pass, their constant values become unknown."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    walk.touch(node, tracked.atoms)
    walk.track(node.outputs[0], Tracked(tracked.axis, tracked.rank, tracked.atoms, np.full(tracked.size, np.nan)))


@pytest.fixture
def mystery_handler() -> Iterator[ChannelHandler]:
    """``custom.ops.Mystery`` handled as a pass-through for one test, then forgotten again."""
    register_channel_handler("Mystery", pass_through, domain=DOMAIN)
    try:
        yield pass_through
    finally:
        unregister_channel_handler("Mystery", domain=DOMAIN)


def test_custom_domain_op_without_handler_locks_with_reason() -> None:
    assert channel_handler("Mystery", DOMAIN) is None
    _, locked, reasons = first_conv_units(mystery_model())
    assert locked.all()
    assert any("custom.ops.Mystery" in reason and "does not know how to prune through" in reason for reason in reasons)


def test_registered_handler_makes_custom_op_channels_prunable(mystery_handler: ChannelHandler) -> None:
    _, locked, reasons = first_conv_units(mystery_model())
    assert not locked.any() and reasons == []
    plan = plan_channel_pruning(irx.from_proto(mystery_model()), HALF)
    first = next(group for group in plan.groups if group.channels_before == 8)
    assert first.channels_after < first.channels_before


def test_unregistering_an_op_without_handler_is_refused() -> None:
    with pytest.raises(InputError, match="no channel handler is registered for Mystery"):
        unregister_channel_handler("Mystery", domain=DOMAIN)


def test_duplicate_registration_is_refused_unless_replacing(mystery_handler: ChannelHandler) -> None:
    def other(walk: Walk, node: ir.Node) -> None:
        walk.lock_inputs(node, "other handler")

    with pytest.raises(InputError, match=r"already registered for Mystery in domain 'custom.ops'; pass replace=True"):
        register_channel_handler("Mystery", other, domain=DOMAIN)
    assert channel_handler("Mystery", DOMAIN) is mystery_handler
    register_channel_handler("Mystery", other, domain=DOMAIN, replace=True)
    assert channel_handler("Mystery", DOMAIN) is other
    _, locked, reasons = first_conv_units(mystery_model())
    assert locked.all() and "other handler" in reasons


def test_builtin_ops_are_refused_too_and_nothing_is_half_registered() -> None:
    with pytest.raises(InputError, match="already registered for Relu"):
        register_channel_handler(["Mystery", "Relu"], pass_through)
    with pytest.raises(InputError, match="already registered for Conv"):
        register_channel_handler("Conv", pass_through, domain="ai.onnx")  # the same domain as ""
    assert channel_handler("Mystery") is None


def test_elementwise_unary_registration_is_one_line() -> None:
    register_elementwise_unary("Mystery", domain=DOMAIN)
    try:
        _, locked, _ = first_conv_units(mystery_model())
        assert not locked.any()
    finally:
        unregister_channel_handler("Mystery", domain=DOMAIN)


def test_registration_needs_names_and_a_callable() -> None:
    with pytest.raises(InputError):
        register_channel_handler([], pass_through)
    with pytest.raises(InputError):
        register_channel_handler("Mystery", "not a handler", domain=DOMAIN)  # type: ignore[arg-type]
    assert channel_handler("Mystery", DOMAIN) is None
