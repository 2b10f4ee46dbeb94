"""The comparison report across runs: methods side by side at every tier, over seeds.

``python -m simulations.report PATH... [--csv FILE] [--summary FILE] [--report DIR]`` (also
``maestro-fl report``). The package is cut along its concepts:

- :mod:`~simulations.report.runs`: loading run folders (:class:`Run`) and the per-method,
  per-tier figures read from their metrics;
- :mod:`~simulations.report.frames`: the tidy tables, ``results.csv`` (:func:`runs_frame`, one
  row per run × evaluated round × tier; :func:`load_frame` for any set of runs) and
  ``summary.csv`` (:func:`summary_frame`, the headline per run and tier); accuracies in %
  (``accuracy-pct``), variant settings as columns;
- :mod:`~simulations.report.tables`: the markdown tables;
- :mod:`~simulations.report.plots`: the figures (PNG and PDF);
- :mod:`~simulations.report.document`: ``report.md`` (:func:`write_report`);
- :mod:`~simulations.report.cli`: the command line (:func:`main`).

The names below are re-exported so ``from simulations.report import ...`` keeps working.
"""

from simulations.report.cli import main
from simulations.report.document import (
    matched_compute_section,
    time_axis_section,
    unassigned_tier_warnings,
    write_report,
)
from simulations.report.frames import (
    RESULTS_COLUMNS,
    SUMMARY_COLUMNS,
    load_frame,
    runs_frame,
    summary_frame,
)
from simulations.report.plots import (
    COMPUTE_PLOT,
    PAIRED_PLOT,
    PLOTS,
    STEP_TIME_PLOT,
    plot_accuracy_per_round,
    plot_accuracy_vs_bytes,
    plot_accuracy_vs_macs,
    plot_accuracy_vs_step_time,
    plot_accuracy_vs_virtual_time,
    plot_bytes_per_round,
    plot_paired_differences,
    plt,
    time_unit,
)
from simulations.report.runs import (
    METHOD_ORDER,
    RECORD,
    Run,
    bytes_per_client_round,
    final_accuracy,
    load_runs,
    merged_selection,
    run_folders,
    tiers_without_clients,
)
from simulations.report.tables import (
    comparison_table,
    phase_profile_table,
    provenance_section,
    selection_table,
    timing_table,
)

__all__ = [
    "COMPUTE_PLOT",
    "METHOD_ORDER",
    "PAIRED_PLOT",
    "PLOTS",
    "RECORD",
    "RESULTS_COLUMNS",
    "STEP_TIME_PLOT",
    "SUMMARY_COLUMNS",
    "Run",
    "bytes_per_client_round",
    "comparison_table",
    "final_accuracy",
    "load_frame",
    "load_runs",
    "main",
    "matched_compute_section",
    "merged_selection",
    "phase_profile_table",
    "plot_accuracy_per_round",
    "plot_accuracy_vs_bytes",
    "plot_accuracy_vs_macs",
    "plot_accuracy_vs_step_time",
    "plot_accuracy_vs_virtual_time",
    "plot_bytes_per_round",
    "plot_paired_differences",
    "plt",
    "provenance_section",
    "run_folders",
    "runs_frame",
    "selection_table",
    "summary_frame",
    "tiers_without_clients",
    "time_axis_section",
    "time_unit",
    "timing_table",
    "unassigned_tier_warnings",
    "write_report",
]
