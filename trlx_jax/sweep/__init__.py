"""Sweeps over config overrides x seeds and the aggregation of run directories.

`load_runs`, `group_runs`, `aggregate`, `markdown_table` and `plot_groups` read any run
directories (a sweep's or not); `load_sweep` / `expand` turn a sweep file into jobs.
"""

from trlx_jax.sweep.curves import Curve, plot_groups, seed_curve
from trlx_jax.sweep.results import (
    SUMMARY_METRICS,
    Group,
    Metric,
    Run,
    aggregate,
    group_runs,
    load_run,
    load_runs,
    markdown_table,
    run_rows,
    write_csv,
)

__all__ = [
    "SUMMARY_METRICS", "Curve", "Group", "Metric", "Run", "aggregate", "group_runs", "load_run",
    "load_runs", "markdown_table", "plot_groups", "run_rows", "seed_curve", "write_csv",
]
