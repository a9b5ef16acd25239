"""The live page's state: the database snapshot plus the live figures drawn from it.

Both the first page render and every websocket (re)connection use `live_state`, so a browser that
joins late or reconnects after a drop sees exactly what one that watched from the start sees.
"""
from __future__ import annotations

import json

from frontend import charts, queries
from frontend.models import Experiment, task_of_dataset
from trainer.events import TICKET


def planned_trainings(spec: dict) -> list[tuple[str, int, int]]:
    """(network, replicate, round) of every training the spec asks for, in the order the trainer runs them."""
    pruning = spec.get("pruning", {})
    rounds_total = 1 if pruning.get("schedule") == "one_shot" else int(pruning.get("rounds", 0))
    replicates = range(int(spec.get("replicates") or 1))
    planned = [(TICKET, replicate, round_index) for round_index in range(rounds_total + 1) for replicate in replicates]
    for replicate in replicates:
        for round_index in spec.get("control_rounds") or range(1, rounds_total + 1):
            planned += [(kind, replicate, round_index) for kind in spec.get("controls") or []]
    return planned


def live_state(experiment_id: int) -> dict | None:
    state = queries.snapshot(experiment_id)
    if state is None:
        return None
    spec, dataset_name = Experiment.objects.values_list("spec", "dataset_name").get(pk=experiment_id)
    metric = task_of_dataset(dataset_name).metric
    figures = charts.live_figures(state["curves"], planned_trainings(spec), metric)
    state["figures"] = {name: json.loads(charts.figure_json(figure)) for name, figure in figures.items()}
    state["metric"] = metric.to_dict()  # the page's script reads val_<key> of eval events
    return state
