"""Fixtures of every level (tests/trainer, tests/web, tests/live): one torch thread, the session's
finished tiny runs, every analysis run once on them, and a private redis-server.

Each level's own fixtures are in its conftest.py: tests/trainer/conftest.py (tiny analysis runs),
tests/web/conftest.py (accounts, clients, stored experiments), tests/live/conftest.py (the real
processes: a Celery worker and daphne, and the helpers that start and watch them).
"""
import contextlib
import shutil
import socket
from pathlib import Path

import pytest
import torch

from tests.live.conftest import free_port, start_process, wait_until
from trainer.analyses import ANALYSES, run_analysis
from trainer.imp import run_experiment
from trainer.spec import ExperimentSpec
from trainer.training.stack_size import CACHE_ENV, PIN_ENV

# Small enough for seconds on two cores, big enough for two pruned rounds and a control.
TINY_SPEC = {
    "model": "lenet_300_100", "dataset": "synthetic",
    "training": {"optimizer": "adam", "lr": 0.0012, "training_steps": "100it", "eval_interval": "50it",
                 "metrics_interval": 10},
    "pruning": {"rounds": 2, "fraction": 0.2, "layer_fractions": {"fc3.weight": 0.1}},
    "controls": ["random_reinit"],
}

# A BN model for early-bird, as small as ResNet-20 gets: a few iterations, small validation set.
BN_SPEC = {
    "model": "resnet20", "dataset": "synthetic", "validation_size": 60,
    "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 30, "training_steps": "6it", "eval_interval": "3it"},
    "pruning": {"rounds": 1, "fraction": 0.2},
}

# Late rewinding for the early-phase study: perturbed tickets at θk, k > 0.
REWOUND_SPEC = {
    "model": "lenet_300_100", "dataset": "synthetic", "rewind_step": "20it",
    "training": {"optimizer": "adam", "lr": 0.0012, "training_steps": "60it", "eval_interval": "30it",
                 "metrics_interval": 10},
    "pruning": {"rounds": 2, "fraction": 0.2, "layer_fractions": {"fc3.weight": 0.1}},
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
    "early_phase": {"perturbations": ["init_signs", "shuffle_layer", "shuffle_unit_same_sign"],
                    "noise_alphas": [1.0, 2.0]},
    "malach": {"target_iterations": "30it", "widths": [20, 40], "iterations": "20it", "batch_size": 50},
    "weight_agnostic": {"rounds": [0, 2], "weight_values": [-1.0, 0.5, 1.0]},
    "pretraining": {"pretrain_steps": ["20it"], "rounds": 1},
}
EARLY_BIRD_PARAMS = {"train_examples": 60, "test_examples": 60, "window": 2}


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run where CUDA is present; elsewhere they are reported as skipped, with the reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False on this machine")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_for_the_session():
    """Every test model is tiny: one thread each, so the suite does not spin against itself
    or the worker processes it starts (see single_torch_thread)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def private_stack_size_cache(tmp_path_factory):
    """Stack sizes are measured once per machine and setup (trainer.training.stack_size): the suite
    measures its own into a file of its own, which the worker processes it starts share."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("stack_size") / "stack_sizes.json"))
        # Results must not hang on how busy the machine was when it measured: the suite pins the default
        # (the tests of the measurement unset it); tests about stacking set their own.
        patch.setenv(PIN_ENV, "8")
        yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """(results dict, run directory path) of TINY_SPEC, trained once for the whole session."""
    return train_spec_once(tmp_path_factory, TINY_SPEC, "runs")


def train_spec_once(tmp_path_factory, spec: dict, directory: str):
    """Train `spec` in a fresh session directory on one thread: (results dict, run directory path)."""
    runs_root = tmp_path_factory.mktemp(directory)
    with single_torch_thread():
        results = run_experiment(ExperimentSpec.from_dict(spec), runs_root)
    return results, Path(runs_root) / results["run_name"]


@contextlib.contextmanager
def single_torch_thread():
    """Tiny models on a busy 2-core machine: one thread avoids OpenMP spinning against other processes
    (measured: a 100-iteration round took 13 s with 2 threads under load, 0.25 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- every analysis run once (the web tests' charts and the browser test's pages) --------------
# The engine stores each result in the run directory, so the web tests that submit the same parameters
# (the eager task, the real Celery worker of the browser test) find it finished and do not train again.

def analysis_params(name: str, run_path: Path) -> dict:
    if name == "early_bird":
        return dict(EARLY_BIRD_PARAMS)
    params = dict(ANALYSIS_PARAMS[name])
    if name == "transfer":
        params["target_run"] = str(run_path)  # "a ticket found on the target": the run itself, on synthetic
    return params


@pytest.fixture(scope="session")
def finished_bn_run(tmp_path_factory):
    return train_spec_once(tmp_path_factory, BN_SPEC, "bn_runs")


@pytest.fixture(scope="session")
def finished_rewound_run(tmp_path_factory):
    return train_spec_once(tmp_path_factory, REWOUND_SPEC, "rewound_runs")


@pytest.fixture(scope="session")
def analysis_results(finished_run, finished_bn_run, finished_rewound_run):
    """name -> (result dict, run directory) for every analysis: early-bird on the batch-norm run (it
    needs batch norm), early-phase on the run that rewinds to k > 0 (it needs late rewinding), the
    others on the session's tiny LeNet run."""
    runs = {"early_bird": finished_bn_run[1], "early_phase": finished_rewound_run[1]}
    found = {}
    with single_torch_thread():
        for name in ANALYSES:
            run_path = runs.get(name, finished_run[1])
            found[name] = (run_analysis(name, run_path, analysis_params(name, run_path)), run_path)
    return found


# ---- a private redis-server (the web tests' queue listeners and the live processes) ------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server on a free port; yields its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed; scripts/setup.sh installs it (apt-get install redis-server)")
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    managed = start_process("redis", [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                                      "--save", "", "--appendonly", "no"], directory)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_until(answers, 20, "redis-server to answer PING", [managed])
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        managed.stop()
