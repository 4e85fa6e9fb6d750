"""onnxruntime sessions and model inputs, shared by validation and timing.

Validation runs with graph optimisations off so that differences come from the
model, not from the runtime rewriting it; timing runs with them on, because
that is what a deployment gets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import ir as irx
from onnxprune.errors import InputError, first_line


@dataclass(frozen=True)
class InputSpec:
    """A graph input with every dimension resolved to a number."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def make_session(model: ir.Model, *, optimize: bool, threads: int = 1) -> ort.InferenceSession:
    """A CPU session for ``model``; models too big for one protobuf go through a file."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        if irx.needs_external_data(model):
            with irx.temporary_file(model) as path:
                return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return ort.InferenceSession(
            irx.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError, ValueError) as error:
        # onnxruntime reports graph errors as its own exception types with long messages.
        raise InputError(f"onnxruntime cannot load the model: {first_line(error)}") from None


def run(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run once and return outputs by name."""
    names = [output.name for output in session.get_outputs()]
    try:
        results = session.run(names, dict(feeds))
    except Exception as error:  # onnxruntime raises its own Fail/InvalidArgument types
        raise InputError(f"onnxruntime failed to run the model: {first_line(error)}") from None
    return dict(zip(names, results))


def sample_count(feeds: Mapping[str, np.ndarray]) -> int:
    """Samples in one feed dict: the leading dim its inputs share (1 for a feed of scalars)."""
    return min((len(array) for array in feeds.values() if np.ndim(array)), default=1)


def input_specs(
    model: ir.Model,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> list[InputSpec]:
    """Resolve every graph input to a concrete shape.

    Symbolic dims come from ``shapes`` (``--input-shape NAME=1,3,224,224``),
    which give an input's whole shape.  Failing that they come from
    ``data_shapes``, the shape of one batch of calibration data
    (:meth:`onnxprune.calibration.CalibrationData.shapes`): it fills only the
    dims the model leaves symbolic (a batch declared ``-1`` or named, the H/W
    of a Paddle export), so data gives real shapes with no ``--input-shape``.
    Without either, a leading symbolic dim is taken as the batch and set to
    1.  Any other unknown dim is an error that names it, since guessing would
    validate on inputs the user never meant.  A dim declared as a negative
    number (``-1``, as some exporters write) counts as symbolic.
    """
    shapes = dict(shapes or {})
    data_shapes = dict(data_shapes or {})
    names = {value.name for value in model.graph.inputs if value.name}
    for name in shapes:
        if name not in names:
            raise InputError(f"--input-shape names '{name}', which is not a graph input (inputs: {', '.join(sorted(names))})")
    for name in data_shapes:
        if name not in names:
            raise InputError(f"calibration data names '{name}', which is not a graph input (inputs: {', '.join(sorted(names))})")
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        # Serialised, an unnamed input is named "", which is what onnxruntime would be fed under.
        name = value.name or ""
        if not isinstance(value.type, ir.TensorType) or value.dtype is None:
            raise InputError(f"input '{name}' is not a tensor; only tensor inputs are supported")
        dtype = value.dtype.numpy()
        if name in shapes:
            shape = tuple(shapes[name])
            if value.shape is not None and len(shape) != len(value.shape):
                raise InputError(f"--input-shape {name}: rank {len(shape)} given, the model's input has rank {len(value.shape)}")
            specs.append(InputSpec(name, shape, dtype))
            continue
        if name in data_shapes:
            specs.append(InputSpec(name, _filled_from_data(name, value.shape, tuple(data_shapes[name])), dtype))
            continue
        if value.shape is None:
            raise InputError(f"input '{name}' has no declared shape; give one with --input-shape {name}=D0,D1,...")
        dims = []
        for axis, dim in enumerate(value.shape):
            static = _static(dim)
            if static is not None:
                dims.append(static)
            elif axis == 0:
                dims.append(1)
            else:
                raise InputError(f"input '{name}' dim {axis} is symbolic ('{dim}'); give it with --input-shape {name}=D0,D1,...")
        specs.append(InputSpec(name, tuple(dims), dtype))
    return specs


def _static(dim: int | ir.SymbolicDim) -> int | None:
    """A declared dim's size, or None when it is symbolic (a name, unknown, or negative)."""
    return dim if isinstance(dim, int) and dim >= 0 else None


def _filled_from_data(name: str, declared: ir.Shape | None, data: tuple[int, ...]) -> tuple[int, ...]:
    """The declared shape with its symbolic dims taken from the data's."""
    if declared is None:
        return data
    if len(data) != len(declared):
        raise InputError(f"calibration data: '{name}' has rank {len(data)}, the model's input has rank {len(declared)}")
    statics = [_static(dim) for dim in declared]
    return tuple(given if static is None else static for static, given in zip(statics, data))


def random_inputs(specs: list[InputSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs per dtype: normal floats, small non-negative integers, random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        # np.asarray: for a scalar input (shape ()) numpy returns a scalar, which onnxruntime rejects.
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = np.asarray(rng.standard_normal(spec.shape), dtype=spec.dtype)
        elif np.issubdtype(spec.dtype, np.integer):
            feeds[spec.name] = np.asarray(rng.integers(0, 8, spec.shape), dtype=spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = np.asarray(rng.random(spec.shape) < 0.5)
        else:
            raise InputError(f"input '{spec.name}' has dtype {spec.dtype}, which cannot be generated; pass --inputs FILE.npz")
    return feeds


def load_npz_inputs(path: str | os.PathLike, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """Inputs from an npz whose keys are the graph's input names (extra keys such as ``labels`` are ignored)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable .npz file ({first_line(error, 200)})") from None
    with archive:
        feeds = {}
        for spec in specs:
            if spec.name not in archive.files:
                raise InputError(f"{path}: no array named '{spec.name}' (the model's input); keys: {', '.join(archive.files)}")
            array = archive[spec.name]
            if array.dtype != spec.dtype:
                raise InputError(f"{path}: '{spec.name}' has dtype {array.dtype}, the model wants {spec.dtype}")
            feeds[spec.name] = array
    return feeds

