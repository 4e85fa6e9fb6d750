"""Intermediate values of a model, computed by onnxruntime on calibration batches.

onnxruntime only returns graph outputs, so a copy of the model is made whose
outputs are the wanted values and from which every node they do not need is
removed: the session computes exactly what is read, and nothing downstream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxprune import runtime

Feeds = dict[str, np.ndarray]
"""One onnxruntime feed: graph input name -> array, first axis = samples."""

MIN_ROWS = 2048
"""Rows every fit takes beyond its per-feature share: small layers still see a spread of positions and samples."""

SAMPLES_PER_READ = 8
"""Samples per onnxruntime run when reading intermediate values: every value read is held for a whole run, and
a detector's feature maps for 32 samples at 640x640 take gigabytes, for 8 a few hundred megabytes."""


def in_chunks(model: ir.Model, batches: Sequence[Mapping[str, np.ndarray]], samples: int = SAMPLES_PER_READ) -> list[dict[str, np.ndarray]]:
    """The same samples in batches of at most ``samples``, where ``model``'s batch dim is free to change.

    Every input's first axis is the sample axis; a model whose inputs fix
    their batch size gets its batches as they are.
    """
    if any(value.shape is None or not len(value.shape) or _fixed(value.shape[0]) for value in model.graph.inputs if not value.is_initializer()):
        return [dict(feeds) for feeds in batches]
    chunks = []
    for feeds in batches:
        count = runtime.sample_count(feeds)
        for start in range(0, count, samples):
            chunks.append({name: array[start : start + samples] if np.ndim(array) else array for name, array in feeds.items()})
    return chunks


MIN_SAMPLES = 128
"""Samples a fit reads at least (when there are that many): layers with many rows per sample reach their row
budget within a few samples, but rows from more samples cover the data's variety (on PP-OCR rec at 1.8x fewer
MACs, reading 64 samples instead of all 192 cost 4 points of exact match)."""


@dataclass(frozen=True)
class RowBudget:
    """How many feature rows a layer's fit takes in all, and at most from one chunk of samples."""

    total: int
    per_chunk: int


def row_budget(total: int, chunks: Sequence[Mapping[str, np.ndarray]]) -> RowBudget:
    """Spread ``total`` rows over enough chunks to read :data:`MIN_SAMPLES` samples (or all there are)."""
    samples = runtime.sample_count(chunks[0]) if chunks else 1
    spread = min(len(chunks), max(1, math.ceil(MIN_SAMPLES / samples)))
    return RowBudget(total, math.ceil(total / spread))


def shuffled(chunks: Sequence[Mapping[str, np.ndarray]], rng: np.random.Generator) -> list[Mapping[str, np.ndarray]]:
    """The chunks in a seeded random order: a fit that stops early still sees a spread of the data (files are often sorted by class)."""
    return [chunks[index] for index in rng.permutation(len(chunks))]


def _fixed(dim: int | ir.SymbolicDim) -> bool:
    """A declared size (some exporters write -1 for a free dim)."""
    return isinstance(dim, int) and dim >= 0


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
