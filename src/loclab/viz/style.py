"""Shared figure conventions: the Agg backend, one resolution, and one way to write a figure to disk.

Importing this module selects matplotlib's non-interactive Agg backend, so figures render on machines without a
display (CI, servers, a ssh session) and never open windows. Every other ``viz`` module imports ``pyplot`` after
this module for that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

DPI = 110
"""Resolution of every saved figure: sharp in a report, a few hundred kB per PNG."""

# Colours that mean the same thing in every figure.
PREDICTION_COLOUR = "red"
GROUND_TRUTH_COLOUR = "limegreen"
SCALE_COLOURS = ("tab:orange", "tab:purple", "tab:cyan")  # S1, S2, S3
CLASS_COLOURS = ("tab:red", "tab:green", "tab:blue")  # circle, square, triangle (the shapes' own fills)
# further classes of a user's dataset, after the first three
_MORE_CLASS_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def class_colour(label: int) -> str:
    """The colour of class ``label``: :data:`CLASS_COLOURS` for the first three, then seven others in turn."""
    if label < len(CLASS_COLOURS):
        return CLASS_COLOURS[label]
    return _MORE_CLASS_COLOURS[(label - len(CLASS_COLOURS)) % len(_MORE_CLASS_COLOURS)]


def save_figure(fig: Figure, path: Path | str) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix, ``DPI`` dots per inch, tight bounding box) and close it.

    The file is written to a temporary name beside ``path`` and renamed into place, so a crash never leaves a
    half-written image. Parent folders are created. The figure is closed even when saving fails, so a long
    report build does not accumulate open figures. Returns ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return path
