"""Shared fixtures: the shipped sample models and an onnxruntime runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import settings
from onnx import helper, numpy_helper

# CI must be reproducible: the same examples on every run (HYPOTHESIS_PROFILE=explore draws new ones).
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
SAMPLE_MODELS = sorted(MODELS_DIR.glob("*.onnx"))


def run_onnx(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model in onnxruntime on CPU with graph optimisations off (so the model, not the runtime, is compared)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feeds_for(model: onnx.ModelProto, seed: int = 0, shapes: dict[str, list[int]] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input that is not an initializer (unknown dims as 1 unless ``shapes`` says)."""
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = (shapes or {}).get(value.name) or [dim.dim_value or 1 for dim in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[value.name] = np.asarray(rng.random(dims) < 0.5 if dtype == np.bool_ else rng.standard_normal(dims), dtype=dtype)
    return feeds


def make_model(
    nodes: list[onnx.NodeProto],
    initializers: dict[str, np.ndarray],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    opset: int = 17,
) -> onnx.ModelProto:
    """A one-graph model from nodes and named arrays, checked in full so a broken test model fails loudly."""
    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(array, name) for name, array in initializers.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(params=SAMPLE_MODELS, ids=[path.stem for path in SAMPLE_MODELS])
def sample_model(request: pytest.FixtureRequest) -> Path:
    """Each model shipped in models/."""
    return request.param
