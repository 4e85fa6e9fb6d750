"""Per-op channel handlers: how channel indices map through each op, what it must rewrite, why it locks.

One module per op family registers its handlers on import:
:mod:`~.elementwise` (activations, residual merges, per-channel scales),
:mod:`~.normalization`, :mod:`~.spatial` (pools, reductions, Resize, Pad),
:mod:`~.layout` (Concat, Split, Slice, Transpose, Squeeze, Unsqueeze),
:mod:`~.reshape` (Flatten, Reshape, Shape) and :mod:`~.weights` (Conv,
ConvTranspose, Gemm, MatMul as sinks and sources).  The interface and the
registry are in :mod:`~.registry`.

Teaching onnxprune an op, e.g. a custom-domain activation::

    from onnxprune.analysis.channel_handlers import register_elementwise_unary
    register_elementwise_unary("FastGelu", domain="com.microsoft")

or any op with ``register_channel_handler(op_types, handler, domain)``,
where ``handler(walk: Walk, node) -> None`` maps the channels of its inputs
to its outputs through ``walk`` (see :class:`Walk`).
"""

from onnxprune.analysis.channel_graph import Tracked

# The family modules register the built-in handlers when they are imported.
from onnxprune.analysis.channel_handlers import layout, normalization, reshape, spatial, weights  # noqa: F401
from onnxprune.analysis.channel_handlers.elementwise import register_elementwise_unary
from onnxprune.analysis.channel_handlers.registry import (
    ChannelHandler,
    Walk,
    channel_handler,
    register_channel_handler,
    unregister_channel_handler,
)

__all__ = [
    "ChannelHandler",
    "Tracked",
    "Walk",
    "channel_handler",
    "register_channel_handler",
    "register_elementwise_unary",
    "unregister_channel_handler",
]
