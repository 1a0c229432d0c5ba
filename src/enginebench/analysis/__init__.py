"""Judging stored results: compare.py (two runs cell by cell: ratios with intervals, the regression gate) and
recommend.py (the pick under a fidelity bound, with its speed-up over the baselines)."""
