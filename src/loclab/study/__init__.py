"""The whole study: cached stages, trials, ablation grids, keypoint comparison."""

from loclab.study.driver import run_study
from loclab.study.trials import ablation_from_cli

__all__ = ["ablation_from_cli", "run_study"]
