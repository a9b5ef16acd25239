"""Ticket transfer: the output layer, the mask on the rest, the target run beside it, resume, bad parameters,
CIFAR-100 and SVHN as targets."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.conftest import TINY_RUN, collector, tiny_run
from tests.trainer.dataset_files import write_cifar100_file, write_cifar_dataset, write_svhn_mat
from trainer import analyses, dataset_sources, datasets, events, models
from trainer.analyses import transfer
from trainer.analyses.params import params_hash
from trainer.analyses.transfer import TransferPlan, run_transfer
from trainer.cli.main import main
from trainer.imp import run_experiment
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError
from trainer.training.stacked import StackedOptimizer


def variant(name: str, *, classes: int | None = None, label_shift: int = 0, crop: int | None = None):
    """A second tiny dataset made from the synthetic one: fewer classes, shifted labels, or smaller images."""
    base = datasets.load_dataset("synthetic")
    train_x, train_y, test_x, test_y = base.train_x, base.train_y, base.test_x, base.test_y
    if classes is not None:
        train_keep, test_keep = train_y < classes, test_y < classes
        train_x, train_y = train_x[train_keep], train_y[train_keep]
        test_x, test_y = test_x[test_keep], test_y[test_keep]
    if crop is not None:
        train_x, test_x = train_x[:, :, :crop, :crop], test_x[:, :, :crop, :crop]
    classes = classes or base.info.num_classes
    info = replace(base.info, name=name, num_classes=classes, input_shape=tuple(train_x.shape[1:]),
                   train_size=len(train_y), test_size=len(test_y))
    return datasets.DatasetTensors(info, train_x, (train_y + label_shift) % classes,
                                   test_x, (test_y + label_shift) % classes)


EXTRA = {"five_classes": variant("five_classes", classes=5), "shifted": variant("shifted", label_shift=3),
         "small_images": variant("small_images", crop=14)}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), pruning={"fraction": 0.5, "rounds": 1})


def test_class_count_change_reinitialises_the_output_layer_and_keeps_the_mask_and_theta_k_elsewhere(run_path):
    run_dir = RunDir.open(run_path)
    info = EXTRA["five_classes"].info
    plan = TransferPlan(run_dir.spec, "five_classes", info, "fc3.weight", "fc3.bias", reinit=True, output_mask="dense")
    theta_k = run_dir.load_state(run_dir.theta_rewind_path)
    state = plan.transferred_model(theta_k).state_dict()
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert torch.equal(state[name], theta_k[name])
    fresh = plan.fresh_model().state_dict()
    assert state["fc3.weight"].shape == (5, 100) and torch.equal(state["fc3.weight"], fresh["fc3.weight"])
    assert not torch.equal(state["fc3.weight"], theta_k["fc3.weight"][:5])
    assert torch.count_nonzero(state["fc3.bias"]) == 0
    source_mask = run_dir.mask(1)
    mask = plan.target_mask(source_mask, 1)
    assert torch.equal(mask["fc1.weight"], source_mask["fc1.weight"]) and bool(mask["fc3.weight"].all())
    pruned = replace_plan(plan, output_mask="pruned").target_mask(source_mask, 1)["fc3.weight"]
    source_fraction = source_mask["fc3.weight"].float().mean().item()
    assert pruned.shape == (5, 100) and int(pruned.sum()) == round(source_fraction * 500)

    seen, callback = collector()
    result = run_transfer(run_path, "five_classes", rounds=[1], callback=callback, extra_datasets=EXTRA)
    assert result["output_layer"] == {"weight": "fc3.weight", "bias": "fc3.bias", "reinitialised": True,
                                      "mask": "dense"}
    (entry,) = result["transfer"]
    assert entry["layers"]["fc3.weight"] == {"shape": [5, 100], "total": 500, "remaining": 500, "unmasked": 500,
                                             "remaining_fraction": 1.0}
    assert entry["layers"]["fc1.weight"]["remaining"] == int(source_mask["fc1.weight"].sum())
    assert entry["source_round"] == 1 and entry["source_remaining_fraction"] == run_dir.record(1)["remaining_fraction"]
    assert result["target_dataset"]["num_classes"] == 5 and entry["start_iteration"] == 10
    assert entry["final"]["test_accuracy"] > 0.3, "five stroke classes are learnable from the transferred ticket"
    assert [e["network"] for e in seen if e["type"] == events.ROUND_STARTED] == ["transfer"]


def replace_plan(plan, **changes):
    return TransferPlan(plan.spec, plan.target_name, plan.info, plan.output_weight, plan.output_bias,
                        changes.get("reinit", plan.reinit), changes.get("output_mask", plan.output_mask))


def test_same_class_count_keeps_the_output_layer_unless_asked(run_path):
    kept = run_transfer(run_path, "shifted", rounds=[1], extra_datasets=EXTRA)
    assert kept["output_layer"]["reinitialised"] is False and kept["output_layer"]["mask"] == "ticket"
    assert kept["transfer"][0]["remaining_fraction"] == RunDir.open(run_path).record(1)["remaining_fraction"]
    fresh = run_transfer(run_path, "shifted", rounds=[1], output_layer="reinit", output_mask="pruned",
                         extra_datasets=EXTRA)
    assert fresh["output_layer"]["reinitialised"] is True and fresh["result_dir"] != kept["result_dir"]


def test_transfer_to_the_same_dataset_reproduces_the_run_and_reports_the_target_run_beside_it(run_path):
    run_dir = RunDir.open(run_path)
    result = run_transfer(run_path, rounds=[1], controls=["random_reinit"], target_run=str(run_path))
    assert result["target_dataset"]["name"] == "synthetic", "the target run's dataset"
    (entry,) = result["transfer"]
    # The ticket trained on its own dataset with the run's settings is the run's round (trained stacked with its
    # control: equal up to float32 reordering).
    run_curve = run_dir.record(1)["curve"]
    assert entry["curve"].keys() == run_curve.keys() and entry["curve"]["iteration"] == run_curve["iteration"]
    for key, values in run_curve.items():
        assert entry["curve"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
    assert result["controls"]["random_reinit"][0]["network"] == "transfer_random_reinit"
    assert result["target"]["rounds"][1]["early_stop"] == run_dir.record(1)["early_stop"]
    assert result["target"]["same_training"] is True
    # The target run only adds to the report: without it the stored work is reused, nothing trains.
    seen, callback = collector()
    again = run_transfer(run_path, "synthetic", rounds=[1], controls=["random_reinit"], callback=callback)
    assert again["result_dir"] == result["result_dir"] and again["target"] is None
    assert again["transfer"] == result["transfer"]
    assert not [e for e in seen if e["type"] == events.ROUND_STARTED]


@pytest.mark.parametrize("params, field", [
    ({"target_dataset": "imagenet"}, "target_dataset"), ({}, "target_dataset"),
    ({"target_dataset": "small_images"}, "target_dataset"), ({"target_dataset": "shifted", "rounds": [3]}, "rounds[0]"),
    ({"target_dataset": "shifted", "output_layer": "keep"}, "output_layer"),
    ({"target_dataset": "shifted", "controls": ["random_prune"]}, "controls[0]"),
    ({"target_dataset": "shifted", "target_run": "/nonexistent"}, "target_run"),
    ({"target_dataset": "shifted", "validation_size": 5000}, "validation_size"),
])
def test_bad_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("transfer", run_path, params, extra_datasets=EXTRA)
    assert error.value.field == field


def test_input_shape_mismatch_says_what_differs(run_path):
    with pytest.raises(SpecError, match=r"\(1, 14, 14\).*\(1, 28, 28\)"):
        run_transfer(run_path, "small_images", extra_datasets=EXTRA)
    assert models.output_parameter_name("lenet_300_100", (1, 28, 28), 10) == "fc3.weight"


# ---- transfer across optimizers (Morcos et al. 2019, Section 4.3) ------------------------------------------------

ADAM = {"target_optimizer": "adam", "target_lr": 0.002}


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory):
    """A finished run of the same model trained with Adam, pruned at another rate: the target's own tickets."""
    adam = {**TINY_RUN["training"], "optimizer": "adam", "lr": 0.002}
    return tiny_run(tmp_path_factory.mktemp("adam_runs"), training=adam, pruning={"fraction": 0.3, "rounds": 2})


@pytest.fixture(scope="module")
def single_stack_run(tmp_path_factory):
    """The run of `run_path` trained one network at a time: each transferred network is a unit of its own stack."""
    return tiny_run(tmp_path_factory.mktemp("single_runs"), pruning={"fraction": 0.5, "rounds": 1}, stack_size=1)


def spy_optimizers(monkeypatch) -> list:
    """The training specs every stacked optimizer is built from, as (optimizer, lr, momentum)."""
    built = []
    original = StackedOptimizer.from_training_spec.__func__

    def spy(cls, stacked, training):
        built.append((training.optimizer, training.lr, training.momentum))
        return original(cls, stacked, training)
    monkeypatch.setattr(StackedOptimizer, "from_training_spec", classmethod(spy))
    return built


def test_the_ticket_found_with_sgd_trains_with_adam_beside_a_random_ticket(run_path, monkeypatch):
    run_dir = RunDir.open(run_path)
    built = spy_optimizers(monkeypatch)
    seen, callback = collector()
    result = run_transfer(run_path, rounds=[1], callback=callback, **ADAM)
    assert built == [("adam", 0.002, 0.9)], "one stack of the ticket and its random ticket, trained with Adam"
    assert result["params"]["controls"] == ["random_ticket"], "an optimizer transfer always has the random ticket"
    assert result["target_dataset"]["name"] == "synthetic" and result["changes"] == ["optimizer", "lr"]
    assert result["source_training"]["optimizer"] == "sgd" and result["target_training"]["optimizer"] == "adam"
    assert {k: v for k, v in result["target_training"].items() if k not in ("optimizer", "lr")} == \
        {k: v for k, v in result["source_training"].items() if k not in ("optimizer", "lr")}
    (entry,) = result["transfer"]
    (random_ticket,) = result["controls"]["random_ticket"]
    assert entry["curve"] != run_dir.record(1)["curve"], "Adam trains it otherwise than the run's SGD"
    assert entry["remaining_fraction"] == random_ticket["remaining_fraction"] == run_dir.record(1)["remaining_fraction"]
    assert {name: layer["remaining"] for name, layer in entry["layers"].items()} == \
        {name: layer["remaining"] for name, layer in random_ticket["layers"].items()}
    assert sorted(e["network"] for e in seen if e["type"] == events.ROUND_STARTED) == \
        ["transfer", "transfer_random_ticket"]
    assert {e["round"] for e in seen if e["type"] == events.METRICS} == {1}
    assert "training: sgd lr 0.05 momentum 0.9 -> adam lr 0.002" in "\n".join(transfer.summary_lines(result))


def test_the_random_ticket_has_the_tickets_per_layer_sparsity_another_mask_and_a_fresh_init(run_path):
    run_dir = RunDir.open(run_path)
    plan = TransferPlan(run_dir.spec, "synthetic", datasets.load_dataset("synthetic").info, "fc3.weight", "fc3.bias",
                        reinit=False, output_mask="dense")
    ticket_mask = run_dir.mask(1)
    model, mask = plan.control_network("random_ticket", ticket_mask, 1)
    theta_k, theta_0 = run_dir.load_state(run_dir.theta_rewind_path), run_dir.load_state(run_dir.theta_init_path)
    state = model.state_dict()
    for name, keep in ticket_mask.items():
        assert mask[name].shape == keep.shape and int(mask[name].sum()) == int(keep.sum()), name
        assert not torch.equal(mask[name], keep), f"{name}: a random mask, not the ticket's"
        assert not torch.equal(state[name], theta_k[name]) and not torch.equal(state[name], theta_0[name])
    again_model, again_mask = plan.control_network("random_ticket", ticket_mask, 1)
    assert all(torch.equal(again_mask[n], mask[n]) for n in mask), "seeded: the same random ticket every time"
    assert all(torch.equal(again_model.state_dict()[n], state[n]) for n in state)
    _, other_round = plan.control_network("random_ticket", ticket_mask, 2)
    assert not torch.equal(other_round["fc1.weight"], mask["fc1.weight"])
    reinit_model, reinit_mask = plan.control_network("random_reinit", ticket_mask, 1)
    assert all(torch.equal(reinit_mask[n], ticket_mask[n]) for n in ticket_mask)
    assert not torch.equal(reinit_model.state_dict()["fc1.weight"], state["fc1.weight"])


def test_nearest_round_matches_by_remaining_fraction():
    records = [{"round": 0, "remaining_fraction": 1.0}, {"round": 1, "remaining_fraction": 0.7},
               {"round": 2, "remaining_fraction": 0.49}, {"round": 3, "remaining_fraction": 0.3, "status": "diverged"}]
    assert transfer.nearest_round(records, 0.5)["round"] == 2
    assert transfer.nearest_round(records, 0.6)["round"] == 1
    assert transfer.nearest_round(records, 0.3)["round"] == 2, "a diverged round is no match"
    assert transfer.nearest_round(records, 0.85)["round"] == 0, "a tie goes to the earlier round"
    assert transfer.nearest_round([], 0.5) is None


def test_the_target_runs_own_tickets_are_matched_at_the_nearest_remaining_fraction(run_path, adam_run):
    result = run_transfer(run_path, rounds=[0, 1], target_run=str(adam_run), **ADAM)
    target = result["target"]
    assert target["optimizer"] == "adam" and target["model"] == "lenet_300_100" and target["same_training"] is True
    fractions = {r["round"]: r["remaining_fraction"] for r in target["rounds"]}
    assert fractions[1] == pytest.approx(0.7, abs=0.01) and fractions[2] == pytest.approx(0.49, abs=0.01)
    assert [(m["round"], m["target_round"]) for m in target["matches"]] == [(0, 0), (1, 2)]
    assert target["matches"][1]["target_remaining_fraction"] == fractions[2]
    lines = transfer.summary_lines(result)
    target_accuracy = RunDir.open(adam_run).record(2)["early_stop"]["test_accuracy"]
    assert lines[-1].endswith(f"{100 * target_accuracy:.2f}%"), "round 1 (50%) beside the target's round 2 (49%)"


@pytest.mark.parametrize("params, field", [
    ({"target_optimizer": "rmsprop", "target_lr": 0.1}, "target_optimizer"),
    ({"target_optimizer": "adam"}, "target_lr"),
    ({"target_optimizer": "adam", "target_lr": 0.001, "target_momentum": 0.9}, "target_momentum"),
    ({"target_optimizer": "sgd", "target_lr": 0.0}, "target_lr"),
    ({"target_lr": 0.1, "target_momentum": 1.0}, "target_momentum"),
    ({"target_optimizer": "sgd", "target_lr": 0.1, "controls": ["random_mask"]}, "controls[0]"),
])
def test_bad_optimizer_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("transfer", run_path, params)
    assert error.value.field == field
    analysis = analyses.get_analysis("transfer")
    with pytest.raises(SpecError) as error:  # the pre-flight check (form, CLI) refuses the same before any work
        analysis.check(analysis.validate(params), analyses.run_info(RunDir.open(run_path)))
    assert error.value.field == field


def test_a_target_run_trained_with_another_optimizer_is_refused(run_path, adam_run):
    with pytest.raises(SpecError, match="the target run trains with adam, the target optimizer is sgd") as error:
        run_transfer(run_path, target_optimizer="sgd", target_lr=0.1, target_run=str(adam_run))
    assert error.value.field == "target_run"


def test_the_cli_refuses_a_new_optimizer_without_its_learning_rate_with_exit_code_2(run_path, capsys):
    assert main(["analyze", str(run_path), "transfer", "--target-optimizer", "adam"]) == 2
    assert "target_lr" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "transfer", "--target-optimizer", "adam", "--target-lr", "0.002",
                 "--target-momentum", "0.5"]) == 2


def test_optimizer_transfer_is_deterministic_and_resumes_after_a_cancel(single_stack_run):
    first = run_transfer(single_stack_run, rounds=[1], controls=["random_reinit"], **ADAM)
    assert len(first["controls"]) == 2
    shutil.rmtree(first["result_dir"])
    finished_units = []

    def stop_after_first_unit() -> bool:
        return bool(finished_units)
    seen = []

    def callback(event):
        seen.append(event)
        if event["type"] == events.ROUND_FINISHED:
            finished_units.append(event["network"])
    cancelled = run_transfer(single_stack_run, rounds=[1], controls=["random_reinit"], callback=callback,
                             stop_requested=stop_after_first_unit, **ADAM)
    assert cancelled["status"] == "cancelled" and finished_units == ["transfer"]
    seen.clear()
    resumed = run_transfer(single_stack_run, rounds=[1], controls=["random_reinit"], callback=seen.append, **ADAM)
    assert [e["unit"] for e in seen if e["type"] == "unit_skipped"] == ["transfer/round_001"]
    assert sorted(e["network"] for e in seen if e["type"] == events.ROUND_STARTED) == \
        ["transfer_random_reinit", "transfer_random_ticket"]

    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "wall_seconds"}
    assert strip(resumed["transfer"][0]) == strip(first["transfer"][0])
    for kind, records in first["controls"].items():
        assert strip(resumed["controls"][kind][0]) == strip(records[0]), kind


OLD_RESULT = Path(__file__).parent / "fixtures" / "transfer_result_before_optimizer_transfer.json"


def test_a_dataset_transfer_stored_before_optimizer_transfer_keeps_its_directory_and_summary():
    """The fixture is a result written by the dataset-only transfer: its parameters still hash to its directory
    (the new parameters' defaults add nothing), so the same request finds it; the CLI still prints it."""
    old = json.loads(OLD_RESULT.read_text())
    analysis = analyses.get_analysis("transfer")
    assert params_hash("transfer", analysis.params, analysis.validate(old["params"])) == Path(old["result_dir"]).name
    lines = transfer.summary_lines(old)
    assert lines[0] == "synthetic -> synthetic; output layer kept" and len(lines) == 2 + len(old["transfer"])
    assert lines[-1].endswith(f"{100 * old['target']['rounds'][1]['early_stop']['test_accuracy']:.2f}%")


# ---- targets from the registry: CIFAR-100 (100 classes) and SVHN (10 classes), on tiny files ------------------

def test_a_cifar10_ticket_transfers_to_cifar100_and_svhn(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_cifar_dataset(data / "cifar-10-batches-py", per_batch=12)
    write_cifar100_file(data / "cifar-100-python" / "train", 60, seed=1)
    write_cifar100_file(data / "cifar-100-python" / "test", 10, seed=2)
    rng = np.random.default_rng(0)
    for name, count in (("train_32x32.mat", 60), ("test_32x32.mat", 10)):
        write_svhn_mat(data / name, count, rng)
    svhn = dataset_sources.SOURCES["svhn"]
    monkeypatch.setitem(dataset_sources.SOURCES, "svhn", replace(svhn, verified={
        name: dataset_sources.file_md5(data / name) for name in svhn.verified}))
    spec = ExperimentSpec.from_dict({
        **TINY_RUN, "dataset": "cifar10", "validation_size": 10,
        "training": {**TINY_RUN["training"], "batch_size": 10, "training_steps": "12it", "eval_interval": "6it",
                     "lr_milestones": []},
        "rewind_step": "2it", "pruning": {"fraction": 0.5, "rounds": 1, "layer_fractions": {}}})
    run_path = tmp_path / "runs" / run_experiment(spec, tmp_path / "runs", data_dir=data)["run_name"]
    source_mask = RunDir.open(run_path).mask(1)

    for target, classes, reinitialised in (("cifar100", 100, True), ("svhn", 10, False)):
        transfer.check({"target_dataset": target, "rounds": [1]}, {"dataset": "cifar10", "finished_rounds": [0, 1]})
        result = run_transfer(run_path, target, rounds=[1], data_dir=data)
        (entry,) = result["transfer"]
        assert result["target_dataset"]["num_classes"] == classes and entry["status"] == "finished"
        assert result["output_layer"]["reinitialised"] is reinitialised
        assert entry["layers"]["fc3.weight"]["shape"] == [classes, 100]
        assert entry["layers"]["fc1.weight"]["remaining"] == int(source_mask["fc1.weight"].sum())
