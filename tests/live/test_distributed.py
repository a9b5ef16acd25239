"""One experiment spread over two real Celery workers (frontend.distributed): its pieces train on both at
once, and its results equal the same spec trained in one process with the same cap."""
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.live.conftest import start_process, wait_until
from tests.live.test_crash_recovery import Lab
from trainer.imp import run_experiment
from trainer.replicate_stats import all_records
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec

pytestmark = [pytest.mark.live, pytest.mark.slow]

CAP = 2  # LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT: also the plan's max_pieces
SPEC = {"model": "lenet_300_100", "dataset": "synthetic", "validation_size": 500, "device": "cpu", "replicates": 3,
        "stack_size": 2, "controls": ["random_reinit", "random_prune"],
        "training": {"training_steps": "150it", "eval_interval": "50it", "metrics_interval": 25},
        "pruning": {"rounds": 2, "fraction": 0.3}}


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    lab.env["LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT"] = str(CAP)
    try:
        yield lab
    finally:
        lab.shutdown()


def start_workers(lab: Lab, names: list[str]) -> list:
    """Start the workers together (each imports torch: the slow part) and wait until all are ready."""
    started = [start_process(name, [sys.executable, "-m", "celery", "-A", "lotteryweb", "worker", "--pool=solo",
                                    "-n", f"{name}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                             lab.root, lab.env) for name in names]
    lab.processes.extend(started)
    wait_until(lambda: all(b" ready." in managed.log_path.read_bytes() for managed in started), 90,
               "the workers to be ready", lab.processes)
    return started


def run_to_end(lab: Lab, spec: dict, timeout: float) -> tuple[int, float, dict]:
    """Queue `spec` and wait until it ends: (experiment id, seconds from queued to the end, its row)."""
    experiment_id = lab.create_experiment(json.dumps(spec))
    created = time.monotonic()
    wait_until(lambda: lab.row(experiment_id)["status"] in ("finished", "failed", "cancelled"), timeout,
               "the experiment to end", lab.processes)
    return experiment_id, time.monotonic() - created, lab.row(experiment_id)


def test_one_experiment_trains_on_two_workers_at_once_with_the_one_worker_results(lab, tmp_path):
    lab.start_redis()
    start_workers(lab, ["left", "right"])
    experiment_id, spread_seconds, row = run_to_end(lab, SPEC, 120)
    assert row["status"] == "finished", row["message"]
    assert row["trainings_done"] == row["trainings_total"] == 3 * (3 + 2 * 2)

    pieces = [dict(piece) for piece in lab.query(
        "SELECT phase, \"index\", networks, status, worker, started_at, finished_at FROM frontend_experimentpiece "
        "WHERE experiment_id = ? ORDER BY phase, \"index\"", experiment_id)]
    assert [(p["phase"], json.loads(p["networks"])) for p in pieces if p["phase"] == "chains"] == [
        ("chains", [0, 1]), ("chains", [2])], "3 replicates for 2 workers, a stack of 2 at most"
    assert sum(p["phase"] == "controls" for p in pieces) == 6, "12 controls in pieces of 2"
    assert {p["status"] for p in pieces} == {"finished"}
    workers = {p["worker"].split("@")[0] for p in pieces}
    assert workers == {"left", "right"}, "pieces ran on both workers"
    overlapping = [(a["phase"], a["index"], b["phase"], b["index"]) for a in pieces for b in pieces
                   if a["worker"] < b["worker"]
                   and a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]]
    assert overlapping, "at some moment both workers trained pieces of the experiment"

    run_dir = RunDir.open(Path(row["run_dir"]))
    spread = json.loads(run_dir.results_path.read_text())
    alone_root = tmp_path / "alone"
    began = time.monotonic()
    alone = run_experiment(ExperimentSpec.from_dict(SPEC), alone_root, max_pieces=CAP)  # one process, one thread
    alone_seconds = time.monotonic() - began
    alone_dir = RunDir.open(alone_root / alone["run_name"])
    assert len(all_records(spread)) == len(all_records(alone)) == 21
    for ours, theirs in zip(all_records(spread), all_records(alone)):
        identity = (ours["network"], ours["replicate"], ours["round"])
        assert identity == (theirs["network"], theirs["replicate"], theirs["round"])
        assert (ours["curve"], ours["final"], ours["layers"]) == (theirs["curve"], theirs["final"], theirs["layers"]), \
            identity
        ours_mask = run_dir.replicate(ours["replicate"]).mask(ours["round"], ours["network"])
        theirs_mask = alone_dir.replicate(ours["replicate"]).mask(ours["round"], ours["network"])
        assert all(torch.equal(ours_mask[name], theirs_mask[name]) for name in ours_mask), identity
    print(f"\n{len(pieces)} pieces on workers {sorted(workers)}, {len(overlapping)} pairs of them at the same time: "
          f"{spread_seconds:.1f} s from queued to finished; in one process {alone_seconds:.1f} s, equal results")


def test_a_piece_whose_worker_is_killed_is_trained_again_from_its_last_finished_round(lab):
    lab.start_redis()
    workers = {managed.name: managed for managed in start_workers(lab, ["left", "right"])}
    spec = {**SPEC, "stack_size": 1, "controls": [], "training": {**SPEC["training"], "training_steps": "600it"}}
    experiment_id = lab.create_experiment(json.dumps(spec))

    def helper_piece_in_round_1():
        """(piece row, its replicate) on the worker that does not own the experiment, once its round 0 is done."""
        owner = lab.row(experiment_id)["worker"]
        for row in lab.query("SELECT * FROM frontend_experimentpiece WHERE experiment_id = ? AND status = 'running'",
                             experiment_id):
            replicate = json.loads(row["networks"])[0]
            done = lab.query("SELECT 1 FROM frontend_roundresult WHERE experiment_id = ? AND replicate = ? AND "
                             "round_index = 0", experiment_id, replicate)
            if owner and row["worker"] != owner and done:
                return dict(row), replicate
        return None

    wait_until(helper_piece_in_round_1, 90, "a piece on the helper worker to reach round 1", lab.processes)
    lost, replicate = helper_piece_in_round_1()
    run_dir = RunDir.open(Path(lab.row(experiment_id)["run_dir"])).replicate(replicate)
    round_0 = run_dir.round_path(0) / "record.json"
    kept_mtime = round_0.stat().st_mtime
    helper = workers[lost["worker"].split("@")[0]]
    helper.process.kill()  # SIGKILL: its piece stops beating
    killed = time.monotonic()
    helper.process.wait(timeout=10)
    lab.processes.remove(helper)

    wait_until(lambda: lab.row(experiment_id)["status"] in ("finished", "failed", "cancelled"), 120,
               "the experiment to end", lab.processes)
    after = lab.row(experiment_id)
    assert after["status"] == "finished", after["message"]
    again = dict(lab.query("SELECT * FROM frontend_experimentpiece WHERE id = ?", lost["id"])[0])
    assert again["status"] == "finished" and again["worker"] == after["worker"], "the owner trained it again"
    assert f"worker {lost['worker']} stopped answering" in again["message"], again["message"]
    assert round_0.stat().st_mtime == kept_mtime, "its finished round 0 was kept"
    assert [r["round"] for r in run_dir.records()] == [0, 1, 2]
    rounds = lab.query("SELECT replicate, round_index FROM frontend_roundresult WHERE experiment_id = ? AND "
                       "network = 'ticket'", experiment_id)
    assert sorted(tuple(r) for r in rounds) == [(r, i) for r in range(3) for i in range(3)]
    print(f"\nSIGKILL of {lost['worker']} during round 1 of replicate {replicate}: the owner {after['worker']} "
          f"trained that piece again from round 1; the experiment finished {time.monotonic() - killed:.1f} s later")
