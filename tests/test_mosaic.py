"""Mosaic augmentation: boxes follow their pixels through the tiling and the window, labels travel with them."""

import torch

from loclab.ops.mosaic import mosaic_batch


def _painted(batch: int, size: int, seed: int):
    """Images whose every box is filled with its label's own grey level (label + 1) * 20 on a black background."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(batch, 1, size, size)
    boxes = torch.zeros(batch, 2, 4)
    labels = torch.full((batch, 2), -1)
    valid = torch.zeros(batch, 2, dtype=torch.bool)
    for b in range(batch):
        x, y = (torch.randint(0, size - 12, (2,), generator=g) // 2 * 2).tolist()
        side = int(torch.randint(6, 12, (), generator=g))
        label = b % 5
        images[b, 0, y:y + side, x:x + side] = (label + 1) * 20
        boxes[b, 0] = torch.tensor([x, y, x + side, y + side], dtype=torch.float32)
        labels[b, 0], valid[b, 0] = label, True
    return images, boxes, labels, valid


def test_boxes_and_labels_follow_their_pixels():
    images, boxes, labels, valid = _painted(6, 32, seed=0)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        out, out_boxes, out_labels, out_valid = mosaic_batch(images, boxes, labels, valid, 1.0, generator=g,
                                                             min_visible=1e-6, min_side=1.0)
        assert out.shape == images.shape and out_boxes.shape == (6, 8, 4) and out_labels.shape == (6, 8)
        for b in range(6):
            for k in torch.nonzero(out_valid[b]).flatten().tolist():
                x1, y1, x2, y2 = out_boxes[b, k].round().int().tolist()
                assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
                region = out[b, 0, y1:y2, x1:x2]
                assert torch.all(region == (out_labels[b, k] + 1) * 20)  # the box holds exactly its object
            # every painted pixel is inside some valid box of its own grey level
            painted = torch.nonzero(out[b, 0])
            covered = torch.zeros(len(painted), dtype=torch.bool)
            for k in torch.nonzero(out_valid[b]).flatten().tolist():
                x1, y1, x2, y2 = out_boxes[b, k].tolist()
                covered |= (painted[:, 1] >= x1) & (painted[:, 1] < x2) & (painted[:, 0] >= y1) & (painted[:, 0] < y2)
            assert covered.all()


def test_probability_zero_is_the_identity_and_one_image_tiles_itself():
    images, boxes, labels, valid = _painted(3, 16, seed=1)
    assert mosaic_batch(images, boxes, labels, valid, 0.0)[0] is images
    g = torch.Generator().manual_seed(0)
    out, out_boxes, out_labels, out_valid = mosaic_batch(images[:1], boxes[:1], labels[:1], valid[:1], 1.0, generator=g)
    assert set(out_labels[0][out_valid[0]].tolist()) <= {labels[0, 0].item()}


def test_images_left_alone_keep_their_boxes_in_the_first_slots():
    images, boxes, labels, valid = _painted(8, 16, seed=2)
    g = torch.Generator().manual_seed(3)
    out, out_boxes, out_labels, out_valid = mosaic_batch(images, boxes, labels, valid, 0.5, generator=g)
    unchanged = [b for b in range(8) if torch.equal(out[b], images[b]) and torch.equal(out_boxes[b, :2], boxes[b])]
    for b in unchanged:
        assert torch.equal(out_labels[b, :2], labels[b]) and not out_valid[b, 2:].any()
