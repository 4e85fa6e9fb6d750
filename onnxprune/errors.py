"""Error types that map to the command line's exit codes.

A user mistake (a missing file, a bad option, a model that is not ONNX) must
end in a one-line message and exit code 2, never a traceback; a failed quality
check ends in exit code 1.  Keeping the distinction in the exception type lets
the API raise and the CLI translate without string matching.
"""

from __future__ import annotations


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose."""

    exit_code = 2


class InputError(OnnxPruneError):
    """Bad input: an unreadable or invalid model, a bad option or config value."""

    exit_code = 2


class QualityGateError(OnnxPruneError):
    """The pruned model failed validation or a quality gate."""

    exit_code = 1


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (or its type name), for one-line user messages.

    onnx, onnxruntime and onnxsim raise multi-line messages; a user error must
    stay on one line.
    """
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
