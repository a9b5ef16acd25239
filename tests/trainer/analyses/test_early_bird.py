"""Early-bird tickets: channel masks from batch-norm scales, mask distances, the early-bird epoch."""
import pytest
import torch

from tests.trainer.conftest import TinyBN
from trainer import models
from trainer.analyses.early_bird import early_bird_index, run_early_bird as run_early_bird_analysis
from trainer.imp import run_experiment
from trainer.pruning.channels import (
    add_bn_l1_penalty,
    bn_producers,
    channel_mask,
    distance_matrix,
    mask_distance,
    weight_mask_from_channels,
)
from trainer.pruning.masks import MaskEnforcer
from trainer.spec import ExperimentSpec, SpecError


def test_mask_distance_is_the_normalised_hamming_distance():
    a = {"bn1": torch.tensor([True, True, False, False]), "bn2": torch.tensor([True, False])}
    b = {"bn1": torch.tensor([True, False, True, False]), "bn2": torch.tensor([True, False])}
    c = {"bn1": torch.tensor([False, False, True, True]), "bn2": torch.tensor([False, True])}
    assert mask_distance(a, b) == 2 / 6
    assert mask_distance(a, c) == 1.0
    assert mask_distance(a, a) == 0.0
    assert distance_matrix([a, b, c]) == [[0.0, 2 / 6, 1.0], [2 / 6, 0.0, 4 / 6], [1.0, 4 / 6, 0.0]]


def test_early_bird_is_the_first_index_ending_a_window_of_small_distances():
    assert early_bird_index([0.5, 0.3, 0.09, 0.05, 0.08, 0.02, 0.01, 0.0]) == 6  # 0.09 .. 0.01
    assert early_bird_index([0.05] * 4 + [0.2] + [0.05] * 5) == 9, "a large distance restarts the window"
    assert early_bird_index([0.05] * 4 + [0.1] + [0.05] * 4) is None, "the threshold itself is not below"
    assert early_bird_index([0.3, 0.2, 0.01], window=1, threshold=0.25) == 1
    assert early_bird_index([]) is None


def tiny_bn():
    torch.manual_seed(0)
    return TinyBN((1, 8, 8), 3)


def test_channel_mask_keeps_the_largest_scales_globally_with_exact_counts_and_position_ties():
    model = tiny_bn()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([0.5, -2.0, 0.1, 0.3]))
        model.bn2.weight.copy_(torch.tensor([0.3, 1.0, -0.05, 0.7, 0.3, 0.2]))
    kept = channel_mask(model, 0.5)  # 10 channels: the 5 smallest |γ| go; of the three 0.3s, the first two go
    assert kept["bn1"].tolist() == [True, True, False, False]
    assert kept["bn2"].tolist() == [False, True, False, True, True, False]


def test_channel_masks_expand_to_filters_and_batch_norm_and_silence_the_channel():
    model = tiny_bn()
    kept = {"bn1": torch.tensor([True, False, True, False]), "bn2": torch.ones(6, dtype=torch.bool)}
    mask = weight_mask_from_channels(model, kept, ["conv1.weight", "conv2.weight", "fc.weight"])
    assert mask["conv1.weight"][[0, 2]].all() and not mask["conv1.weight"][[1, 3]].any()
    assert mask["bn1.weight"].tolist() == mask["bn1.bias"].tolist() == [True, False, True, False]
    assert mask["conv2.weight"].all() and mask["fc.weight"].all()
    MaskEnforcer(model, mask).mask_weights()
    outputs = {}
    model.bn1.register_forward_hook(lambda module, inputs, output: outputs.update(bn1=output))
    model.train()(torch.randn(5, 1, 8, 8))
    assert (outputs["bn1"][:, [1, 3]] == 0).all() and (outputs["bn1"][:, [0, 2]] != 0).any()


def test_batch_norms_map_to_their_producing_convs():
    with torch.device("meta"):
        resnet = models.MODELS["resnet20"].architecture((1, 28, 28), 10)
        vgg = models.MODELS["vgg16"].architecture((1, 28, 28), 10)
    producers = bn_producers(resnet)
    assert producers["bn1"] == "conv1"
    assert producers["stage1.0.bn2"] == "stage1.0.conv2"
    assert producers["stage2.0.shortcut_bn"] == "stage2.0.shortcut_conv"
    assert len(producers) == 1 + 9 * 2 + 2
    assert bn_producers(vgg) == {f"bn{i}": f"conv{i}" for i in range(1, 14)}


def test_l1_penalty_adds_strength_times_sign_of_gamma_to_its_gradient():
    model = tiny_bn()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([0.5, -2.0, 0.1, 0.3]))
    x = torch.randn(4, 1, 8, 8)
    model(x).sum().backward()
    plain = model.bn1.weight.grad.clone()
    model.zero_grad()
    handles = add_bn_l1_penalty(model, 0.25)
    model(x).sum().backward()
    torch.testing.assert_close(model.bn1.weight.grad - plain, 0.25 * torch.tensor([1.0, -1.0, 1.0, 1.0]))
    for handle in handles:
        handle.remove()


def test_run_early_bird_end_to_end_on_a_tiny_batch_norm_model(tmp_path, monkeypatch):
    entry = models.ModelEntry("tiny_bn", "test-only batch-norm convnet", TinyBN, models._kaiming_normal)
    monkeypatch.setitem(models.MODELS, "tiny_bn", entry)
    spec = ExperimentSpec.from_dict({
        "model": "tiny_bn", "dataset": "synthetic", "validation_size": 100, "device": "cpu",
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                     "training_steps": "4ep", "metrics_interval": 2},
        "pruning": {"fraction": 0.5, "rounds": 1}})
    imp_path = tmp_path / "imp" / run_experiment(spec, tmp_path / "imp")["run_name"]
    result = run_early_bird_analysis(imp_path, prune_fraction=0.5, window=2, threshold=1.0, train_examples=200,
                                     test_examples=200)
    assert result["status"] == "finished" and result["analysis"] == "early_bird"
    assert result["epochs"] == [1, 2, 3, 4]
    assert len(result["consecutive_distances"]) == 3
    assert result["early_bird_epoch"] == 3, "window 2 under threshold 1 (every distance here): the third epoch's mask"
    assert result["search_fraction_at_early_bird"] == 3 / 4
    matrix = result["distance_matrix"]
    assert [matrix[i][i] for i in range(4)] == [0.0] * 4
    assert [matrix[i][i + 1] for i in range(3)] == result["consecutive_distances"]
    ticket = result["ticket"]
    assert (ticket["channels_kept"], ticket["channels_total"]) == (5, 10)
    assert ticket["final"]["iteration"] == 16 and ticket["status"] == "finished"
    # a pruned bn1 channel also takes conv2's weights reading it: fewer weights survive than are unmasked
    assert ticket["remaining_fraction"] < ticket["unmasked_fraction"]
    assert ticket["effective_parameters"] == ticket["costs"]["masked"]["parameters"]
    # one-shot IMP holds as many weights that carry signal as the ticket (not as many unmasked ones)
    assert result["one_shot_imp"]["remaining_fraction"] == ticket["remaining_fraction"]
    assert result["imp"]["round"] == 1  # IMP's 50% round is nearest to the ticket's sparsity
    # a channel mask's surviving weights are exactly the weights between live units
    assert ticket["costs"]["effective"]["macs"] == ticket["costs"]["masked"]["macs"] < ticket["costs"]["dense"]["macs"]

    without_imp = run_early_bird_analysis(imp_path, prune_fraction=0.5, window=2, threshold=1.0, train_examples=200,
                                          test_examples=200, one_shot_imp=False)
    assert without_imp["result_dir"] != result["result_dir"]
    assert without_imp["consecutive_distances"] == result["consecutive_distances"], "same θ0, data and seeds"
    assert without_imp["ticket"] == {**ticket, "wall_seconds": without_imp["ticket"]["wall_seconds"]}
    assert "one_shot_imp" not in without_imp


def test_early_bird_analysis_refuses_a_model_without_batch_norm(tmp_path):
    spec = ExperimentSpec.from_dict({"dataset": "synthetic", "validation_size": 500, "device": "cpu",
                                     "training": {"batch_size": 50, "training_steps": "10it"},
                                     "pruning": {"rounds": 1}})
    path = tmp_path / run_experiment(spec, tmp_path)["run_name"]
    with pytest.raises(SpecError, match="no batch norm"):
        run_early_bird_analysis(path)
    assert not (path / "analyses").exists()
