"""Cached study stages.

Each stage has a key, a config (anything JSON-able) and a function. Its state lives in
``OUT/stages/<key>.json``: the config hash, ``running`` or ``done`` (or ``skipped`` with the reason, for a stage
that does not apply to the study's data), and the wall time. A stage whose
hash matches and is done is skipped; one that is ``running`` (interrupted) is called again and resumes
from its own checkpoints; one whose config changed is refused unless ``force`` (results of another
config are never silently overwritten).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from loclab.engine.rundir import RunDirError, read_json, write_json


def config_hash(config: Any) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageRunner:
    """Runs stages in order, skipping finished ones, with a ``[k/n]`` header for each."""

    def __init__(self, out: Path, total: int, *, force: bool = False):
        self.out, self.total, self.force = Path(out), total, force
        self.index = 0
        (self.out / "stages").mkdir(parents=True, exist_ok=True)

    def marker(self, key: str) -> Path:
        return self.out / "stages" / f"{key}.json"

    def run(self, key: str, title: str, config: Any, fn: Callable[[], Any], *, outputs: list[Path] = ()) -> Any:
        """Run ``fn`` unless the stage is already done with this config; returns ``fn``'s result or None."""
        self.index += 1
        digest = config_hash(config)
        marker = self.marker(key)
        header = f"[{self.index}/{self.total}] {title}"
        if marker.exists() and read_json(marker)["status"] == "skipped":  # no results to keep
            marker.unlink()
        if marker.exists():
            state = read_json(marker)
            if state["hash"] != digest and not self.force:
                raise RunDirError(
                    f"{self.out}: stage {key!r} was run with a different config (hash {state['hash']} vs "
                    f"{digest}). loclab does not overwrite earlier results: choose a new --out, or pass --force."
                )
            if state["hash"] == digest and state["status"] == "done" and not self.force:
                tqdm.write(f"{header}: done earlier ({state['wall_time_s']:.0f}s), skipped")
                return None
            if self.force or state["hash"] != digest:
                for path in outputs:
                    shutil.rmtree(path, ignore_errors=True) if Path(path).is_dir() else Path(path).unlink(missing_ok=True)
            elif state["status"] == "running":
                tqdm.write(f"{header}: resuming an interrupted stage")
        tqdm.write(header)
        started = time.perf_counter()
        previous = read_json(marker).get("wall_time_s", 0.0) if marker.exists() else 0.0
        write_json(marker, {"key": key, "title": title, "hash": digest, "status": "running", "config": config,
                            "wall_time_s": previous})
        result = fn()
        wall = previous + time.perf_counter() - started
        write_json(marker, {"key": key, "title": title, "hash": digest, "status": "done", "config": config,
                            "wall_time_s": wall})
        tqdm.write(f"{header}: done in {wall:.0f}s")
        return result

    def skip(self, key: str, title: str, reason: str) -> None:
        """Count a stage that does not apply to this study (e.g. keypoint stages on a dataset of boxes): nothing
        runs, its marker says ``skipped`` and ``reason`` (one sentence, which the report shows instead of results)."""
        self.index += 1
        tqdm.write(f"[{self.index}/{self.total}] {title}: skipped. {reason}")
        write_json(self.marker(key), {"key": key, "title": title, "hash": config_hash({"skipped": reason}),
                                      "status": "skipped", "reason": reason, "config": None, "wall_time_s": 0.0})
