"""Issue 10 item 5: a bare spec uses its model's paper pruning rates (the same the form applies),
the VGG-16/ResNet-20 defaults leave the output layer unpruned, and the random-reinit control can
train from scratch (0..T, Frankle & Carbin's control) beside the k..T variant."""
import pytest

from tests.trainer.conftest import tiny_spec
from trainer import models
from trainer.imp import run_experiment
from trainer.spec import ExperimentSpec


@pytest.mark.parametrize("model, dataset, expected", [
    ("lenet_300_100", "fashion_mnist", {"fc3.weight": 0.1}),
    ("conv2", "cifar10", {"conv1.weight": 0.1, "conv2.weight": 0.1, "fc3.weight": 0.1}),
    ("conv4", "cifar10", {**{f"conv{i}.weight": 0.1 for i in range(1, 5)}, "fc3.weight": 0.1}),
    ("conv6", "cifar10", {**{f"conv{i}.weight": 0.15 for i in range(1, 7)}, "fc3.weight": 0.1}),
])
def test_bare_spec_uses_frankle_carbin_rates(model, dataset, expected):
    spec = ExperimentSpec.from_dict({"model": model, "dataset": dataset})
    assert spec.pruning.scope == "layerwise" and spec.pruning.fraction == 0.2
    assert spec.pruning.layer_fractions == expected
    assert spec.pruning.prunable_layers == []  # every conv/linear weight


@pytest.mark.parametrize("model", ["vgg16", "resnet20"])
def test_deep_cifar_models_prune_globally_and_leave_the_output_layer(model):
    spec = ExperimentSpec.from_dict({"model": model, "dataset": "cifar10"})
    output = models.output_parameter_name(model, (3, 32, 32), 10)
    all_weights = models.prunable_parameter_names(model, (3, 32, 32), 10)
    assert spec.pruning.scope == "global" and spec.pruning.fraction == 0.2
    assert output not in spec.pruning.prunable_layers
    assert spec.pruning.prunable_layers == [name for name in all_weights if name != output]


def test_fields_given_are_kept_and_an_explicit_empty_dict_means_uniform():
    uniform = ExperimentSpec.from_dict({"pruning": {"layer_fractions": {}}})
    assert uniform.pruning.layer_fractions == {}
    given = ExperimentSpec.from_dict({"pruning": {"fraction": 0.3, "scope": "global"}})
    assert given.pruning.fraction == 0.3 and given.pruning.scope == "global"
    assert given.pruning.layer_fractions == {"fc3.weight": 0.1}
    only_hidden = ExperimentSpec.from_dict({"pruning": {"prunable_layers": ["fc1.weight", "fc2.weight"]}})
    assert only_hidden.pruning.layer_fractions == {}  # no override for a layer that is not pruned
    units = ExperimentSpec.from_dict({"pruning": {"structure": "units"}})
    assert units.pruning.layer_fractions == {}


def test_a_stored_spec_round_trips_unchanged():
    spec = ExperimentSpec.from_dict({"model": "conv2", "dataset": "cifar10"})
    again = ExperimentSpec.from_dict(spec.to_dict())
    assert again == spec and again.run_hash() == spec.run_hash()


def test_random_reinit_from_scratch_trains_zero_to_t_with_the_same_init_and_mask(tmp_path):
    spec = tiny_spec(rewind_step="40it", pruning={"rounds": 1},
                     controls=["random_reinit", "random_reinit_from_scratch"])
    results = run_experiment(spec, tmp_path)
    late, scratch = results["controls"]["random_reinit"][0], results["controls"]["random_reinit_from_scratch"][0]
    assert late["start_iteration"] == 40 and scratch["start_iteration"] == 0
    assert scratch["curve"]["iteration"][0] == 0 and scratch["end_iteration"] == late["end_iteration"] == 120
    assert scratch["layers"] == late["layers"] == results["rounds"][1]["layers"]
    # the same fresh network at its start
    assert scratch["curve"]["test_accuracy"][0] == late["curve"]["test_accuracy"][0]
    assert late["curve"]["iteration"][0] == 40 and len(scratch["curve"]["iteration"]) > len(late["curve"]["iteration"])


def test_without_late_rewinding_the_two_reinit_controls_coincide(tmp_path):
    results = run_experiment(tiny_spec(pruning={"rounds": 1}, controls=["random_reinit", "random_reinit_from_scratch"]),
                             tmp_path)
    late, scratch = results["controls"]["random_reinit"][0], results["controls"]["random_reinit_from_scratch"][0]
    assert late["curve"]["iteration"] == scratch["curve"]["iteration"]
    for key in ("test_loss", "test_accuracy", "val_loss"):  # stacked together: float32 reordering only
        assert late["curve"][key] == pytest.approx(scratch["curve"][key], abs=1e-4)
