"""A device-cuda experiment on a GPU machine: routed to the gpu queue and trained there on the GPU (eager Celery
runs the task in this process, as a worker consuming the gpu queue would). Marked `cuda`: skipped without CUDA;
the routing alone is checked everywhere by tests/web/test_queues.py."""
import json
from pathlib import Path

import pytest

from frontend import services
from frontend.models import Experiment
from frontend.queues import EXPERIMENT_TASK, route_task
from tests.conftest import TINY_SPEC
from trainer.spec import ExperimentSpec

pytestmark = [pytest.mark.cuda, pytest.mark.django_db]


def test_a_cuda_experiment_is_routed_to_the_gpu_queue_and_trains_on_the_gpu(user, settings, tmp_path):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    spec = ExperimentSpec.from_dict({**TINY_SPEC, "device": "cuda", "controls": []})
    experiment = services.create_experiment(spec, owner=user)
    assert route_task(EXPERIMENT_TASK, [experiment.pk], {}, {}) == {"queue": settings.LOTTERYWEB_GPU_QUEUE}
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.FINISHED, experiment.message
    results = json.loads((Path(experiment.run_dir) / "results.json").read_text())
    assert results["device"] == "cuda" and results["status"] == "finished"
    assert experiment.round_results.filter(network="ticket").count() == spec.pruning.rounds + 1  # the dense round 0 too
