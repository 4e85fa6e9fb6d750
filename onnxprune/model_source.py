"""The models the Python API accepts: a path, an ``onnx.ModelProto`` or an ``onnx_ir.Model``.

Every public entry point (``prune``, ``validate``, ``benchmark``,
``model_cost``) reads its model arguments through :func:`read_model`, so they
accept the same three forms and refuse anything else with one clear line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import onnx
import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.errors import InputError, first_line

ModelLike = Union[str, "os.PathLike[str]", onnx.ModelProto, ir.Model]
"""A model as the Python API takes it."""


def read_model(model: ModelLike, check: bool = True) -> tuple[ir.Model, Path | None]:
    """``model`` in the graph IR, and the file it was read from (None for an in-memory model).

    An ``ir.Model`` is returned as given; callers that change a model work on
    a copy.  A ``ModelProto`` is checked like a file (``check=False`` skips
    that for a candidate whose checker failure is itself the verdict) and
    converted; the caller's protobuf is never modified.
    """
    if isinstance(model, ir.Model):
        return model, None
    if isinstance(model, onnx.ModelProto):
        if check:
            _check_proto(model)
        return irx.from_proto(model), None
    if isinstance(model, (str, os.PathLike)):
        return irx.load(model, check=check), Path(model)
    raise InputError(f"expected a model path, an onnx.ModelProto or an onnx_ir.Model, got {type(model).__name__}")


def _check_proto(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as error:
        raise InputError(f"the given ModelProto fails onnx.checker ({first_line(error)})") from None
