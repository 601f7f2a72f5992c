"""ResNet-12, the few-shot image backbone of MetaOptNet and RFS, with its DropBlock regulariser."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: output channels of the four residual blocks in MetaOptNet and RFS.
DEFAULT_CHANNELS: tuple[int, ...] = (64, 160, 320, 640)


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi, Lin and Le, "DropBlock: A regularization method for convolutional
    networks", NeurIPS 2018, https://arxiv.org/abs/1810.12890, Algorithm 1).

    In training, every channel of every image loses whole ``block_size x block_size`` squares of
    its feature map: block seeds are drawn with probability gamma at the positions where a block
    fits inside the map, each seed zeroes the square whose top-left corner it is, and the kept
    activations are scaled by (all units / kept units) of the batch. Eq. (1) sets gamma so that
    about ``drop_rate`` of the units fall:

        gamma = drop_rate / block_size^2 * H W / ((H - block_size + 1) (W - block_size + 1)).

    A map smaller than ``block_size`` uses blocks of its own size. In evaluation mode the module
    is the identity.

    ``warmup_steps`` > 0 raises the rate linearly from 0 to ``drop_rate`` over that many training
    forward passes, counted in the buffer ``steps`` (MetaOptNet and RFS: 40000 = 20 * 2000; they
    also count evaluation passes, this module counts training passes only).

    Shapes: [B, C, H, W] -> [B, C, H, W].
    """

    steps: Tensor

    def __init__(self, drop_rate: float, block_size: int, warmup_steps: int = 0) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}; 0 turns DropBlock off")
        if block_size < 1:
            raise ValueError(f"dropblock_size must be at least 1, got {block_size}")
        if warmup_steps < 0:
            raise ValueError(f"dropblock_warmup must be >= 0 (0: the full rate from the first step), "
                             f"got {warmup_steps}")
        self.drop_rate = drop_rate
        self.block_size = block_size
        self.warmup_steps = warmup_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def current_rate(self) -> float:
        """The drop rate of the next training pass (after warm-up: ``drop_rate``)."""
        if self.warmup_steps == 0:
            return self.drop_rate
        return self.drop_rate * min(1.0, (int(self.steps) + 1) / self.warmup_steps)

    def forward(self, features: Tensor) -> Tensor:
        if not self.training or self.drop_rate == 0.0:
            return features
        rate = self.current_rate()
        self.steps += 1
        batch, channels, height, width = features.shape
        size = min(self.block_size, height, width)
        valid_h, valid_w = height - size + 1, width - size + 1
        gamma = rate / size**2 * (height * width) / (valid_h * valid_w)  # Eq. (1)
        with torch.no_grad():
            seeds = torch.bernoulli(features.new_full((batch, channels, valid_h, valid_w), gamma))
            # Each seed covers the block whose top-left corner it is: a max over a size x size window.
            dropped = F.max_pool2d(F.pad(seeds, (size - 1,) * 4), kernel_size=size, stride=1)
            keep = 1.0 - dropped
            keep = keep * (keep.numel() / keep.sum().clamp_min(1.0))
        return features * keep


class ResidualBlock(nn.Module):
    """One ResNet-12 block: 3 x [conv3x3 (no bias), BatchNorm, LeakyReLU(0.1)], the last
    activation after adding the shortcut (conv1x1 (no bias), BatchNorm), then a 2x2 max-pool
    and the block's regulariser (dropout, DropBlock or none).

    Shapes: [B, in_channels, H, W] -> [B, out_channels, H // 2, W // 2].
    """

    def __init__(self, in_channels: int, out_channels: int, regulariser: nn.Module | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.activation = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.regulariser = regulariser if regulariser is not None else nn.Identity()

    def forward(self, features: Tensor) -> Tensor:
        out = self.activation(self.body(features) + self.shortcut(features))
        return self.regulariser(self.pool(out))


class ResNet12(nn.Module):
    """ResNet-12 of MetaOptNet (Lee et al., "Meta-Learning with Differentiable Convex
    Optimization", CVPR 2019, https://arxiv.org/abs/1904.03758, Sec. 4, implementation details)
    and RFS (Tian et al., "Rethinking Few-Shot Image Classification: a Good Embedding Is All You
    Need?", ECCV 2020, https://arxiv.org/abs/2003.11539), checked against their code
    (kjunelee/MetaOptNet models/ResNet12_embedding.py, WangYueFt/rfs models/resnet.py).

    In MetaOptNet's notation, with Rk a residual block of three {3x3 conv with k filters,
    BatchNorm, LeakyReLU(0.1)}, MP a 2x2 max-pool and DB(keep, size) DropBlock, the mini-ImageNet
    network is R64-MP-DB(0.9,1)-R160-MP-DB(0.9,1)-R320-MP-DB(0.9,5)-R640-MP-DB(0.9,5):
    four :class:`ResidualBlock` s with ``channels`` (64, 160, 320, 640) outputs, each halving the
    map, then global average pooling (``avg_pool``, RFS: 640 features) or none (MetaOptNet:
    640 x 5 x 5 = 16000 features for 84x84 inputs).

    ``drop_rate`` > 0 adds the references' regularisers: dropout with that rate after blocks 1-2
    (DB(keep, 1)) and :class:`DropBlock2d` (``dropblock_size``, linear ``dropblock_warmup``)
    after blocks 3-4. Both references use drop_rate 0.1 with block size 5 on mini-ImageNet and 2
    on CIFAR-FS/FC100; the default, 0, turns both off.

    Weights are initialised as in the references: Kaiming normal (fan_out, leaky_relu with its
    default slope 0) for the convolutions, BatchNorm weight 1 and bias 0. With RGB inputs and
    the default widths the network has 12,424,320 parameters.

    Shapes: images [B, in_channels, H, W] -> features [B, channels[-1]] with ``avg_pool``,
    [B, channels[-1] * (H // 16) * (W // 16)] without, and with ``flatten=False`` the map
    [B, channels[-1], H // 16, W // 16] ([B, channels[-1], 1, 1] with ``avg_pool``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        avg_pool: bool = True,
        flatten: bool = True,
        drop_rate: float = 0.0,
        dropblock_size: int = 5,
        dropblock_warmup: int = 0,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"channels must give the 4 residual blocks' widths, e.g. {DEFAULT_CHANNELS}; "
                             f"got {channels}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}; 0 turns dropout and DropBlock off")
        widths = (in_channels, *channels)
        blocks = []
        for i in range(4):
            regulariser: nn.Module | None = None
            if drop_rate > 0.0:
                regulariser = nn.Dropout(drop_rate) if i < 2 else DropBlock2d(drop_rate, dropblock_size,
                                                                              dropblock_warmup)
            blocks.append(ResidualBlock(widths[i], widths[i + 1], regulariser))
        self.blocks = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if avg_pool else []
        if flatten:
            head.append(nn.Flatten())
        self.head = nn.Sequential(*head)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.blocks(images))
