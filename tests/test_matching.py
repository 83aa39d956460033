import pytest
import torch

from loclab.ops import box_iou, generate_anchors, match_anchors_to_targets, match_batch

SMALL_SIZES = (8, 4, 2)  # a 64 px image: strides 8, 16, 32
SMALL_ANCHOR_SIZES = ((4, 6, 8), (12, 16, 24), (24, 32, 48))


def _reference_match(anchors, boxes, labels, pos_threshold=0.5, neg_threshold=0.3, min_best_iou=0.1):
    """Slow, obviously-correct matcher: plain loops over anchors and boxes.

    IoU values come from box_iou (tested on its own in test_boxes.py) so both sides compare identical numbers.
    """
    num_anchors, num_boxes = anchors.shape[0], boxes.shape[0]
    iou = box_iou(anchors, boxes).tolist()
    labels = labels.tolist()
    out_labels = [0] * num_anchors
    out_boxes = [[0.0] * 4 for _ in range(num_anchors)]
    pos = [False] * num_anchors
    neg = [True] * num_anchors
    if num_boxes == 0:
        return out_labels, out_boxes, pos, neg

    best_gt, best_iou = [], []
    for n in range(num_anchors):
        g_best = 0
        for g in range(1, num_boxes):
            if iou[n][g] > iou[n][g_best]:  # strict: the lowest box index wins ties
                g_best = g
        best_gt.append(g_best)
        best_iou.append(iou[n][g_best])

    owner = {}  # anchor -> the box that claims it as its best anchor
    for g in range(num_boxes):
        n_best = 0
        for n in range(1, num_anchors):
            if iou[n][g] > iou[n_best][g]:  # strict: the lowest anchor index wins ties
                n_best = n
        if iou[n_best][g] < min_best_iou:
            continue
        if n_best not in owner or iou[n_best][g] > iou[n_best][owner[n_best]]:
            owner[n_best] = g

    for n in range(num_anchors):
        g = owner.get(n, best_gt[n])
        pos[n] = n in owner or best_iou[n] >= pos_threshold
        neg[n] = not pos[n] and best_iou[n] < neg_threshold
        out_labels[n] = labels[g] + 1 if pos[n] else 0
        if n in owner or best_iou[n] > 0:
            out_boxes[n] = boxes[g].tolist()
    return out_labels, out_boxes, pos, neg


def _assert_same(fast, slow):
    labels, boxes, pos, neg = fast
    assert labels.dtype == torch.long and pos.dtype == torch.bool and neg.dtype == torch.bool
    assert labels.tolist() == slow[0]
    assert boxes.tolist() == slow[1]
    assert pos.tolist() == slow[2]
    assert neg.tolist() == slow[3]


def _random_scene(generator, num_boxes, image_size=64.0, duplicate=False):
    sides = 4 + torch.rand(num_boxes, 2, generator=generator) * 40
    corner = torch.rand(num_boxes, 2, generator=generator) * (image_size - sides)
    boxes = torch.cat((corner, corner + sides), dim=1)
    labels = torch.randint(0, 3, (num_boxes,), generator=generator)
    if duplicate and num_boxes >= 2:
        boxes[1], labels[1] = boxes[0], (labels[0] + 1) % 3  # same box, other class: ties everywhere
    return boxes, labels


@pytest.fixture(scope="module")
def small_anchors():
    return torch.cat(generate_anchors(SMALL_SIZES, SMALL_ANCHOR_SIZES, image_size=64))


@pytest.mark.parametrize("seed", range(25))
def test_single_image_matches_reference(small_anchors, seed):
    g = torch.Generator().manual_seed(seed)
    boxes, labels = _random_scene(g, num_boxes=seed % 7, duplicate=seed % 3 == 0)
    _assert_same(match_anchors_to_targets(small_anchors, boxes, labels), _reference_match(small_anchors, boxes, labels))


def test_reference_agreement_with_other_thresholds(small_anchors):
    g = torch.Generator().manual_seed(100)
    boxes, labels = _random_scene(g, num_boxes=5)
    kwargs = dict(pos_threshold=0.4, neg_threshold=0.2, min_best_iou=0.3)
    fast = match_anchors_to_targets(small_anchors, boxes, labels, **kwargs)
    _assert_same(fast, _reference_match(small_anchors, boxes, labels, **kwargs))


def test_no_boxes_means_all_negative(small_anchors):
    no_labels = torch.zeros(0, dtype=torch.long)
    labels, boxes, pos, neg = match_anchors_to_targets(small_anchors, torch.zeros(0, 4), no_labels)
    n = small_anchors.shape[0]
    assert labels.shape == (n,) and labels.eq(0).all()
    assert boxes.shape == (n, 4) and boxes.eq(0).all()
    assert not pos.any() and neg.all()


def test_three_way_split_by_thresholds():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 16], [0, 0, 10, 20], [0, 0, 10, 40], [50, 50, 60, 60]])
    boxes = torch.tensor([[0.0, 0, 10, 8]])  # IoU 0.8, 0.5, 0.4, 0.2, 0
    labels_out, boxes_out, pos, neg = match_anchors_to_targets(anchors, boxes, torch.tensor([2]))
    assert pos.tolist() == [True, True, False, False, False]  # 0.5 itself is positive
    assert neg.tolist() == [False, False, False, True, True]  # 0.4 is ignored: in neither mask
    assert labels_out.tolist() == [3, 3, 0, 0, 0]  # class id + 1 for positives only
    assert boxes_out[:4].eq(boxes).all() and boxes_out[4].eq(0).all()  # the anchor touching nothing gets zeros


def test_best_anchor_is_positive_below_the_threshold():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    labels, _, pos, neg = match_anchors_to_targets(anchors, torch.tensor([[0.0, 0, 10, 25]]), torch.tensor([0]))
    assert pos.tolist() == [True, False] and neg.tolist() == [False, True]  # IoU 0.4, but the box's best anchor
    assert labels.tolist() == [1, 0]


def test_best_anchor_is_forced_over_all_scales_not_per_scale():
    anchors = generate_anchors((56, 28, 14), ((16, 24, 32), (48, 64, 96), (96, 128, 192)))
    all_anchors = torch.cat(anchors)
    num_fine = anchors[0].shape[0]
    tiny = torch.tensor([[105.0, 63.0, 115.0, 73.0]])  # 10 px: best IoU 0.39, reached only by forcing
    labels, _, pos, _ = match_anchors_to_targets(all_anchors, tiny, torch.tensor([0]))
    best = box_iou(all_anchors, tiny)[:, 0]
    assert best.max() < 0.5
    assert pos.nonzero().flatten().tolist() == [int(best.argmax())]  # exactly one positive, on the finest scale
    assert int(best.argmax()) < num_fine and labels[pos].tolist() == [1]
    # A 16 px circle: its positives are all on the finest scale; per-scale forcing would add one on each other.
    circle = torch.tensor([[101.0, 59.0, 117.0, 75.0]])
    _, _, pos, _ = match_anchors_to_targets(all_anchors, circle, torch.tensor([0]))
    assert pos[:num_fine].any() and not pos[num_fine:].any()


def test_best_anchor_needs_the_iou_floor():
    anchors = torch.tensor([[0.0, 0, 100, 100]])
    tiny = torch.tensor([[0.0, 0, 5, 5]])  # IoU 0.0025
    _, boxes_out, pos, neg = match_anchors_to_targets(anchors, tiny, torch.tensor([1]))
    assert not pos.any() and neg.all()
    assert boxes_out[0].tolist() == tiny[0].tolist()  # it overlaps, so the box is still reported
    _, _, pos, _ = match_anchors_to_targets(anchors, tiny, torch.tensor([1]), min_best_iou=0.001)
    assert pos.all()


def test_claimed_anchor_goes_to_the_claiming_box_even_if_another_overlaps_more():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 9, 9], [100, 100, 110, 110]])
    boxes = torch.tensor([[0.0, 0, 14, 14], [0, 0, 9, 9]])  # box 0's best anchor is 0 (IoU 0.51)
    labels, boxes_out, pos, _ = match_anchors_to_targets(anchors, boxes, torch.tensor([0, 1]))
    # Box 1 overlaps anchor 0 more (0.81) but its own best anchor is 1 (IoU 1); anchor 0 stays with box 0.
    assert pos.tolist() == [True, True, False]
    assert labels.tolist() == [1, 2, 0]
    assert boxes_out[0].tolist() == boxes[0].tolist()


def test_two_boxes_claiming_one_anchor_highest_iou_wins():
    anchors = torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110]])
    boxes = torch.tensor([[0.0, 0, 10, 20], [0, 0, 10, 12]])  # IoU 0.5 and 0.83 with anchor 0
    labels, boxes_out, pos, _ = match_anchors_to_targets(anchors, boxes, torch.tensor([0, 2]))
    assert labels.tolist() == [3, 0] and pos.tolist() == [True, False]
    assert boxes_out[0].tolist() == boxes[1].tolist()
    # Identical boxes tie: the lower box index wins.
    same = torch.tensor([[0.0, 0, 10, 12], [0, 0, 10, 12]])
    labels, _, _, _ = match_anchors_to_targets(anchors, same, torch.tensor([1, 2]))
    assert labels.tolist() == [2, 0]


def _padded_batch(generator, counts, max_boxes):
    boxes = torch.rand(len(counts), max_boxes, 4, generator=generator) * 64  # garbage in the padding
    labels = torch.randint(0, 3, (len(counts), max_boxes), generator=generator)
    valid = torch.zeros(len(counts), max_boxes, dtype=torch.bool)
    for b, count in enumerate(counts):
        boxes[b, :count], labels[b, :count] = _random_scene(generator, count, duplicate=b % 2 == 0)
        # Padding in the middle as well as at the end: validity, not position, decides.
        perm = torch.randperm(max_boxes, generator=generator)
        boxes[b], labels[b] = boxes[b, perm], labels[b, perm]
        valid[b, : count] = True
        valid[b] = valid[b, perm]
    return boxes, labels, valid


@pytest.mark.parametrize("seed", range(6))
def test_batch_equals_per_image(small_anchors, seed):
    g = torch.Generator().manual_seed(seed)
    counts = [0, 1, 3, 6, 2, 0, 5]
    boxes, labels, valid = _padded_batch(g, counts, max_boxes=6)
    out = match_batch(small_anchors, boxes, labels, valid)
    assert [t.shape[:2] for t in out] == [(len(counts), small_anchors.shape[0])] * 4
    for b in range(len(counts)):
        single = match_anchors_to_targets(small_anchors, boxes[b, valid[b]], labels[b, valid[b]])
        for got, want in zip(out, single):
            assert torch.equal(got[b], want)
        _assert_same([t[b] for t in out], _reference_match(small_anchors, boxes[b, valid[b]], labels[b, valid[b]]))


def test_batch_of_one_on_the_default_setup():
    anchors = torch.cat(generate_anchors((56, 28, 14), ((16, 24, 32), (48, 64, 96), (96, 128, 192))))
    g = torch.Generator().manual_seed(7)
    boxes, labels = _random_scene(g, 4, image_size=224.0)
    batch = match_batch(anchors, boxes[None], labels[None], torch.ones(1, 4, dtype=torch.bool))
    for got, want in zip(batch, match_anchors_to_targets(anchors, boxes, labels)):
        assert torch.equal(got[0], want)


def test_masks_are_consistent(small_anchors):
    g = torch.Generator().manual_seed(3)
    boxes, labels, valid = _padded_batch(g, [4, 0, 2], max_boxes=4)
    matched_labels, _, pos, neg = match_batch(small_anchors, boxes, labels, valid)
    assert not (pos & neg).any()
    assert matched_labels[~pos].eq(0).all() and matched_labels[pos].ge(1).all()


def test_invalid_thresholds_are_rejected(small_anchors):
    boxes, labels = torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([0])
    with pytest.raises(ValueError):
        match_anchors_to_targets(small_anchors, boxes, labels, pos_threshold=0.3, neg_threshold=0.5)
    with pytest.raises(ValueError):
        match_anchors_to_targets(small_anchors, boxes, labels, min_best_iou=0.0)
