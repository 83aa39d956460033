"""Building blocks shared by the detector and keypoint models, and the detection head every detector uses."""

from __future__ import annotations

from torch import Tensor, nn

from loclab.ops.bn_relu import batch_norm_relu_train, can_fuse


class ConvBNReLU(nn.Sequential):
    """``conv -> BatchNorm2d -> ReLU``, then any further layers (a pooling, say), as a plain ``Sequential``.

    In training, with bf16 channels-last activations on the CPU, BatchNorm and ReLU run as one fused
    kernel (:mod:`loclab.ops.bn_relu`); everywhere else, and in eval mode, the layers run one by one.
    The children and their state-dict keys are those of the ``Sequential`` it replaces.
    """

    def __init__(self, conv: nn.Module, channels: int, *rest: nn.Module):
        super().__init__(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True), *rest)

    def forward(self, x: Tensor) -> Tensor:
        conv, bn, relu, *rest = self
        x = conv(x)
        if bn.training and bn.track_running_stats and bn.affine and bn.momentum is not None and can_fuse(x):
            bn.num_batches_tracked.add_(1)
            x = batch_norm_relu_train(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)
        else:
            x = relu(bn(x))
        for layer in rest:
            x = layer(x)
        return x


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> ConvBNReLU:
    """3x3 conv (padding 1, no bias) → BatchNorm → ReLU."""
    return ConvBNReLU(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), c_out)


class DetectionHead(nn.Module):
    """3x3 conv keeping channels (+BN+ReLU), then 1x1 conv to ``A*(5+C)`` channels."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int):
        super().__init__()
        self.body = conv_bn_relu(channels, channels)
        self.out = nn.Conv2d(channels, num_anchors * (5 + num_classes), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))
