"""Ticket transfer: the output layer, the mask on the rest, the target run beside it, resume, bad parameters."""
from dataclasses import replace

import pytest
import torch

from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, datasets, events, models
from trainer.analyses.transfer import TransferPlan, run_transfer
from trainer.rundir import RunDir
from trainer.spec import SpecError


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
    # The ticket trained on its own dataset with the run's settings is exactly the run's round.
    assert entry["curve"] == run_dir.record(1)["curve"]
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
