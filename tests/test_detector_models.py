import torch

from loclab.config import DetectorConfig
from loclab.models.detector import (
    DETECTOR_MODELS,
    LoclabDetector,
    ReferenceDetector,
    flatten_predictions,
    receptive_field,
)
from loclab.ops.anchors import generate_anchors


def test_every_model_has_the_head_api():
    x = torch.zeros(2, 3, 224, 224)
    for name, cls in DETECTOR_MODELS.items():
        outs = cls(num_anchors=3, num_classes=3).eval()(x)
        sizes = DetectorConfig(model=name, image_size=224).feature_map_sizes
        assert [tuple(o.shape) for o in outs] == [(2, 24, s, s) for s in sizes], name
    assert DetectorConfig(model="csp", image_size=512).feature_map_sizes == (64, 32, 16)
    assert DetectorConfig(image_size=256).feature_map_sizes == (64, 32, 16)


def test_reference_is_the_spec_architecture():
    m = ReferenceDetector()
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    backbone = [(c.in_channels, c.out_channels, c.stride[0]) for c in convs[:5]]
    assert backbone == [(3, 32, 1), (32, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs[:5])
    head_convs = [(c.in_channels, c.out_channels, c.kernel_size) for c in convs[5:]]
    assert head_convs == [(128, 128, (3, 3)), (128, 24, (1, 1)), (256, 256, (3, 3)), (256, 24, (1, 1)),
                          (512, 512, (3, 3)), (512, 24, (1, 1))]


def test_flatten_matches_anchor_order():
    """Prediction k must sit on anchor k: mark one (scale, row, col, anchor) and find it after flattening."""
    sizes, anchors_per_cell = (56, 28, 14), 3
    outs = [torch.zeros(1, anchors_per_cell * 8, s, s) for s in sizes]
    scale, i, j, a = 1, 5, 9, 2
    outs[scale][0, a * 8 + 4, i, j] = 1.0  # objectness channel of anchor a at cell (i, j)
    flat = flatten_predictions(outs, anchors_per_cell, 3)
    k = int(flat[0, :, 4].argmax())
    anchors = torch.cat(generate_anchors(sizes, [[16, 24, 32], [48, 64, 96], [96, 128, 192]], 224))
    stride = 224 / sizes[scale]
    cx, cy = (anchors[k, 0] + anchors[k, 2]) / 2, (anchors[k, 1] + anchors[k, 3]) / 2
    assert (cx.item(), cy.item()) == ((j + 0.5) * stride, (i + 0.5) * stride)
    assert (anchors[k, 2] - anchors[k, 0]).item() == 96


def test_receptive_field_explains_the_reference_limit():
    """The reference sees ~33 px at S2 and ~65 px at S3 with its heads, less than the objects there;
    loclab's variant sees the objects whole."""
    ref = receptive_field(ReferenceDetector())
    assert ref == [17, 33, 65]
    ours = receptive_field(LoclabDetector())
    assert ours[1] >= 150 and ours[2] >= 200
