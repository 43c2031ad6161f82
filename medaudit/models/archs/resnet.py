"""ResNet-18/50 as the MedMNIST v2 benchmark and torchvision users build them, with matching state_dict keys.

* ``*_28``: the CIFAR-style variant of MedMNIST's ``experiments/MedMNIST2D/models.py``
  (3x3 stem, no max-pool, ``shortcut`` and ``linear`` names).
* ``*_224``: torchvision's layout (7x7 stride-2 stem, max-pool, ``downsample``
  and ``fc`` names), so torchvision and MedMNIST 224 checkpoints load as they are.
* ``*_tv28``: torchvision's layout with the usual small-image recipe,
  ``model.conv1 = nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False)`` and ``model.maxpool = nn.Identity()``.
"""

from __future__ import annotations

import torch
from torch import nn


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, skip_name: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.skip_name = skip_name
        needs_projection = stride != 1 or in_planes != planes
        setattr(
            self, skip_name, _projection(in_planes, planes, stride) if needs_projection else nn.Sequential()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + getattr(self, self.skip_name)(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, skip_name: str) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.skip_name = skip_name
        needs_projection = stride != 1 or in_planes != width
        setattr(
            self, skip_name, _projection(in_planes, width, stride) if needs_projection else nn.Sequential()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + getattr(self, self.skip_name)(x))


class ResNet(nn.Module):
    """``small_input`` picks the 28 px stem (3x3, no max-pool); otherwise the 224 px one.
    ``torchvision_names`` (default: not ``small_input``) picks ``downsample``/``fc`` over
    ``shortcut``/``linear``."""

    # set with setattr in __init__ (the names are the checkpoints' state_dict keys)
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
        small_input: bool,
        torchvision_names: bool | None = None,
    ) -> None:
        super().__init__()
        if torchvision_names is None:
            torchvision_names = not small_input
        skip_name = "downsample" if torchvision_names else "shortcut"
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
            stem_pool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = stem_pool
        in_planes = 64
        for index, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if index > 0 and j == 0 else 1
                blocks.append(block(in_planes, planes, stride, skip_name))
                in_planes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_name = "fc" if torchvision_names else "linear"
        setattr(self, self.head_name, nn.Linear(in_planes, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return getattr(self, self.head_name)(torch.flatten(self.avgpool(x), 1))


def resnet18_28(in_channels: int = 3, num_classes: int = 2) -> ResNet:
    """ResNet-18 for 28 px inputs (MedMNIST's CIFAR-style variant)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, small_input=True)


def resnet50_28(in_channels: int = 3, num_classes: int = 2) -> ResNet:
    """ResNet-50 for 28 px inputs (MedMNIST's CIFAR-style variant)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, small_input=True)


def resnet18_224(in_channels: int = 3, num_classes: int = 2) -> ResNet:
    """ResNet-18 for 224 px inputs (torchvision layout)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, small_input=False)


def resnet50_224(in_channels: int = 3, num_classes: int = 2) -> ResNet:
    """ResNet-50 for 224 px inputs (torchvision layout)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, small_input=False)


def resnet18_tv28(in_channels: int = 3, num_classes: int = 2) -> ResNet:
    """torchvision ResNet-18 adapted to 28 px: 3x3 stride-1 conv1, maxpool = Identity."""
    return ResNet(
        BasicBlock, (2, 2, 2, 2), in_channels, num_classes, small_input=True, torchvision_names=True
    )


def resnet50_tv28(in_channels: int = 3, num_classes: int = 2) -> ResNet:
    """torchvision ResNet-50 adapted to 28 px: 3x3 stride-1 conv1, maxpool = Identity."""
    return ResNet(
        Bottleneck, (3, 4, 6, 3), in_channels, num_classes, small_input=True, torchvision_names=True
    )
