"""PyTorch definitions of the sample models shipped in ``models/``.

Each net is small enough to keep in the repository but covers one graph
pattern the pruner has to handle: plain conv chains, residual adds,
depthwise convolutions, channel concatenation, and a flatten into a linear
layer.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv without bias followed by BatchNorm, the unit the exporters fold into one Conv."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ConvNet2(nn.Module):
    """Two 3x3 convolutions: the smallest graph where pruning conv1's output channels shrinks conv2's input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


class BasicBlock(nn.Module):
    """ResNet basic block; its residual Add ties the block's output channels to its input channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = (
            conv_bn(in_channels, out_channels, 1, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.downsample(x))


class ResNetMini(nn.Module):
    """ResNet-18 layout (4 stages of 2 basic blocks) at a quarter of the width, to exercise residual adds.

    The stem has no max pool, so a 160x160 input keeps enough work per block
    for onnxruntime timings to be milliseconds, large enough to compare.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_channels = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, width, stride), BasicBlock(width, width, 1)))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual add when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [conv_bn(in_channels, hidden, 1), nn.ReLU6()]
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(),
            conv_bn(hidden, out_channels, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Mini(nn.Module):
    """MobileNetV2 layout, to exercise depthwise convolutions whose groups must follow their channel count."""

    # (expand ratio, output channels, repeats, stride of the first repeat)
    SETTINGS: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 2, 2),
        (6, 96, 1, 1),
    )

    def __init__(self, num_classes: int = 10, last_channels: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2), nn.ReLU6()]
        in_channels = 32
        for expand, out_channels, repeats, stride in self.SETTINGS:
            for repeat in range(repeats):
                layers.append(InvertedResidual(in_channels, out_channels, stride if repeat == 0 else 1, expand))
                in_channels = out_channels
        layers += [conv_bn(in_channels, last_channels, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """Conv + BatchNorm + ReLU with same padding."""
    return nn.Sequential(*conv_bn(in_channels, out_channels, kernel), nn.ReLU())


class DenseLayer(nn.Module):
    """Bottleneck layer whose output is concatenated onto its own input along the channel axis."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bottleneck = conv_bn_relu(in_channels, 4 * growth, 1)
        self.conv = conv_bn_relu(4 * growth, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bottleneck(x))], 1)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated, so one Concat input is a pooling branch and others are convolutions."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.branch1 = conv_bn_relu(in_channels, width, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(in_channels, width, 1), conv_bn_relu(width, width, 3))
        self.branch5 = nn.Sequential(
            conv_bn_relu(in_channels, width // 2, 1),
            conv_bn_relu(width // 2, width, 3),
            conv_bn_relu(width, width, 3),
        )
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(in_channels, width // 2, 1))
        self.out_channels = 3 * width + width // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class DenseNetMini(nn.Module):
    """A dense block, a transition, and an inception block: channel Concat merges of both kinds."""

    def __init__(self, num_classes: int = 10, growth: int = 16, dense_layers: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 32, 3)
        channels = 32
        dense = []
        for _ in range(dense_layers):
            dense.append(DenseLayer(channels, growth))
            channels += growth
        self.dense = nn.Sequential(*dense)
        self.transition = nn.Sequential(conv_bn_relu(channels, channels // 2, 1), nn.AvgPool2d(2))
        self.inception = InceptionBlock(channels // 2, 32)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.inception.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception(self.transition(self.dense(self.stem(x))))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class VGGMini(nn.Module):
    """VGG layout whose last feature map is flattened straight into a Linear, so each channel owns 16 inputs of fc1.

    Four stages each halve the side, so a 64x64 input leaves the 4x4 map that fc1 expects.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(widths[-1] * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class DigitsCNN(nn.Module):
    """A trained classifier for 8x8 digits, so pruning can be judged by accuracy rather than output drift alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        x = torch.flatten(torch.relu(self.conv3(x)), 1)
        return self.fc2(torch.relu(self.fc1(x)))
