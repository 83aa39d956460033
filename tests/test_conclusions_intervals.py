"""Conclusions and tables speak from the intervals: hand-made trial results (per-image statistics written as an
evaluation writes them) whose differences are noise give "no significant difference" and no ★; clear differences
give a ranking."""

import numpy as np
import pytest

from loclab.evaluation.per_image import PER_IMAGE_FILE, PerImage, save_per_image
from loclab.evaluation.significance import SeedMean, difference, interval, significant_extreme
from loclab.metrics.bootstrap import RatioStatistic
from loclab.report import conclusions
from loclab.report.ablation_sections import anchor_ablation_section, keypoint_ablation_section
from loclab.report.document import Document, render_markdown
from loclab.study.ablation_intervals import keypoint_ablation_intervals

THRESHOLDS = ("0.05", "0.1", "0.15", "0.2")
N, K = 200, 5


def write_run(path, hits):
    """A keypoint run's per-image statistics: ``hits [N]`` correct keypoints (of K) per image at every threshold."""
    hits = np.repeat(np.asarray(hits, dtype=float)[:, None], len(THRESHOLDS), axis=1)
    path.mkdir(parents=True)
    save_per_image(path / PER_IMAGE_FILE, PerImage("keypoints", np.arange(N), THRESHOLDS, {
        "pck.hits": hits, "pck.scored": np.full(N, float(K)), "pck_swap.hits": hits}))
    return {t: float(hits[:, 0].sum() / (N * K)) for t in THRESHOLDS}


def grid_summary(tmp_path, settings):
    """A one-factor keypoint ablation summary over runs written from ``{setting: hits}`` (the first is the
    baseline), with its intervals added."""
    rows = []
    for i, (setting, hits) in enumerate(settings.items()):
        pck = write_run(tmp_path / f"trial{i}", hits)
        rows.append({"setting": setting, "trial": f"trial{i}", "pck": pck, "pck_swap": pck, "val_mse": None,
                     "seeds": [{"run": f"trial{i}", "seed": 0, "pck": pck, "pck_swap": pck, "val_mse": None}]})
    summary = {"judged_by": "PCK", "epochs": 3, "seeds": 1,
               "factors": {"skip": {"rows": rows, "baseline": next(iter(settings)), "best": None}}}
    return keypoint_ablation_intervals(summary, tmp_path)


def table_markdown(tmp_path, summary, section=keypoint_ablation_section):
    doc = Document("t")
    section(doc, summary, tmp_path, tmp_path)
    return render_markdown(doc, tmp_path)


def two_more(hits):
    """Two more correct keypoints of the 1,000 (Δ PCK = +0.002), in two images that had a miss."""
    out = hits.copy()
    out[np.flatnonzero(hits < K)[:2]] += 1
    return out


@pytest.fixture
def hits():
    return np.random.default_rng(3).binomial(K, 0.8, N)


def test_a_difference_inside_the_interval_is_no_significant_difference_and_gets_no_star(tmp_path, hits):
    close = two_more(hits)
    summary = grid_summary(tmp_path, {"with skip": hits, "without skip": close})
    factor = summary["factors"]["skip"]
    record = factor["vs_baseline"]["without skip"]
    assert record["delta"] == pytest.approx(0.002) and not record["significant"]
    assert record["ci95"][0] <= 0 <= record["ci95"][1]
    assert factor["best"] is None
    (sentence,) = conclusions.ablations(summary)
    assert "without skip vs with skip: no significant difference (Δ = +0.002, 95 % CI [" in sentence
    assert "best" not in sentence and "higher" not in sentence and "lower" not in sentence
    assert "★" not in table_markdown(tmp_path, summary).split("|", 1)[1]  # the table, not the legend above it


def test_a_clear_difference_is_ranked_and_starred(tmp_path, hits):
    perfect = np.full(N, K)
    summary = grid_summary(tmp_path, {"with skip": hits, "without skip": perfect})
    factor = summary["factors"]["skip"]
    assert factor["best"] == "without skip" and factor["vs_baseline"]["without skip"]["significant"]
    (sentence,) = conclusions.ablations(summary)
    assert sentence.startswith("skip: without skip is the best setting (swap-aware PCK@0.05 1.000), significantly "
                               "better than every other (vs with skip: Δ = +0.")
    assert "without skip ★" in table_markdown(tmp_path, summary)


def test_three_settings_one_clearly_worse_ranks_nothing_as_best(tmp_path, hits):
    close = two_more(hits)
    summary = grid_summary(tmp_path, {"a": hits, "b": close, "c": np.maximum(hits - 2, 0)})
    factor = summary["factors"]["skip"]
    assert factor["best"] is None  # b is on top, but not significantly above a
    assert factor["vs_baseline"]["c"]["significant"] and factor["vs_baseline"]["c"]["delta"] < 0
    (sentence,) = conclusions.ablations(summary)
    assert "c vs a: lower swap-aware PCK@0.05 (Δ = -0." in sentence
    assert "b vs a: no significant difference (Δ = +0.002" in sentence
    assert sentence.endswith("no setting is significantly better than all the others.")


def test_anchor_ablation_speaks_from_its_paired_interval():
    base = {"trial": "default", "anchor_sizes": [[16]], "mAP50": 0.679, "AP50": {"circle": 0.7}}
    record = {"delta": -0.004, "ci95": [-0.02, 0.012], "significant": False}
    other = {"trial": "alt", "anchor_sizes": [[24]], "mAP50": 0.675, "AP50": {"circle": 0.69},
             "vs_default": {"mAP50": record, "AP50": {"circle": record}}}
    (sentence,) = conclusions.anchor_ablation({"epochs": 3, "rows": [base, other]})
    assert sentence == ("Anchors [[24]] vs the default anchors: no significant difference (Δ = -0.004, 95 % CI "
                        "[-0.020, +0.012]) in mAP@0.5 after 3 epochs; no class's AP@0.5 changed significantly.")
    clear = {"delta": 0.05, "ci95": [0.03, 0.07], "significant": True}
    other["vs_default"] = {"mAP50": clear, "AP50": {"circle": clear}}
    (sentence,) = conclusions.anchor_ablation({"epochs": 3, "seeds": 3, "rows": [base, other]})
    assert sentence.startswith("Anchors [[24]] changed mAP@0.5 by Δ = +0.050, 95 % CI [+0.030, +0.070] vs the "
                               "default anchors after 3 epochs (means of 3 seeds); per class, significant changes: "
                               "circle Δ = +0.050")
    del other["vs_default"]  # a summary without intervals: numbers side by side, no ranking
    (sentence,) = conclusions.anchor_ablation({"epochs": 3, "rows": [base, other]})
    assert "no interval recorded, so no ranking" in sentence and "changed" not in sentence


def test_heatmap_vs_regression_and_ceiling_sentences_follow_significance():
    sig = {"delta": 0.78, "ci95": [0.75, 0.81], "significant": True}
    ns = {"delta": 0.004, "ci95": [-0.01, 0.018], "significant": False}
    pck = dict.fromkeys(THRESHOLDS, 0.8)
    comparison = {"models": {"heatmap": {"pck": pck, "pck_swap": pck}, "regression": {"pck": pck, "pck_swap": pck}},
                  "ceiling": dict.fromkeys(THRESHOLDS, 0.9), "guessed_labels": dict.fromkeys(THRESHOLDS, 0.85),
                  "differences": {"heatmap_vs_regression": {"pck": dict.fromkeys(THRESHOLDS, sig),
                                                            "pck_swap": dict.fromkeys(THRESHOLDS, ns)},
                                  "heatmap_vs_ceiling": {"pck": {"0.05": ns, "0.1": sig, "0.15": ns, "0.2": ns}}}}
    first, ceiling, swap = conclusions.keypoints(comparison, quote_reports=False)[:3]
    assert "the heatmap model is significantly above regression at every threshold (0.05: Δ = +0.780" in first
    assert "at 0.05, no significant difference (Δ = +0.004, 95 % CI [-0.010, +0.018])" in ceiling
    assert "at 0.1, the heatmap model is significantly above the ceiling (Δ = +0.780" in ceiling
    assert swap.endswith("at 0.05; no significant difference (Δ = +0.004, 95 % CI [-0.010, +0.018]).")


def test_significant_extreme_needs_every_comparison():
    values = {"a": 0.9, "b": 0.8, "c": 0.5}
    records = {("a", "b"): {"delta": 0.1, "significant": True}, ("a", "c"): {"delta": 0.4, "significant": True},
               ("c", "a"): {"delta": -0.4, "significant": True}, ("c", "b"): {"delta": -0.3, "significant": False}}
    best, vs = significant_extreme(values, lambda x, y: records[x, y])
    assert best == "a" and set(vs) == {"b", "c"}
    worst, _ = significant_extreme(values, lambda x, y: records[x, y], highest=False)
    assert worst is None  # c is lowest, but not significantly below b
    assert significant_extreme({"a": 0.9}, lambda x, y: {}) == (None, {})


def test_seed_mean_interval_is_the_interval_of_the_seed_averaged_hits(hits):
    # with equal denominators, the mean of the seeds' PCK is the PCK of their mean hits, resample by resample
    other = np.random.default_rng(4).binomial(K, 0.7, N)
    scored = np.full(N, float(K))
    pooled = SeedMean((RatioStatistic(hits.astype(float), scored), RatioStatistic(other.astype(float), scored)))
    reference = RatioStatistic((hits + other) / 2.0, scored)
    assert interval(pooled) == pytest.approx(interval(reference), abs=1e-12)
    assert difference(pooled, reference)["delta"] == pytest.approx(0.0, abs=1e-12)


def test_anchor_table_shows_the_interval_and_the_paired_difference(tmp_path):
    row = {"trial": "default", "anchor_sizes": [[16]], "mAP50": 0.5, "AP50": {"circle": 0.5}, "mAP50_ci95": [0.4, 0.6],
           "seeds": [{"run": "default", "mAP50": 0.48, "AP50": {"circle": 0.48}},
                     {"run": "default_seed1", "mAP50": 0.52, "AP50": {"circle": 0.52}}]}
    alt = {**row, "trial": "alt", "vs_default": {"mAP50": {"delta": 0.01, "ci95": [-0.02, 0.04], "significant": False}}}
    text = table_markdown(tmp_path, {"epochs": 3, "seeds": 2, "rows": [row, alt],
                                     "bootstrap": {"resamples": 1000}}, anchor_ablation_section)
    assert "| alt | [[16]] | 0.500 ± 0.028 | [0.400, 0.600] | +0.010 [-0.020, +0.040] (n.s.) |" in text
    assert "sample standard deviation across the 2 seeds" in text


def test_a_comparison_from_before_the_real_ceiling_does_not_call_its_number_a_ceiling():
    pck = dict.fromkeys(THRESHOLDS, 0.84)
    old = {"models": {"heatmap": {"pck": pck, "pck_swap": pck}, "regression": {"pck": pck, "pck_swap": pck}},
           "ceiling": dict.fromkeys(THRESHOLDS, 0.83)}  # no "guessed_labels": the guessing localiser's number
    sentence = conclusions.keypoints(old, quote_reports=False)[1]
    assert sentence.startswith("A perfect localiser that guesses the identically drawn hands' labels expects 0.830")
    assert "no model can expect" not in sentence


def test_paired_differences_pair_the_heatmap_with_the_ceiling_image_by_image(tmp_path):
    from loclab.metrics.pck import ceiling_correct_per_image
    from loclab.study.comparison import paired_differences

    rng = np.random.default_rng(8)
    gts = rng.uniform(0, 100, (N, K, 2))
    at_ceiling = ceiling_correct_per_image(gts, [float(t) for t in THRESHOLDS]).numpy()  # [N, T]: 4 or 5
    for name, hits in (("heatmap", at_ceiling), ("regression", at_ceiling - 1)):
        (tmp_path / name).mkdir()
        save_per_image(tmp_path / name / PER_IMAGE_FILE, PerImage("keypoints", np.arange(N), THRESHOLDS, {
            "pck.hits": hits, "pck.scored": np.full(N, float(K)),
            "mean_error_px.sum": np.ones(N), "mean_error_px.count": np.ones(N)}))
    out = paired_differences(tmp_path / "heatmap", tmp_path / "regression", gts, "bbox", list(range(N)))
    for t in THRESHOLDS:
        assert out["heatmap_vs_ceiling"]["pck"][t] == {"delta": 0.0, "ci95": [0.0, 0.0], "significant": False}
        versus = out["heatmap_vs_regression"]["pck"][t]
        assert versus["delta"] == pytest.approx(1 / K) and versus["significant"]
    assert "pck_swap" not in out["heatmap_vs_regression"]  # no symmetric pairs recorded
    other_images = paired_differences(tmp_path / "heatmap", tmp_path / "regression", gts, "bbox", list(range(1, N + 1)))
    assert "note" in other_images["heatmap_vs_ceiling"]
    assert "note" in paired_differences(tmp_path / "missing", tmp_path / "regression")


def test_detection_conclusions_and_report_show_the_coco_summary_with_its_interval(tmp_path):
    from loclab.report.build import _coco_summary

    metrics = {"mAP50": 0.93, "mAP50_ci95": [0.91, 0.95], "AP50": {"circle": 0.9}, "num_images": 200,
               "mAP70": 0.85, "mAP50_95": 0.7391, "mAP50_95_ci95": [0.7212, 0.7608], "mAP75": 0.8155,
               "mAP50_coco": 0.927, "AR100": 0.79}
    text = " ".join(conclusions.detection(metrics, quote_reports=False))
    assert "Averaged over IoU 0.5 to 0.95 (COCO), AP is 0.739 (95 % CI [0.721, 0.761]), AP@0.75 0.816." in text
    doc = Document("t")
    _coco_summary(doc, metrics)
    table = render_markdown(doc, tmp_path)
    assert "| AP@[.5:.95] | AP@0.5 | AP@0.75 |" in table and "| 0.739 [0.721, 0.761] | 0.927 | 0.816 |" in table
    empty = Document("t")
    _coco_summary(empty, {"mAP50": 0.9})  # a run evaluated before the COCO summary existed: no table
    assert "AP@[.5:.95]" not in render_markdown(empty, tmp_path)
