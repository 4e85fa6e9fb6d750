"""onnxprune: prune ONNX models (weights, channels, layers), then validate and time the result.

The public API mirrors the command line::

    import onnxprune
    result = onnxprune.prune("model.onnx", channel_ratio=0.5)
    print(result.report["speedup"])
    result.save("model.pruned.onnx")
"""

__version__ = "0.1.0"

from onnxprune.analysis.cost import Cost, model_cost
from onnxprune.bench import Timing, benchmark
from onnxprune.config import PruneConfig
from onnxprune.errors import InputError, OnnxPruneError, QualityGateError
from onnxprune.ir import load, save
from onnxprune.pipeline import PruneResult, prune
from onnxprune.validate import InputSource, Validation, validate

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
