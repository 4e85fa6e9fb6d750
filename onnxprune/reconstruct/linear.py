"""A weight layer seen as a matrix: rows of input features in, one column per output channel out.

Least-squares reconstruction treats Conv, Gemm and MatMul alike: each output
value is ``W @ features + b``, where the features are an im2col patch (Conv),
an input row (Gemm, MatMul).  :class:`LinearLayer` gives that view of one
node: its weight as a ``(outputs, features)`` matrix, the feature rows of a
data-input array at chosen positions, and how a refit matrix is written back
into the node's own layout (Gemm's ``transB``/``alpha``/``beta``, a Conv
without a bias input).  Layers it cannot express so are refused with the
reason, which the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.weight_ops import weight_op


@dataclass(frozen=True)
class LinearLayer:
    """One refittable weight layer; ``kind`` is ``"conv"``, ``"dense"``, ``"depthwise"`` or ``"upsample"``.

    A depthwise conv is one small layer per channel: its ``weight`` is
    ``(channels, k·k)``, its feature rows ``(rows, channels, k·k)``, and each
    channel is fit on its own input channel only.  An upsampling
    ConvTranspose whose kernel equals its stride maps every input pixel to
    its own output block: a dense layer from ``C_in`` features to
    ``C_out·k·k`` outputs, one row per input pixel; its bias (one per output
    channel, shared by the block) stays as it is and is left out of the fit.
    """

    node: ir.Node
    kind: str
    weight: np.ndarray
    """float64, ``(outputs, features)``, the product the op computes (Gemm's ``alpha`` included)."""
    bias: np.ndarray | None
    """float64, ``(outputs,)``, as added (Gemm's ``beta`` included); None for a layer that cannot take one."""
    channels: np.ndarray | None = None
    """Depthwise only: the input channels that feed the kept outputs (None: all)."""

    @property
    def data(self) -> ir.Value:
        """The data input the features come from."""
        value = self.node.inputs[0]
        assert value is not None
        return value

    @property
    def features(self) -> int:
        return self.weight.shape[1]

    def with_outputs(self, rows: np.ndarray) -> LinearLayer:
        """The same layer restricted to output channels ``rows`` (what a pruned layer still computes)."""
        channels = rows if self.kind == "depthwise" else None
        if self.kind == "upsample":
            block = self.weight.shape[0] // _output_channels(self.node)
            rows = (rows[:, None] * block + np.arange(block)).ravel()
        return replace(self, weight=self.weight[rows], bias=None if self.bias is None else self.bias[rows], channels=channels)

    def outputs(self, rows: np.ndarray) -> np.ndarray:
        """What the layer computes from feature rows (as :meth:`rows` gives them): ``(rows, outputs)``."""
        product = np.einsum("nck,ck->nc", rows, self.weight) if self.kind == "depthwise" else rows @ self.weight.T
        return product if self.bias is None else product + self.bias

    def positions(self, data_shape: tuple[int, ...], limit: int, rng: np.random.Generator) -> np.ndarray:
        """Which output positions to sample from one batch: at most ``limit`` row indices.

        For a Conv a row is ``(sample, output y, output x)`` flattened; for a
        dense layer it is a row of the (flattened) input.  The same positions
        are used for the pruned and the original model's inputs, so their
        rows correspond.
        """
        count = self._row_count(data_shape)
        if count <= limit:
            return np.arange(count)
        return np.sort(rng.choice(count, size=limit, replace=False))

    def rows(self, data: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The feature rows (float64, ``(len(positions), features)``) of ``data`` at ``positions``."""
        if self.kind == "dense":
            matrix = data.T if self._transposed_input else data
            return np.asarray(matrix.reshape(-1, matrix.shape[-1])[positions], dtype=np.float64)
        if self.kind == "depthwise":
            data = data if self.channels is None else data[:, self.channels]
            return _conv_patches(self.node, data, positions).reshape(len(positions), data.shape[1], -1)
        if self.kind == "upsample":
            return np.asarray(np.moveaxis(data, 1, -1).reshape(-1, data.shape[1])[positions], dtype=np.float64)
        return _conv_patches(self.node, data, positions)

    def write(self, weight: np.ndarray, bias: np.ndarray | None, graph: ir.Graph) -> None:
        """Store a refit ``(outputs, features)`` weight and bias in the node's own layout and dtype."""
        node = self.node
        weight_value = node.inputs[1]
        assert weight_value is not None
        original = irx.constant_array(weight_value)
        assert original is not None
        if node.op_type == "Conv":
            stored = weight.reshape(original.shape)
        elif node.op_type == "ConvTranspose":
            stored = weight.T.reshape(weight.shape[1], -1, *original.shape[2:])
        elif node.op_type == "Gemm":
            stored = weight / node.attributes.get_float("alpha", 1.0)
            stored = stored if node.attributes.get_int("transB", 0) else stored.T
        else:
            stored = weight.T
        _store(node, 1, stored.astype(original.dtype), graph)
        if bias is None:
            return
        scale = node.attributes.get_float("beta", 1.0) if node.op_type == "Gemm" else 1.0
        current = irx.constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
        shape = current.shape if current is not None and current.size == bias.size else (bias.size,)
        _store(node, 2, (bias / scale).reshape(shape).astype(original.dtype), graph)

    @property
    def _transposed_input(self) -> bool:
        """Gemm with ``transA``: the rows are the input's columns."""
        return self.node.op_type == "Gemm" and bool(self.node.attributes.get_int("transA", 0))

    def _row_count(self, data_shape: tuple[int, ...]) -> int:
        if self.kind == "dense":
            return data_shape[1] if self._transposed_input else int(np.prod(data_shape[:-1]))
        if self.kind == "upsample":
            return int(np.prod(data_shape)) // data_shape[1]
        batch, _, *spatial = data_shape
        return batch * int(np.prod(_conv_output_spatial(self.node, tuple(spatial))))


def linear_layer(node: ir.Node) -> LinearLayer | str:
    """The matrix view of ``node``, or the reason it has none."""
    op = weight_op(node)
    if op is None:
        return f"{node.op_type} layers are not refit"
    weight_value = node.inputs[1] if len(node.inputs) > 1 else None
    if weight_value is None or not irx.is_constant(weight_value) or node.inputs[0] is None:
        return "its weight is not a constant input 1"
    weight = irx.constant_array(weight_value)
    assert weight is not None
    if not np.issubdtype(weight.dtype, np.floating):
        return f"its weight is {weight.dtype}, not floating point"
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    if bias_value is not None and not irx.is_constant(bias_value):
        return "its bias is not a constant"
    bias = None if bias_value is None else np.asarray(irx.constant_array(bias_value), dtype=np.float64)
    matrix = np.asarray(weight, dtype=np.float64)
    if node.op_type == "Conv":
        return _conv_layer(node, matrix, bias)
    if node.op_type == "ConvTranspose":
        return _upsample_layer(node, matrix)
    if node.op_type == "Gemm":
        return _gemm_layer(node, matrix, bias)
    if matrix.ndim != 2:
        return "a MatMul weight of rank other than 2 is not refit"
    return LinearLayer(node, "dense", matrix.T, None)


def _conv_layer(node: ir.Node, weight: np.ndarray, bias: np.ndarray | None) -> LinearLayer | str:
    if weight.ndim != 4:
        return f"a {weight.ndim - 2}-d convolution is not refit (2-d only)"
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "convolutions with auto_pad SAME_* are not refit"
    outputs, group = weight.shape[0], node.attributes.get_int("group", 1)
    bias = np.zeros(outputs) if bias is None else bias
    if group == 1:
        return LinearLayer(node, "conv", weight.reshape(outputs, -1), bias)
    if group == outputs and weight.shape[1] == 1:
        return LinearLayer(node, "depthwise", weight.reshape(outputs, -1), bias)
    return "a grouped convolution (other than depthwise with one filter per channel) is not refit"


def _upsample_layer(node: ir.Node, weight: np.ndarray) -> LinearLayer | str:
    """A ConvTranspose whose kernel tiles its output (kernel = stride, no padding, groups or dilation)."""
    attributes = node.attributes
    kernel = list(weight.shape[2:])
    plain = (
        attributes.get_int("group", 1) == 1
        and list(attributes.get_ints("strides", [1] * len(kernel))) == kernel
        and not any(attributes.get_ints("pads", [0]))
        and all(dilation == 1 for dilation in attributes.get_ints("dilations", [1]))
        and not any(attributes.get_ints("output_padding", [0]))
        and "output_shape" not in attributes
        and attributes.get_string("auto_pad", "NOTSET") == "NOTSET"
    )
    if not plain:
        return "only a ConvTranspose whose kernel equals its stride (no padding, groups or dilation) is refit"
    return LinearLayer(node, "upsample", weight.reshape(weight.shape[0], -1).T, None)


def _output_channels(node: ir.Node) -> int:
    weight = irx.constant_array(node.inputs[1])
    assert weight is not None
    return int(weight.shape[1]) * node.attributes.get_int("group", 1)


def _gemm_layer(node: ir.Node, weight: np.ndarray, bias: np.ndarray | None) -> LinearLayer | str:
    alpha, beta = node.attributes.get_float("alpha", 1.0), node.attributes.get_float("beta", 1.0)
    matrix = alpha * (weight if node.attributes.get_int("transB", 0) else weight.T)
    outputs = matrix.shape[0]
    if bias is None:
        return LinearLayer(node, "dense", matrix, np.zeros(outputs))
    if beta == 0.0 or bias.size not in (1, outputs) or (bias.ndim == 2 and bias.shape[0] != 1):
        return "its bias C is not one value per output feature"
    return LinearLayer(node, "dense", matrix, beta * np.broadcast_to(bias.reshape(-1), (outputs,)).copy())


def _conv_geometry(node: ir.Node) -> tuple[list[int], list[int], list[int], list[int]]:
    """Kernel, strides, dilations and pads (top, left, bottom, right) of a 2-d Conv."""
    weight = irx.constant_array(node.inputs[1])
    assert weight is not None
    kernel = list(weight.shape[2:])
    strides = list(node.attributes.get_ints("strides", [1, 1]))
    dilations = list(node.attributes.get_ints("dilations", [1, 1]))
    pads = list(node.attributes.get_ints("pads", [0, 0, 0, 0]))
    return kernel, strides, dilations, pads


def _conv_output_spatial(node: ir.Node, spatial: tuple[int, ...]) -> list[int]:
    kernel, strides, dilations, pads = _conv_geometry(node)
    return [
        (spatial[axis] + pads[axis] + pads[axis + 2] - dilations[axis] * (kernel[axis] - 1) - 1) // strides[axis] + 1
        for axis in range(2)
    ]


def _conv_patches(node: ir.Node, data: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """im2col at the sampled output positions, features ordered like the weight's ``(C, kh, kw)``."""
    kernel, strides, dilations, pads = _conv_geometry(node)
    _, channels, *spatial = data.shape
    out_h, out_w = _conv_output_spatial(node, tuple(spatial))
    padded = np.pad(data, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    sample, rest = np.divmod(positions, out_h * out_w)
    y, x = np.divmod(rest, out_w)
    rows_y = (y * strides[0])[:, None] + np.arange(kernel[0]) * dilations[0]
    rows_x = (x * strides[1])[:, None] + np.arange(kernel[1]) * dilations[1]
    patches = padded[sample[:, None, None, None], np.arange(channels)[None, :, None, None], rows_y[:, None, :, None], rows_x[:, None, None, :]]
    return np.asarray(patches.reshape(len(positions), -1), dtype=np.float64)


def _store(node: ir.Node, index: int, array: np.ndarray, graph: ir.Graph) -> None:
    """Put ``array`` into input ``index``: in place when only this node reads it, else as a new initializer."""
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is not None and irx.is_private_constant(value, graph):
        irx.set_constant(value, array)
        return
    hint = f"{node.name or node.op_type}_refit_{'weight' if index == 1 else 'bias'}"
    new_value = irx.add_initializer(graph, hint, array)
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new_value)
