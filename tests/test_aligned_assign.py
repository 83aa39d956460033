"""Task-aligned assignment (loclab.ops.aligned_assign) against a loop over boxes and anchors, and the loss built
on it (loclab.losses.detection_aligned)."""

import pytest
import torch
from test_detection_loss_grid import _batch  # the grid loss's batch: two images, one padded box slot

from loclab.config import DetectorConfig
from loclab.engine.detection import AnchorSetup, make_loss
from loclab.losses.detection_aligned import AlignedDetectionLoss
from loclab.ops.aligned_assign import task_aligned_assign
from loclab.ops.boxes import box_iou_pair


def _slow_assign(centres, pred_boxes, pred_scores, boxes, labels, valid, top_k=10, alpha=0.5, beta=6.0):
    """The four rules of the module docstring, one image, box and anchor at a time."""
    num_images, num_anchors = pred_boxes.shape[:2]
    pos = torch.zeros(num_images, num_anchors, dtype=torch.bool)
    index = torch.zeros(num_images, num_anchors, dtype=torch.long)
    quality = torch.zeros(num_images, num_anchors)
    for b in range(num_images):
        chosen = {}  # box -> {anchor: (alignment, iou)}
        for m, box in enumerate(boxes[b].tolist()):
            if not valid[b, m]:
                continue
            scored = []
            for n, (x, y) in enumerate(centres.tolist()):
                if box[0] < x < box[2] and box[1] < y < box[3]:
                    iou = box_iou_pair(pred_boxes[b, n].tolist(), box)
                    align = float(pred_scores[b, n, labels[b, m]]) ** alpha * iou ** beta
                    if align > 0:
                        scored.append((align, n, iou))
            scored.sort(key=lambda t: (-t[0], t[1]))  # the lower anchor index among equals
            chosen[m] = {n: (align, iou) for align, n, iou in scored[:top_k]}
        owner = {}
        for m in sorted(chosen):
            for n, (_, iou) in chosen[m].items():
                if n not in owner or iou > chosen[owner[n]][n][1]:
                    owner[n] = m  # boxes visited in index order: equal IoU keeps the lower index
        for m, members in chosen.items():
            kept = {n: v for n, v in members.items() if owner[n] == m}
            if not kept:
                continue
            best_align = max(a for a, _ in kept.values())
            best_iou = max(u for _, u in kept.values())
            for n, (align, _) in kept.items():
                pos[b, n], index[b, n] = True, m
                quality[b, n] = align * best_iou / (best_align + 1e-9)
    return pos, index, quality


def _random_case(seed, num_images=3, num_anchors=60, max_boxes=4, num_classes=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_anchors, 2, generator=g) * 100
    half = torch.rand(num_images, num_anchors, 2, generator=g) * 20 + 2
    jitter = torch.randn(num_images, num_anchors, 2, generator=g) * 5
    mid = centres + jitter
    pred_boxes = torch.cat([mid - half, mid + half], dim=-1)
    pred_scores = torch.rand(num_images, num_anchors, num_classes, generator=g)
    corner = torch.rand(num_images, max_boxes, 2, generator=g) * 70
    size = torch.rand(num_images, max_boxes, 2, generator=g) * 40 + 10
    boxes = torch.cat([corner, corner + size], dim=-1)
    labels = torch.randint(0, num_classes, (num_images, max_boxes), generator=g)
    valid = torch.rand(num_images, max_boxes, generator=g) > 0.2
    return centres, pred_boxes, pred_scores, boxes, labels, valid


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_matches_the_loop_reference(seed, top_k):
    case = _random_case(seed)
    pos, index, quality = task_aligned_assign(*case, top_k=top_k)
    want_pos, want_index, want_quality = _slow_assign(*case, top_k=top_k)
    assert want_pos.any()  # the cases do assign something
    assert torch.equal(pos, want_pos)
    assert torch.equal(index, want_index)
    assert torch.allclose(quality, want_quality, atol=1e-6)


def test_a_box_gets_at_most_top_k_and_its_best_positive_gets_its_best_iou():
    case = _random_case(0, num_images=1, num_anchors=200, max_boxes=1)
    case[5][:] = True
    pos, _, quality = task_aligned_assign(*case, top_k=5)
    assert int(pos.sum()) == 5
    ious = torch.tensor([box_iou_pair(case[1][0, n].tolist(), case[3][0, 0].tolist()) for n in range(200)])
    assert quality.max().item() == pytest.approx(ious[pos[0]].max().item(), rel=1e-5)
    assert (quality[~pos] == 0).all() and (quality[pos] > 0).all()


def test_shared_anchor_goes_to_the_box_it_overlaps_most():
    centres = torch.tensor([[50.0, 50.0]])
    pred = torch.tensor([[[40.0, 40.0, 60.0, 60.0]]])
    scores = torch.ones(1, 1, 1)
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 100.0], [38.0, 38.0, 62.0, 62.0], [38.0, 38.0, 62.0, 62.0]]])
    pos, index, _ = task_aligned_assign(centres, pred, scores, boxes, torch.zeros(1, 3, dtype=torch.long),
                                        torch.ones(1, 3, dtype=torch.bool))
    assert pos.tolist() == [[True]] and index.tolist() == [[1]]  # the tight box, the lower of two equals


def test_padding_anchors_outside_and_empty_batches_are_never_positive():
    centres = torch.tensor([[5.0, 5.0], [50.0, 50.0]])
    pred = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 60.0, 60.0]]])
    boxes = torch.tensor([[[40.0, 40.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]]])
    valid = torch.tensor([[True, False]])
    pos, index, quality = task_aligned_assign(centres, pred, torch.ones(1, 2, 1), boxes,
                                              torch.zeros(1, 2, dtype=torch.long), valid)
    assert pos.tolist() == [[False, True]] and quality[0, 0] == 0 and quality[0, 1] == pytest.approx(1.0)
    pos, index, quality = task_aligned_assign(centres, pred, torch.ones(1, 2, 1), boxes[:, :0],
                                              torch.zeros(1, 0, dtype=torch.long), valid[:, :0])
    assert not pos.any() and index.shape == quality.shape == (1, 2)
    with pytest.raises(ValueError, match="top_k"):
        task_aligned_assign(centres, pred, torch.ones(1, 2, 1), boxes, torch.zeros(1, 2, dtype=torch.long),
                            valid, top_k=0)


@pytest.fixture(scope="module")
def loss_fn():
    cfg = DetectorConfig(loss="aligned", weight_loc=1.0)
    loss = make_loss(cfg, AnchorSetup.from_config(cfg))
    assert isinstance(loss, AlignedDetectionLoss)
    return loss


def test_loss_asks_objectness_for_the_quality_and_weights_boxes_by_it(loss_fn):
    """Recompute the three terms from the assignment by hand: the loss is the grid loss's terms with the
    assigner's positives and quality weights."""
    torch.manual_seed(0)
    preds = torch.randn(2, loss_fn.anchors.shape[0], 8) * 0.5
    boxes, labels, valid = _batch()
    out = loss_fn(preds, boxes, labels, valid)

    decoded = loss_fn.box_coder.decode(preds[..., :4], loss_fn.anchors)
    scores = torch.sigmoid(preds[..., 4:5]) * torch.softmax(preds[..., 5:], dim=-1)
    pos, index, quality = task_aligned_assign(loss_fn.centres, decoded, scores, boxes, labels, valid)
    assert pos.any()
    from loclab.ops.iou_losses import complete_iou

    target = boxes.gather(1, index[..., None].expand(-1, -1, 4))[pos]
    w = quality[pos]
    norm = w.sum().clamp(min=1)
    loc = ((1 - complete_iou(decoded[pos], target)) * w).sum() / norm
    obj_target = torch.zeros(2, loss_fn.anchors.shape[0])
    obj_target[pos] = w
    obj = (torch.nn.functional.binary_cross_entropy_with_logits(preds[..., 4], obj_target, reduction="none")
           * loss_fn.obj_weight).sum() / 2
    cls = (torch.nn.functional.cross_entropy(preds[..., 5:][pos], labels.gather(1, index)[pos], reduction="none")
           * w).sum() / norm
    assert torch.allclose(out["loss_loc"], loc) and torch.allclose(out["loss_obj"], obj)
    assert torch.allclose(out["loss_cls"], cls)
    g_obj, g_cls, g_loc = loss_fn.gains
    assert torch.allclose(out["loss_total"], 2 * (g_obj * obj + g_cls * cls + g_loc * loc))


def test_loss_gradients_reach_every_term_and_are_finite(loss_fn):
    preds = torch.randn(2, loss_fn.anchors.shape[0], 8, requires_grad=True)
    out = loss_fn(preds, *_batch())
    out["loss_total"].backward()
    assert torch.isfinite(preds.grad).all()
    for k in (slice(0, 4), 4, slice(5, 8)):
        assert preds.grad[..., k].abs().sum() > 0
