"""What the form offers: models and datasets from the trainer's registries grouped by task (classification,
language modelling, reinforcement learning), with what the page needs to know about them (installed or
not, prunable layer sizes for the live remaining-fraction preview)."""
from __future__ import annotations

import functools
import math

import torch
from django.conf import settings

from trainer import dataset_sources, datasets, downloads, models, tasks
from trainer.spec import SpecError

# The tasks the web app runs: its pages, live recorders and charts speak of each task's metric.
WEB_TASKS = ("classification", "language_modeling", "reinforcement_learning")


def data_dir():
    return settings.LOTTERYWEB_DATA_DIR


def _web_datasets() -> dict:
    return {name: entry for name, entry in datasets.DATASETS.items() if entry.info.task in WEB_TASKS}


def _web_models() -> dict:
    return {name: entry for name, entry in models.MODELS.items() if entry.task in WEB_TASKS}


def dataset_choices() -> list[dict]:
    """Every registered dataset, whether its files are there, and where they are or should go; whether it can
    be downloaded, and its latest download's state (trainer.downloads' status file)."""
    found = []
    for name, entry in _web_datasets().items():
        installed = entry.is_installed(data_dir())
        found.append({"name": name, "title": entry.info.title, "installed": installed, "task": entry.info.task,
                      "location": entry.location_hint(data_dir()), "description": entry.info.description,
                      "downloadable": name in dataset_sources.SOURCES,
                      "download": download_state(name) if name in dataset_sources.SOURCES else None})
    return found


def download_state(name: str) -> dict | None:
    """The latest download of `name` as the panel shows it: {"state", "message", "percent", "active"}, or None."""
    status = downloads.read_status(name, data_dir())
    if status is None:
        return None
    total, done = status.get("total"), status.get("bytes")
    percent = round(100 * done / total) if isinstance(total, int) and isinstance(done, int) and total > 0 else None
    return {"state": status["state"], "message": status.get("message", ""), "percent": percent,
            "active": status["state"] in (downloads.QUEUED, downloads.RUNNING)}


def check_runnable_here(spec) -> None:
    """What the trainer would only find once the data is loaded, as a SpecError naming the field:
    the dataset must be installed on this server and fit the spec (validation split, batch size)."""
    entry = datasets.DATASETS[spec.dataset]
    if entry.info.task not in WEB_TASKS or models.MODELS[spec.model].task not in WEB_TASKS:
        raise SpecError("dataset" if entry.info.task not in WEB_TASKS else "model",
                        f"{entry.info.task.replace('_', ' ')} runs from the command line for now "
                        "(python -m trainer run); the web app runs image classification")
    if not entry.is_installed(data_dir()):
        raise SpecError("dataset",
                        f"{entry.info.title} is not installed; put its files in {entry.location_hint(data_dir())}")
    spec.check_dataset_fit()


def downloadable_dataset_names() -> list[str]:
    return [name for name in dataset_sources.SOURCES if name in _web_datasets()]


def installed_dataset_names() -> list[str]:
    return [choice["name"] for choice in dataset_choices() if choice["installed"]]


def model_choices() -> list[dict]:
    return [{"name": name, "description": entry.description, "task": entry.task}
            for name, entry in _web_models().items()]


def task_choices() -> list[dict]:
    """The form's tasks, each with its metric and the names of its models and datasets (the page's script
    shows a task's own choices)."""
    return [{"name": name, "title": tasks.get(name).title, "metric": tasks.get(name).metric.label,
             "direction": "higher is better" if tasks.get(name).metric.higher_is_better else "lower is better",
             "models": [m["name"] for m in model_choices() if m["task"] == name],
             "datasets": [d["name"] for d in dataset_choices() if d["task"] == name]} for name in WEB_TASKS]


def task_of_dataset_name(dataset_name: str) -> str:
    entry = datasets.DATASETS.get(dataset_name)
    return entry.info.task if entry else tasks.CLASSIFICATION.name


@functools.cache
def prunable_layer_sizes(model_name: str, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int]:
    """Parameter name -> number of weights of each default-prunable layer, from shapes only."""
    names = models.prunable_parameter_names(model_name, input_shape, num_classes)
    with torch.device("meta"):  # shapes only: no memory, no RNG
        network = models.MODELS[model_name].architecture(input_shape, num_classes)
    shapes = {name: tuple(parameter.shape) for name, parameter in network.named_parameters()}
    return {name: math.prod(shapes[name]) for name in names}


def layer_sizes_by_model_and_dataset() -> dict[str, dict[str, dict[str, int]]]:
    """model -> dataset -> layer -> weight count; the page's preview needs every combination of a task."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for model_name, model in _web_models().items():
        table[model_name] = {}
        for dataset_name, entry in _web_datasets().items():
            info = entry.info
            if info.task != model.task:
                continue
            table[model_name][dataset_name] = prunable_layer_sizes(model_name, tuple(info.input_shape),
                                                                   info.num_classes)
    return table
