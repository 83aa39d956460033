"""``loclab bench``: speed measured side by side in one run (workloads, timing, AP, and the driver of them all)."""

from loclab.bench.driver import run_bench

__all__ = ["run_bench"]
