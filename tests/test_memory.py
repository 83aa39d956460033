"""Retaining freed memory removes the page faults of a training step's large activations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loclab.engine.memory import can_retain_freed_memory, freed_memory_retained

HELPER = Path(__file__).parent / "helpers" / "page_faults.py"


@pytest.mark.skipif(not can_retain_freed_memory(), reason="needs Linux with glibc")
def test_training_steps_reuse_retained_memory_without_page_faults():
    out = subprocess.run([sys.executable, str(HELPER)], capture_output=True, text=True, check=True, timeout=120)
    faults = json.loads(out.stdout.strip().splitlines()[-1])
    assert faults["active"]
    assert faults["plain"] > 10_000  # over 100 MB of activations faulted in again on every step
    assert faults["retained"] < faults["plain"] / 10


def test_disabled_is_a_no_op():
    with freed_memory_retained(enabled=False) as active:
        assert not active
