"""Analyses that turn predictions, ground truth and anchors into numbers (JSON-ready dicts), never pictures.

Detection: :mod:`~loclab.analysis.sizes` (size buckets, object size distribution), :mod:`~loclab.analysis.scale`
(which head finds which object size), :mod:`~loclab.analysis.coverage` (how well the anchors cover the ground
truth). Figures of these numbers live in :mod:`loclab.viz`.
"""
