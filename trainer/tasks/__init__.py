"""The task registry: what a network learns (trainer.tasks.base.Task). A run's task follows from its
dataset (DatasetInfo.task): image sets are classification, text corpora language modelling,
environments reinforcement learning."""
from __future__ import annotations

from trainer.tasks.base import ACCURACY, BatchStream, Metric, PreparedData, Task
from trainer.tasks.classification import CLASSIFICATION
from trainer.tasks.language_modeling import LANGUAGE_MODELING
from trainer.tasks.reinforcement import REINFORCEMENT_LEARNING

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, LANGUAGE_MODELING, REINFORCEMENT_LEARNING)}


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


def metric_of(record: dict) -> Metric:
    """The metric a record, curve point or eval event holds (the task whose `test_<key>` it has; accuracy
    for records without one)."""
    for task in TASKS.values():
        if f"test_{task.metric.key}" in record:
            return task.metric
    return ACCURACY


def of_results(results: dict) -> Task:
    """The task of a run's results.json (runs written before tasks existed are classification)."""
    return get((results.get("task") or {}).get("name", CLASSIFICATION.name))


__all__ = ["ACCURACY", "BatchStream", "CLASSIFICATION", "LANGUAGE_MODELING", "Metric", "PreparedData",
           "REINFORCEMENT_LEARNING", "TASKS", "Task", "get", "metric_of", "of_data", "of_results", "register"]
