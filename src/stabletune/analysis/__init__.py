"""Statistics, figures and reports of multi-seed studies (paper Tables 1-4, 7; Figures 1-18).

Everything here takes pandas frames (:class:`ResultsFrames`), never models: this package must not import
torch, so a report can be made on any machine from a study store, its export folder (:func:`read_frames`) or a
CSV.
"""

from __future__ import annotations

from stabletune.analysis.frames import MAIN_METRIC, ResultsFrames, from_long_csv, read_frames, write_frames
from stabletune.analysis.stats import (
    bias_correction_ratio,
    degenerate_runs,
    expected_max_performance,
    one_tailed_ttest,
    seed_grid_stats,
    summary_table,
)

__all__ = [
    "MAIN_METRIC",
    "ResultsFrames",
    "from_long_csv",
    "read_frames",
    "write_frames",
    "bias_correction_ratio",
    "degenerate_runs",
    "expected_max_performance",
    "one_tailed_ttest",
    "seed_grid_stats",
    "summary_table",
    "write_report",
]


def __getattr__(name: str):  # lazy: importing the statistics must not pull in matplotlib
    if name == "write_report":
        from stabletune.analysis.report import write_report

        return write_report
    raise AttributeError(name)
