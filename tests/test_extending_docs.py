"""docs/extending.md runs as written: each section's ```python blocks, in order, as one script in an empty folder;
and every ``loclab.`` name the page cites exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from loclab.models.detector import DETECTOR_MODELS
from loclab.models.keypoints import KEYPOINT_MODELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _sections() -> dict[str, list[str]]:
    """``{section title: its python blocks}`` for every ``## `` section with code."""
    sections = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        blocks = re.findall(r"^```python\n(.*?)^```", body, flags=re.M | re.S)
        if blocks:
            sections[title.strip()] = blocks
    return sections


SECTIONS = _sections()


@pytest.fixture
def registries():
    """The examples register models; put both registries back as they were afterwards."""
    saved = [(registry, dict(registry)) for registry in (DETECTOR_MODELS, KEYPOINT_MODELS)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


def test_the_page_has_the_three_examples():
    assert list(SECTIONS) == ["Add a detector", "Add a keypoint model", "Add a dataset layout"]


@pytest.mark.parametrize("title", list(SECTIONS))
def test_example_runs(title, tmp_path, monkeypatch, registries):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"extending_{title.lower().replace(' ', '_')}"}
    for i, block in enumerate(SECTIONS[title]):
        exec(compile(block, f"{DOC.name}: {title}, block {i + 1}", "exec"), namespace)


def test_example_registrations_are_undone():
    assert "tiny" not in DETECTOR_MODELS and "tiny_heatmap" not in KEYPOINT_MODELS


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        for attr in parts[n:]:
            target = getattr(target, attr)
        return target
    raise ModuleNotFoundError(dotted)


def test_every_cited_name_exists():
    names = sorted(set(re.findall(r"`(loclab(?:\.\w+)+)`", DOC.read_text())))
    assert len(names) > 10
    missing = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert missing == []
