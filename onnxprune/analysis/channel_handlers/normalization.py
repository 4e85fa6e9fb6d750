"""Normalisations: per-channel ones keep their channels (and lose the parameters of removed ones), others must not span them.

BatchNormalization and InstanceNormalization normalise each channel on its
own, with one parameter per channel that goes with the channel.
LayerNormalization and Softmax normalise over a range of axes: removing a
channel inside that range would change every other channel's value, so it
locks; over spatial axes only they pass channels through.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channel_graph import SliceEdit
from onnxprune.analysis.channel_handlers.common import follow, input_at, not_constant_reason, only_first_output_used, positive_axis
from onnxprune.analysis.channel_handlers.registry import Walk, register_channel_handler
from onnxprune.ir import node_label


def _batch_norm(walk: Walk, node: ir.Node) -> None:
    """Inference-mode BN is an affine map per channel: its four parameters are sliced with the channels."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    found = [walk.const_input(node, index) for index in range(1, 5)]
    params = [param for param in found if param is not None]
    if len(params) < 4:
        missing = next(index for index, param in enumerate(found, start=1) if param is None)
        walk.lock(tracked.atoms, f"{node_label(node)} parameter {not_constant_reason(input_at(node, missing))}")
        return
    if not only_first_output_used(node):
        walk.lock(tracked.atoms, f"{node_label(node)} has training outputs")
        return
    if tracked.axis != 1 or any(np.asarray(param).shape != (tracked.size,) for param in params):
        walk.lock(tracked.atoms, f"{node_label(node)} parameters do not match the channels")
        return
    for index in range(1, 5):
        walk.record(SliceEdit(node, index, 0, tracked.atoms))
    scale, bias, mean, var = (np.asarray(param, dtype=np.float64) for param in params)
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    follow(walk, node, tracked, consts=(tracked.consts - mean) / np.sqrt(var + epsilon) * scale + bias)


def _instance_norm(walk: Walk, node: ir.Node) -> None:
    """Scale and bias per channel are sliced; a constant channel normalises to exactly its bias."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    params = [walk.const_input(node, index) for index in (1, 2)]
    missing = next((index for index, param in zip((1, 2), params) if param is None), None)
    if missing is not None:
        walk.lock(tracked.atoms, f"{node_label(node)} parameter {not_constant_reason(input_at(node, missing))}")
        return
    if any(np.asarray(param).shape != (tracked.size,) for param in params) or tracked.axis != 1:
        walk.lock(tracked.atoms, f"{node_label(node)} parameters are not constant per channel")
        return
    for index in (1, 2):
        walk.record(SliceEdit(node, index, 0, tracked.atoms))
    follow(walk, node, tracked, consts=np.where(np.isnan(tracked.consts), np.nan, np.asarray(params[1], dtype=np.float64)))


def _layer_norm(walk: Walk, node: ir.Node) -> None:
    """Normalises over the axes from ``axis`` on: passes only when the channels lie before them."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    axis = positive_axis(node.attributes.get_int("axis", -1), tracked.rank)
    if axis <= tracked.axis or not only_first_output_used(node):
        walk.lock(tracked.atoms, f"{node_label(node)} normalises across the channel axis")
        return
    follow(walk, node, tracked, consts=np.full(tracked.size, np.nan))


def _softmax(walk: Walk, node: ir.Node) -> None:
    """Opset 13 normalises over one axis; before, over every axis from ``axis`` on (the input seen as 2-D)."""
    tracked = walk.first_tracked_only(node)
    if tracked is None:
        return
    axis = positive_axis(node.attributes.get_int("axis", -1 if walk.opset >= 13 else 1), tracked.rank)
    covers_channels = axis == tracked.axis if walk.opset >= 13 else axis <= tracked.axis
    if covers_channels:
        walk.lock(tracked.atoms, f"{node_label(node)} normalises across the channel axis")
        return
    follow(walk, node, tracked, consts=np.full(tracked.size, np.nan))


register_channel_handler("BatchNormalization", _batch_norm)
register_channel_handler("InstanceNormalization", _instance_norm)
register_channel_handler("LayerNormalization", _layer_norm)
register_channel_handler(("Softmax", "LogSoftmax"), _softmax)
