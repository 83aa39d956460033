import json
import math

import pytest
import torch

from loclab.ops.anchor_fit import anchor_quality, anchor_shapes, fit_anchors, shape_iou
from loclab.ops.boxes import box_iou

PLANTED = [(10, 10), (16, 8), (8, 16), (30, 30), (48, 24), (24, 48), (90, 90), (140, 70), (70, 140)]


def _planted_boxes(per_cluster=150, noise=0.05, seed=1):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor(PLANTED, dtype=torch.float64).repeat_interleave(per_cluster, 0)
    return centres * torch.exp(noise * torch.randn(centres.shape, generator=generator, dtype=torch.float64))


def _centred_iou_reference(a, b):
    """One pair at a time, through real centred xyxy boxes and box_iou."""
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, (wa, ha) in enumerate(a.tolist()):
        for j, (wb, hb) in enumerate(b.tolist()):
            boxes_a = torch.tensor([[-wa / 2, -ha / 2, wa / 2, ha / 2]], dtype=torch.float64)
            boxes_b = torch.tensor([[-wb / 2, -hb / 2, wb / 2, hb / 2]], dtype=torch.float64)
            out[i, j] = box_iou(boxes_a, boxes_b)[0, 0]
    return out


def test_shape_iou_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(13, 2, generator=generator, dtype=torch.float64) * 100
    b = torch.rand(7, 2, generator=generator, dtype=torch.float64) * 100
    b[0] = a[0]  # one identical pair: IoU 1
    b[1] = 0  # an empty box: IoU 0
    iou = shape_iou(a, b)
    torch.testing.assert_close(iou, _centred_iou_reference(a, b), rtol=0, atol=1e-12)
    assert iou[0, 0] == 1 and (iou[:, 1] == 0).all()
    assert shape_iou(torch.zeros(1, 2), torch.zeros(1, 2)).item() == 0  # empty union: 0, not NaN
    assert shape_iou(torch.tensor([[4, 4]]), torch.tensor([[2, 8]])).dtype == torch.float32
    assert shape_iou(torch.zeros(0, 2), b).shape == (0, 7)


def test_anchor_shapes_keep_the_area():
    shapes = anchor_shapes([[32, 64], [128]], [[1.0, 4.0], [0.25]])
    torch.testing.assert_close(shapes[0], torch.tensor([[32.0, 32.0], [128.0, 32.0]], dtype=torch.float64))
    torch.testing.assert_close(shapes[1], torch.tensor([[64.0, 256.0]], dtype=torch.float64))
    square = anchor_shapes([[16, 24]])
    assert square[0].tolist() == [[16.0, 16.0], [24.0, 24.0]]
    with pytest.raises(ValueError):
        anchor_shapes([[16, 24]], [[1.0]])
    with pytest.raises(ValueError):
        anchor_shapes([[16, -1]])


def test_quality_hand_computed():
    sizes = [[16, 32], [64]]
    boxes = torch.tensor([[32.0, 32.0], [64.0, 16.0], [8.0, 8.0]])
    report = anchor_quality(boxes, sizes, threshold=0.5)
    # 32x32 box: 32 anchor, IoU 1. 64x16 box: 32 anchor, 16*32/(1024+1024-512) = 1/3; 64 anchor: 1024/4096 = 1/4;
    # 16 anchor: 256/1024 = 1/4 -> best 1/3 on scale 0. 8x8 box: 16 anchor, 64/256 = 1/4 on scale 0.
    assert report["num_boxes"] == 3
    assert report["best_possible_recall"] == pytest.approx(1 / 3)
    assert report["mean_best_iou"] == pytest.approx((1 + 1 / 3 + 1 / 4) / 3)
    assert report["anchors_above_threshold"] == pytest.approx(1 / 3)
    assert report["per_scale"] == [
        {"scale": 0, "count": 3, "best_possible_recall": pytest.approx(1 / 3),
         "mean_best_iou": pytest.approx((1 + 1 / 3 + 1 / 4) / 3)},
        {"scale": 1, "count": 0, "best_possible_recall": None, "mean_best_iou": None},
    ]
    # A 64x16 anchor (ratio 4) fits the 64x16 box exactly.
    better = anchor_quality(boxes, [[16, 32], [32]], [[1.0, 1.0], [4.0]])
    assert better["best_possible_recall"] == pytest.approx(2 / 3)
    assert better["per_scale"][1]["count"] == 1 and better["per_scale"][1]["mean_best_iou"] == pytest.approx(1.0)
    json.dumps(report)  # plain Python values only


def test_quality_size_buckets_and_ties():
    boxes = torch.tensor([[8.0, 8.0], [32.0, 32.0], [40.0, 40.0], [200.0, 200.0]])
    report = anchor_quality(boxes, [[32], [32]], size_edges=[32, 96])  # identical anchors: ties go to scale 0
    assert [row["count"] for row in report["per_scale"]] == [4, 0]
    rows = report["per_size"]
    assert [(r["low"], r["high"], r["count"]) for r in rows] == [(0.0, 32.0, 1), (32.0, 96.0, 2), (96.0, None, 1)]
    assert rows[0]["name"] == "[0, 32)" and rows[2]["name"] == ">= 96"
    assert rows[1]["best_possible_recall"] == pytest.approx(1.0)  # 32 (IoU 1) and 40 (IoU 1024/1600 = 0.64)
    assert rows[1]["mean_best_iou"] == pytest.approx((1 + 0.64) / 2)
    assert rows[2]["mean_best_iou"] == pytest.approx(1024 / 40000)
    assert anchor_quality(boxes, [[32]])["per_size"] == []
    with pytest.raises(ValueError):
        anchor_quality(boxes, [[32]], size_edges=[96, 32])


def test_quality_of_no_boxes_is_undefined_not_zero():
    report = anchor_quality(torch.zeros(0, 2), [[16], [32]], size_edges=[24])
    assert report["best_possible_recall"] is None and report["mean_best_iou"] is None
    assert [r["count"] for r in report["per_scale"]] == [0, 0]
    assert [r["count"] for r in report["per_size"]] == [0, 0]
    json.dumps(report)


def test_quality_matches_a_per_box_reference():
    boxes = _planted_boxes(per_cluster=20)
    sizes, ratios = [[12, 20], [40, 60], [100, 150]], [[1.0, 2.0], [0.5, 1.0], [1.0, 3.0]]
    report = anchor_quality(boxes, sizes, ratios, threshold=0.6)
    anchors = [(s, L * math.sqrt(r), L / math.sqrt(r)) for s in range(3) for L, r in zip(sizes[s], ratios[s])]
    best_iou, best_scale = [], []
    for w, h in boxes.tolist():
        ious = [min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah)) for _, aw, ah in anchors]
        k = max(range(len(ious)), key=lambda i: (ious[i], -i))
        best_iou.append(ious[k])
        best_scale.append(anchors[k][0])
    assert report["best_possible_recall"] == pytest.approx(sum(b >= 0.6 for b in best_iou) / len(best_iou))
    assert report["mean_best_iou"] == pytest.approx(sum(best_iou) / len(best_iou))
    for row in report["per_scale"]:
        mine = [b for b, s in zip(best_iou, best_scale) if s == row["scale"]]
        assert row["count"] == len(mine)
        assert row["mean_best_iou"] == pytest.approx(sum(mine) / len(mine))


def test_fit_recovers_planted_shapes_and_orders_scales():
    boxes = _planted_boxes()
    sizes, ratios = fit_anchors(boxes, num_scales=3, per_scale=3, seed=0)
    assert len(sizes) == len(ratios) == 3 and all(len(s) == len(r) == 3 for s, r in zip(sizes, ratios))
    fitted = torch.cat(anchor_shapes(sizes, ratios))
    # Each scale holds exactly the three planted shapes of its size group, each within 4% per side.
    for s in range(3):
        planted = torch.tensor(PLANTED[3 * s : 3 * s + 3], dtype=torch.float64)
        mine = fitted[3 * s : 3 * s + 3]
        error = (mine[None, :, :] / planted[:, None, :]).log().abs().amax(-1)  # [planted, fitted]
        assert (error.amin(1) < math.log(1.04)).all(), (s, mine)
        assert sorted(error.argmin(1).tolist()) == [0, 1, 2]
    flat = [x for scale in sizes for x in scale]
    assert flat == sorted(flat)  # sizes increase within and across scales
    assert all(round(x, 1) == x for x in flat) and all(round(r, 3) == r for scale in ratios for r in scale)
    report = anchor_quality(boxes, sizes, ratios)
    assert report["best_possible_recall"] == 1.0 and report["mean_best_iou"] > 0.9
    assert [row["count"] for row in report["per_scale"]] == [450, 450, 450]


def test_fit_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    generator = torch.Generator().manual_seed(3)
    boxes = torch.exp(torch.rand(800, 2, generator=generator) * 4 + 2)
    state = torch.get_rng_state()
    first = fit_anchors(boxes, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert fit_anchors(boxes, seed=5) == first


def test_fit_improves_a_poor_anchor_set():
    generator = torch.Generator().manual_seed(4)
    size = torch.exp(torch.randn(2000, generator=generator) * 0.6 + 4)  # ~20..300 px, mixed aspect ratios
    ratio = torch.exp(torch.randn(2000, generator=generator) * 0.5)
    boxes = torch.stack((size * ratio.sqrt(), size / ratio.sqrt()), 1)
    poor = anchor_quality(boxes, [[4, 5, 6], [7, 8, 9], [400, 450, 500]])
    default = anchor_quality(boxes, [[16, 24, 32], [48, 64, 96], [96, 128, 192]])
    sizes, ratios = fit_anchors(boxes)
    fitted = anchor_quality(boxes, sizes, ratios)
    assert fitted["mean_best_iou"] > default["mean_best_iou"] + 0.03
    assert default["mean_best_iou"] > poor["mean_best_iou"] + 0.1
    assert fitted["best_possible_recall"] > default["best_possible_recall"]


def test_fit_with_fewer_boxes_than_anchors_returns_distinct_jittered_anchors():
    boxes = torch.tensor([[20.0, 10.0], [20.0, 10.0], [50.0, 50.0]])
    sizes, ratios = fit_anchors(boxes, num_scales=3, per_scale=3)
    shapes = torch.cat(anchor_shapes(sizes, ratios))
    assert len({tuple(s) for s in shapes.tolist()}) == 9
    # Every anchor is one of the two real shapes or a copy scaled by exp(+-0.1) per side (plus rounding).
    real = torch.tensor([[20.0, 10.0], [50.0, 50.0]], dtype=torch.float64)
    error = (shapes[:, None, :] / real[None]).log().abs().amax(-1)  # [anchor, real shape]
    assert (error.amin(1) < 0.1 + 0.01).all()
    assert (error.amin(0) < 0.01).all()  # both real shapes are anchors
    assert anchor_quality(boxes, sizes, ratios)["mean_best_iou"] == pytest.approx(1.0, abs=0.01)


def test_fit_ignores_degenerate_boxes_and_rejects_none():
    boxes = torch.tensor([[20.0, 10.0], [0.0, 5.0], [float("nan"), 3.0], [-1.0, 4.0]])
    sizes, ratios = fit_anchors(boxes, num_scales=1, per_scale=1)
    assert sizes == ((14.1,),) and ratios == ((2.0,),)
    with pytest.raises(ValueError):
        fit_anchors(torch.zeros(3, 2))
    with pytest.raises(ValueError):
        fit_anchors(torch.ones(3, 2), per_scale=0)
