"""Wide ResNet (Zagoruyko & Komodakis 2016), the WRN-28-10 backbone of LEO, MetaOptNet's and RFS's comparisons."""
from __future__ import annotations

from torch import Tensor, nn


class WideBlock(nn.Module):
    """Pre-activation block (the paper's "basic" B(3,3) with dropout between the convolutions, Fig. 1d):
    BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3, plus the input or, where the shape changes, a 1x1 conv of
    the first activation.

    Shapes: [B, in_channels, H, W] -> [B, out_channels, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.BatchNorm2d(in_channels), nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, features: Tensor) -> Tensor:
        activated = self.relu(self.norm1(features))
        out = self.conv2(self.dropout(self.relu(self.norm2(self.conv1(activated)))))
        return out + (features if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: a 3x3 conv of 16 channels, three groups of (depth - 4) / 6 :class:`WideBlock` s
    with 16k, 32k and 64k channels (strides 1, 2, 2), BN-ReLU, global average pooling.

    WRN-28-10 (the default) has 160 / 320 / 640 channels, 640 features and, for RGB inputs, 36,472,784
    parameters (the paper's 36.5M, whose count includes a 10-class linear head). ``drop_rate``: dropout between
    each block's convolutions (the paper's 0.3 on CIFAR; 0, the default, turns it off). Convolutions are Kaiming
    normal (fan_out, ReLU), BatchNorm weight 1 and bias 0.

    Shapes: images [B, in_channels, H, W] -> features [B, 64 * widen].
    """

    def __init__(self, in_channels: int = 3, depth: int = 28, widen: int = 10, drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"a Wide ResNet's depth must be 6n + 4 (n >= 1 blocks per group), e.g. 28; got {depth}")
        if widen < 1:
            raise ValueError(f"the widening factor must be >= 1, got {widen}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        blocks_per_group = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
        for group, stride in enumerate((1, 2, 2)):
            for block in range(blocks_per_group):
                layers.append(WideBlock(widths[group] if block == 0 else widths[group + 1], widths[group + 1],
                                        stride if block == 0 else 1, drop_rate))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
