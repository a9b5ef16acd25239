"""The language models: shapes, tied and untied outputs, causality, the prunable weights and their layer
types, building on 'meta', and training with pruned (zeroed) weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.lm_networks import LM_LAYER_TYPES, LSTMLM, TransformerLM, lm_layer_types, prunable_lm_weights

VOCAB = 50
CONTEXT = 12
SMALL = {  # small sizes keep each test well under a second
    "transformer": (TransformerLM, {"d_model": 16, "layers": 2, "heads": 4, "ff_size": 32}),
    "lstm": (LSTMLM, {"embedding_size": 16, "hidden_size": 16, "layers": 2}),
}
VARIANTS = [(kind, tied) for kind in SMALL for tied in (True, False)]
VARIANT_IDS = [f"{kind}-{'tied' if tied else 'untied'}" for kind, tied in VARIANTS]


def build(kind: str, tied: bool, seed: int = 0, **overrides) -> nn.Module:
    """Built as the registry does: layers on 'meta', materialized on the CPU, every parameter set here."""
    model_class, sizes = SMALL[kind]
    with torch.device("meta"):
        model = model_class(VOCAB, CONTEXT, tied=tied, **{**sizes, **overrides})
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if lm_layer_types(name) == "norm" and name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def random_tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("kind", "tied"), VARIANTS, ids=VARIANT_IDS)
def test_logits_have_one_row_per_position(kind, tied):
    model = build(kind, tied)
    for length in (1, 5, CONTEXT):
        logits = model(random_tokens(3, length))
        assert logits.shape == (3, length, VOCAB) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=f"T <= {CONTEXT}"):
        model(random_tokens(3, CONTEXT + 1))


@pytest.mark.parametrize(("kind", "tied"), VARIANTS, ids=VARIANT_IDS)
def test_tied_models_predict_through_the_embedding(kind, tied):
    model = build(kind, tied)
    names = dict(model.named_parameters())
    assert model.tied is tied
    assert ("output.weight" in names) is not tied
    if not tied:
        assert names["output.weight"].shape[0] == VOCAB
    tokens = random_tokens(2, 8) % (VOCAB - 1)  # the last token never occurs in the input
    with torch.no_grad():
        model.embedding.weight[VOCAB - 1] = 0.0
    logits = model(tokens)
    # tied: its logit is the hidden state times a zero row; untied: the output layer does not care
    assert bool(torch.all(logits[..., VOCAB - 1] == 0)) is tied


def test_untied_transformer_output_has_no_bias_and_lstm_output_has_one():
    assert "output.bias" not in dict(build("transformer", False).named_parameters())
    assert "output.bias" in dict(build("lstm", False).named_parameters())


@pytest.mark.parametrize(("kind", "tied"), VARIANTS, ids=VARIANT_IDS)
def test_predictions_do_not_see_later_tokens(kind, tied):
    model = build(kind, tied)
    tokens = random_tokens(2, CONTEXT)
    reference = model(tokens)
    for changed in (1, 6, CONTEXT - 1):
        altered = tokens.clone()
        altered[:, changed] = (altered[:, changed] + 1) % VOCAB
        logits = model(altered)
        assert torch.allclose(logits[:, :changed], reference[:, :changed], atol=1e-6)
        assert not torch.allclose(logits[:, changed], reference[:, changed], atol=1e-4)


def test_parameter_names_and_shapes():
    transformer = dict(build("transformer", False).named_parameters())
    assert transformer["embedding.weight"].shape == (VOCAB, 16)
    assert transformer["positions.weight"].shape == (CONTEXT, 16)
    for projection in ("query", "key", "value", "out"):
        assert transformer[f"blocks.1.{projection}.weight"].shape == (16, 16)
    assert transformer["blocks.0.ff1.weight"].shape == (32, 16) and transformer["blocks.0.ff2.weight"].shape == (16, 32)
    assert {"norm.weight", "blocks.0.norm1.bias", "blocks.1.norm2.weight", "output.weight"} <= set(transformer)
    lstm = dict(build("lstm", False, embedding_size=8, hidden_size=24, layers=3).named_parameters())
    assert lstm["lstm.weight_ih_l0"].shape == (4 * 24, 8) and lstm["lstm.weight_hh_l2"].shape == (4 * 24, 24)
    assert lstm["output.weight"].shape == (VOCAB, 24)


def test_bad_sizes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="embedding_size == hidden_size"):
        LSTMLM(VOCAB, CONTEXT, embedding_size=8, hidden_size=16, tied=True)
    assert LSTMLM(VOCAB, CONTEXT, embedding_size=8, hidden_size=16, tied=False)(random_tokens(1, 4)).shape == (1, 4,
                                                                                                              VOCAB)
    with pytest.raises(ValueError, match="multiple of heads"):
        TransformerLM(VOCAB, CONTEXT, d_model=18, heads=4)


def test_default_sizes():
    transformer = TransformerLM(VOCAB, 64)
    assert len(transformer.blocks) == 2 and transformer.tied and transformer.blocks[0].heads == 4
    assert transformer.blocks[0].ff1.weight.shape == (512, 128)
    lstm = LSTMLM(VOCAB, 64)
    assert not lstm.tied and lstm.lstm.num_layers == 2 and lstm.lstm.hidden_size == lstm.embedding.embedding_dim == 200


# ---- the names the masks use ------------------------------------------------------------------------

def test_prunable_weights_transformer():
    assert prunable_lm_weights(build("transformer", False)) == [
        "embedding.weight",
        *[f"blocks.{i}.{layer}.weight" for i in range(2) for layer in ("query", "key", "value", "out", "ff1", "ff2")],
        "output.weight"]
    assert prunable_lm_weights(build("transformer", True))[-1] == "blocks.1.ff2.weight"  # the embedding is the output


def test_prunable_weights_lstm():
    assert prunable_lm_weights(build("lstm", False)) == [
        "embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1",
        "output.weight"]
    assert "output.weight" not in prunable_lm_weights(build("lstm", True))


@pytest.mark.parametrize(("kind", "tied"), VARIANTS, ids=VARIANT_IDS)
def test_prunable_weights_are_parameters_in_forward_order(kind, tied):
    model = build(kind, tied)
    parameters = dict(model.named_parameters())
    names = prunable_lm_weights(model)
    assert names and all(name in parameters for name in names)
    assert all(lm_layer_types(name) not in ("norm", "bias") for name in names)
    assert "positions.weight" not in names

    calls = []  # modules in the order the forward pass first runs them
    owner = {name: name.rpartition(".")[0] for name in names}
    modules = dict(model.named_modules())
    hooks = [modules[module_name].register_forward_pre_hook(
        lambda module, args, module_name=module_name: calls.append(module_name))
        for module_name in set(owner.values())]
    model(random_tokens(1, 4))
    for hook in hooks:
        hook.remove()
    first_call = [calls.index(owner[name]) for name in names]
    assert first_call == sorted(first_call)


def test_layer_types_of_every_parameter():
    expected = {
        "embedding.weight": "embedding", "positions.weight": "embedding",
        "blocks.0.norm1.weight": "norm", "blocks.0.norm1.bias": "norm", "blocks.1.norm2.bias": "norm",
        "norm.weight": "norm", "norm.bias": "norm",
        "blocks.0.query.weight": "attention", "blocks.0.key.weight": "attention",
        "blocks.1.value.weight": "attention", "blocks.1.out.weight": "attention",
        "blocks.0.query.bias": "bias", "blocks.1.out.bias": "bias", "blocks.0.ff1.bias": "bias",
        "blocks.0.ff1.weight": "feed_forward", "blocks.1.ff2.weight": "feed_forward",
        "output.weight": "output", "output.bias": "bias",
        "lstm.weight_ih_l0": "recurrent", "lstm.weight_hh_l1": "recurrent",
        "lstm.bias_ih_l0": "bias", "lstm.bias_hh_l1": "bias",
    }
    for name, layer_type in expected.items():
        assert lm_layer_types(name) == layer_type, name
    # every parameter of both models has the type its module's class implies
    for kind, tied in VARIANTS:
        model = build(kind, tied)
        modules = dict(model.named_modules())
        for name, _ in model.named_parameters():
            module = modules[name.rpartition(".")[0]]
            layer_type = lm_layer_types(name)
            if isinstance(module, nn.Embedding):
                assert layer_type == "embedding", name
            elif isinstance(module, nn.LayerNorm):
                assert layer_type == "norm", name
            elif name.rpartition(".")[2].startswith("bias"):
                assert layer_type == "bias", name
            elif isinstance(module, nn.LSTM):
                assert layer_type == "recurrent", name
            else:
                assert isinstance(module, nn.Linear) and layer_type in ("attention", "feed_forward", "output"), name
    every_name = {name for kind, tied in VARIANTS for name, _ in build(kind, tied).named_parameters()}
    assert {lm_layer_types(name) for name in every_name} == set(LM_LAYER_TYPES)
    for unknown in ("fc1.weight", "blocks.0.attention.weight", "weight"):
        with pytest.raises(ValueError, match="not a parameter"):
            lm_layer_types(unknown)


# ---- building as the registry does ------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "tied"), VARIANTS, ids=VARIANT_IDS)
def test_built_on_meta_holds_only_parameters(kind, tied):
    model_class, sizes = SMALL[kind]
    with torch.device("meta"):
        model = model_class(VOCAB, CONTEXT, tied=tied, **sizes)
    assert all(parameter.is_meta for parameter in model.parameters())
    # nothing but parameters to set after materializing: no buffers, no tensors kept as plain attributes
    assert list(model.buffers()) == []
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}
    for module in model.modules():
        assert not any(isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter)
                       for value in vars(module).values())
    model = model.to_empty(device="cpu")
    assert not any(parameter.is_meta for parameter in model.parameters())


# ---- training with pruned weights ---------------------------------------------------------------------

def half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    parameters = dict(model.named_parameters())
    return {name: torch.rand(parameters[name].shape, generator=generator) < 0.5 for name in prunable_lm_weights(model)}


@pytest.mark.parametrize(("kind", "tied"), VARIANTS, ids=VARIANT_IDS)
def test_pruned_model_trains(kind, tied):
    model = build(kind, tied, dropout=0.1).train()
    parameters = dict(model.named_parameters())
    masks = half_masks(model)
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)  # in place, as trainer.pruning.masks does
    windows = random_tokens(8, CONTEXT + 1, seed=5)
    inputs, targets = windows[:, :-1], windows[:, 1:]

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())

    torch.manual_seed(0)  # dropout
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    model.eval()
    with torch.no_grad():
        before = loss().item()
    assert torch.isfinite(torch.tensor(before))
    model.train()
    for step in range(40):
        optimizer.zero_grad()
        loss().backward()
        if step == 0:
            for name, mask in masks.items():
                gradient = parameters[name].grad
                assert gradient is not None and gradient[mask].abs().sum() > 0, name
        for name, mask in masks.items():
            parameters[name].grad.mul_(mask)
        optimizer.step()
        with torch.no_grad():
            for name, mask in masks.items():
                parameters[name].mul_(mask)
    model.eval()
    with torch.no_grad():
        after = loss().item()
    assert after < before - 0.5
    for name, mask in masks.items():
        assert torch.all(parameters[name][~mask] == 0), name
