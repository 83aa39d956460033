"""Evaluation of trained runs and of any model's prediction files: numbers into metrics.json."""
