"""Three-scale single-shot detectors.

Every detector here keeps the contract :class:`loclab.models.contracts.Detector`: it maps ``images [B, 3, S, S]``
to a list of three head outputs ``[B, A*(5+C), S / stride, S / stride]`` for the strides 4, 8 and 16 (56x56,
28x28 and 14x14 at 224 px), with per-anchor channel order ``tx, ty, tw, th, objectness, class scores (C)``.
:func:`flatten_predictions` turns them into one ``[B, total_anchors, 5+C]`` tensor in the anchor order of
:func:`loclab.ops.anchors.generate_anchors`. :data:`DETECTOR_MODELS` names them for ``--model``.

- ``reference``: the course architecture (docs/detection.md, 'Architectures'), kept exactly.
- ``loclab``: the same anchors/heads API with the receptive field the objects need. The reference's
  receptive field at its heads (about 33 px at S2 and 65 px at S3, measured by
  :func:`receptive_field`) is smaller than the 48–96 px squares and 96–192 px triangles those scales
  must box, so the variant adds a stride-1 conv to each stage, a 7x7 context stage, and a top-down path
  (FPN-style) that hands every scale the context of the coarser ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loclab.errors import ConfigError
from loclab.models.blocks import ConvBNReLU, DetectionHead, conv_bn_relu
from loclab.models.detector_csp import CspDetector
from loclab.models.init import kaiming_init


class ReferenceDetector(nn.Module):
    """The course's ``MultiScaleDetector`` (docs/detection.md, 'Architectures'), exactly.

    Block1: conv 3→32 s1, conv 32→64 s2 (112x112). Block2: 64→128 s2 (56x56, scale 1).
    Block3: 128→256 s2 (28x28, scale 2). Block4: 256→512 s2 (14x14, scale 3). One head per scale.
    """

    def __init__(self, num_anchors: int = 3, num_classes: int = 3):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.block1 = nn.Sequential(conv_bn_relu(3, 32), conv_bn_relu(32, 64, stride=2))
        self.block2 = conv_bn_relu(64, 128, stride=2)
        self.block3 = conv_bn_relu(128, 256, stride=2)
        self.block4 = conv_bn_relu(256, 512, stride=2)
        self.heads = nn.ModuleList(DetectionHead(c, num_anchors, num_classes) for c in (128, 256, 512))
        kaiming_init(self)

    def features(self, images: Tensor) -> list[Tensor]:
        """The three scale feature maps ``[B, 128, 56, 56]``, ``[B, 256, 28, 28]``, ``[B, 512, 14, 14]``."""
        s1 = self.block2(self.block1(images))
        s2 = self.block3(s1)
        s3 = self.block4(s2)
        return [s1, s2, s3]

    def forward(self, images: Tensor) -> list[Tensor]:
        return [head(f) for head, f in zip(self.heads, self.features(images))]


class LoclabDetector(nn.Module):
    """loclab's detector: deeper stages, a 7x7 context stage and a top-down path.

    Same inputs, anchors and head outputs as :class:`ReferenceDetector`. Cost is kept near the
    reference's by using a stride-2 stem (the reference spends a quarter of its compute on a
    full-resolution 3→32 conv) and 128-channel pyramid features.
    """

    def __init__(self, num_anchors: int = 3, num_classes: int = 3, width: int = 128):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.stem = nn.Sequential(conv_bn_relu(3, 32, stride=2), conv_bn_relu(32, 64, stride=2))  # 56
        self.stage1 = conv_bn_relu(64, 96)  # 56
        self.stage2 = nn.Sequential(conv_bn_relu(96, 192, stride=2), conv_bn_relu(192, 192))  # 28
        self.stage3 = nn.Sequential(conv_bn_relu(192, 320, stride=2), conv_bn_relu(320, 320))  # 14
        self.context = nn.Sequential(conv_bn_relu(320, 320, stride=2), conv_bn_relu(320, 320))  # 7
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (96, 192, 320, 320))
        self.heads = nn.ModuleList(DetectionHead(width, num_anchors, num_classes) for _ in range(3))
        kaiming_init(self)
        # Objectness starts at a 1 % prior so the first steps are not dominated by easy negatives.
        prior = -math.log((1 - 0.01) / 0.01)
        for head in self.heads:
            bias = head.out.bias.view(num_anchors, 5 + num_classes)
            nn.init.constant_(bias[:, 4], prior)

    def features(self, images: Tensor) -> list[Tensor]:
        """Pyramid features ``[B, width, 56, 56]``, ``[B, width, 28, 28]``, ``[B, width, 14, 14]``."""
        c1 = self.stage1(self.stem(images))
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        c4 = self.context(c3)
        p = self.lateral[3](c4)
        pyramid = []
        for lateral, c in zip(self.lateral[2::-1], (c3, c2, c1)):
            p = lateral(c) + F.interpolate(p, size=c.shape[-2:], mode="nearest")
            pyramid.append(p)
        return pyramid[::-1]

    def forward(self, images: Tensor) -> list[Tensor]:
        return [head(f) for head, f in zip(self.heads, self.features(images))]


# name -> class keeping the :class:`~loclab.models.contracts.Detector` contract (``--model`` offers these names)
DETECTOR_MODELS: dict[str, type[nn.Module]] = {
    "reference": ReferenceDetector,
    "loclab": LoclabDetector,
    "csp": CspDetector,
}
DEFAULT_DETECTOR = "loclab"


def build_detector(name: str, num_anchors: int = 3, num_classes: int = 3) -> nn.Module:
    """Instantiate a detector from :data:`DETECTOR_MODELS` by name."""
    if name not in DETECTOR_MODELS:
        raise ConfigError(f"unknown detector model {name!r}; choose one of {sorted(DETECTOR_MODELS)}")
    return DETECTOR_MODELS[name](num_anchors=num_anchors, num_classes=num_classes)


def flatten_predictions(outputs: list[Tensor], num_anchors: int, num_classes: int) -> Tensor:
    """Concatenate head outputs ``[B, A*(5+C), H, W]`` into ``[B, sum(H*W*A), 5+C]``.

    The order is scale-major, then row-major over ``(i, j, a)`` — the order of ``generate_anchors``.
    """
    flat = []
    for out in outputs:
        b, _, h, w = out.shape
        flat.append(out.view(b, num_anchors, 5 + num_classes, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 5 + num_classes))
    return torch.cat(flat, dim=1)


def receptive_field(model: nn.Module, image_size: int = 224) -> list[int]:
    """Measured receptive field (px) of the centre cell of each head output, one per head the model returns.

    Back-propagates from the centre cell of each output to the input and measures the extent of
    non-zero gradient, so it counts the heads' own 3x3 convs and any top-down path. The model is run in
    eval mode on a constant image with weights replaced by ones in a copy, so every path contributes.
    """
    import copy

    probe = copy.deepcopy(model).float().eval()
    for m in probe.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        heads = len(probe(torch.ones(1, 3, image_size, image_size)))
    sizes = []
    for k in range(heads):
        x = torch.ones(1, 3, image_size, image_size, requires_grad=True)
        out = probe(x)[k]
        h, w = out.shape[-2:]
        out[0, :, h // 2, w // 2].sum().backward()
        g = x.grad[0].abs().sum(0)
        rows = torch.nonzero(g.sum(1) > 0).flatten()
        cols = torch.nonzero(g.sum(0) > 0).flatten()
        sizes.append(int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)))
    return sizes
