"""``csp``: a cross-stage-partial detector built like the small YOLO models, on loclab's anchors and heads.

Why it exists: the ``loclab`` model is nine plain convolutions deep. From scratch on a few hundred photos it
underfits even its training images (kangaroo photos: mAP@0.5 0.88 on the training split it saw 360 times). The
small YOLO models that learn such data from scratch spend the same compute on a deep residual network instead:

- backbone: strided 3x3 convs halve the resolution five times (channels 16, 32, 64, 128, 256 at ``width=16``),
  each followed by a :class:`C2f` block of residual bottlenecks (1, 2, 2, 1 of them), and a :class:`SPPF`
  pooling block that widens the receptive field of the coarsest map;
- neck: a top-down then bottom-up path (PAN) that hands every head the context of the others;
- three heads at strides 8, 16 and 32 (``DetectorConfig.strides`` of ``csp``), so at a 512 px input the
  feature maps are 64, 32 and 16 cells, as the ``loclab`` model's at 256 px;
- Conv-BatchNorm-SiLU everywhere (BatchNorm momentum 0.03, eps 1e-3, as those models use).

The heads are loclab's :class:`~loclab.models.blocks.DetectionHead` (3x3 conv then 1x1 to ``A*(5+C)``), so
anchors, decoding, postprocessing and export are those of every loclab detector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loclab.models.blocks import DetectionHead


class ConvBNSiLU(nn.Sequential):
    """``k x k`` conv (padding ``k // 2``, no bias) -> BatchNorm -> SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1):
        bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        super().__init__(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), bn, nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    """Two 3x3 ConvBNSiLU, plus the input when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBNSiLU(channels, channels, 3)
        self.cv2 = ConvBNSiLU(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """Cross-stage partial block: a 1x1 conv splits the input into two halves; ``n`` bottlenecks run one after
    another on the second half; every intermediate output is concatenated and fused by a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = ConvBNSiLU(c_in, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.cv2 = ConvBNSiLU((2 + n) * self.hidden, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).split(self.hidden, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools (receptive fields 5, 9, 13) concatenated."""

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBNSiLU(c_in, hidden, 1)
        self.cv2 = ConvBNSiLU(4 * hidden, c_out, 1)
        self.pool = nn.MaxPool2d(k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        parts = [self.cv1(x)]
        for _ in range(3):
            parts.append(self.pool(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class CspDetector(nn.Module):
    """The ``csp`` detector (module docstring): heads at strides 8, 16, 32 with 4w, 8w, 16w channels."""

    def __init__(self, num_anchors: int = 3, num_classes: int = 3, width: int = 16):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        c1, c2, c3, c4, c5 = (width * m for m in (1, 2, 4, 8, 16))
        self.stem = nn.Sequential(ConvBNSiLU(3, c1, 3, 2), ConvBNSiLU(c1, c2, 3, 2), C2f(c2, c2, 1))  # /4
        self.down3 = nn.Sequential(ConvBNSiLU(c2, c3, 3, 2), C2f(c3, c3, 2))  # /8
        self.down4 = nn.Sequential(ConvBNSiLU(c3, c4, 3, 2), C2f(c4, c4, 2))  # /16
        self.down5 = nn.Sequential(ConvBNSiLU(c4, c5, 3, 2), C2f(c5, c5, 1), SPPF(c5, c5))  # /32
        self.top_down4 = C2f(c5 + c4, c4, 1, shortcut=False)
        self.top_down3 = C2f(c4 + c3, c3, 1, shortcut=False)
        self.reduce3 = ConvBNSiLU(c3, c3, 3, 2)
        self.bottom_up4 = C2f(c3 + c4, c4, 1, shortcut=False)
        self.reduce4 = ConvBNSiLU(c4, c4, 3, 2)
        self.bottom_up5 = C2f(c4 + c5, c5, 1, shortcut=False)
        self.heads = nn.ModuleList(DetectionHead(c, num_anchors, num_classes) for c in (c3, c4, c5))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))  # PyTorch's own default, as those models keep
        # Objectness starts at a 1 % prior so the first steps are not dominated by easy negatives.
        prior = -math.log((1 - 0.01) / 0.01)
        for head in self.heads:
            nn.init.constant_(head.out.bias.view(num_anchors, 5 + num_classes)[:, 4], prior)

    def features(self, images: Tensor) -> list[Tensor]:
        """The three head inputs ``[B, 4w, S/8, S/8]``, ``[B, 8w, S/16, S/16]``, ``[B, 16w, S/32, S/32]``."""
        p3 = self.down3(self.stem(images))
        p4 = self.down4(p3)
        p5 = self.down5(p4)
        t4 = self.top_down4(torch.cat([_up(p5, p4), p4], dim=1))
        n3 = self.top_down3(torch.cat([_up(t4, p3), p3], dim=1))
        n4 = self.bottom_up4(torch.cat([self.reduce3(n3), t4], dim=1))
        n5 = self.bottom_up5(torch.cat([self.reduce4(n4), p5], dim=1))
        return [n3, n4, n5]

    def forward(self, images: Tensor) -> list[Tensor]:
        return [head(f) for head, f in zip(self.heads, self.features(images))]
