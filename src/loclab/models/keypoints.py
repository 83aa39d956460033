"""Keypoint models: the SPEC §3.2 reference pair (heatmap vs direct regression) and two loclab variants.

All models take ``float32 [B, 1, 128, 128]`` images in ``[0, 1]`` and share :class:`KeypointEncoder`.
Each class carries ``output_type`` so the training engine knows which targets to feed:

- ``"heatmap"``: output ``[B, K, H, W]`` raw logits (no activation), trained against Gaussian heatmaps.
- ``"regression"``: output ``[B, 2K]`` = ``[x0, y0, x1, y1, ...]`` normalised as ``x / 128`` into ``[0, 1]``
  (docs/architecture.md), trained with coordinate losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from loclab.models.blocks import ConvBNReLU
from loclab.models.init import kaiming_init

IMAGE_SIZE = 128
HEATMAP_SIZES = (32, 64, 128)


def _conv_block(in_ch: int, out_ch: int) -> ConvBNReLU:
    """``conv3x3 (padding 1) -> BN -> ReLU -> maxpool 2``: the conv keeps H and W, the pool halves them."""
    # BN follows the conv, so a conv bias would be redundant
    return ConvBNReLU(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False), out_ch, nn.MaxPool2d(2))


def _up_block(in_ch: int, out_ch: int) -> ConvBNReLU:
    """``ConvTranspose(k=4, s=2, p=1) -> BN -> ReLU``: exactly doubles H and W (``(n-1)*2 - 2 + 4 = 2n``).

    Kernel 4 with stride 2 covers every output pixel with the same number of taps, which avoids the
    checkerboard pattern of a kernel-3/stride-2 transpose and needs no ``output_padding``.
    """
    return ConvBNReLU(nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=False), out_ch)


class KeypointEncoder(nn.Module):
    """Four ``conv3x3 -> BN -> ReLU -> maxpool 2`` blocks, channels 1 -> 32 -> 64 -> 128 -> 256.

    ``forward(x [B, 1, 128, 128])`` returns the four block outputs (for skip connections):
    ``[B, 32, 64, 64], [B, 64, 32, 32], [B, 128, 16, 16], [B, 256, 8, 8]``.
    """

    channels: ClassVar[tuple[int, ...]] = (32, 64, 128, 256)

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        widths = (in_channels, *self.channels)
        self.blocks = nn.ModuleList(_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class HeatmapNet(nn.Module):
    """Encoder-decoder producing one heatmap of raw logits per keypoint, ``[B, K, s, s]`` for ``heatmap_size=s``.

    Decoder (every ConvTranspose is ``k=4, s=2, p=1`` followed by BN + ReLU, see :func:`_up_block`):

    1. ConvTranspose 256 -> 128 (8 -> 16); with ``skip`` concat encoder block 3 (128 ch, 16x16) -> 256 ch.
    2. ConvTranspose 256 -> 64 (16 -> 32); with ``skip`` concat encoder block 2 (64 ch, 32x32) -> 128 ch.
    3. ConvTranspose 128 -> 32 (32 -> 64).
    4. 1x1 conv 32 -> K, no activation.

    ``skip=False`` drops both concatenations, so stages 2 and 3 take 128 and 64 input channels instead.
    ``heatmap_size=32`` drops stage 3: the 1x1 conv reads the 32x32 stage (128 ch with skips, 64 without).
    ``heatmap_size=128`` adds one ConvTranspose 32 -> 32 (64 -> 128) before the 1x1 conv.
    """

    output_type: ClassVar[str] = "heatmap"

    def __init__(self, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True) -> None:
        super().__init__()
        if heatmap_size not in HEATMAP_SIZES:
            raise ValueError(f"heatmap_size must be one of {HEATMAP_SIZES}, got {heatmap_size}")
        self.num_keypoints = num_keypoints
        self.heatmap_size = heatmap_size
        self.skip = skip
        self.encoder = KeypointEncoder()
        self.up1 = _up_block(256, 128)
        self.up2 = _up_block(256 if skip else 128, 64)
        stage2_channels = 128 if skip else 64
        tail: list[nn.Module] = []
        if heatmap_size >= 64:
            tail.append(_up_block(stage2_channels, 32))
        if heatmap_size == 128:
            tail.append(_up_block(32, 32))
        self.tail = nn.Sequential(*tail)
        self.head = nn.Conv2d(32 if tail else stage2_channels, num_keypoints, kernel_size=1)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        _, f2, f3, f4 = self.encoder(x)
        y = self.up1(f4)
        if self.skip:
            y = torch.cat([y, f3], dim=1)
        y = self.up2(y)
        if self.skip:
            y = torch.cat([y, f2], dim=1)
        return self.head(self.tail(y))


class RegressionNet(nn.Module):
    """Direct regression (SPEC §3.2): encoder, global average pool, FC head, sigmoid; output ``[B, 2K]``.

    Head: FC 256 -> 128, ReLU, Dropout 0.5, FC 128 -> 64, ReLU, Dropout 0.5, FC 64 -> 2K, Sigmoid.
    Output ``[x0, y0, x1, y1, ...]`` normalised as ``x / 128``.
    """

    output_type: ClassVar[str] = "regression"

    def __init__(self, num_keypoints: int = 5) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.encoder = KeypointEncoder()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(64, 2 * num_keypoints),
            nn.Sigmoid(),
        )
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.encoder(x)[-1]))


class SpatialRegressionNet(nn.Module):
    """Direct regression that keeps *where* features are: no global pooling before the FC head.

    Global average pooling throws away position, which is exactly what keypoint regression needs; this variant
    reduces the 8x8x256 map with a 1x1 conv (256 -> ``reduced_channels``, BN, ReLU), flattens it
    (``reduced_channels * 64`` features, one block per spatial cell) and regresses through
    FC -> 256, ReLU, Dropout ``dropout``, FC 256 -> 2K, Sigmoid. Output ``[B, 2K]`` as :class:`RegressionNet`.
    """

    output_type: ClassVar[str] = "regression"

    def __init__(self, num_keypoints: int = 5, reduced_channels: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.encoder = KeypointEncoder()
        self.reduce = ConvBNReLU(nn.Conv2d(256, reduced_channels, kernel_size=1, bias=False), reduced_channels)
        cells = (IMAGE_SIZE // 16) ** 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(reduced_channels * cells, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, 2 * num_keypoints),
            nn.Sigmoid(),
        )
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.reduce(self.encoder(x)[-1]))


def soft_argmax_2d(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Expected position under ``softmax(beta * logits)`` over each map, ``[B, K, H, W] -> [B, K, 2]``.

    Returns ``(x, y)`` in heatmap coordinates where the centre of cell ``(row i, column j)`` is ``(j, i)``;
    values lie in ``[0, W - 1] x [0, H - 1]``. Differentiable everywhere. The softmax runs in float32 even
    under autocast, because a low-precision exponent over thousands of cells loses the peak.
    """
    b, k, h, w = logits.shape
    probs = torch.softmax(beta * logits.float().reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=probs.dtype, device=probs.device)
    ys = torch.arange(h, dtype=probs.dtype, device=probs.device)
    x = (probs.sum(dim=2) * xs).sum(dim=-1)  # marginal over rows, then E[column]
    y = (probs.sum(dim=3) * ys).sum(dim=-1)  # marginal over columns, then E[row]
    return torch.stack([x, y], dim=-1)


class IntegralNet(nn.Module):
    """Integral regression: :class:`HeatmapNet` logits, soft-argmax, output normalised coordinates ``[B, 2K]``.

    The heatmap decoder keeps spatial information and the soft-argmax (:func:`soft_argmax_2d`) turns it into
    coordinates differentiably, so the model trains with coordinate losses like :class:`RegressionNet`.
    Heatmap coordinates map to image pixels with the pixel-centre convention of docs/architecture.md,
    ``x = (x_hm + 0.5) * s - 0.5`` with stride ``s = 128 / heatmap_size``, then ``x / 128``.

    ``beta`` is fixed: the final 1x1 conv can scale its logits freely, so a learnable temperature would be
    redundant with it.
    """

    output_type: ClassVar[str] = "regression"

    def __init__(self, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True, beta: float = 1.0) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.beta = beta
        self.heatmap_net = HeatmapNet(num_keypoints, heatmap_size, skip)
        self.stride = IMAGE_SIZE / heatmap_size

    def heatmaps(self, x: Tensor) -> Tensor:
        """The raw heatmap logits ``[B, K, s, s]`` behind the coordinates (for figures and analysis)."""
        return self.heatmap_net(x)

    def forward(self, x: Tensor) -> Tensor:
        xy_hm = soft_argmax_2d(self.heatmap_net(x), self.beta)  # [B, K, 2] heatmap coords
        xy = (xy_hm + 0.5) * self.stride - 0.5
        return (xy / IMAGE_SIZE).flatten(1)


KEYPOINT_MODELS: dict[str, Callable[..., nn.Module]] = {
    "heatmap": HeatmapNet,
    "regression": RegressionNet,
    "integral": IntegralNet,
    "spatial_regression": SpatialRegressionNet,
}
