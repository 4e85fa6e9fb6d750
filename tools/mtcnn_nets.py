"""MTCNN's RNet and ONet as plain PyTorch modules, loaded with the trained weights facenet-pytorch ships.

The architecture follows facenet-pytorch 2.6.0 (``facenet_pytorch/models/mtcnn.py``,
MIT licence, Copyright (c) 2019 Timothy Esler), whose weights were converted from
the original MTCNN (Zhang et al. 2016, via davidsandberg/facenet, MIT). Module names
match its state dicts (``conv1``, ``prelu1``, ..., ``dense5_1``), so
``load_state_dict`` checks every key and shape.

The nets are written here rather than imported because facenet-pytorch's package
imports torchvision at import time and pins torch<2.3; only its data files
(``facenet_pytorch/data/rnet.pt`` and ``onet.pt``) are used, so it is installed
with ``pip install --no-deps facenet-pytorch==2.6.0`` (see ``tools/setup_bench.sh``).

One detail decides whether the weights mean anything: before the first dense
layer the original permutes the feature map to (N, W, H, C) and flattens that, the
order the Caffe/TensorFlow weights were trained with. Flattening NCHW directly runs
without error but gives garbage, so ``flatten_like_caffe`` keeps the permutation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "facenet_pytorch"


def weights_path(net: str) -> Path:
    """Where the installed facenet-pytorch wheel keeps ``{net}.pt``, found without importing the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{WEIGHTS_PACKAGE} is not installed; run: pip install --no-deps facenet-pytorch==2.6.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{net}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {WEIGHTS_PACKAGE} wheel")
    return path


def flatten_like_caffe(features: torch.Tensor) -> torch.Tensor:
    """Flatten (N, C, H, W) in (N, W, H, C) order, the layout the dense weights were trained on."""
    return features.permute(0, 3, 2, 1).reshape(features.shape[0], -1)


class RNet(nn.Module):
    """MTCNN refinement net: a 24x24 RGB crop to (box regression [N, 4], face probability [N, 2])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)  # 64 channels x 3 x 3
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(flatten_like_caffe(x)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """MTCNN output net: a 48x48 RGB crop to (box regression [N, 4], landmarks [N, 10], face probability [N, 2])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)  # 128 channels x 3 x 3
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(flatten_like_caffe(x)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


NETS: dict[str, type[nn.Module]] = {"rnet": RNet, "onet": ONet}
INPUT_SIZE = {"rnet": 24, "onet": 48}
OUTPUT_NAMES = {"rnet": ("box", "prob"), "onet": ("box", "landmarks", "prob")}


def load_pretrained(net: str) -> nn.Module:
    """Build ``net`` ("rnet" or "onet") in eval mode with facenet-pytorch's trained weights, every key checked."""
    model = NETS[net]()
    state = torch.load(weights_path(net), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
