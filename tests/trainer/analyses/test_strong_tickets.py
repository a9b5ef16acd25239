"""Strong tickets (edge-popup) and learned supermasks: the top-k and Bernoulli masks with their
straight-through gradients, frozen weights, width multipliers, determinism, resume, bad parameters,
the CLI and the charts."""
import json
import math
import shutil

import pytest
import torch

from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, events, models
from trainer.analyses import events as aevents
from trainer.analyses.edge_popup import frozen_random_network, run_edge_popup
from trainer.analyses.learned_supermask import frozen_weights, run_learned_supermask
from trainer.cli.main import main
from trainer.imp import Run
from trainer.rundir import RunDir
from trainer.seeds import generator
from trainer.spec import SpecError
from trainer.training.score_masks import (
    BernoulliStraightThrough,
    ScoreTraining,
    kept_count,
    sampled_masks,
    top_k_mask,
    top_k_masks,
    train_scores,
)

EDGE_POPUP = {"kept_percents": [30, 70], "widths": [0.5, 1], "iterations": "40it", "batch_size": 50}
SUPERMASK = {"weights": ["theta_0", "signed_constant"], "iterations": "100it", "batch_size": 50, "eval_samples": 3}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), pruning={"fraction": 0.5, "rounds": 1})


def without_times(result: dict) -> dict:
    """A result without wall-clock fields (everything else must be identical between two computations)."""
    text = json.dumps(result, sort_keys=True)
    data = json.loads(text)

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if k not in ("wall_seconds", "result_dir", "run_dir", "run_name")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(data)


# ---- the masks and their gradients ----------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_top_k_keeps_exactly_k_percent_of_each_layer_by_largest_magnitude(fraction):
    for shape in [(300, 784), (10, 100), (64, 1, 3, 3), (7,)]:
        scores = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        mask = top_k_mask(scores, fraction)
        total = scores.numel()
        assert int(mask.sum()) == kept_count(total, fraction) == min(total, max(1, math.floor(fraction * total + 0.5)))
        if not bool(mask.all()):
            assert scores.abs()[mask].min() > scores.abs()[~mask].max()


def test_the_straight_through_gradient_reaches_every_score_through_the_absolute_value():
    scores = {"a": torch.randn(20, 30, generator=torch.Generator().manual_seed(1)).requires_grad_(),
              "b": torch.randn(5, 20, generator=torch.Generator().manual_seed(2)).requires_grad_()}
    weights = {name: torch.randn(s.shape, generator=torch.Generator().manual_seed(7)) for name, s in scores.items()}
    upstream = {name: torch.randn(s.shape, generator=torch.Generator().manual_seed(9)) for name, s in scores.items()}
    masks = top_k_masks(scores, 0.4)
    assert {name: int(m.sum()) for name, m in masks.items()} == {"a": 240, "b": 40}
    loss = sum(((weights[n] * masks[n]) * upstream[n]).sum() for n in scores)
    loss.backward()
    for name, score in scores.items():
        # d loss / d mask = upstream × weight, passed straight through to |s|, then × sign(s): pruned edges too
        expected = upstream[name] * weights[name] * torch.sign(score.detach())
        assert torch.allclose(score.grad, expected)
        assert bool((score.grad[~masks[name].bool()] != 0).all())


def test_bernoulli_masks_have_the_sigmoid_as_expectation_and_a_straight_through_gradient():
    scores = {"layer": torch.linspace(-3, 3, 13).repeat(4000, 1)}
    samples = sampled_masks(scores, generator("test", "bernoulli"))["layer"]
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(samples.mean(dim=0), torch.sigmoid(torch.linspace(-3, 3, 13)), atol=0.025)
    score = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    sample = BernoulliStraightThrough.apply(torch.sigmoid(score), generator("test", "gradient"))
    (sample * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    sigma = torch.sigmoid(score.detach())
    assert torch.allclose(score.grad, torch.tensor([1.0, 2.0, 3.0]) * sigma * (1 - sigma))


def test_training_the_scores_never_changes_the_frozen_weights(run_path):
    run = Run(RunDir.open(run_path).spec, RunDir.open(run_path))
    info = run.data.info
    model, frozen = frozen_random_network("lenet_300_100", info.input_shape, info.num_classes, 5, 1.0,
                                          "signed_kaiming_constant")
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_frozen = {k: v.clone() for k, v in frozen.items()}
    scores = {name: torch.randn(w.shape, generator=torch.Generator().manual_seed(4)) for name, w in frozen.items()}
    initial_scores = {k: v.clone() for k, v in scores.items()}
    result = train_scores(model, frozen, scores, lambda current, _: top_k_masks(current, 0.5), run.data,
                          ScoreTraining(30, 0.1, 0.9, 1e-4, data_seed=0, metrics_interval=10), network="test")
    assert result.status == "finished" and result.train_loss["iteration"] == [10, 20, 30]
    assert all(torch.equal(v, before_model[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, before_frozen[k]) for k, v in frozen.items())
    assert all(not torch.equal(scores[k], initial_scores[k]) for k in scores)
    assert result.train_loss["loss"][-1] < result.train_loss["loss"][0]


def test_the_random_weights_are_kaiming_normal_or_the_signed_kaiming_constant():
    _, normal = frozen_random_network("lenet_300_100", (1, 28, 28), 10, 11, 2.0, "kaiming_normal")
    _, constant = frozen_random_network("lenet_300_100", (1, 28, 28), 10, 11, 2.0, "signed_kaiming_constant")
    assert normal["fc1.weight"].shape == (600, 784) and normal["fc2.weight"].shape == (200, 600)
    for name, weight in normal.items():
        fan_in = weight.shape[1]
        assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.15)
        assert torch.equal(constant[name], torch.sign(weight) * math.sqrt(2 / fan_in))


def test_width_multiplier_scales_hidden_layers_and_width_one_is_the_model_itself():
    default = models.build_model("lenet_300_100", (1, 28, 28), 10, 3).state_dict()
    explicit = models.build_model("lenet_300_100", (1, 28, 28), 10, 3, 1.0).state_dict()
    assert default.keys() == explicit.keys() and all(torch.equal(default[k], explicit[k]) for k in default)
    wide = models.build_model("lenet_300_100", (1, 28, 28), 10, 3, 2.0)
    assert [tuple(wide.get_parameter(f"fc{i}.weight").shape) for i in (1, 2, 3)] == [(600, 784), (200, 600), (10, 200)]
    conv = models.build_model("conv2", (3, 32, 32), 10, 3, 0.5)
    assert conv.conv1.weight.shape == (32, 3, 3, 3) and conv.fc1.weight.shape == (128, 32 * 16 * 16)
    assert models.parameter_count("conv2", (3, 32, 32), 10, 0.5) == sum(p.numel() for p in conv.parameters())
    with pytest.raises(ValueError, match="width"):
        models.build_model("lenet_300_100", (1, 28, 28), 10, 3, 0.0)


def test_every_registered_model_takes_a_width_multiplier():
    shapes = {"classification": ((1, 28, 28), (3, 32, 32)), "language_modeling": ((16,),),
              "reinforcement_learning": ((4,),)}
    for name, entry in models.MODELS.items():
        for shape in shapes[entry.task]:
            narrow, wide = (models.parameter_count(name, shape, 10, width) for width in (1.0, 2.0))
            assert wide > 2 * narrow, name  # hidden layers doubled: weights between two of them ×4
            output = models.output_parameter_name(name, shape, 10)
            with torch.device("meta"):
                assert models.MODELS[name].layers(shape, 10, 2.0).get_parameter(output).shape[0] == 10


def test_signed_constant_of_theta_0_keeps_the_sign_and_the_layers_std():
    theta = {"w": torch.tensor([[0.5, -0.1], [0.2, -0.4]])}
    constant = frozen_weights(theta, ["w"], "signed_constant")["w"]
    assert torch.equal(torch.sign(constant), torch.sign(theta["w"]))
    assert torch.allclose(constant.abs(), theta["w"].std().expand(2, 2))
    assert torch.equal(frozen_weights(theta, ["w"], "theta_0")["w"], theta["w"])


# ---- the studies ------------------------------------------------------------------------------

def test_edge_popup_reports_every_width_and_k_beside_the_dense_networks(run_path):
    seen, callback = collector()
    result = run_edge_popup(run_path, callback=callback, **EDGE_POPUP)
    assert [(e["width"], e["kept_percent"]) for e in result["subnetworks"]] == [(0.5, 30), (0.5, 70), (1, 30), (1, 70)]
    half = result["subnetworks"][0]
    assert half["layers"]["fc1.weight"] == {"shape": [150, 784], "total": 117600, "used": 35280}
    assert half["weights_used"] == sum(layer["used"] for layer in half["layers"].values())
    assert half["used_fraction"] == pytest.approx(0.3, abs=1e-4)
    assert half["parameters_total"] == models.parameter_count("lenet_300_100", (1, 28, 28), 10, 0.5)
    for entry in result["subnetworks"]:
        assert entry["status"] == "finished" and entry["iterations"] == 40
        assert entry["test_accuracy"] > 2 * result["chance"], "40 score iterations find a subnetwork far above chance"
    dense = {entry["width"]: entry for entry in result["dense"]}
    assert dense[1]["source"] == "the run's round 0"
    assert dense[1]["final"] == RunDir.open(run_path).record(0)["final"]
    assert dense[0.5]["source"] == "trained by this study" and dense[0.5]["weights_total"] == 117600 + 7500 + 500
    started = [e["network"] for e in seen if e["type"] == events.ROUND_STARTED]
    assert started == ["dense_x0.5", "edge_popup_x0.5_k30", "edge_popup_x0.5_k70", "edge_popup_x1_k30",
                       "edge_popup_x1_k70"]
    lines = analyses.ANALYSES["edge_popup"].summary_lines(result)
    assert lines[2].split()[:3] == ["0.5", "30", "30.00"]


def test_edge_popup_is_deterministic_and_resumes_after_a_cancel(run_path, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_path, copy, ignore=shutil.ignore_patterns("analyses"))
    finished = []

    def stop_after_first_unit():
        return len(finished) >= 1
    seen, callback = collector()

    def record(event):
        callback(event)
        if event["type"] == events.ROUND_FINISHED and event["network"].startswith("edge_popup"):
            finished.append(event)
    cancelled = run_edge_popup(copy, callback=record, stop_requested=stop_after_first_unit, **EDGE_POPUP)
    assert cancelled["status"] == "cancelled"
    seen.clear()
    resumed = run_edge_popup(copy, callback=callback, **EDGE_POPUP)
    skipped = [e["unit"] for e in seen if e["type"] == aevents.UNIT_SKIPPED]
    # the k values of a width train stacked: the cancel came after width 0.5's stack, both its units are kept
    assert skipped == ["dense/width_0.5", "width_0.5/kept_30", "width_0.5/kept_70"]
    assert [e["network"] for e in seen if e["type"] == events.ROUND_STARTED] == [
        "edge_popup_x1_k30", "edge_popup_x1_k70"]
    assert [entry["stacked_with"] for entry in resumed["subnetworks"]] == [2, 2, 2, 2]
    uninterrupted = run_edge_popup(run_path, **EDGE_POPUP)
    assert without_times(resumed) == without_times(uninterrupted)


def test_learned_supermask_samples_masks_on_the_frozen_theta_0(run_path):
    result = run_learned_supermask(run_path, **SUPERMASK)
    assert [entry["weights"] for entry in result["masks"]] == ["theta_0", "signed_constant"]
    for entry in result["masks"]:
        sampled = entry["sampled"]
        assert len(sampled["test_accuracies"]) == 3
        assert sampled["test_accuracy"] == pytest.approx(sum(sampled["test_accuracies"]) / 3)
        assert sampled["test_accuracy"] > 2 * result["chance"]
        assert 0.05 < entry["kept_fraction_expected"] < 0.95
        assert abs(sampled["kept_fraction"] - entry["kept_fraction_expected"]) < 0.01
        assert entry["layers"]["fc1.weight"]["total"] == 300 * 784
        assert entry["stacked_with"] == 2  # both weight choices learned in one stack
    assert result["dense"]["final"] == RunDir.open(run_path).record(0)["final"]
    again = run_learned_supermask(run_path, **SUPERMASK)
    assert again == result, "the finished result is found, not recomputed"
    assert analyses.ANALYSES["learned_supermask"].summary_lines(result)[2].split()[0] == "theta_0"


@pytest.mark.parametrize("name, params, field", [
    ("edge_popup", {"kept_percents": [0]}, "kept_percents[0]"),
    ("edge_popup", {"kept_percents": [150]}, "kept_percents[0]"),
    ("edge_popup", {"widths": []}, "widths"),
    ("edge_popup", {"widths": [1, 1]}, "widths"),
    ("edge_popup", {"weight_init": "uniform"}, "weight_init"),
    ("edge_popup", {"iterations": "0it"}, "iterations"),
    ("edge_popup", {"iterations": "ten"}, "iterations"),
    ("edge_popup", {"batch_size": 4000}, "batch_size"),
    ("learned_supermask", {"weights": []}, "weights"),
    ("learned_supermask", {"weights": ["theta_k"]}, "weights[0]"),
    ("learned_supermask", {"eval_samples": 0}, "eval_samples"),
])
def test_bad_parameters_name_the_parameter(run_path, name, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis(name, run_path, params)
    assert error.value.field == field


def test_the_cli_exits_2_on_bad_parameters_and_prints_the_summary(run_path, capsys):
    assert main(["analyze", str(run_path), "edge_popup", "--kept-percents", "0,50"]) == 2
    assert "kept_percents[0]" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "learned_supermask", "--weights", "theta_k"]) == 2
    assert "weights[0]" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "edge_popup", "--kept-percents", "30,70", "--widths", "0.5,1",
                 "--iterations", "40it", "--batch-size", "50", "--quiet"]) == 0
    assert "edge-popup on random lenet_300_100" in capsys.readouterr().out


@pytest.mark.parametrize("name, arguments, finished", [
    ("edge_popup", ["--kept-percents", "30", "--iterations", "20it", "--batch-size", "50"],
     "round 0 [edge_popup_x1_k30] finished: 30.0% of weights used, test acc "),
    ("learned_supermask", ["--weights", "theta_0", "--iterations", "20it", "--batch-size", "50"],
     "round 0 [supermask_theta_0] finished: 50.0% of weights used, test acc "),
])
def test_the_cli_prints_each_score_trained_network_as_it_finishes(run_path, tmp_path, capsys, name, arguments,
                                                                  finished):
    copy = tmp_path / "copy"
    shutil.copytree(run_path, copy, ignore=shutil.ignore_patterns("analyses"))
    assert main(["analyze", str(copy), name, *arguments]) == 0
    assert finished in capsys.readouterr().err  # progress lines go to stderr
