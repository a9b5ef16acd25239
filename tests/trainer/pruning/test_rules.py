import torch

from trainer.pruning import rules as pruning
from trainer.pruning.masks import load_mask, remaining_fraction, save_mask


def _mask(*shapes):
    return {f"layer{i}.weight": torch.ones(shape, dtype=torch.bool) for i, shape in enumerate(shapes)}


def test_layerwise_prunes_exact_count_of_smallest_per_layer():
    mask = _mask((10,), (4,))
    scores = {"layer0.weight": torch.arange(10, dtype=torch.float), "layer1.weight": torch.tensor([5., 1., 3., 2.])}
    new = pruning.prune_by_scores(mask, scores, 0.2, "layerwise")
    assert new["layer0.weight"].tolist() == [False, False] + [True] * 8
    # round(0.2 * 4) = 1: the single smallest (index 1) goes.
    assert new["layer1.weight"].tolist() == [True, False, True, True]
    assert mask["layer0.weight"].all(), "the input mask is not modified"


def test_global_uses_one_threshold_across_layers():
    mask = _mask((4,), (4,))
    scores = {"layer0.weight": torch.tensor([1., 2., 3., 4.]), "layer1.weight": torch.tensor([10., 20., 0.5, 30.])}
    new = pruning.prune_by_scores(mask, scores, 0.5, "global")
    assert new["layer0.weight"].tolist() == [False, False, False, True]
    assert new["layer1.weight"].tolist() == [True, True, False, True]
    assert sum(int(m.sum()) for m in new.values()) == 4


def test_only_survivors_are_ranked_and_counts_compound():
    mask = _mask((100,))
    scores = {"layer0.weight": torch.rand(100, generator=torch.Generator().manual_seed(0))}
    expected = [100]
    for _ in range(5):
        mask = pruning.prune_by_scores(mask, scores, 0.2, "layerwise")
        expected.append(expected[-1] - pruning.prune_count(0.2, expected[-1]))
        assert int(mask["layer0.weight"].sum()) == expected[-1]
    assert expected == [100, 80, 64, 51, 41, 33]


def test_ties_prune_exactly_the_count_in_position_order():
    mask = _mask((6,), (6,))
    scores = {"layer0.weight": torch.ones(6), "layer1.weight": torch.ones(6)}
    layerwise = pruning.prune_by_scores(mask, scores, 0.5, "layerwise")
    assert layerwise["layer0.weight"].tolist() == [False] * 3 + [True] * 3
    assert layerwise["layer1.weight"].tolist() == [False] * 3 + [True] * 3
    global_ = pruning.prune_by_scores(mask, scores, 0.25, "global")
    assert global_["layer0.weight"].tolist() == [False] * 3 + [True] * 3
    assert global_["layer1.weight"].all()


def test_layer_fraction_override_prunes_that_layer_on_its_own_even_globally():
    mask = _mask((10,), (10,))
    scores = {"layer0.weight": torch.arange(10.), "layer1.weight": torch.arange(10.) - 100}
    new = pruning.prune_by_scores(mask, scores, 0.2, "global", {"layer1.weight": 0.1})
    assert int(new["layer1.weight"].sum()) == 9
    # The remaining global budget applies to layer0 alone: round(0.2 * 10) = 2.
    assert int(new["layer0.weight"].sum()) == 8


def test_prune_count_rounds_half_up_and_never_exceeds_survivors():
    assert pruning.prune_count(0.2, 266200) == 53240
    assert pruning.prune_count(0.1, 5) == 1  # 0.5 rounds up
    assert pruning.prune_count(0.2, 2) == 0
    assert pruning.prune_count(0.99, 1) == 1


def test_one_shot_fraction_matches_iterated_fraction():
    assert abs(pruning.one_shot_fraction(0.2, 10) - (1 - 0.8 ** 10)) < 1e-12


def test_random_mask_like_keeps_per_layer_counts():
    mask = _mask((50,), (20, 5))
    scores = {name: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) for name, m in mask.items()}
    pruned = pruning.prune_by_scores(mask, scores, 0.7, "layerwise")
    random_mask = pruning.random_mask_like(pruned, torch.Generator().manual_seed(5))
    for name in pruned:
        assert int(random_mask[name].sum()) == int(pruned[name].sum())
        assert random_mask[name].shape == pruned[name].shape
    assert not all(torch.equal(random_mask[n], pruned[n]) for n in pruned)


def test_mask_files_are_bit_packed_and_round_trip(tmp_path):
    mask = {"fc1.weight": torch.rand(300, 784) > 0.3, "fc3.weight": torch.rand(10, 100) > 0.5}
    save_mask(mask, tmp_path / "mask.pt")
    loaded = load_mask(tmp_path / "mask.pt")
    assert all(torch.equal(loaded[name], mask[name]) for name in mask)
    assert remaining_fraction(loaded) == remaining_fraction(mask)
    assert (tmp_path / "mask.pt").stat().st_size < 300 * 784 / 8 + 10 * 100 / 8 + 4096
