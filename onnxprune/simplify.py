"""Simplification with onnxsim before pruning.

onnxsim folds weights computed at run time (``Constant``, ``ConstantOfShape``
chains, transposed weights) into plain initializers, which is what the
pruning passes can see and rewrite.  A model onnxsim cannot handle is still
prunable, so a failure is a warning, never the end of the run.

The model's interface survives simplification unchanged: onnxsim drops
initializers listed as graph inputs from the inputs (old IR versions list
every weight there, and a caller may feed them), which would turn values fed
at run time into constants, so such a result is declined with a warning; and
it writes the shapes it inferred into the graph outputs' declarations (a
symbolic ``N`` becomes ``1``), so the original declarations are put back.
"""

from __future__ import annotations

import contextlib
import io

import onnx_ir as ir

from onnxprune import ir as irx
from onnxprune.analysis.shapes import declare_interface, interface_declarations
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
    changed = _interface_change(model.graph, result.graph)
    if changed is not None:
        return model, f"onnxsim would {changed}; continuing unsimplified"
    declare_interface(result.graph, interface_declarations(model.graph))
    # onnxsim drops the model-level metadata some applications rely on; keep the original's.
    result.metadata_props.update(model.metadata_props)
    if model.doc_string and not result.doc_string:
        result.doc_string = model.doc_string
    return result, None


def _interface_change(before: ir.Graph, after: ir.Graph) -> str | None:
    """How simplification would change which values the graph takes and gives, or None when it keeps them."""
    kept = {value.name for value in after.inputs}
    dropped = [value for value in before.inputs if value.name not in kept]
    if dropped:
        names = ", ".join(f"'{value.name}'" for value in dropped)
        fed = all(value.is_initializer() for value in dropped)
        return f"drop graph input(s) {names}" + (" (initializers also listed as inputs, which callers may feed at run time)" if fed else "")
    if [value.name for value in before.inputs] != [value.name for value in after.inputs]:
        return "change the graph inputs"
    if [value.name for value in before.outputs] != [value.name for value in after.outputs]:
        return "change the graph outputs"
    return None
