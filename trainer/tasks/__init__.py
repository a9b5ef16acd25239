"""The task registry: what a network learns (trainer.tasks.base.Task). A run's task follows from its
dataset (DatasetInfo.task): image sets are classification, text corpora language modelling,
environments reinforcement learning."""
from __future__ import annotations

from trainer.tasks.base import ACCURACY, BatchStream, Metric, PreparedData, Task
from trainer.tasks.classification import CLASSIFICATION

TASKS: dict[str, Task] = {CLASSIFICATION.name: CLASSIFICATION}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def of_data(data: PreparedData) -> Task:
    """The task that reads `data` (classification when the data names none)."""
    return data.task or CLASSIFICATION


def of_results(results: dict) -> Task:
    """The task of a run's results.json (runs written before tasks existed are classification)."""
    return get((results.get("task") or {}).get("name", CLASSIFICATION.name))


__all__ = ["ACCURACY", "BatchStream", "CLASSIFICATION", "Metric", "PreparedData", "TASKS", "Task", "get", "of_data",
           "of_results", "register"]
