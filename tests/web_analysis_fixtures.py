"""Session fixtures for the web side of the analyses: every analysis run once on tiny runs.

`analysis_results` runs all nine with small parameters (ANALYSIS_PARAMS) on the session's tiny
LeNet run, and early-bird on a tiny ResNet-20 run (it needs batch norm). The engine stores each
result in the run directory, so the web tests that submit the same parameters (the eager task, the
real Celery worker of the browser test) find it finished and do not train again.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A BN model for early-bird, as small as ResNet-20 gets: a few iterations, small validation set.
BN_SPEC = {
    "model": "resnet20", "dataset": "synthetic", "validation_size": 60,
    "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 30, "training_steps": "6it", "eval_interval": "3it"},
    "pruning": {"rounds": 1, "fraction": 0.2},
}

# Analysis parameters small enough for seconds each; `transfer`'s target_run is filled in with the run itself.
ANALYSIS_PARAMS = {
    "retraining": {},
    "connectivity": {"rewind_steps": ["0it", "50it"], "points": 9},
    "masking_criteria": {"criteria": ["large_final", "large_init", "movement"]},
    "pruning_at_init": {"methods": ["snip", "synflow", "magnitude"], "synflow_iterations": 10, "score_examples": 64},
    "structured_pruning": {"norms": ["l1", "l2"]},
    "transfer": {"target_dataset": "synthetic", "rounds": [0, 2], "controls": ["random_reinit"]},
    "edge_popup": {"kept_percents": [30, 70], "widths": [0.5, 1], "iterations": "20it"},
    "learned_supermask": {"weights": ["theta_0", "signed_constant"], "iterations": "20it", "eval_samples": 3},
}
EARLY_BIRD_PARAMS = {"train_examples": 60, "test_examples": 60, "window": 2}


def analysis_params(name: str, run_path: Path) -> dict:
    if name == "early_bird":
        return dict(EARLY_BIRD_PARAMS)
    params = dict(ANALYSIS_PARAMS[name])
    if name == "transfer":
        params["target_run"] = str(run_path)  # "a ticket found on the target": the run itself, on synthetic
    return params


@pytest.fixture(scope="session")
def finished_bn_run(tmp_path_factory):
    from tests.conftest import train_spec_once
    return train_spec_once(tmp_path_factory, BN_SPEC, "bn_runs")


@pytest.fixture(scope="session")
def analysis_results(finished_run, finished_bn_run):
    """name -> (result dict, run directory) for every analysis."""
    from tests.conftest import single_torch_thread
    from trainer.analyses import ANALYSES, run_analysis

    found = {}
    with single_torch_thread():
        for name in ANALYSES:
            run_path = finished_bn_run[1] if name == "early_bird" else finished_run[1]
            found[name] = (run_analysis(name, run_path, analysis_params(name, run_path)), run_path)
    return found


def add_finished_experiment(database_env: dict, run_path: Path, owner: str) -> int:
    """Store a finished run as `owner`'s Experiment (with its rounds) in another process's database
    (`database_env`: its LOTTERYWEB_DB_PATH or DATABASE_URL, as LiveApp.database_env)."""
    code = f"""
import json, django
django.setup()
from django.contrib.auth import get_user_model
from frontend import records
from frontend.models import Experiment
results = json.loads(open({str(run_path / 'results.json')!r}).read())
spec = results["spec"]
experiment = Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"],
    owner=get_user_model().objects.get(username={owner!r}),
    status="finished", run_name=results["run_name"], run_dir={str(run_path)!r},
    results_path={str(run_path / 'results.json')!r}, rounds_total=spec["pruning"]["rounds"],
    iterations_per_round=results["total_iterations"])
for record in results["rounds"] + [r for records in results["controls"].values() for r in records]:
    records.store_record(experiment.pk, record)
print(experiment.pk)
"""
    env = {"DJANGO_SETTINGS_MODULE": "lotteryweb.settings", **database_env, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])

