"""Face/non-face evaluation of MTCNN's RNet and ONet on images bundled with scikit-image.

Models: ``tools/mtcnn_nets.py`` with the trained weights of the facenet-pytorch
2.6.0 wheel (MIT), exported here to ONNX (TorchScript exporter, opset 17, one
self-contained file, dynamic batch). Input ``input`` [batch, 3, S, S] (S = 24 for
RNet, 48 for ONet); outputs as the torch nets return them: RNet ``box``, ``prob``;
ONet ``box``, ``landmarks``, ``prob``. ``prob`` is the softmax, column 1 = face.

Evaluation: ``skimage.data.lfw_subset()`` (scikit-image, BSD-3-Clause; 200 25x25
grayscale crops from Labeled Faces in the Wild: the first 100 faces, the last 100
background patches from the same photos). Each is prepared the way facenet-pytorch
prepares a crop for RNet/ONet: pixel values 0-255, area resampling
(``interpolate(mode="area")``, its ``imresample``) to SxS, NCHW with no H/W
transpose (its ``detect_face`` permutes HWC to CHW; the (W, H) order the original
Caffe nets used lives in the weights' flatten, see ``mtcnn_nets``), the gray
channel repeated as R, G and B, then ``(x - 127.5) * 0.0078125``. Checked: with
this both nets classify all 200 correctly at 0.5; transposing H and W drops them
to about 50-60%.

Calibration (256 crops, none from the LFW subset): other images bundled with
scikit-image and matplotlib, turned gray like the evaluation crops, cut into
square crops with seeded random jitter and horizontal flips:

- 64 around the face in ``astronaut`` (NASA, public domain), 32 around the face
  in ``camera`` and 32 around the face in matplotlib's sample ``grace_hopper.jpg``
  (U.S. Navy photograph, public domain) -- face boxes found once with
  scikit-image's bundled LBP frontal-face cascade -- scaled 0.8-1.25x and
  shifted up to 15% of the box, so calibration sees faces as the nets do after
  PNet's proposals. Three people, not two: with only the first two, RNet cut
  to 0.28 of its MACs kept 97.5% and moved the face probability by 0.059 per
  image on average; with the third, 98.5% and 0.023 (ONet at 0.29: 99.5% and
  0.020, then 100% and 0.011);
- 128 random crops (24 px to half the image side) from ``chelsea``, ``coffee``,
  ``rocket``, ``coins``, ``brick``, ``grass``, ``gravel``, ``page``, ``text``,
  ``moon``, ``clock``, ``hubble_deep_field``, ``immunohistochemistry``, and the
  two images above, for the background proposals the nets mostly reject.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import skimage.data
import torch
from eval_common import Metrics, load_npz, run_batched, seeded_rng, write_bytes, write_npz
from mtcnn_nets import INPUT_SIZE, OUTPUT_NAMES, load_pretrained
from torch.nn import functional

OPSET = 17
INPUT_NAME = "input"
FACE_OUTPUT = "prob"
LFW_FACES = 100  # lfw_subset: first 100 faces, last 100 non-faces
THRESHOLD = 0.5

# (top, left, side) of the face, from skimage.feature.Cascade with the bundled lbpcascade_frontalface_opencv.xml
FACE_BOXES = {"astronaut": (62, 187, 97), "camera": (124, 207, 56), "grace_hopper": (113, 168, 205)}
FACE_CROPS = {"astronaut": 64, "camera": 32, "grace_hopper": 32}
MATPLOTLIB_IMAGES = {"grace_hopper": "grace_hopper.jpg"}
"""Pictures from matplotlib's bundled sample data (matplotlib.cbook.get_sample_data), by name."""
BACKGROUND_IMAGES = (
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
    "moon",
    "clock",
    "hubble_deep_field",
    "immunohistochemistry",
    "astronaut",
    "camera",
)
BACKGROUND_CROPS = 128
CALIBRATION_SALT = 201


# --- model ---------------------------------------------------------------------------------------


def export_net(net: str, path: Path) -> None:
    """Export ``net`` with its trained weights to one ONNX file and check onnxruntime against torch."""
    model = load_pretrained(net)
    size = INPUT_SIZE[net]
    example = torch.from_numpy(seeded_rng(CALIBRATION_SALT, size).uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    outputs = OUTPUT_NAMES[net]
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        exported = Path(scratch) / "export.onnx"
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            model,
            (example,),
            exported,
            dynamo=False,  # TorchScript exporter: weights inside the file, stable node names
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
        )
        proto = onnx.load(exported)
    proto.doc_string = f"MTCNN {net.upper()} with facenet-pytorch 2.6.0's trained weights (MIT); prob[:, 1] is the face probability."
    onnx.helper.set_model_props(proto, {"source": "tools/face_eval.py", "network": f"tools/mtcnn_nets.py:{type(model).__name__}"})
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(path, proto.SerializeToString())
    _check_against_torch(path, model, example)


def _check_against_torch(path: Path, model: torch.nn.Module, example: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(example)[-1].numpy()
    actual = run_batched(path, example.numpy(), FACE_OUTPUT, len(example))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


# --- preprocessing -------------------------------------------------------------------------------


def mtcnn_input(crops: torch.Tensor, size: int) -> np.ndarray:
    """facenet-pytorch's crop preparation: [N, 3, h, w] in 0-255, area-resampled to size x size, then normalised."""
    resized = functional.interpolate(crops, size=(size, size), mode="area")
    return ((resized - 127.5) * 0.0078125).numpy().astype(np.float32)


def lfw_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 200 LFW subset crops as net inputs, and labels (1 = face, 0 = background)."""
    gray = torch.from_numpy(skimage.data.lfw_subset().astype(np.float32) * 255.0)
    labels = (np.arange(len(gray)) < LFW_FACES).astype(np.int64)
    return mtcnn_input(gray[:, None].repeat(1, 3, 1, 1), size), labels


@dataclass(frozen=True)
class Crop:
    """A square region of a bundled image, optionally mirrored."""

    image: str
    top: int
    left: int
    side: int
    mirror: bool


def calibration_crops() -> list[Crop]:
    """The 256 seeded crops described in the module docstring: faces from two images, then backgrounds."""
    rng = seeded_rng(CALIBRATION_SALT)
    crops = [crop for image, count in FACE_CROPS.items() for crop in _face_crops(image, count, rng)]
    for index in range(BACKGROUND_CROPS):
        crops.append(_background_crop(BACKGROUND_IMAGES[index % len(BACKGROUND_IMAGES)], rng))
    return crops


def _face_crops(image: str, count: int, rng: np.random.Generator) -> list[Crop]:
    top, left, side = FACE_BOXES[image]
    height, width = _rgb(image).shape[:2]
    crops = []
    for _ in range(count):
        jittered = round(side * rng.uniform(0.8, 1.25))
        centre_y = top + side / 2 + side * rng.uniform(-0.15, 0.15)
        centre_x = left + side / 2 + side * rng.uniform(-0.15, 0.15)
        crop_top = int(np.clip(round(centre_y - jittered / 2), 0, height - jittered))
        crop_left = int(np.clip(round(centre_x - jittered / 2), 0, width - jittered))
        crops.append(Crop(image, crop_top, crop_left, jittered, bool(rng.random() < 0.5)))
    return crops


def _background_crop(image: str, rng: np.random.Generator) -> Crop:
    height, width = _rgb(image).shape[:2]
    side = int(rng.integers(24, min(height, width) // 2 + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return Crop(image, top, left, side, bool(rng.random() < 0.5))


_IMAGES: dict[str, np.ndarray] = {}


def _matplotlib_image(file: str) -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data(file, asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


def _rgb(name: str) -> np.ndarray:
    """A bundled scikit-image or matplotlib picture as RGB uint8 [H, W, 3] (gray repeated), loaded once."""
    if name not in _IMAGES:
        image = _matplotlib_image(MATPLOTLIB_IMAGES[name]) if name in MATPLOTLIB_IMAGES else np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        _IMAGES[name] = image[:, :, :3]
    return _IMAGES[name]


def crop_input(crop: Crop, size: int) -> np.ndarray:
    """One calibration crop as a net input [3, size, size], gray like the evaluation crops.

    The LFW subset is grayscale (its gray channel fed as R, G and B), so the
    calibration crops are turned gray the same way: calibration data should
    come from the inputs the model will see, and colour crops would tune the
    pruned net to a colour distribution it is not judged on.
    """
    pixels = _rgb(crop.image)[crop.top : crop.top + crop.side, crop.left : crop.left + crop.side].astype(np.float32)
    pixels = np.repeat((pixels @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None], 3, axis=2)
    if crop.mirror:
        pixels = pixels[:, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(pixels).transpose(2, 0, 1).astype(np.float32))[None]
    return mtcnn_input(tensor, size)[0]


# --- task data and metrics -----------------------------------------------------------------------


def build_face_data(net: str, eval_path: Path, calibration_path: Path) -> None:
    """Evaluation inputs with labels from LFW, and the calibration crops, at the net's input size."""
    size = INPUT_SIZE[net]
    inputs, labels = lfw_inputs(size)
    write_npz(eval_path, {INPUT_NAME: inputs, "labels": labels})
    write_npz(calibration_path, {INPUT_NAME: np.stack([crop_input(crop, size) for crop in calibration_crops()])})


def evaluate_face(model: Path, eval_path: Path, original_path: Path) -> Metrics:
    """Face/non-face accuracy at 0.5 on the face probability, its mean over faces and over backgrounds, and
    its mean absolute change from the original model's, image by image (how far a cut moved the scores,
    also where no decision flipped)."""
    data = load_npz(eval_path)
    face, original = (run_batched(path, data[INPUT_NAME], FACE_OUTPUT, 200)[:, 1] for path in (model, original_path))
    labels = data["labels"].astype(bool)
    return {
        "accuracy": float(np.mean((face > THRESHOLD) == labels)),
        "mean_face_prob": float(face[labels].mean()),
        "mean_nonface_prob": float(face[~labels].mean()),
        "mean_abs_delta_prob": float(np.abs(face - original).mean()),
    }
