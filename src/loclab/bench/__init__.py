"""``loclab bench``: speed measured side by side in one run (workloads, timing, AP, the run itself)."""

from loclab.bench.run import run_bench

__all__ = ["run_bench"]
