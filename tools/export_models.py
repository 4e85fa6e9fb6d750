"""Regenerate the sample models in ``models/`` from the nets in ``tools/sample_nets.py``.

    python tools/export_models.py [--out models]

Every random draw is seeded and torch runs single-threaded with deterministic
algorithms, so re-running with the same torch build on the same kind of CPU
rewrites byte-identical files. Each export is checked with the ONNX checker and against the PyTorch
output in onnxruntime before it is written, so a bad export fails here
rather than in the tests.
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sample_nets import ConvNet2, DenseNetMini, DigitsCNN, MobileNetV2Mini, ResNetMini, VGGMini
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
OPSET = 18
SOURCE = "tools/export_models.py"
RTOL, ATOL = 1e-4, 1e-5
DIGIT_LABELS = ",".join(str(digit) for digit in range(10))
# The torch.export-based exporter records the Python stack of every node; those
# hold absolute paths of this checkout, which would make the files machine-specific.
DROPPED_NODE_METADATA = {"pkg.torch.onnx.stack_trace"}

Exporter = Callable[[nn.Module, torch.Tensor, str], onnx.ModelProto]


def seed_everything(seed: int = SEED) -> None:
    """Reset every random source, so each model is the same however many were built before it."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def calibrate_batchnorm(model: nn.Module, input_shape: tuple[int, ...], batches: int = 4) -> nn.Module:
    """Give every BatchNorm random affine weights and running statistics measured on random data.

    Fresh BatchNorm layers are identities in eval mode, which would hide
    mistakes in folding them; measured statistics keep activations in range.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    momentum = {id(norm): norm.momentum for norm in norms}
    for norm in norms:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.normal_(norm.bias, 0.0, 0.1)
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, *input_shape[1:]))
    for norm in norms:
        # Restored because the exporter writes it into BatchNormalization nodes.
        norm.momentum = momentum[id(norm)]
    return model.eval()


def export_torchscript(
    model: nn.Module, example: torch.Tensor, output_name: str, *, dynamic_batch: bool = False
) -> onnx.ModelProto:
    """TorchScript exporter in eval mode, which folds BatchNorm into the preceding Conv."""
    dynamic_axes = {"input": {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    return _torchscript(model, example, output_name, dynamic_axes=dynamic_axes)


def export_torchscript_keep_batchnorm(model: nn.Module, example: torch.Tensor, output_name: str) -> onnx.ModelProto:
    """TorchScript exporter told to preserve the module's mode, which keeps inference BatchNormalization nodes."""
    return _torchscript(
        model, example, output_name, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False
    )


def _torchscript(model: nn.Module, example: torch.Tensor, output_name: str, **options: object) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=[output_name],
            **options,
        )
    return onnx.load_from_string(buffer.getvalue())


def export_dynamo(model: nn.Module, example: torch.Tensor, output_name: str) -> onnx.ModelProto:
    """torch.export-based exporter (the default since torch 2.9), with weights kept inside the model."""
    program = torch.onnx.export(
        model, (example,), dynamo=True, input_names=["input"], output_names=[output_name], verbose=False
    )
    proto = program.model_proto
    for node in proto.graph.node:
        kept = [entry for entry in node.metadata_props if entry.key not in DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    return proto


def annotate(proto: onnx.ModelProto, doc: str, metadata: dict[str, str]) -> None:
    """Set the model doc string and metadata, which the tests expect to survive a round trip."""
    proto.doc_string = doc
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"source": SOURCE, **metadata})


def ort_session(proto: onnx.ModelProto) -> ort.InferenceSession:
    """Single-threaded CPU session with graph optimisations off, so the model itself is what runs."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def verify(proto: onnx.ModelProto, model: nn.Module, inputs: np.ndarray) -> None:
    """Fail loudly unless the model passes the full checker and matches PyTorch in onnxruntime."""
    onnx.checker.check_model(proto, full_check=True)
    for initializer in proto.graph.initializer:
        if initializer.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{initializer.name} is stored outside the model")
    (actual,) = ort_session(proto).run(None, {"input": inputs})
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def write_model(
    path: Path,
    model: nn.Module,
    input_shape: tuple[int, ...],
    exporter: Exporter,
    doc: str,
    metadata: dict[str, str],
    output_name: str = "logits",
) -> onnx.ModelProto:
    """Export, annotate, verify on a seeded random input, and save with the weights inside the file."""
    model.eval()
    inputs = np.random.default_rng(SEED).standard_normal(input_shape, dtype=np.float32)
    proto = exporter(model, torch.from_numpy(inputs), output_name)
    annotate(proto, doc, {"network": type(model).__name__, **metadata})
    verify(proto, model, inputs)
    onnx.save_model(proto, path)
    return proto


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits scaled to [0, 1], shaped [N, 1, 8, 8], with a stratified 75/25 split."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.25, random_state=0, stratify=labels)


def digits_calibration(train_x: np.ndarray, count: int = 256) -> np.ndarray:
    """Unlabeled calibration images: a seeded sample of the TRAIN split, so evaluation on the test split stays unseen."""
    return train_x[np.sort(np.random.default_rng(0).choice(len(train_x), size=count, replace=False))]


def train_digits(images: np.ndarray, labels: np.ndarray, epochs: int = 15, batch_size: int = 32) -> DigitsCNN:
    """Train with Adam on seeded shuffles, for enough epochs to clear 95% test accuracy."""
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    shuffle = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=shuffle).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def onnx_accuracy(proto: onnx.ModelProto, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the exported model, run as one batch through its dynamic batch dimension."""
    (logits,) = ort_session(proto).run(None, {"input": images})
    return float((logits.argmax(axis=1) == labels).mean())


def describe(path: Path) -> str:
    """One summary line: size, weights, and the operator histogram."""
    proto = onnx.load(path)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    weights = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type in floats)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    histogram = " ".join(f"{op}={count}" for op, count in sorted(ops.items()))
    return f"{path.name}: {path.stat().st_size / 1024:.0f} KB, {weights} weights, {histogram}"


def export_all(out: Path) -> list[Path]:
    """Build, export and check every sample model; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    seed_everything()
    write_model(
        out / "convnet2.onnx",
        ConvNet2(),
        (1, 3, 32, 32),
        export_torchscript,
        "Two-layer ConvNet: conv1 (3->64) and conv2 (64->128), 3x3, each followed by ReLU.",
        {"exporter": "torchscript"},
        output_name="output",
    )
    written.append(out / "convnet2.onnx")

    seed_everything()
    resnet_shape = (1, 3, 160, 160)
    resnet = calibrate_batchnorm(ResNetMini(), resnet_shape)
    resnet_doc = "ResNet-18 layout at quarter width (16/32/64/128), 10 classes, {how}."
    for name, exporter, exporter_name, how in [
        ("resnet_mini", export_torchscript, "torchscript", "TorchScript exporter, BatchNorm folded into Conv"),
        ("resnet_mini_dynamo", export_dynamo, "dynamo", "torch.export-based exporter"),
        ("resnet_mini_bn", export_torchscript_keep_batchnorm, "torchscript", "TorchScript exporter, BatchNorm kept"),
    ]:
        doc = resnet_doc.format(how=how)
        write_model(out / f"{name}.onnx", resnet, resnet_shape, exporter, doc, {"exporter": exporter_name})
        written.append(out / f"{name}.onnx")

    seed_everything()
    mobilenet_shape = (1, 3, 96, 96)
    write_model(
        out / "mobilenetv2_mini.onnx",
        calibrate_batchnorm(MobileNetV2Mini(), mobilenet_shape),
        mobilenet_shape,
        export_torchscript,
        "MobileNetV2 layout: inverted residual blocks with depthwise 3x3 convolutions and ReLU6, 10 classes.",
        {"exporter": "torchscript"},
    )
    written.append(out / "mobilenetv2_mini.onnx")

    seed_everything()
    densenet_shape = (1, 3, 64, 64)
    write_model(
        out / "densenet_mini.onnx",
        calibrate_batchnorm(DenseNetMini(), densenet_shape),
        densenet_shape,
        export_torchscript,
        "Dense block (each layer concatenated onto its input), transition, inception block, 10 classes.",
        {"exporter": "torchscript"},
    )
    written.append(out / "densenet_mini.onnx")

    seed_everything()
    write_model(
        out / "vgg_mini.onnx",
        VGGMini(),
        (1, 3, 64, 64),
        export_torchscript,
        "VGG layout: four conv stages, the 64x4x4 map flattened into fc1 (1024->64), fc2 to 10 classes.",
        {"exporter": "torchscript"},
    )
    written.append(out / "vgg_mini.onnx")

    seed_everything()
    train_x, test_x, train_y, test_y = digits_split()
    digits = train_digits(train_x, train_y)
    proto = write_model(
        out / "digits_cnn.onnx",
        digits,
        test_x.shape,
        functools.partial(export_torchscript, dynamic_batch=True),
        "CNN trained on scikit-learn's 8x8 handwritten digits; input is pixel value / 16, batch is dynamic.",
        {"exporter": "torchscript", "labels": DIGIT_LABELS, "preprocessing": "pixel / 16"},
    )
    np.savez(out / "digits_test.npz", input=test_x, labels=test_y)
    np.savez(out / "digits_calibration.npz", input=digits_calibration(train_x))
    written += [out / "digits_cnn.onnx", out / "digits_test.npz", out / "digits_calibration.npz"]
    print(f"digits_cnn.onnx test accuracy in onnxruntime: {onnx_accuracy(proto, test_x, test_y):.4f} on {len(test_y)}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="folder to write into")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    for path in export_all(args.out):
        print(describe(path) if path.suffix == ".onnx" else f"{path.name}: {path.stat().st_size / 1024:.0f} KB")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
