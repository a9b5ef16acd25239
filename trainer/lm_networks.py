"""The language models of the language-modelling task (layers only): a GPT-style Transformer and an LSTM.

Yu et al. (ICLR 2020), "Playing the lottery with rewards and multiple languages: lottery tickets in RL and
NLP", find winning tickets in LSTM language models (WikiText-2) and in Transformers. Both models here map
token ids (B, T), T <= context_length, to next-token logits (B, T, vocab_size).

They hold only standard torch modules (nn.Embedding, nn.Linear, nn.LayerNorm, nn.LSTM, nn.Dropout) and create
no tensors in __init__ besides those modules' parameters, so the model registry can build them on the 'meta'
device and set every parameter from its own seeded generator. Every projection is a module of its own, so
each weight is a separately prunable tensor with a readable name ('blocks.0.query.weight').
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check_length(tokens: torch.Tensor, context_length: int) -> None:
    if tokens.dim() != 2 or tokens.shape[1] > context_length:
        raise ValueError(f"expected token ids of shape (batch, T) with T <= {context_length}, "
                         f"got {tuple(tokens.shape)}")


class TransformerBlock(nn.Module):
    """Pre-LN decoder block: x + attention(norm1(x)), then x + ff2(gelu(ff1(norm2(x))))."""

    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.attention_dropout = dropout
        # registration order is forward order: prunable_lm_weights relies on it
        self.norm1 = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff_size)
        self.ff2 = nn.Linear(ff_size, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)  # (B, heads, T, head size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        attended = F.scaled_dot_product_attention(
            self._split_heads(self.query(normed)), self._split_heads(self.key(normed)),
            self._split_heads(self.value(normed)), is_causal=True,
            dropout_p=self.attention_dropout if self.training else 0.0)
        x = x + self.dropout(self.out(attended.transpose(1, 2).flatten(2)))
        return x + self.dropout(self.ff2(F.gelu(self.ff1(self.norm2(x)))))


class TransformerLM(nn.Module):
    """GPT-style decoder-only Transformer (pre-LN, learned positions, GELU, causal self-attention).

    Tied (the default): the logits are the final hidden states times the token embedding, so the embedding
    is also the output layer and there is no `output` parameter.
    """

    def __init__(self, vocab_size: int, context_length: int, d_model: int = 128, layers: int = 2, heads: int = 4,
                 ff_size: int = 512, tied: bool = True, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
        self.context_length = context_length
        self.tied = tied
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(context_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, ff_size, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        if not tied:
            self.output = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_length(tokens, self.context_length)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.dropout(self.embedding(tokens) + self.positions(positions))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return F.linear(x, self.embedding.weight) if self.tied else self.output(x)


class LSTMLM(nn.Module):
    """Embedding, a stacked LSTM, and a linear output layer (the word_language_model / AWD-LSTM layout,
    without AWD-LSTM's weight drop). Each forward starts from a zero state: windows are independent.

    Tied: the logits are the LSTM outputs times the token embedding (no `output` parameter, no output bias),
    which needs embedding_size == hidden_size.
    """

    def __init__(self, vocab_size: int, context_length: int, embedding_size: int = 200, hidden_size: int = 200,
                 layers: int = 2, tied: bool = False, dropout: float = 0.0):
        super().__init__()
        if tied and embedding_size != hidden_size:
            raise ValueError(f"a tied LSTMLM needs embedding_size == hidden_size (the output layer is the "
                             f"embedding), got embedding_size={embedding_size}, hidden_size={hidden_size}")
        self.context_length = context_length
        self.tied = tied
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.dropout = nn.Dropout(dropout)
        # nn.LSTM applies its dropout between layers only (and warns when there is no such place)
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        if not tied:
            self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_length(tokens, self.context_length)
        hidden, _ = self.lstm(self.dropout(self.embedding(tokens)))
        hidden = self.dropout(hidden)
        return F.linear(hidden, self.embedding.weight) if self.tied else self.output(hidden)


# ---- parameter names ------------------------------------------------------------------------------

# The module that holds a parameter (the last part of its name before the parameter's own) -> layer type.
_MODULE_TYPES = {
    "embedding": "embedding", "positions": "embedding",
    "query": "attention", "key": "attention", "value": "attention", "out": "attention",
    "ff1": "feed_forward", "ff2": "feed_forward",
    "lstm": "recurrent",
    "output": "output",
    "norm": "norm", "norm1": "norm", "norm2": "norm",
}
LM_LAYER_TYPES = ("embedding", "attention", "feed_forward", "recurrent", "output", "norm", "bias")


def lm_layer_types(parameter_name: str) -> str:
    """The layer type of a parameter of TransformerLM or LSTMLM, one of LM_LAYER_TYPES.

    Layer-norm gains and shifts are both "norm"; every other bias (of a Linear, or an LSTM's bias_ih/bias_hh)
    is "bias"; the LSTM's input-to-hidden and hidden-to-hidden weights are both "recurrent".
    """
    module_path, _, parameter = parameter_name.rpartition(".")
    layer_type = _MODULE_TYPES.get(module_path.rpartition(".")[2])
    if layer_type is None:
        raise ValueError(f"{parameter_name!r} is not a parameter of a TransformerLM or an LSTMLM")
    if layer_type != "norm" and parameter.startswith("bias"):
        return "bias"
    return layer_type


def prunable_lm_weights(model: nn.Module) -> list[str]:
    """The weights that iterative magnitude pruning prunes, in forward order: the token embedding (which is
    also the output layer when tied), every attention projection and feed-forward weight, the LSTM's
    weight_ih/weight_hh of each layer, and the output layer when untied. No biases, no layer norms.

    The learned position table is left dense: Yu et al.'s Transformers (fairseq) used fixed sinusoidal
    positions, which have no weights to prune, and a pruned row would erase part of one position's code for
    every token at that position. It is also small (context_length x d_model).
    """
    return [name for name, _ in model.named_parameters()  # registration order is forward order
            if lm_layer_types(name) not in ("norm", "bias") and not name.startswith("positions.")]
