"""Pieces (trainer.imp.pieces): the plan of an experiment's independent trainings, and that training
the pieces one by one, in any order, resumed or not, gives exactly the results of run_experiment."""
import pytest
import torch

from tests.trainer.conftest import collector, tiny_spec
from trainer import events
from trainer.imp import pieces, run_experiment
from trainer.imp.controls import control_start
from trainer.imp.pieces import CHAINS, CONTROLS, Piece
from trainer.imp.run import open_run, start_run, write_results
from trainer.rundir import RunDir

CONTROL_KINDS = ["random_reinit", "random_prune"]


def spec_of(**overrides):
    return tiny_spec(replicates=3, controls=CONTROL_KINDS, stack_size=2, rewind_step="10it",
                     training={"training_steps": "40it", "eval_interval": "20it"}, **overrides)


def without_timing(value):
    """results.json without what differs between two identical trainings: wall times."""
    if isinstance(value, dict):
        return {key: without_timing(item) for key, item in value.items() if key != "wall_seconds"}
    if isinstance(value, list):
        return [without_timing(item) for item in value]
    return value


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The spec run by run_experiment with max_pieces=2, in one process."""
    root = tmp_path_factory.mktemp("reference")
    results = run_experiment(spec_of(), root, max_pieces=2)
    return results, RunDir.open(root / results["run_name"])


def test_the_plan_depends_on_the_stack_size_and_max_pieces_only(tmp_path):
    run = open_run(tiny_spec(replicates=5, stack_size=4), tmp_path)
    replicates_of = {max_pieces: [piece.networks for piece in pieces.plan_chain_pieces(run, max_pieces)]
                     for max_pieces in (1, 2, 4, 8)}
    assert replicates_of[1] == [(0, 1, 2), (3, 4)]          # a stack of 4 at most: today's two stacks
    assert replicates_of[2] == [(0, 1, 2), (3, 4)]          # ceil(5 / 2) = 3
    assert replicates_of[4] == [(0, 1), (2, 3), (4,)]       # ceil(5 / 4) = 2
    assert replicates_of[8] == [(0,), (1,), (2,), (3,), (4,)]
    assert [piece.index for piece in pieces.plan_chain_pieces(run, 8)] == [0, 1, 2, 3, 4]
    single = open_run(tiny_spec(replicates=3, stack_size=8), tmp_path)
    assert pieces.plan_chain_pieces(single, 1) == [Piece(CHAINS, 0, (0, 1, 2))], "one stack, as before pieces"


def test_controls_are_planned_by_start_iteration_and_chunked_the_same_way(reference):
    _, run_dir = reference
    run = open_run(run_dir.spec, run_dir.path.parent)
    planned = pieces.plan_control_pieces(run, 2)
    # 3 replicates x rounds 1, 2 x 2 kinds, all starting at k: 12 controls, ceil(12 / 2) > stack size 2
    assert [len(piece.networks) for piece in planned] == [2] * 6
    assert [piece.index for piece in planned] == list(range(6))
    assert planned[0].networks == (("random_reinit", 1, 0), ("random_prune", 1, 0))
    assert {network for piece in planned for network in piece.networks} == {
        (kind, round_index, replicate) for kind in CONTROL_KINDS for round_index in (1, 2) for replicate in range(3)}
    assert [piece.networks for piece in pieces.plan_control_pieces(run, 1)] == [p.networks for p in planned], \
        "one worker: chunks of the stack size, as before pieces"
    assert len(pieces.plan_control_pieces(run, 12)) == 12
    from_scratch = pieces.plan_control_pieces(run, 1, kinds=["random_reinit", "random_reinit_from_scratch"])
    starts = [{control_start(run, kind) for kind, _, _ in piece.networks} for piece in from_scratch]
    assert all(len(start) == 1 for start in starts), "a piece never mixes start iterations"
    assert [start.pop() for start in starts] == [0, 0, 0, 10, 10, 10]
    assert Piece.from_json(CONTROLS, 3, planned[3].to_json()) == planned[3]


def test_pieces_run_one_by_one_in_any_order_give_exactly_the_same_results(reference, tmp_path):
    expected, expected_dir = reference
    seen, callback = collector()
    run = start_run(spec_of(), tmp_path, callback=callback)
    chain_pieces = pieces.plan_chain_pieces(run, 2)
    assert [piece.networks for piece in chain_pieces] == [(0, 1), (2,)]
    for piece in reversed(chain_pieces):  # as two workers might: the later piece first
        assert pieces.run_piece(open_run(spec_of(), tmp_path, callback=callback), piece) == "finished"
    assert pieces.chains_status(run) == "finished"
    for piece in reversed(pieces.plan_control_pieces(run, 2)):
        assert pieces.run_piece(open_run(spec_of(), tmp_path, callback=callback), piece) == "finished"
    results = write_results(run, "finished")
    assert without_timing(results) == without_timing(expected)
    run_dir = RunDir.open(tmp_path / results["run_name"])
    for replicate in range(3):
        for network, round_index in [("ticket", 0), ("ticket", 1), ("ticket", 2)] + [
                (kind, r) for kind in CONTROL_KINDS for r in (1, 2)]:
            ours, theirs = run_dir.replicate(replicate), expected_dir.replicate(replicate)
            for name, mask in ours.mask(round_index, network).items():
                assert torch.equal(mask, theirs.mask(round_index, network)[name]), (replicate, network, round_index)
    started = [event for event in seen if event["type"] == events.PIECE_STARTED]
    assert [(event["phase"], event["index"]) for event in started][:2] == [(CHAINS, 1), (CHAINS, 0)]
    assert [e["type"] for e in seen].count(events.RUN_STARTED) == 1, "pieces do not announce the run"


def test_a_half_done_piece_resumes_after_its_last_finished_round(reference, tmp_path):
    expected, _ = reference
    piece = Piece(CHAINS, 0, (0, 1))
    stop = {"now": False}

    def stop_after_round_1(event):
        if event["type"] == events.ROUND_FINISHED and event["round"] == 1:
            stop["now"] = True
    run = open_run(spec_of(), tmp_path, callback=stop_after_round_1, stop_requested=lambda: stop["now"])
    assert pieces.run_piece(run, piece) == "cancelled"
    run_dir = RunDir.open(tmp_path / expected["run_name"])
    assert [r["round"] for r in run_dir.records()] == [0, 1] and run_dir.record(2) is None
    seen, callback = collector()
    assert pieces.run_piece(open_run(spec_of(), tmp_path, callback=callback), piece) == "finished"
    skipped = {(e["replicate"], e["round"]) for e in seen if e["type"] == events.ROUND_SKIPPED}
    trained = {(e["replicate"], e["round"]) for e in seen if e["type"] == events.ROUND_FINISHED}
    assert skipped == {(0, 0), (1, 0), (0, 1), (1, 1)} and trained == {(0, 2), (1, 2)}
    assert without_timing(run_dir.records()) == without_timing(expected["rounds"])
