"""Malach et al. 2020: weight-subnetworks of random nets matched to a trained target, neuron-subnetworks (whole
units), random features (only the last layer trains), determinism, resume, bad parameters and the CLI."""
import shutil

import pytest
import torch

from tests.trainer.analyses.test_strong_tickets import without_times
from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, events
from trainer.analyses import events as aevents
from trainer.analyses.malach import random_mlp, run_malach, unit_masks
from trainer.cli.main import main
from trainer.imp import Run
from trainer.rundir import RunDir
from trainer.seeds import generator
from trainer.spec import SpecError
from trainer.training.score_masks import ScoreTraining, kept_count, top_k_masks, train_scores, train_weights

PARAMS = {"target_iterations": "60it", "widths": [10, 200], "iterations": "60it", "batch_size": 50}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), pruning={"fraction": 0.5, "rounds": 1})


@pytest.fixture(scope="module")
def data(run_path):
    run_dir = RunDir.open(run_path)
    return Run(run_dir.spec, run_dir).data


def plan(iterations=20):
    return ScoreTraining(iterations, 0.1, 0.9, 0.0, data_seed=0, metrics_interval=10)


def test_a_weight_subnetwork_keeps_top_k_of_each_layer_and_never_changes_a_weight(data):
    model, frozen = random_mlp(784, [30, 30, 30], 10, "kaiming_normal", generator("test", "mlp"))
    assert list(frozen) == ["fc1.weight", "fc2.weight", "fc3.weight", "fc4.weight"]
    assert all(getattr(model, f"fc{index}").bias is None for index in range(1, 5))
    before = {name: weight.clone() for name, weight in frozen.items()}
    scores = {name: torch.randn(w.shape, generator=generator("test", name)) for name, w in frozen.items()}
    result = train_scores(model, frozen, scores, lambda current, _: top_k_masks(current, 0.3), data, plan(),
                          network="test")
    assert result.status == "finished"
    assert all(torch.equal(frozen[name], before[name]) and torch.equal(model.get_parameter(name), before[name])
               for name in frozen)
    for name, mask in top_k_masks(scores, 0.3).items():
        assert int(mask.sum()) == kept_count(frozen[name].numel(), 0.3)


def test_a_neuron_subnetwork_drops_whole_hidden_units(data):
    model, frozen = random_mlp(784, [40], 10, "kaiming_normal", generator("test", "two"))
    unit_scores = torch.randn(40, generator=generator("test", "units"))
    masks = unit_masks(unit_scores, 0.25)
    kept = masks["fc1.weight"][:, 0].bool()
    assert int(kept.sum()) == 10 and torch.equal(kept, masks["fc2.weight"][0].bool())
    assert unit_scores.abs()[kept].min() > unit_scores.abs()[~kept].max()
    weights = {name: frozen[name] * masks[name] for name in frozen}
    assert bool((weights["fc1.weight"][~kept] == 0).all()) and bool((weights["fc2.weight"][:, ~kept] == 0).all())
    assert bool((weights["fc1.weight"][kept] != 0).all())
    # the output does not depend on a dropped unit's weights at all
    x = data.test_x[:50]
    changed = {name: w.clone() for name, w in frozen.items()}
    changed["fc1.weight"][~kept] = 5.0
    changed["fc2.weight"][:, ~kept] = -3.0
    outputs = [torch.func.functional_call(model, {n: w[n] * masks[n] for n in w}, (x,)) for w in (frozen, changed)]
    assert torch.equal(outputs[0], outputs[1])
    # and training moves the unit scores (gradients pass straight through to them)
    scores = {"units": unit_scores.clone()}
    train_scores(model, frozen, scores, lambda current, _: unit_masks(current["units"], 0.25), data, plan(),
                 network="test")
    assert not torch.equal(scores["units"], unit_scores)


def test_random_features_train_only_the_last_layer(data):
    model, frozen = random_mlp(784, [40], 10, "kaiming_normal", generator("test", "features"))
    last = {"fc2.weight": frozen["fc2.weight"].clone()}
    result = train_weights(model, last, data, plan(40), network="test")
    assert result.status == "finished" and result.train_loss["loss"][-1] < result.train_loss["loss"][0]
    assert torch.equal(model.fc1.weight, frozen["fc1.weight"])  # the random first layer never moves
    assert torch.equal(model.fc2.weight, frozen["fc2.weight"])  # the model keeps its tensors ...
    assert not torch.equal(last["fc2.weight"], frozen["fc2.weight"])  # ... the trained last layer is `last`


def test_the_study_reports_approximation_by_width_and_the_two_layer_models(run_path):
    seen, callback = collector()
    result = run_malach(run_path, callback=callback, **PARAMS)
    target = result["target"]
    assert target["depth"] == 2 and target["width"] == 32 and target["weights_total"] == 784 * 32 + 32 * 10
    assert target["test_accuracy"] > 0.5
    narrow, wide = result["approximation"]
    assert (narrow["width"], narrow["depth"], wide["width"]) == (10, 4, 200)
    assert wide["weights_total"] == 784 * 200 + 200 * 200 * 2 + 200 * 10
    assert wide["weights_used"] == sum(kept_count(n, 0.5) for n in (784 * 200, 200 * 200, 200 * 200, 200 * 10))
    assert wide["relative_mse"] == pytest.approx(wide["test_mse"] / target["mean_square_logit"])
    # the claim, at this tiny budget: the wider random net approximates the target better
    assert wide["test_mse"] < narrow["test_mse"] and wide["agreement"] > narrow["agreement"]
    models = [(e["width"], e["model"]) for e in result["two_layer"]]
    assert models == [(w, m) for w in (10, 200) for m in ("neuron_subnetwork", "random_features", "weight_subnetwork")]
    by = {(e["width"], e["model"]): e for e in result["two_layer"]}
    assert by[(200, "neuron_subnetwork")]["hidden_units_used"] == 100
    assert by[(200, "neuron_subnetwork")]["weights_used"] == 100 * 784 + 100 * 10
    assert by[(200, "random_features")]["hidden_units_used"] == 200
    assert by[(200, "random_features")]["weights_used"] == by[(200, "random_features")]["weights_total"]
    assert by[(200, "weight_subnetwork")]["test_accuracy"] > 2 * result["chance"]
    assert by[(200, "random_features")]["test_accuracy"] > 2 * result["chance"]
    started = [e["network"] for e in seen if e["type"] == events.ROUND_STARTED]
    assert started[:3] == ["malach_target_l2", "malach_depth4_n10", "malach_depth4_n200"]
    # the three models of a width train in one stack: all three start before the first of them finishes
    assert {e["stacked_with"] for e in result["two_layer"]} == {3}
    order = [(e["type"], e["network"]) for e in seen if e.get("network", "").startswith("malach_two_layer_n10")
             and e["type"] in (events.ROUND_STARTED, events.ROUND_FINISHED)]
    assert [kind for kind, _ in order] == [events.ROUND_STARTED] * 3 + [events.ROUND_FINISHED] * 3
    lines = analyses.ANALYSES["malach"].summary_lines(result)
    assert lines[2].split()[:2] == ["10", "4"] and lines[5].split()[0] == "10"
    assert run_malach(run_path, **PARAMS) == result, "the finished result is found, not recomputed"


def test_is_deterministic_and_resumes_after_a_cancel(run_path, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_path, copy, ignore=shutil.ignore_patterns("analyses"))
    finished = []
    seen, callback = collector()

    def record(event):
        callback(event)
        if event["type"] == events.ROUND_FINISHED:
            finished.append(event)
    cancelled = run_malach(copy, callback=record, stop_requested=lambda: len(finished) >= 2, **PARAMS)
    assert cancelled["status"] == "cancelled"
    seen.clear()
    resumed = run_malach(copy, callback=callback, **PARAMS)
    assert [e["unit"] for e in seen if e["type"] == aevents.UNIT_SKIPPED] == ["target", "approximation/width_10"]
    assert without_times(resumed) == without_times(run_malach(run_path, **PARAMS))


@pytest.mark.parametrize("params, field", [
    ({"widths": []}, "widths"),
    ({"widths": [0]}, "widths[0]"),
    ({"target_depth": 0}, "target_depth"),
    ({"target_depth": 9}, "target_depth"),
    ({"kept_percent": 0}, "kept_percent"),
    ({"weight_init": "uniform"}, "weight_init"),
    ({"iterations": "0it"}, "iterations"),
    ({"target_iterations": "0ep"}, "target_iterations"),
    ({"target_iterations": "soon"}, "target_iterations"),
    ({"batch_size": 4000}, "batch_size"),
])
def test_bad_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("malach", run_path, params)
    assert error.value.field == field


def test_the_cli_exits_2_on_bad_parameters(run_path, capsys):
    assert main(["analyze", str(run_path), "malach", "--widths", "0,10"]) == 2
    assert "widths[0]" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "malach", "--target-iterations", "0it"]) == 2
    assert "target_iterations" in capsys.readouterr().err


def test_the_cli_prints_each_network_as_it_finishes(run_path, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_path, copy, ignore=shutil.ignore_patterns("analyses"))
    assert main(["analyze", str(copy), "malach", "--widths", "8", "--iterations", "20it",
                 "--target-iterations", "20it", "--batch-size", "50"]) == 0
    out = capsys.readouterr().err  # progress lines go to stderr, the result to stdout
    assert "round 0 [malach_target_l2] finished: test acc " in out
    assert "round 0 [malach_depth4_n8] finished: 50.0% of weights used, test MSE to the target " in out
    assert "round 0 [malach_two_layer_n8_random_features] finished: 100.0% of weights used, test acc " in out
