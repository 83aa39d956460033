"""Keypoint models: the course's reference pair (heatmap vs direct regression) and two loclab variants.

All models take ``float32 [B, C, H, W]`` images in ``[0, 1]`` (``C = in_channels``: 1 gray, 3 RGB; ``W`` and ``H``
multiples of 16, 128 x 128 for the stick figures) and share :class:`KeypointEncoder`. Each class carries
``output_type`` so the training engine knows which targets to feed:

- ``"heatmap"``: output ``[B, K, H / s, W / s]`` raw logits (no activation, stride ``s``), trained against
  Gaussian heatmaps.
- ``"regression"``: output ``[B, 2K]`` = ``[x0, y0, x1, y1, ...]`` normalised as ``(x / W, y / H)`` into
  ``[0, 1]`` (docs/architecture.md), trained with coordinate losses.

and ``options``, the constructor arguments the training engine may fill from the config (every other
argument keeps its default); the engine refuses a config that sets an option the model does not take.
The whole contract is :class:`loclab.models.contracts.KeypointModel`; :data:`KEYPOINT_MODELS` names the models
for ``--model``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from loclab.models.blocks import ConvBNReLU
from loclab.models.contracts import OutputType
from loclab.models.init import kaiming_init
from loclab.ops.heatmaps import heatmap_to_image_coords

REFERENCE_SIZE = 128  # the stick figures' square input, the default everywhere
HEATMAP_STRIDES = (1, 2, 4)  # input pixels per heatmap cell the decoder can produce


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
    """Four ``conv3x3 -> BN -> ReLU -> maxpool 2`` blocks, channels ``in_channels`` -> 32 -> 64 -> 128 -> 256.

    ``forward(x [B, C, H, W])`` returns the four block outputs (for skip connections), for 128 x 128 inputs
    ``[B, 32, 64, 64], [B, 64, 32, 32], [B, 128, 16, 16], [B, 256, 8, 8]`` (each block halves H and W).
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
    """Encoder-decoder producing one heatmap of raw logits per keypoint: ``[B, K, s, s]`` for ``heatmap_size=s``
    and an ``image_size`` input; any input ``[B, C, H, W]`` gives ``[B, K, H / t, W / t]`` with the stride
    ``t = image_size / heatmap_size`` (the decoder is fully convolutional).

    Decoder (every ConvTranspose is ``k=4, s=2, p=1`` followed by BN + ReLU, see :func:`_up_block`):

    1. ConvTranspose 256 -> 128 (8 -> 16); with ``skip`` concat encoder block 3 (128 ch, 16x16) -> 256 ch.
    2. ConvTranspose 256 -> 64 (16 -> 32); with ``skip`` concat encoder block 2 (64 ch, 32x32) -> 128 ch.
    3. ConvTranspose 128 -> 32 (32 -> 64).
    4. 1x1 conv 32 -> K, no activation.

    ``skip=False`` drops both concatenations, so stages 2 and 3 take 128 and 64 input channels instead.
    ``heatmap_size=32`` (stride 4) drops stage 3: the 1x1 conv reads the 32x32 stage (128 ch with skips, 64
    without). ``heatmap_size=128`` (stride 1) adds one ConvTranspose 32 -> 32 (64 -> 128) before the 1x1 conv.
    """

    output_type: ClassVar[OutputType] = "heatmap"
    options: ClassVar[tuple[str, ...]] = ("num_keypoints", "heatmap_size", "skip", "in_channels", "image_size")

    def __init__(self, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True, in_channels: int = 1,
                 image_size: int = REFERENCE_SIZE) -> None:
        super().__init__()
        stride = heatmap_stride(image_size, heatmap_size)
        self.num_keypoints = num_keypoints
        self.heatmap_size = heatmap_size
        self.stride = stride
        self.skip = skip
        self.encoder = KeypointEncoder(in_channels)
        self.up1 = _up_block(256, 128)
        self.up2 = _up_block(256 if skip else 128, 64)
        stage2_channels = 128 if skip else 64
        tail: list[nn.Module] = []
        if stride <= 2:
            tail.append(_up_block(stage2_channels, 32))
        if stride == 1:
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
    """Direct regression (docs/keypoints.md, 'Models'): encoder, global average pool, FC head, sigmoid; ``[B, 2K]``.

    Head: FC 256 -> 128, ReLU, Dropout 0.5, FC 128 -> 64, ReLU, Dropout 0.5, FC 64 -> 2K, Sigmoid.
    Output ``[x0, y0, x1, y1, ...]`` normalised as ``(x / W, y / H)``; the global pool takes any input size.
    """

    output_type: ClassVar[OutputType] = "regression"
    options: ClassVar[tuple[str, ...]] = ("num_keypoints", "in_channels")

    def __init__(self, num_keypoints: int = 5, in_channels: int = 1) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.encoder = KeypointEncoder(in_channels)
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
    reduces the ``H/16 x W/16 x 256`` map (8x8 for 128 px) with a 1x1 conv (256 -> ``reduced_channels``, BN, ReLU),
    flattens it (``reduced_channels`` features per spatial cell) and regresses through FC -> 256, ReLU,
    Dropout ``dropout``, FC 256 -> 2K, Sigmoid. Output ``[B, 2K]`` as :class:`RegressionNet`. The FC layer's
    width depends on the cell count, so the model takes inputs of ``input_size`` ``(W, H)`` only.
    """

    output_type: ClassVar[OutputType] = "regression"
    options: ClassVar[tuple[str, ...]] = ("num_keypoints", "in_channels", "input_size")

    def __init__(self, num_keypoints: int = 5, reduced_channels: int = 16, dropout: float = 0.1,
                 in_channels: int = 1, input_size: tuple[int, int] = (REFERENCE_SIZE, REFERENCE_SIZE)) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.encoder = KeypointEncoder(in_channels)
        self.reduce = ConvBNReLU(nn.Conv2d(256, reduced_channels, kernel_size=1, bias=False), reduced_channels)
        cells = (input_size[0] // 16) * (input_size[1] // 16)
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
    Heatmap coordinates map to image pixels with the pixel-centre convention of docs/keypoints.md
    (:func:`loclab.ops.heatmaps.heatmap_to_image_coords`, stride ``image_size / heatmap_size``), then normalise as
    ``(x / W, y / H)`` for the ``input_size`` ``(W, H)`` the model is built for (other inputs are refused).

    ``beta`` is fixed: the final 1x1 conv can scale its logits freely, so a learnable temperature would be
    redundant with it.
    """

    output_type: ClassVar[OutputType] = "regression"
    options: ClassVar[tuple[str, ...]] = ("num_keypoints", "heatmap_size", "skip", "in_channels", "image_size",
                                          "input_size")

    def __init__(self, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True, beta: float = 1.0,
                 in_channels: int = 1, image_size: int = REFERENCE_SIZE,
                 input_size: tuple[int, int] = (REFERENCE_SIZE, REFERENCE_SIZE)) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.beta = beta
        self.heatmap_net = HeatmapNet(num_keypoints, heatmap_size, skip, in_channels, image_size)
        self.heatmap_size = heatmap_size
        self.image_size = image_size
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def heatmaps(self, x: Tensor) -> Tensor:
        """The raw heatmap logits ``[B, K, H / s, W / s]`` behind the coordinates (for figures and analysis)."""
        return self.heatmap_net(x)

    def forward(self, x: Tensor) -> Tensor:
        width, height = self.input_size
        if tuple(x.shape[-2:]) != (height, width):
            raise ValueError(f"IntegralNet was built for {width}x{height} inputs, got {x.shape[-1]}x{x.shape[-2]}")
        xy_hm = soft_argmax_2d(self.heatmap_net(x), self.beta)  # [B, K, 2] heatmap coords
        # the stride is image_size / heatmap_size on both axes, whatever the input's shape
        xy = heatmap_to_image_coords(xy_hm, self.image_size, self.heatmap_size)
        if width == height:  # one divisor, as the square reference model always divided
            return (xy / width).flatten(1)
        return (xy / torch.tensor([width, height], dtype=xy.dtype, device=xy.device)).flatten(1)


def heatmap_stride(image_size: int, heatmap_size: int) -> int:
    """``image_size / heatmap_size``, which must be one of :data:`HEATMAP_STRIDES` (``ValueError`` otherwise)."""
    if heatmap_size <= 0 or image_size % heatmap_size or image_size // heatmap_size not in HEATMAP_STRIDES:
        sizes = [image_size // s for s in HEATMAP_STRIDES]
        raise ValueError(f"heatmap_size must be one of {sizes} for image_size {image_size}, got {heatmap_size}")
    return image_size // heatmap_size


# name -> class keeping the :class:`~loclab.models.contracts.KeypointModel` contract (``--model`` offers these)
KEYPOINT_MODELS: dict[str, type[nn.Module]] = {
    "heatmap": HeatmapNet,
    "regression": RegressionNet,
    "integral": IntegralNet,
    "spatial_regression": SpatialRegressionNet,
}
