"""Bootstrap intervals over images (loclab.metrics.bootstrap, .ap_weighted, .intervals).

The vectorised intervals are checked against a slow reference bootstrap: the same draws of images
(``resample_indices``), then a Python loop that builds each resampled split and scores it with loclab's plain metric
functions (``compute_ap``, ``coco_summary``, ``compute_pck_visible``, ...). Coverage is checked on synthetic data
with a known true value, and the paired difference on evaluations with known relations.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from test_ap import _random_scene as shapes_scene
from test_ap_difficult import _random_scene as difficult_scene

from loclab.metrics import Detections, GroundTruth, compute_ap
from loclab.metrics.ap import ap_matches, rank_within_image_class
from loclab.metrics.ap_coco import coco_matches, coco_summary
from loclab.metrics.ap_weighted import APStatistic, curve_counts, curve_rows, gt_counts
from loclab.metrics.bootstrap import (
    RatioStatistic,
    bootstrap_ci,
    bootstrap_values,
    paired_bootstrap_diff,
    per_image_sums,
    resample_indices,
    resample_weights,
)
from loclab.metrics.intervals import (
    ap_intervals,
    coco_ap_intervals,
    mean_error_interval,
    pck_intervals,
    pck_swap_intervals,
)
from loclab.metrics.pck_instances import (
    compute_pck_pair_aware,
    compute_pck_visible,
    error_sums,
    mean_error_px,
    pck_hits,
    pck_hits_pair_aware,
)


def _percentiles(values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class never drawn: NaN bounds
        return tuple(np.nanpercentile(np.asarray(values, dtype=np.float64), [2.5, 97.5], axis=0))


# --- resampling ----------------------------------------------------------------------------------------------------


def test_resampling_is_seeded_and_counts_the_draws():
    a, b = resample_indices(50, 20, seed=3), resample_indices(50, 20, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, resample_indices(50, 20, seed=4))
    assert np.array_equal(a, np.random.default_rng(3).integers(0, 50, size=(20, 50)))
    weights = resample_weights(a, 50)
    assert weights.shape == (20, 50) and (weights.sum(axis=1) == 50).all()
    assert np.array_equal(weights[7], np.bincount(a[7], minlength=50))
    with pytest.raises(ValueError, match="at least one"):
        resample_indices(0, 10)


def test_same_seed_same_interval_and_nan_resamples_are_left_out():
    rng = np.random.default_rng(0)
    statistic = RatioStatistic(rng.integers(0, 5, 40), np.full(40, 5))
    assert bootstrap_ci(statistic, 300, seed=1) == bootstrap_ci(statistic, 300, seed=1)
    assert bootstrap_ci(statistic, 300, seed=1) != bootstrap_ci(statistic, 300, seed=2)
    # one labelled image among 40: most resamples miss it (NaN) and are left out; none drawn at all: NaN bounds
    sparse = RatioStatistic(np.r_[3.0, np.zeros(39)], np.r_[4.0, np.zeros(39)])
    values = bootstrap_values(sparse, 200, seed=0)
    assert np.isnan(values).any() and bootstrap_ci(sparse, 200, seed=0) == (0.75, 0.75)
    low, high = bootstrap_ci(RatioStatistic(np.zeros(3), np.zeros(3)), 50)
    assert math.isnan(low) and math.isnan(high)


def test_per_image_sums_group_instances():
    values = np.array([[1, 0], [2, 1], [3, 1], [4, 0]])
    np.testing.assert_array_equal(per_image_sums(values, np.array([0, 2, 2, 3]), 5), [[1, 0], [0, 0], [5, 2],
                                                                                      [4, 0], [0, 0]])
    np.testing.assert_array_equal(per_image_sums(values, None), values)


# --- AP against a slow reference bootstrap --------------------------------------------------------------------------


def _no_ties_within_image_class(dets):
    """Break score ties inside each (image, class) and keep those across images: copies of an image then sort
    next to each other, the case in which a resample's AP is one number (loclab.metrics.ap_weighted)."""
    rank = rank_within_image_class(dets)
    return Detections(dets.image_id, dets.category_id, dets.boxes, dets.scores - 1e-9 * rank)


def _resampled(dets, gts, draws):
    """The split made of the images at positions ``draws`` (with repeats), copies of an image next to each other
    in image order, each copy a new image id."""
    image_rows, box_rows, det_ids, gt_ids, new_ids = [], [], [], [], []
    for copy_id, position in enumerate(np.sort(draws)):
        image = gts.image_ids[position]
        new_ids.append(copy_id)
        det_rows = np.flatnonzero(dets.image_id == image)
        gt_rows = np.flatnonzero(gts.image_id == image)
        image_rows.append(det_rows)
        box_rows.append(gt_rows)
        det_ids.append(np.full(len(det_rows), copy_id))
        gt_ids.append(np.full(len(gt_rows), copy_id))
    d, g = np.concatenate(image_rows), np.concatenate(box_rows)
    difficult = None if gts.difficult is None else gts.difficult[g]
    return (Detections(np.concatenate(det_ids), dets.category_id[d], dets.boxes[d], dets.scores[d]),
            GroundTruth(np.concatenate(gt_ids), gts.category_id[g], gts.boxes[g], new_ids, difficult=difficult))


@pytest.mark.parametrize("scene, kwargs", [
    ("shapes", {}),
    ("shapes", {"max_detections_per_image_class": 100}),
    ("difficult", {"match_rule": "voc"}),
])
def test_ap_intervals_equal_a_slow_bootstrap_with_the_same_draws(scene, kwargs):
    dets, gts = shapes_scene(0, num_images=24) if scene == "shapes" else difficult_scene(1, num_images=16)
    dets = _no_ties_within_image_class(dets)
    names = {0: "circle", 1: "square", 2: "triangle"}
    resamples, seed = 150, 7
    fast = ap_intervals(dets, gts, class_names=names, resamples=resamples, seed=seed, **kwargs)
    slow = [compute_ap(*_resampled(dets, gts, draws), class_names=names, **kwargs)
            for draws in resample_indices(len(gts.image_ids), resamples, seed)]
    for key in ("mAP50", "mAP50_voc07", "mAP50_coco"):
        np.testing.assert_allclose(fast[key], _percentiles([r[key] for r in slow]), rtol=0, atol=1e-12)
        for name, interval in fast[key[1:]].items():
            expected = _percentiles([r[key[1:]].get(name, math.nan) for r in slow])
            np.testing.assert_allclose(interval, expected, rtol=0, atol=1e-12, err_msg=f"{key} {name}")
    assert fast["mAP50"][0] < compute_ap(dets, gts, class_names=names, **kwargs)["mAP50"] < fast["mAP50"][1]


def test_coco_intervals_equal_a_slow_bootstrap_with_the_same_draws():
    dets, gts = shapes_scene(1, num_images=20)
    dets = _no_ties_within_image_class(dets)
    resamples, seed = 60, 2
    fast = coco_ap_intervals(dets, gts, resamples=resamples, seed=seed)
    slow = [coco_summary(coco_matches(*_resampled(dets, gts, draws)), [0, 1, 2])
            for draws in resample_indices(len(gts.image_ids), resamples, seed)]
    for key in ("mAP50_95", "mAP75"):
        np.testing.assert_allclose(fast[key], _percentiles([r[key] for r in slow]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast["AP50_95"][2], _percentiles([r["AP50_95"][2] for r in slow]), rtol=0, atol=1e-12)


def test_weighted_ap_with_unit_weights_is_compute_ap():
    dets, gts = shapes_scene(2, num_images=40)  # ties within images too: unit weights change no order
    for match_rule in ("coco", "voc"):
        subset, match, _ = ap_matches(dets, gts, 0.5, match_rule=match_rule)
        counts = curve_counts(curve_rows(subset, match, gts.image_ids, [0, 1, 2]), gt_counts(gts, [0, 1, 2]))
        plain = compute_ap(dets, gts, match_rule=match_rule)
        ones = np.ones((1, len(gts.image_ids)))
        for convention, suffix in (("voc", ""), ("voc07", "_voc07")):
            assert APStatistic((counts,), convention)(ones)[0] == pytest.approx(plain[f"mAP50{suffix}"], abs=1e-15)
            for k in range(3):
                got = APStatistic((counts,), convention, k)(ones)[0]
                assert got == pytest.approx(plain[f"AP50{suffix}"][k], abs=1e-15)


# --- PCK and mean error against a slow reference --------------------------------------------------------------------


def _instances(seed, num_images=30):
    """K = 7 keypoints, two symmetric pairs, some unlabelled points, 1-3 instances per image (some images none)."""
    rng = np.random.default_rng(seed)
    per_image = rng.integers(0, 4, num_images)
    image = np.repeat(np.arange(num_images), per_image)
    gt = rng.uniform(0, 100, (len(image), 7, 2))
    pred = gt + rng.normal(0, 4, gt.shape) * rng.uniform(0.2, 3, (len(image), 1, 1))
    pred[:, [1, 2]] = np.where(rng.random((len(image), 1, 1)) < 0.3, pred[:, [2, 1]], pred[:, [1, 2]])
    visible = rng.random((len(image), 7)) > 0.15
    return torch.tensor(pred), torch.tensor(gt), torch.tensor(visible), image, num_images


def test_pck_and_error_counts_add_up_to_the_plain_metrics():
    pred, gt, visible, _, _ = _instances(0)
    pairs = [(1, 2), (3, 4)]
    hits, scored = pck_hits(pred, gt, visible=visible)
    plain = compute_pck_visible(pred, gt, visible=visible)
    assert list(plain.values()) == (hits.sum(0).double() / scored.sum()).tolist()
    swap, scored_swap = pck_hits_pair_aware(pred, gt, pairs, visible=visible)
    assert torch.equal(scored, scored_swap) and (swap >= hits).all()
    assert list(compute_pck_pair_aware(pred, gt, pairs, visible=visible).values()) == \
        (swap.sum(0).double() / scored.sum()).tolist()
    total, count = error_sums(pred, gt, visible=visible)
    assert float(total.sum() / count.sum()) == pytest.approx(mean_error_px(pred, gt, visible=visible), rel=1e-14)
    # the single-figure path (all visible, one pair) gives the same counts
    plain_hits, _ = pck_hits_pair_aware(pred[:, :5], gt[:, :5], [(1, 2)])
    assert list(compute_pck_pair_aware(pred[:, :5], gt[:, :5], [(1, 2)]).values()) == \
        (plain_hits.sum(0).double() / (5 * len(pred))).tolist()


def test_keypoint_intervals_equal_a_slow_bootstrap_with_the_same_draws():
    pred, gt, visible, image, num_images = _instances(1)
    pairs, resamples, seed = [(1, 2), (3, 4)], 200, 5
    slow_std, slow_swap, slow_err = [], [], []
    for draws in resample_indices(num_images, resamples, seed):
        rows = np.concatenate([np.flatnonzero(image == i) for i in draws])  # an image's instances go together
        slow_std.append(list(compute_pck_visible(pred[rows], gt[rows], visible=visible[rows]).values()))
        slow_swap.append(list(compute_pck_pair_aware(pred[rows], gt[rows], pairs, visible=visible[rows]).values()))
        slow_err.append(mean_error_px(pred[rows], gt[rows], visible=visible[rows]))
    kwargs = {"visible": visible, "image_index": image, "resamples": resamples, "seed": seed}
    fast = pck_intervals(pred, gt, **kwargs)
    np.testing.assert_allclose(np.array(list(fast.values())).T, _percentiles(slow_std), rtol=0, atol=1e-12)
    fast_swap = pck_swap_intervals(pred, gt, pairs, **kwargs)
    np.testing.assert_allclose(np.array(list(fast_swap.values())).T, _percentiles(slow_swap), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean_error_interval(pred, gt, **kwargs), _percentiles(slow_err), rtol=1e-12)


# --- coverage ---------------------------------------------------------------------------------------------------------


def test_pck_interval_covers_the_true_value_about_95_percent_of_the_time():
    # 200 images of 10 keypoints, each image with its own hit rate (Beta(4, 2): mean 2/3): PCK's true value is 2/3.
    rng = np.random.default_rng(12)
    covered = 0
    for repetition in range(200):
        hits = rng.binomial(10, rng.beta(4, 2, 200))
        low, high = bootstrap_ci(RatioStatistic(hits, np.full(200, 10)), seed=repetition)
        covered += low <= 2 / 3 <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_mean_error_interval_covers_the_true_value_about_95_percent_of_the_time():
    # images with 1-6 labelled keypoints, errors exponential with mean 3 px: the pooled mean's true value is 3.
    rng = np.random.default_rng(13)
    covered = 0
    for repetition in range(200):
        counts = rng.integers(1, 7, 200)
        sums = np.array([rng.exponential(3.0, n).sum() for n in counts])
        low, high = bootstrap_ci(RatioStatistic(sums, counts), seed=repetition)
        covered += low <= 3.0 <= high
    assert 0.90 <= covered / 200 <= 0.99


# --- paired differences ---------------------------------------------------------------------------------------------


def _pck_statistic(hits):
    return RatioStatistic(hits, np.full(len(hits), 10))


def test_paired_difference_of_an_evaluation_with_itself_is_zero():
    hits = np.random.default_rng(0).integers(0, 11, 100)
    diff = paired_bootstrap_diff(_pck_statistic(hits), _pck_statistic(hits))
    assert (diff.delta, diff.low, diff.high, diff.significant) == (0.0, 0.0, 0.0, False)


def test_paired_difference_uses_the_same_draws_for_both():
    rng = np.random.default_rng(1)
    a, b = _pck_statistic(rng.integers(0, 11, 80)), _pck_statistic(rng.integers(0, 11, 80))
    diff = paired_bootstrap_diff(a, b, 300, seed=4)
    expected = _percentiles(bootstrap_values(a, 300, 4) - bootstrap_values(b, 300, 4))
    assert (diff.low, diff.high) == pytest.approx(expected, abs=1e-15)
    assert diff.delta == pytest.approx(a(np.ones((1, 80)))[0] - b(np.ones((1, 80)))[0])
    reverse = paired_bootstrap_diff(b, a, 300, seed=4)
    assert reverse.delta == pytest.approx(-diff.delta) and (reverse.low, reverse.high) == pytest.approx(
        (-diff.high, -diff.low), abs=1e-15)


def test_pairing_detects_a_small_consistent_gain_that_separate_intervals_miss():
    # b is a with one more correct keypoint on a fifth of the images: +0.02 PCK, far below the spread between
    # images, but the same on every resample, so the paired interval excludes 0 while a's and b's overlap.
    rng = np.random.default_rng(2)
    a = rng.integers(2, 9, 200)
    b = a + (rng.random(200) < 0.2)
    diff = paired_bootstrap_diff(_pck_statistic(b), _pck_statistic(a))
    assert diff.significant and diff.low > 0 and diff.delta == pytest.approx((b - a).sum() / 2000)
    low_b, _ = bootstrap_ci(_pck_statistic(b))
    _, high_a = bootstrap_ci(_pck_statistic(a))
    assert low_b < high_a  # unpaired intervals overlap
    noise = paired_bootstrap_diff(_pck_statistic(rng.permutation(a)), _pck_statistic(a))
    assert not noise.significant and noise.low < 0 < noise.high


def test_paired_difference_of_ap_and_vector_statistics():
    dets, gts = shapes_scene(3, num_images=30)
    worse = Detections(dets.image_id, dets.category_id, dets.boxes + 3.0, dets.scores)  # shifted boxes
    statistics = []
    for table in (dets, worse):
        subset, match, _ = ap_matches(table, gts)
        statistics.append(APStatistic((curve_counts(curve_rows(subset, match, gts.image_ids, [0, 1, 2]),
                                                    gt_counts(gts, [0, 1, 2])),), "voc"))
    diff = paired_bootstrap_diff(*statistics, 200)
    assert diff.delta == pytest.approx(compute_ap(dets, gts)["mAP50"] - compute_ap(worse, gts)["mAP50"])
    assert diff.low <= diff.delta <= diff.high
    vector = paired_bootstrap_diff(RatioStatistic(np.ones((30, 2)), np.ones(30)[:, None]),
                                   RatioStatistic(np.zeros((30, 2)), np.ones(30)[:, None]), 50)
    assert vector.significant.tolist() == [True, True] and vector.delta.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_diff(_pck_statistic(np.ones(3)), _pck_statistic(np.ones(4)))
