"""Structured pruning (neurons, filters) and FLOP/parameter counting of pruned networks."""
import torch

from trainer import models
from trainer.analyses.structured_pruning import run_structured_pruning
from trainer.imp import run_experiment
from trainer.pruning.masks import dense_mask
from trainer.pruning.structured import (
    alive_units,
    count_flops_and_parameters,
    prune_units,
    structured_prunable_names,
    unit_norms,
)
from trainer.spec import ExperimentSpec

# rows: L1 4, 6, 2, 5 and L2 4, 3.46, 1.41, 3.32: the two norms disagree on what goes
ROWS = torch.tensor([[4.0, 0.0, 0.0], [2.0, 2.0, -2.0], [1.0, -1.0, 0.0], [3.0, 1.0, 1.0]])


def test_neurons_go_whole_by_l1_or_l2_norm():
    mask = {"fc.weight": torch.ones(4, 3, dtype=torch.bool)}
    l1 = prune_units(mask, {"fc.weight": ROWS}, 0.5, norm="l1")["fc.weight"]
    l2 = prune_units(mask, {"fc.weight": ROWS}, 0.5, norm="l2")["fc.weight"]
    assert alive_units(l1).tolist() == [False, True, False, True]
    assert alive_units(l2).tolist() == [True, True, False, False]
    for kept in (l1, l2):
        assert all(row.all() or not row.any() for row in kept), "whole rows only"


def test_norms_count_only_surviving_weights_and_dead_units_are_not_survivors():
    mask = {"fc.weight": torch.tensor([[True, False, False], [True, True, True], [True, True, True], [False] * 3])}
    assert unit_norms(ROWS, mask["fc.weight"], "l1").tolist() == [4.0, 6.0, 2.0, 0.0]
    # three live units: round(0.5 * 3) = 2 go (the dead one does not count)
    kept = prune_units(mask, {"fc.weight": ROWS}, 0.5)["fc.weight"]
    assert alive_units(kept).tolist() == [False, True, False, False]
    assert torch.equal(kept[1], mask["fc.weight"][1])


def test_filters_go_whole_and_other_layers_are_untouched():
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(6, 2, 3, 3, generator=g)
    conv[4] *= 0.01
    conv[1] *= 0.01
    mask = {"conv.weight": torch.ones(6, 2, 3, 3, dtype=torch.bool), "fc.weight": torch.ones(4, 3, dtype=torch.bool)}
    kept = prune_units(mask, {"conv.weight": conv, "fc.weight": ROWS}, 1 / 3, names=["conv.weight"])
    assert alive_units(kept["conv.weight"]).tolist() == [True, False, True, True, False, True]
    assert kept["conv.weight"][[0, 2, 3, 5]].all() and not kept["conv.weight"][[1, 4]].any()
    assert kept["fc.weight"].all()


def test_global_unit_pruning_ranks_norms_relative_to_their_layer():
    # conv1's filters are 100x smaller than fc's rows: raw global norms would take all of conv1's units
    small = ROWS / 100
    mask = {"conv1.weight": torch.ones(4, 3, dtype=torch.bool), "fc.weight": torch.ones(4, 3, dtype=torch.bool)}
    kept = prune_units(mask, {"conv1.weight": small, "fc.weight": ROWS}, 0.5, scope="global")
    # relative norms are the same in both layers, so each loses its two smallest units, as layerwise would
    layerwise = prune_units(mask, {"conv1.weight": small, "fc.weight": ROWS}, 0.5, scope="layerwise")
    for name in mask:
        assert alive_units(kept[name]).tolist() == [False, True, False, True]
        assert torch.equal(kept[name], layerwise[name])


def test_global_unit_pruning_keeps_every_vgg16_layer_alive_at_init():
    model = models.build_model("vgg16", (3, 32, 32), 10, init_seed=0)
    weights = {name: p.detach() for name, p in model.named_parameters()}
    names = structured_prunable_names("vgg16", (3, 32, 32), 10)
    kept = prune_units(dense_mask(model, names), weights, 0.2, names=names, scope="global")
    for name in names:  # raw norms emptied conv1-5 here; relative norms take some units of every layer
        units = kept[name].shape[0]
        assert 0 < int(alive_units(kept[name]).sum()) < units, name


def test_output_layer_units_are_not_structurally_prunable():
    assert structured_prunable_names("lenet_300_100", (1, 28, 28), 10) == ["fc1.weight", "fc2.weight"]


def test_lenet_dense_counts_equal_the_hand_computation():
    counts = count_flops_and_parameters("lenet_300_100", (1, 28, 28), 10)
    macs = 784 * 300 + 300 * 100 + 100 * 10
    assert macs == 266_200
    for view in ("dense", "masked", "effective"):
        assert counts[view] == {"weights": macs, "macs": macs, "parameters": macs + 300 + 100 + 10}
    assert [layer["dense"]["macs"] for layer in counts["layers"]] == [235_200, 30_000, 1_000]


def test_pruning_half_the_fc1_neurons_shrinks_the_effective_network():
    model = models.build_model("lenet_300_100", (1, 28, 28), 10, 0)
    mask = dense_mask(model, ["fc1.weight", "fc2.weight", "fc3.weight"])
    weights = dict(model.named_parameters())
    pruned = prune_units(mask, weights, 0.5, names=["fc1.weight"])
    assert int(alive_units(pruned["fc1.weight"]).sum()) == 150
    counts = count_flops_and_parameters("lenet_300_100", (1, 28, 28), 10, pruned)
    effective = 150 * 784 + 100 * 150 + 10 * 100  # the dead neurons' fc2 inputs go too
    # fc2's columns from dead neurons are unmasked but carry no signal: they do not survive
    assert counts["masked"]["macs"] == counts["masked"]["weights"] == effective == 133_600
    assert counts["masked"]["parameters"] == effective + 150 + 100 + 10, "the dead neurons' biases are not counted"
    assert counts["effective"]["macs"] == counts["effective"]["weights"] == effective
    assert counts["effective"]["parameters"] == effective + 150 + 100 + 10
    fc2 = counts["layers"][1]["effective"]
    assert (fc2["in_units"], fc2["out_units"]) == (150, 100)


def test_conv_filters_remove_the_next_convs_input_channels():
    base = count_flops_and_parameters("conv2", (1, 28, 28), 10)
    conv1, conv2 = 64 * 1 * 9 * 28 * 28, 64 * 64 * 9 * 28 * 28
    fc = 64 * 14 * 14 * 256 + 256 * 256 + 256 * 10
    assert base["dense"]["macs"] == conv1 + conv2 + fc
    keep = torch.ones(64, 1, 3, 3, dtype=torch.bool)
    keep[32:] = False
    counts = count_flops_and_parameters("conv2", (1, 28, 28), 10, {"conv1.weight": keep})
    assert counts["masked"]["macs"] == conv1 // 2 + conv2 // 2 + fc, "conv2's weights reading dead channels go"
    assert counts["effective"]["macs"] == conv1 // 2 + conv2 // 2 + fc


def test_structured_pruning_analysis_removes_whole_neurons_round_after_round(tmp_path):
    spec = ExperimentSpec.from_dict({
        "dataset": "synthetic", "validation_size": 500, "device": "cpu",
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                     "training_steps": "30it", "eval_interval": "30it", "metrics_interval": 10},
        "pruning": {"fraction": 0.5, "rounds": 1}})
    path = tmp_path / run_experiment(spec, tmp_path)["run_name"]
    result = run_structured_pruning(path, norms=["l2"])
    [record] = result["variants"]["variant_units_l2"]["rounds"]
    assert record["layers"]["fc1.weight"]["remaining"] == 150 * 784
    # fc2 keeps 50 whole rows, but only their 150 columns from live fc1 neurons carry signal
    assert record["layers"]["fc2.weight"]["unmasked"] == 50 * 300
    assert record["layers"]["fc2.weight"]["remaining"] == 50 * 150
    assert record["layers"]["fc3.weight"]["unmasked"] == 1000
    assert record["layers"]["fc3.weight"]["remaining"] == 10 * 50, "the output layer keeps its classes"
    assert record["remaining_fraction"] == (150 * 784 + 50 * 150 + 10 * 50) / (784 * 300 + 300 * 100 + 1000)
    assert record["unmasked_fraction"] == (150 * 784 + 50 * 300 + 1000) / (784 * 300 + 300 * 100 + 1000)
    assert record["effective_parameters"] == 150 * 784 + 50 * 150 + 10 * 50 + 150 + 50 + 10
    assert record["costs"]["effective"]["macs"] == 150 * 784 + 50 * 150 + 10 * 50
    assert record["final"]["iteration"] == 30
