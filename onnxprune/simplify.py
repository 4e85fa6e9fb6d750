"""Simplification with onnxsim before pruning.

onnxsim folds weights computed at run time (``Constant``, ``ConstantOfShape``
chains, transposed weights) into plain initializers, which is what the
pruning passes can see and rewrite.  A model onnxsim cannot handle is still
prunable, so a failure is a warning, never the end of the run.
"""

from __future__ import annotations

import contextlib
import io

import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.errors import first_line


def simplify(model: ir.Model) -> tuple[ir.Model, str | None]:
    """Return the simplified model, or the model unchanged and a warning saying why."""
    if irx.needs_external_data(model):
        return model, "simplification skipped: weights are stored outside the protobuf (external data)"
    # Imported here: onnxsim pulls in heavy optional dependencies that runs with --no-simplify never need.
    import onnxsim

    proto = irx.to_proto(model)
    captured = io.StringIO()
    try:
        # onnxsim prints progress of its own; keep the tool's output readable.
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            simplified, ok = onnxsim.simplify(proto, check_n=0)
    except Exception as error:  # onnxsim raises many types (C++ errors surface as RuntimeError and others)
        return model, f"onnxsim could not simplify the model ({first_line(error, 200)}); continuing unsimplified"
    if not ok:
        return model, "onnxsim's own check failed; continuing unsimplified"
    result = irx.from_proto(simplified)
    # onnxsim drops the model-level metadata some applications rely on; keep the original's.
    result.metadata_props.update(model.metadata_props)
    if model.doc_string and not result.doc_string:
        result.doc_string = model.doc_string
    return result, None
