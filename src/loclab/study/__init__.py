"""The whole study: cached stages, trials, ablation grids, keypoint comparison."""

from loclab.study.run import run_study
from loclab.study.trials import ablation_from_cli

__all__ = ["run_study", "ablation_from_cli"]
