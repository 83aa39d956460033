"""Numbers quoted from the two original course reports (the floor loclab must beat).

These are the reports' own figures, shown beside loclab's measurements and labelled as such.
Their methods differ from loclab's: a 0.5 score cut before AP (docs/metrics.md, 'Score threshold'), and PCK
from one run each.
"""

SEED_DETECTION_MAP = {"report A": 0.39, "report B": 0.5229}
SEED_DETECTION_AP = {"report B": {"circle": 0.6611, "square": 0.3449, "triangle": 0.5627}}
SEED_HEATMAP_PCK = {"report A": {"0.05": 0.817, "0.1": 0.871, "0.15": 0.897, "0.2": 0.921}}
SEED_REGRESSION_PCK_TABLE = {"report A": {"0.05": 0.006, "0.1": 0.035, "0.15": 0.073, "0.2": 0.118}}
# Report B quotes only two points per curve: heatmap ~0.84 @0.05 and ~0.92 @0.2, regression ~0.08 and ~0.53.
SEED_REGRESSION_PCK = {"report A": 0.118, "report B": 0.53}
