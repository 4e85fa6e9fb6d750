"""onnxprune: prune ONNX models (weights, channels, layers), then validate and time the result.

The public API mirrors the command line::

    import onnxprune
    result = onnxprune.prune("model.onnx", channel_ratio=0.5)
    print(result.report["speedup"])
    result.save("model.pruned.onnx")
"""

__version__ = "0.1.0"

from onnxprune.analysis.cost import Cost, model_cost  # noqa: E402
from onnxprune.bench import Timing, benchmark  # noqa: E402
from onnxprune.config import PruneConfig  # noqa: E402
from onnxprune.errors import InputError, OnnxPruneError, QualityGateError  # noqa: E402
from onnxprune.ir import load, save  # noqa: E402
from onnxprune.pipeline import PruneResult, prune  # noqa: E402
from onnxprune.validate import InputSource, Validation, validate  # noqa: E402

__all__ = [
    "Cost",
    "InputError",
    "InputSource",
    "OnnxPruneError",
    "PruneConfig",
    "PruneResult",
    "QualityGateError",
    "Timing",
    "Validation",
    "__version__",
    "benchmark",
    "load",
    "model_cost",
    "prune",
    "save",
    "validate",
]
