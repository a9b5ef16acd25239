"""lotteryweb's engine: lottery-ticket experiments in pure PyTorch (no Django).

    from trainer import ExperimentSpec, run_experiment
    results = run_experiment(ExperimentSpec(dataset="synthetic", ...), "runs", callback=print)
"""
from trainer.imp import run_experiment
from trainer.spec import ExperimentSpec, PruningSpec, SpecError, TrainingSpec

__all__ = ["ExperimentSpec", "PruningSpec", "TrainingSpec", "SpecError", "run_experiment"]
