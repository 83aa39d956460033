"""Pictures, and the only place in loclab that imports matplotlib (always on the non-interactive Agg backend).

Modules here draw from numbers that ``analysis/``, ``metrics/`` and the run directory already hold; they compute
nothing that a report would need as a number. :func:`loclab.viz.style.save_figure` writes every figure.
"""
