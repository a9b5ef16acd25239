"""Every plotly figure of the web app, built on the server from stored results.

Functions take plain rows (from frontend.queries or a run directory) and return plotly figures;
`figure_json` turns one into JSON that a template embeds and static/frontend/charts.js draws.
Pages hold no chart logic; the live page's script only appends points to the traces made here.
runs: an experiment's IMP run; masks: one round's masks; analyses: one builder per study;
reproductions: a reproduction check's chart; sweeps: a sweep's configurations. Below: what the views use.
"""
from frontend.charts.analyses import analysis_figures, analysis_warnings
from frontend.charts.base import figure_json
from frontend.charts.masks import figures_payload, mask_figures
from frontend.charts.reproductions import reproduction_chart
from frontend.charts.runs import (
    compare_sparsity_vs_accuracy,
    early_stop_iterations,
    live_figures,
    sparsity_vs_accuracy,
    training_curves,
)
from frontend.charts.sweeps import sweep_parallel_coordinates, sweep_sparsity_vs_metric

__all__ = ["analysis_figures", "analysis_warnings", "compare_sparsity_vs_accuracy", "early_stop_iterations",
           "figure_json", "figures_payload", "live_figures", "mask_figures", "reproduction_chart",
           "sparsity_vs_accuracy", "sweep_parallel_coordinates", "sweep_sparsity_vs_metric", "training_curves"]
