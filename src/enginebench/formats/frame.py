"""The frame the CSV and Parquet exports write: store/frame.py's columns, which every result has, then the columns of
each scenario whose results the runs hold (Scenario.frame_columns: an operator's GFLOP/s and shares of the
machine's peaks, a server's target and achieved rates, a block's name), in the scenarios' order of first
appearance. A row of another scenario leaves them missing (NaN, <NA>), never 0; an export of encoder latency runs
has none of them."""

from __future__ import annotations

import pandas as pd

from enginebench.scenarios.registry import REGISTRY, scenario_class
from enginebench.store.frame import to_frame
from enginebench.store.model import Run


def export_frame(runs: Run | list[Run]) -> pd.DataFrame:
    runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    frame = to_frame(runs)
    results = [r for run in runs for r in run.results]
    for name in dict.fromkeys(r.scenario for r in results):
        if name not in REGISTRY:  # stored by a version with another scenario: its rows keep the common columns
            continue
        scenario = scenario_class(name)
        values = [scenario.frame_values(r) if r.scenario == name else {} for r in results]
        for column, dtype in scenario.frame_columns.items():
            if column not in frame.columns:  # two scenarios may share one (server and offline: all of them)
                frame[column] = pd.Series([None] * len(results), dtype=dtype)
            given = [i for i, v in enumerate(values) if v.get(column) is not None]
            if given:
                frame.loc[given, column] = pd.Series([values[i][column] for i in given], index=given, dtype=dtype)
    return frame


__all__ = ["export_frame"]
