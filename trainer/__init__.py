"""lotteryweb's engine: lottery-ticket experiments in pure PyTorch (no Django).

    from trainer import ExperimentSpec, run_experiment
    results = run_experiment(ExperimentSpec(dataset="synthetic", ...), "runs", callback=print)
"""
from trainer.spec import ExperimentSpec, PruningSpec, SpecError, TrainingSpec


def run_experiment(*args, **kwargs):
    from trainer.imp import run_experiment as _run
    return _run(*args, **kwargs)


__all__ = ["ExperimentSpec", "PruningSpec", "TrainingSpec", "SpecError", "run_experiment"]
