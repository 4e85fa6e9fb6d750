"""Intermediate values of a model, computed by onnxruntime on calibration batches.

onnxruntime only returns graph outputs, so a copy of the model is made whose
outputs are the wanted values and from which every node they do not need is
removed: the session computes exactly what is read, and nothing downstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxprune import runtime


class ValueReader:
    """Computes ``values`` of ``model`` (found by name) for a feed dict."""

    def __init__(self, model: ir.Model, values: Sequence[ir.Value]) -> None:
        self.names = [_name(value) for value in values]
        copy = model.clone()
        by_name = {value.name: value for node in copy.graph for value in node.outputs}
        inputs = {value.name: value for value in copy.graph.inputs}
        self.from_feeds = [name for name in self.names if name in inputs and name not in by_name]
        wanted = list(dict.fromkeys(name for name in self.names if name in by_name))
        copy.graph.outputs.clear()
        for name, original in zip(self.names, values):
            if name in by_name and name in wanted:
                value = by_name[name]
                if value.type is None:
                    value.type = original.type or ir.TensorType(ir.DataType.FLOAT)
                copy.graph.outputs.append(value)
                wanted.remove(name)
        RemoveUnusedNodesPass()(copy)
        self.session = runtime.make_session(copy, optimize=True, threads=0) if len(copy.graph.outputs) else None

    def read(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The values for one batch, in the order they were asked for."""
        results = runtime.run(self.session, feeds) if self.session is not None else {}
        return [np.asarray(feeds[name]) if name in self.from_feeds else results[name] for name in self.names]


def _name(value: ir.Value) -> str:
    assert value.name, "values read from a model must be named"
    return value.name
