"""Weight initialisation shared by every loclab model."""

from torch import nn


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for every (transposed) conv, zero conv bias; BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
