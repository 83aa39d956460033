"""``loclab report DIR``: report.md and a self-contained report.html from a study directory's files alone."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from loclab.analysis.sizes import BUCKET_RULE
from loclab.engine.rundir import write_json
from loclab.evaluation.per_image import PER_IMAGE_FILE, PerImageError, load_per_image
from loclab.evaluation.significance import class_extremes
from loclab.report import conclusions
from loclab.report.ablation_sections import anchor_ablation_section, keypoint_ablation_section
from loclab.report.document import Bullets, Code, Document, Heading, Paragraph, Table, render_html, render_markdown
from loclab.report.numbers_text import anchor_sizes as _anchors
from loclab.report.numbers_text import bracket, difference_cell
from loclab.report.numbers_text import number as _f
from loclab.report.seeds import SEED_DETECTION_AP, SEED_DETECTION_MAP, SEED_HEATMAP_PCK, SEED_REGRESSION_PCK_TABLE

THRESHOLDS = ("0.05", "0.1", "0.15", "0.2")


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None




STAGE_ORDER = ("data", "detector", "heatmap", "regression", "comparison", "anchor_ablation", "keypoint_ablation")


def stage_times(out: Path) -> dict[str, dict[str, Any]]:
    """``{key: {"title", "status", "wall_time_s"}}`` of every stage marker in ``OUT/stages``, in run order."""
    times = {}
    for path in (Path(out) / "stages").glob("*.json"):
        state = json.loads(path.read_text())
        times[state["key"]] = {k: state[k] for k in ("title", "status", "wall_time_s")}
    rank = {k: i for i, k in enumerate(STAGE_ORDER)}
    return dict(sorted(times.items(), key=lambda kv: rank.get(kv[0], len(rank))))


class StudyFiles:
    """The JSON files of a study directory, each None when that stage has not produced it."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.config = _load(out / "config.json") or {}
        self.version = _load(out / "version.json") or {}
        self.data = _load(out / "data.json")
        self.detector = _load(out / "detector" / "metrics.json")
        self.detector_log = _load(out / "detector" / "training_log.json")
        self.heatmap = _load(out / "keypoints" / "heatmap" / "metrics.json")
        self.regression = _load(out / "keypoints" / "regression" / "metrics.json")
        self.logs = {m: _load(out / "keypoints" / m / "training_log.json") for m in ("heatmap", "regression")}
        self.comparison = _load(out / "keypoints" / "comparison.json")
        self.anchor_ablation = _load(out / "ablations" / "anchors" / "anchor_ablation.json")
        self.keypoint_ablation = _load(out / "ablations" / "keypoints" / "baseline_results.json")
        self.stages = stage_times(out)
        # {stage: reason} of the stages that do not apply to this study's data (a user's dataset of one task)
        self.skipped = {path.stem: marker.get("reason", "") for path in (out / "stages").glob("*.json")
                        if (marker := json.loads(path.read_text())).get("status") == "skipped"}
        # a user's own dataset (None: the course's data); own-data reports quote no course numbers
        self.own_data = (self.config.get("study") or {}).get("own_data")


def _setup(doc: Document, s: StudyFiles) -> None:
    study = s.config.get("study", {})
    doc.add(Heading("Setup"))
    v = s.version
    doc.add(Table(("item", "value"), (
        ("preset", str(s.config.get("preset", "?"))),
        ("overrides", ", ".join(s.config.get("overrides", [])) or "none"),
        ("data", f"{s.config.get('data_root', '?')} ({'; '.join(f'{k}: {x}' for k, x in (s.data or {}).items() if isinstance(x, str)) or 'as found'})"),
        ("seeds", ", ".join(f"{k} {x}" for k, x in v.get("seeds", {}).items())),
        ("training seeds per ablation trial", str((study.get("ablation") or {}).get("seeds", 1))),
        ("code version", str(v.get("code_version", "?"))),
        ("torch / python", f"{v.get('torch', '?')} / {v.get('python', '?')}"),
        ("machine", str(v.get("machine", "?"))),
        ("report written", dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
    )))
    rows = []
    for name in ("detector", "heatmap", "regression"):
        c = study.get(name)
        if not c or name in s.skipped:
            continue
        t = c["train"]
        length = f"{t['steps']} steps" if t.get("steps") else str(t["epochs"])
        flips = t["hflip"] if name == "detector" else c.get("flip", False) if s.own_data else t["hflip"]
        rows.append((name, c["model"], f"{t['optim']['name']} lr {t['optim']['lr']:g}", t["schedule"]["name"],
                     length, str(t["batch_size"]), t["precision"], "yes" if flips else "no",
                     c.get("loss", "detection loss")))
    doc.add(Table(("stage", "model", "optimiser", "schedule", "epochs", "batch", "precision", "flips", "loss"),
                  tuple(rows), caption="Training settings (full resolved config in config.json)"))
    if s.stages:
        total = sum(x["wall_time_s"] for x in s.stages.values())
        doc.add(Table(("stage", "status", "wall time"),
                      tuple((x["title"], x["status"], f"{x['wall_time_s'] / 60:.1f} min") for x in s.stages.values())
                      + (("total", "", f"{total / 60:.1f} min"),), caption="Wall time per stage"))


# (metrics.json key, column title) of the COCO summary table; its keys carry ``_ci95`` intervals where computed
_COCO_COLUMNS = (("mAP50_95", "AP@[.5:.95]"), ("mAP50_coco", "AP@0.5"), ("mAP75", "AP@0.75"),
                 ("mAP50_95_small", "AP small"), ("mAP50_95_medium", "AP medium"), ("mAP50_95_large", "AP large"),
                 ("AR1", "AR@1"), ("AR10", "AR@10"), ("AR100", "AR@100"))


def _coco_summary(doc: Document, m: dict) -> None:
    """pycocotools' twelve-number summary (box tightness at IoU 0.5 to 0.95), with 95 % intervals where present."""
    if m.get("mAP50_95") is None:
        return  # evaluated before loclab computed it
    cells = tuple(_f(m.get(key)) + (f" {bracket(m[key + '_ci95'])}" if m.get(key + "_ci95") else "")
                  for key, _ in _COCO_COLUMNS)
    doc.add(Table(tuple(title for _, title in _COCO_COLUMNS), (cells,),
                  caption="COCO summary (101-point AP, IoU 0.5:0.05:0.95, areas in original-image pixels; "
                          "brackets: 95 % bootstrap interval over validation images)"))


def _detection(doc: Document, s: StudyFiles) -> None:
    m, vis = s.detector, s.out / "detector" / "visualizations"
    doc.add(Heading("Problem 1 — multi-scale anchor detection"))
    if "detector" in s.skipped:
        doc.add(Paragraph(s.skipped["detector"]))
        return
    if not m:
        doc.add(Paragraph("The detector stage has not finished; no detection results yet."))
        return
    run = m.get("run", {})
    ratios = f" (width/height {_anchors(run['anchor_ratios'], 2)})" if run.get("anchor_ratios") else ""
    fitted = " fitted to the training boxes" if s.own_data and s.own_data.get("autoanchor") else ""
    size = f" of the {run.get('image_size')} px letterboxed input" if s.own_data else ""
    doc.add(Paragraph(f"Model `{run.get('model', '?')}`, anchors {_anchors(run.get('anchor_sizes'))}{ratios}{fitted} "
                      f"on feature maps {run.get('feature_map_sizes')}{size}. "
                      f"AP convention: {m['ap_convention']}. Detections are kept "
                      f"down to score {run.get('score_threshold')} so the precision-recall curve is not truncated."))
    doc.add(Heading("Training curves", 3))
    doc.figure(vis / "loss_curves.png", "Train/val loss per component")
    doc.add(Heading("Average precision", 3))
    classes = list(m["AP50"])
    rows = [("loclab (this run)", _f(m["mAP50"]), *(_f(m["AP50"][c]) for c in classes), _f(m["mAP50_voc07"]),
             _f(m["mAP50_coco"]), _f(m.get("mAP70")))]
    for name, value in ({} if s.own_data else SEED_DETECTION_MAP).items():  # the course reports' numbers
        per = SEED_DETECTION_AP.get(name, {})
        rows.append((f"{name} (quoted)", _f(value), *(_f(per.get(c)) for c in classes), "—", "—", "—"))
    doc.add(Table(("", "mAP@0.5 (VOC all-point)", *classes, "VOC07 11-pt", "COCO 101-pt", "mAP@0.7"), tuple(rows)))
    _coco_summary(doc, m)
    doc.figure(vis / "pr_curves.png", "Precision-recall curves per class (IoU 0.5)")
    doc.add(Heading("Detections", 3))
    doc.figure(vis / "detections.png", "Validation images: predictions red (class, score), ground truth green")
    _scale_table(doc, m, vis)
    _coverage(doc, m, vis)
    sizes = m.get("object_sizes")
    doc.add(Heading("Object sizes", 3))
    if sizes and "per_class" in sizes:
        doc.add(Table(("class", "count", "min", "median", "max"), tuple(
            (c, str(d.get("count", "")), *(_f(d.get(k), 0) for k in ("min", "median", "max")))
            for c, d in sizes["per_class"].items())))
    doc.figure(vis / "object_sizes.png", "Object size (sqrt of box area) by class, with the size-bucket edges")
    doc.add(Heading("Learned features", 3))
    doc.figure(vis / "feature_maps.png", "Mean activation of each scale's features for one validation image")
    anchor_ablation_section(doc, s.anchor_ablation, s.out / "ablations" / "anchors", s.out)


def _scale_table(doc: Document, m: dict, vis: Path) -> None:
    t = m.get("scale_specialisation")
    doc.add(Heading("Scale specialisation", 3))
    if not t:
        return
    conf = t[t["headline"]]
    doc.add(Paragraph(f"{t['bucket_rule']} True positives at IoU {t['iou_threshold']} with score ≥ "
                      f"{t['score_threshold']} (confident); the table of all true positives is in metrics.json."))
    rows = []
    for si, scale in enumerate(t["scales"]):
        cells = [f"{conf['tp_counts'][si][b]} ({_f(conf['tp_share'][si][b], 2)})" for b in range(len(t["buckets"]))]
        rows.append((scale, *cells, *(_f(conf["recall"][si][b], 2) for b in range(len(t["buckets"])))))
    doc.add(Table(("head", *(f"TPs {b} (share)" for b in t["buckets"]), *(f"recall {b}" for b in t["buckets"])),
                  tuple(rows), caption="Which head produced the true positives of each size bucket, and each head's "
                                       "recall of each bucket on its own"))
    doc.figure(vis / "scale_specialisation.png", "Scale specialisation")


def _coverage(doc: Document, m: dict, vis: Path) -> None:
    cov = m.get("anchor_coverage")
    doc.add(Heading("Anchor coverage", 3))
    if not cov:
        return
    bpr, miou = cov["best_possible_recall"], cov["mean_best_iou"]
    rows = [(scale, *(_f(bpr["per_scale_bucket"][s][b], 2) for b in range(len(cov["buckets"]))),
             _f(miou["per_scale"][s], 2)) for s, scale in enumerate(cov["scales"])]
    rows.append(("all scales", *(_f(x, 2) for x in bpr["per_bucket"]), _f(miou["overall"], 2)))
    ppg = cov["positives_per_gt"]
    doc.add(Table(("anchors of", *(f"best possible recall {b}" for b in cov["buckets"]), "mean best IoU"),
                  tuple(rows), caption=f"Fraction of ground-truth boxes with an anchor at IoU ≥ {cov['iou_threshold']}; "
                                       f"positives per ground truth under the matcher: "
                                       f"{', '.join(_f(x, 1) for x in ppg['mean_per_bucket'])} "
                                       f"({'/'.join(cov['buckets'])})" + _bucket_note(cov)))
    doc.figure(vis / "anchor_coverage.png", "Best-anchor IoU per scale and size bucket; anchor vs object sizes")
    doc.figure(vis / "anchors_on_image.png", "Anchors of each scale drawn at their true size")


def _bucket_note(table: dict) -> str:
    """The size-bucket rule for a caption, where it is not the course's fixed one (which the report's readers know)."""
    rule = table.get("bucket_rule")
    return f"; size buckets: {rule}" if rule and rule != BUCKET_RULE else ""


def _keypoints(doc: Document, s: StudyFiles) -> None:
    doc.add(Heading("Problem 2 — keypoints: heatmap vs direct regression"))
    c = s.comparison
    if "comparison" in s.skipped:
        doc.add(Paragraph(s.skipped["comparison"]))
        return
    if not c:
        doc.add(Paragraph("The keypoint stages have not finished."))
        return
    if s.own_data:
        pairs = c.get("swap_pairs") or []
        swap = (f"Swap-aware PCK lets the keypoints of each symmetric pair ({', '.join('/'.join(p) for p in pairs)}) "
                "match in either order (the better one counts)." if pairs else
                "The skeleton has no symmetric pair, so there is no swap-aware PCK.")
        doc.add(Paragraph(f"PCK on the {c['num_images']}-image validation split ({c.get('num_instances', '?')} "
                          f"instances, unlabelled keypoints not scored); {c['pck_rule']}. {swap}"))
    else:
        doc.add(Paragraph(f"PCK on the {c['num_images']}-image validation split; {c['pck_rule']}. Swap-aware PCK lets "
                          "the two identically drawn hands match in either order (the better one counts)."))
    rows = []
    for name, m in c["models"].items():
        rows.append((f"{name} (standard)", *(_with_ci(m, "pck", t) for t in THRESHOLDS)))
        if m.get("pck_swap") is not None:
            rows.append((f"{name} (swap-aware)", *(_with_ci(m, "pck_swap", t) for t in THRESHOLDS)))
        if m.get("pck_argmax") is not None:
            rows.append((f"{name} (argmax decoding)", *(_f(m["pck_argmax"][t]) for t in THRESHOLDS)))
    if c.get("ceiling"):  # a comparison without "guessed_labels" predates the real ceiling: its "ceiling" is that
        label = ("ambiguity ceiling (best expected standard PCK, hand labels a coin flip)" if "guessed_labels" in c
                 else "perfect localiser guessing the hand labels (expected)")
        rows.append((label, *(_f(c["ceiling"][t]) for t in THRESHOLDS)))
    if c.get("guessed_labels"):
        rows.append(("perfect localiser guessing the hand labels (expected)",
                     *(_f(c["guessed_labels"][t]) for t in THRESHOLDS)))
    if not s.own_data:  # the course reports' numbers
        for name, v in SEED_HEATMAP_PCK.items():
            rows.append((f"{name} heatmap (quoted)", *(_f(v[t]) for t in THRESHOLDS)))
        for name, v in SEED_REGRESSION_PCK_TABLE.items():
            rows.append((f"{name} regression (quoted)", *(_f(v[t]) for t in THRESHOLDS)))
    doc.add(Table(("method", *(f"PCK@{t}" for t in THRESHOLDS)), tuple(rows),
                  caption="PCK with its 95 % bootstrap interval over the validation images, where recorded"))
    _differences(doc, c.get("differences"))
    if not c.get("ceiling") and s.own_data:
        note = c.get("ceiling_note") or "not computed for this dataset"
        doc.add(Paragraph(f"No ambiguity ceiling for this dataset ({note})."))
    vis = s.out / "keypoints" / "visualizations"
    doc.figure(vis / "pck_curves.png", "PCK curves: standard (solid), swap-aware (dashed), ambiguity ceiling (dotted), "
                                       "perfect localiser guessing the hand labels (dash-dotted)")
    names = list(c["models"]["heatmap"]["per_keypoint"])
    doc.add(Table(("keypoint", *(f"{m} PCK@0.1" for m in c["models"])),
                  tuple((k, *(_f((c["models"][m]["per_keypoint"][k] or {}).get("0.1")) for m in c["models"]))
                        for k in names),  # None: a keypoint never labelled in the val split
                  caption="Per-keypoint standard PCK@0.1" + ("" if s.own_data else
                                                             ": the hands carry the label ambiguity")))
    tr = c.get("translation")
    if not tr and c.get("translation_note"):
        doc.add(Paragraph(f"Translation test: {c['translation_note']}."))
    if tr:
        doc.add(Table(("model", "figure moved", "predictions moved (x)", "follow ratio"),
                      tuple((name, f"{t['shift_px']:.0f} px", f"{t['mean_dx_px']:.2f} px", _f(t["follow_ratio"], 2))
                            for name, t in tr.items()),
                      caption="Translation test: every validation image shifted right; a model that sees where the "
                              "figure is moves its predictions with it"))
    doc.add(Heading("Training", 3))
    for m in ("heatmap", "regression"):
        doc.figure(s.out / "keypoints" / m / "visualizations" / "loss_curve.png", f"{m} model: training curve")
    doc.figure(s.out / "keypoints" / "heatmap" / "visualizations" / "heatmaps_across_epochs.png",
               "Predicted heatmaps of fixed validation images across epochs")
    doc.add(Heading("Predictions", 3))
    doc.figure(vis / "method_comparison.png", "Ground truth green circles, predictions red crosses, errors dashed")
    keypoint_ablation_section(doc, s.keypoint_ablation, s.out / "ablations" / "keypoints", s.out)
    _failures(doc, c, vis)


def _with_ci(m: dict[str, Any], key: str, t: str) -> str:
    """``"0.845 [0.826, 0.864]"``: a PCK value and its interval from the run's metrics, where it has one."""
    interval = bracket((m.get(f"{key}_ci95") or {}).get(t))
    return f"{_f(m[key][t])} {interval}".strip()


def _differences(doc: Document, differences: dict[str, Any] | None) -> None:
    """Paired differences on the same validation images: heatmap minus regression, heatmap minus the ceiling."""
    if not differences:
        return
    if differences.get("note"):
        doc.add(Paragraph(f"No paired differences: {differences['note'].removeprefix('no paired differences: ')}."))
        return
    rows = []
    labels = {"heatmap_vs_regression": "heatmap − regression", "heatmap_vs_ceiling": "heatmap − ambiguity ceiling"}
    for name, label in labels.items():
        for key, kind in (("pck", "standard"), ("pck_swap", "swap-aware")):
            records = (differences.get(name) or {}).get(key)
            if records:
                rows.append((f"{label} ({kind})", *(difference_cell(records.get(t)) for t in THRESHOLDS)))
    if rows:
        doc.add(Table(("difference", *(f"Δ PCK@{t} [95 % CI]" for t in THRESHOLDS)), tuple(rows),
                      caption="Paired bootstrap over the same validation images; (n.s.): the interval contains 0, "
                              "no significant difference"))


def _failures(doc: Document, c: dict, vis: Path) -> None:
    f = c.get("failures")
    doc.add(Heading("Failure cases", 3))
    if not f:
        return
    doc.add(Paragraph(f"Rule: {f['rule']}. Mined on the validation split."))
    rows = [(t, f["types"][t], str(f["counts"][t])) for t in ("A", "B", "C")]
    doc.add(Table(("type", "meaning", f.get("unit", "images")), tuple(rows)))
    fk = f.get("failing_keypoints", {})
    if fk:
        names = sorted({k for per_model in fk.values() for counts in per_model.values() for k in counts})
        rows = []
        for t, per_model in fk.items():
            for model, counts in per_model.items():
                rows.append((t, model, *(str(counts.get(k, 0)) for k in names)))
        doc.add(Table(("type", "model", *names), tuple(rows), caption="Which keypoints fail, per failure type"))
    doc.figure(vis / "failure_cases.png", "Failure examples per type (failing keypoints marked)")


def _class_ranking(s: StudyFiles) -> dict[str, Any] | None:
    """Which detection class is significantly the easiest / hardest, from the detector run's per-image statistics
    (None when the run has none)."""
    path = s.out / "detector" / PER_IMAGE_FILE
    if not s.detector or not s.detector.get("AP50") or not path.is_file():
        return None
    try:
        return class_extremes(load_per_image(path), s.detector["AP50"])
    except PerImageError:
        return None


def _conclusions(doc: Document, s: StudyFiles) -> None:
    own = bool(s.own_data)  # a user's dataset: no comparison with the course reports' numbers
    items = (conclusions.detection(s.detector, quote_reports=not own, class_ranking=_class_ranking(s))
             + conclusions.scale(s.detector)
             + conclusions.coverage(s.detector) + conclusions.anchor_ablation(s.anchor_ablation)
             + conclusions.keypoints(s.comparison, quote_reports=not own) + conclusions.ablations(s.keypoint_ablation)
             + list(dict.fromkeys(s.skipped.values())))
    doc.add(Heading("Conclusions"))
    doc.add(Paragraph("Each statement below is computed from this run's numbers."))
    doc.add(Bullets(tuple(items)) if items else Paragraph("No stage has finished yet."))


def build_report(out: Path) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` from the study's files; returns both paths."""
    out = Path(out)
    if not (out / "config.json").is_file():
        raise FileNotFoundError(f"{out}: not a loclab study directory (no config.json); run `loclab run` first")
    s = StudyFiles(out)
    doc = Document(f"loclab study report — {s.config.get('preset', '?')} preset")
    _setup(doc, s)
    _detection(doc, s)
    _keypoints(doc, s)
    _conclusions(doc, s)
    summaries = sorted(p.relative_to(out) for p in out.rglob("*.json") if "stages" not in p.parts)
    # ablation trials are full runs of their own; list their folders, not every file in them
    files = [str(p) for p in summaries if not (p.parts[0] == "ablations" and len(p.parts) > 3)]
    trials = sorted({str(Path(*p.parts[:3])) + "/" for p in summaries if p.parts[0] == "ablations" and len(p.parts) > 3})
    doc.add(Heading("Files"), Code("\n".join(files + trials)))
    md, html = out / "report.md", out / "report.html"
    md.write_text(render_markdown(doc, out))
    html.write_text(render_html(doc))
    write_json(out / "report_summary.json", {"conclusions": [b for blk in doc.blocks if isinstance(blk, Bullets)
                                                              for b in blk.items]})
    return md, html
