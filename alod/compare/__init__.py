"""``alod compare``: does the selection beat random sampling here, at equal images and at equal boxes?

* :mod:`~alod.compare.protocol`: the fair protocol (shared cycle 1, the seeded baseline in every
  mode, the scorer's labels charged, equal-box runs, the full-data line, variants) as an
  orchestrator over the stages; resumable.
* :mod:`~alod.compare.report`: the statistics and plots of a finished set of runs (AULC, paired
  differences with t intervals and Holm-adjusted p-values, savings in images, boxes and annotator
  actions, per-class AP), pure functions over the run records.
"""
from alod.compare.protocol import (
    check_variants,
    equal_boxes_name,
    parse_variant,
    plan,
    resolve,
    run_compare,
    run_labels,
    run_name,
)

__all__ = ["check_variants", "equal_boxes_name", "parse_variant", "plan", "resolve", "run_compare", "run_labels",
           "run_name"]
