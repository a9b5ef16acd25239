"""The stack size is chosen by timing: the faster K per network wins, never one slower than K=1; the
decision is cached per machine and setup, and a run keeps the K it started with."""
import json

import pytest
import torch

from trainer.imp import run_experiment
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec
from trainer.training import stack_size
from trainer.training.stack_size import MIN_GAIN, TrainingStepTimer, choose_stack_size, decide

CANDIDATES = [1, 2, 4, 8, 16]
QUIET = {"load": lambda: 0.0}  # the cache keeps what was timed on a quiet machine


class StubTimer:
    """Seconds per step of k networks from a table (a list: one value per call); remembers the calls."""

    def __init__(self, seconds: dict):
        self.seconds, self.calls = seconds, []

    def __call__(self, k: int) -> float:
        self.calls.append(k)
        value = self.seconds[k]
        return value.pop(0) if isinstance(value, list) else value


def test_the_k_with_the_most_network_steps_per_second_wins_and_larger_ones_are_not_timed():
    timer = StubTimer({1: 1.0, 2: 1.2, 4: 1.6, 8: 4.0, 16: 8.0})  # per network: 1, 1.67, 2.5, 2.0, 2.0
    decision = decide(CANDIDATES, timer)
    assert decision.stack_size == 4
    assert 16 not in timer.calls, "throughput fell clearly at K=8: K=16 is not measured"
    assert decision.speedups() == pytest.approx({1: 1.0, 2: 2 / 1.2, 4: 4 / 1.6, 8: 2.0})


def test_a_slight_dip_does_not_stop_the_search():
    timer = StubTimer({1: 1.0, 2: 1.0, 4: 2.1, 8: 3.2, 16: 8.0})  # per network: 1, 2.0, 1.9, 2.5, 2.0
    assert decide(CANDIDATES, timer).stack_size == 8


@pytest.mark.parametrize("seconds", [
    {1: 1.0, 2: 2.4, 4: 5.0, 8: 9.0, 16: 20.0},          # every stack slower per network
    {1: 1.0, 2: 1.9, 4: 3.7, 8: 7.4, 16: 14.8},          # faster, but by less than MIN_GAIN
])
def test_a_stack_that_does_not_beat_one_at_a_time_by_the_margin_is_never_chosen(seconds):
    assert max(k / s for k, s in seconds.items() if k > 1) < MIN_GAIN
    assert decide(CANDIDATES, StubTimer(seconds)).stack_size == 1


def test_a_load_spike_in_one_block_does_not_decide():
    # K=1's first block ran under load (3 s): the fastest block of each side counts
    timer = StubTimer({1: [3.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2: [2.4, 2.4, 2.4], 4: [5.0, 5.0, 5.0]})
    decision = decide([1, 2, 4], timer)
    assert decision.stack_size == 1 and decision.seconds_per_step[1] == 1.0


def test_the_measurement_stops_when_its_budget_is_spent():
    now = [0.0]

    def timer(k):
        now[0] += 1.0  # every block takes a second
        return 1.0 / (1 + k)  # bigger stacks always faster

    decision = decide(CANDIDATES, timer, budget_seconds=5.0, clock=lambda: now[0])
    assert decision.stack_size == 2 and max(decision.seconds_per_step) == 2, "no time left for K=4"


def test_the_decision_is_cached_per_setup_and_not_measured_again(tmp_path):
    cache = tmp_path / "stack_sizes.json"
    timer = StubTimer({1: 1.0, 2: 1.0, 4: 1.5, 8: 4.0, 16: 8.0})
    assert choose_stack_size("lenet_300_100", (1, 28, 28), 60, "cpu", timer=timer, cache_file=cache, **QUIET) == 4
    measured = len(timer.calls)

    def never(k):
        raise AssertionError("measured again")

    assert choose_stack_size("lenet_300_100", (1, 28, 28), 60, "cpu", timer=never, cache_file=cache, **QUIET) == 4
    assert len(timer.calls) == measured
    [(key, entry)] = json.loads(cache.read_text()).items()
    assert torch.__version__ in key and "lenet_300_100" in key and "batch 60" in key and "sgd" in key
    assert entry["stack_size"] == 4 and entry["seconds_per_step"]["4"] == 1.5
    # another batch size, optimizer or model is another setup: measured on its own
    other = StubTimer({1: 1.0, 2: 3.0, 4: 9.0, 8: 9.0, 16: 9.0})
    assert choose_stack_size("lenet_300_100", (1, 28, 28), 128, "cpu", optimizer="adam", timer=other,
                             cache_file=cache, **QUIET) == 1
    assert other.calls and len(json.loads(cache.read_text())) == 2


def test_a_cached_decision_stands_whatever_the_load(tmp_path):
    cache = tmp_path / "stack_sizes.json"
    busy = StubTimer({1: 1.0, 2: 1.0, 4: 4.0, 8: 8.0, 16: 16.0})
    choose = lambda timer, load: choose_stack_size("lenet_300_100", (1, 28, 28), 60, "cpu",  # noqa: E731
                                                   timer=timer, cache_file=cache, load=lambda: load)
    assert choose(busy, 2.5) == 2
    quiet = StubTimer({1: 1.0, 2: 2.5, 4: 5.0, 8: 9.0, 16: 20.0})
    assert choose(quiet, 0.3) == 2 and not quiet.calls, "one spec must not get different stacks as the load changes"
    [entry] = json.loads(cache.read_text()).values()
    assert entry["load_per_core"] == 2.5  # kept beside the decision, so a busy machine's timing can be seen


def test_a_pinned_stack_size_skips_the_measurement(monkeypatch):
    monkeypatch.setenv(stack_size.PIN_ENV, "3")
    assert stack_size.pinned_stack_size() == 3
    monkeypatch.delenv(stack_size.PIN_ENV)
    assert stack_size.pinned_stack_size() is None
    for bad in ("0", "-2", "four", "99999"):
        monkeypatch.setenv(stack_size.PIN_ENV, bad)
        with pytest.raises(ValueError, match="LOTTERYWEB_STACK_SIZE"):
            stack_size.pinned_stack_size()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": 1}'])
def test_a_corrupt_cache_file_is_ignored_and_replaced(tmp_path, content):
    cache = tmp_path / "stack_sizes.json"
    cache.write_text(content)
    key = stack_size.cache_key("lenet_300_100", (1, 28, 28), 60, torch.device("cpu"), "sgd")
    if content.startswith('{"x"'):
        cache.write_text(json.dumps({key: {"stack_size": "eight", "seconds_per_step": 3}}))
    timer = StubTimer({1: 1.0, 2: 1.0, 4: 4.0, 8: 8.0, 16: 16.0})
    assert choose_stack_size("lenet_300_100", (1, 28, 28), 60, "cpu", timer=timer, cache_file=cache, **QUIET) == 2
    assert timer.calls
    assert json.loads(cache.read_text())[key]["stack_size"] == 2


def test_the_cache_file_is_taken_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(stack_size.CACHE_ENV, str(tmp_path / "here.json"))
    assert stack_size.cache_path() == tmp_path / "here.json"
    monkeypatch.delenv(stack_size.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert stack_size.cache_path() == tmp_path / "lotteryweb" / "stack_sizes.json"


def test_the_real_timer_times_the_training_loops():
    timer = TrainingStepTimer("lenet_300_100", (1, 28, 28), 8, "cpu", 10, "sgd")
    solo, stacked = timer(1), timer(2)
    assert 0 < solo < 1 and 0 < stacked < 1


def _spec(**overrides):
    return ExperimentSpec.from_dict({
        "model": "lenet_300_100", "dataset": "synthetic", "device": "cpu", "controls": ["random_reinit"],
        "training": {"optimizer": "sgd", "lr": 0.05, "batch_size": 30, "training_steps": "10it",
                     "eval_interval": "10it", "metrics_interval": 5},
        "pruning": {"rounds": 1, "fraction": 0.5}, **overrides})


def test_a_run_records_its_stack_size_and_a_resumed_run_reuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv(stack_size.PIN_ENV, raising=False)  # the suite pins one; this test is about measuring
    monkeypatch.setattr("trainer.imp.run.stack_size_for", lambda spec, data: 2)
    first = run_experiment(_spec(), tmp_path)
    run_dir = RunDir.open(tmp_path / first["run_name"])
    assert first["stack_size"] == 2 and run_dir.recorded_stack_size() == 2

    def must_not_choose(spec, data):
        raise AssertionError("a resumed run chose its stack size again")

    monkeypatch.setattr("trainer.imp.run.stack_size_for", must_not_choose)
    (run_dir.round_path(1, "random_reinit") / "record.json").unlink()  # the control is to be trained again
    again = run_experiment(_spec(), tmp_path)
    assert again["stack_size"] == 2 and again["controls"]["random_reinit"][0]["round"] == 1


def test_the_spec_stack_size_overrides_the_measurement(tmp_path, monkeypatch):
    monkeypatch.delenv(stack_size.PIN_ENV, raising=False)
    def must_not_choose(spec, data):
        raise AssertionError("chosen although the spec sets the stack size")

    monkeypatch.setattr("trainer.imp.run.stack_size_for", must_not_choose)
    results = run_experiment(_spec(stack_size=3), tmp_path)
    assert results["stack_size"] == 3 and not RunDir.open(tmp_path / results["run_name"]).stack_size_path.exists()
