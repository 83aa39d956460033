"""Grid-and-shape matching (loclab.ops.grid_matching) against a loop over images, anchors and boxes."""

import math

import pytest
import torch

from loclab.ops.anchors import anchor_scale_index, generate_anchors
from loclab.ops.boxes import box_iou_pair
from loclab.ops.grid_matching import AnchorCells, grid_match

SIZES = (16, 8, 4)  # a 64 px input: strides 4, 8, 16
IMAGE = 64
ANCHOR_SIZES = ((6.0, 10.0), (16.0, 24.0), (32.0, 48.0))
RATIOS = ((1.0, 2.0), (0.5, 1.0), (1.0, 1.5))


def _layout():
    anchors = torch.cat(generate_anchors(SIZES, ANCHOR_SIZES, IMAGE, aspect_ratios=RATIOS))
    scales = anchor_scale_index(SIZES, 2)
    strides = torch.tensor([IMAGE / s for s in SIZES])[scales]
    return anchors, strides


def _slow_match(anchors, strides, boxes, valid, anchor_t=4.0):
    """The rules of the module docstring, one anchor and one box at a time."""
    pos = torch.zeros(boxes.shape[0], anchors.shape[0], dtype=torch.bool)
    index = torch.zeros(boxes.shape[0], anchors.shape[0], dtype=torch.long)
    for b in range(boxes.shape[0]):
        for n, anchor in enumerate(anchors.tolist()):
            stride = float(strides[n])
            ax, ay = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
            aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
            cell = (math.floor(ay / stride), math.floor(ax / stride))
            best, best_iou = None, -1.0
            for m, box in enumerate(boxes[b].tolist()):
                if not valid[b, m]:
                    continue
                gx, gy = (box[0] + box[2]) / 2 / stride, (box[1] + box[3]) / 2 / stride
                gw, gh = box[2] - box[0], box[3] - box[1]
                i, j = math.floor(gy), math.floor(gx)
                cells = {(i, j), (i, j - 1 if gx - j < 0.5 else j + 1), (i - 1 if gy - i < 0.5 else i + 1, j)}
                worst = max(gw / aw, aw / gw, gh / ah, ah / gh)
                if cell in cells and worst < anchor_t:
                    iou = box_iou_pair(anchor, box)
                    if iou > best_iou:  # strict: the lowest box index wins ties
                        best, best_iou = m, iou
            if best is not None:
                pos[b, n], index[b, n] = True, best
    return pos, index


def test_a_box_claims_its_cell_and_the_two_nearest_neighbours():
    anchors, strides = _layout()
    # centre (13, 9): on the stride-4 map cell (row 2, col 3), in the left and upper half of the cell
    box = torch.tensor([[[9.0, 5.0, 17.0, 13.0]]])
    pos, _ = grid_match(anchors, strides, box, torch.tensor([[True]]))
    fine = pos[0, : 16 * 16 * 2].view(16, 16, 2).any(dim=2)
    assert set(map(tuple, fine.nonzero().tolist())) == {(2, 3), (2, 2), (1, 3)}


def test_shape_limit_keeps_far_shapes_apart():
    anchors, strides = _layout()
    box = torch.tensor([[[30.0, 30.0, 31.0, 31.0]]])  # 1 px: 6x smaller than the smallest anchor
    pos, _ = grid_match(anchors, strides, box, torch.tensor([[True]]))
    assert not pos.any()
    pos, _ = grid_match(anchors, strides, box, torch.tensor([[True]]), anchor_t=7.0)
    assert pos.any()


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_loop_reference_on_random_scenes(seed):
    gen = torch.Generator().manual_seed(seed)
    anchors, strides = _layout()
    centres = torch.rand(3, 5, 2, generator=gen) * IMAGE
    sizes = 4 + torch.rand(3, 5, 2, generator=gen) * 40
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)
    valid = torch.rand(3, 5, generator=gen) < 0.7
    valid[2] = False  # an image without boxes
    boxes[~valid] = 0.0  # padding may hold anything
    pos, index = grid_match(anchors, strides, boxes, valid)
    want_pos, want_index = _slow_match(anchors, strides, boxes, valid)
    assert torch.equal(pos, want_pos)
    assert torch.equal(index[pos], want_index[pos])
    assert not pos[2].any() and (index[~pos] == 0).all()
    assert pos[:2].sum() > 3 * valid[:2].sum()  # many positives per object, unlike IoU matching


def test_no_boxes_at_all():
    anchors, strides = _layout()
    pos, index = grid_match(anchors, strides, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assert pos.shape == (2, anchors.shape[0]) and not pos.any() and not index.any()


def test_equal_boxes_go_to_the_lowest_index():
    anchors, strides = _layout()
    boxes = torch.tensor([[[9.0, 5.0, 17.0, 13.0], [9.0, 5.0, 17.0, 13.0], [20.0, 20.0, 50.0, 44.0]]])
    boxes = torch.cat((boxes, boxes[:, [2, 1, 0]]))  # the second image lists them the other way round
    valid = torch.ones(2, 3, dtype=torch.bool)
    pos, index = grid_match(anchors, strides, boxes, valid)
    want_pos, want_index = _slow_match(anchors, strides, boxes, valid)
    assert torch.equal(pos, want_pos) and torch.equal(index[pos], want_index[pos])
    # image 0: the twins are boxes 0 and 1, so box 1 never wins; image 1: they are 1 and 2, so box 1 wins
    assert set(index[0][pos[0]].tolist()) == {0, 2}
    assert set(index[1][pos[1]].tolist()) == {0, 1}


def test_anchor_cells_list_each_cells_anchors_in_order():
    anchors, strides = _layout()
    cells = AnchorCells.index(anchors, strides)
    assert [g[:3] for g in cells.grids] == [(4.0, 16, 16), (8.0, 8, 8), (16.0, 4, 4)]
    assert cells.table.shape == (16 * 16 + 8 * 8 + 4 * 4, 2)
    # anchors are laid out scale by scale, row by row, two per cell: the table is that order
    assert torch.equal(cells.table.flatten(), torch.arange(anchors.shape[0]))
    shuffled = torch.randperm(anchors.shape[0], generator=torch.Generator().manual_seed(0))
    table = AnchorCells.index(anchors[shuffled], strides[shuffled]).table
    assert torch.equal(shuffled[table].sort(dim=1).values, cells.table)


def test_a_prebuilt_index_and_a_shuffled_layout_match_alike():
    gen = torch.Generator().manual_seed(7)
    anchors, strides = _layout()
    centres = torch.rand(4, 6, 2, generator=gen) * IMAGE
    sizes = 2 + torch.rand(4, 6, 2, generator=gen) * 50
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1).clamp(0, IMAGE)
    valid = torch.rand(4, 6, generator=gen) < 0.8
    pos, index = grid_match(anchors, strides, boxes, valid)
    built = grid_match(anchors, strides, boxes, valid, cells=AnchorCells.index(anchors, strides))
    assert torch.equal(built[0], pos) and torch.equal(built[1], index)
    shuffled = torch.randperm(anchors.shape[0], generator=gen)
    pos_s, index_s = grid_match(anchors[shuffled], strides[shuffled], boxes, valid)
    assert torch.equal(pos_s, pos[:, shuffled]) and torch.equal(index_s, index[:, shuffled])
