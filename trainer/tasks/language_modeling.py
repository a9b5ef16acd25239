"""Language modelling (Yu, Edunov, Tian & Morcos 2020, ICLR, "Playing the lottery with rewards and multiple
languages: lottery tickets in RL and NLP", Section 4: LSTM and Transformer language models on WikiText).

A corpus (trainer.corpora) is cut into sequences of `context_length + 1` tokens (consecutive, not
overlapping); a training example is a sequence, its inputs the first L tokens and its targets the next
token at each position. The loss is the mean cross-entropy over every target token of the batch; the
metric is the perplexity exp(mean cross-entropy per token) of a split (lower is better), and early
stopping picks the eval point with the lowest validation loss, which is the lowest validation perplexity.
Validation and test are the corpus's own splits, cut the same way (a tail shorter than one sequence is
not scored).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainer import corpora, datasets
from trainer.spec import SpecError
from trainer.tasks.base import Metric, PreparedData, Task

PERPLEXITY = Metric("perplexity", "perplexity", higher_is_better=False, percent=False)
EVAL_SEQUENCES = 64  # sequences per evaluation forward pass


class LanguageModeling(Task):
    name = "language_modeling"
    title = "Language modelling"
    metric = PERPLEXITY

    def prepare(self, spec, device: torch.device, data_dir=None) -> PreparedData:
        corpus = corpora.load_corpus(spec.dataset, data_dir)
        spec.check_dataset_fit(corpus.train.numel())
        length = spec.training.context_length
        splits = {}
        for split in ("train", "valid", "test"):
            tokens = getattr(corpus, split)
            if tokens.numel() < length + 1:
                raise SpecError("training.context_length", f"the {split} split of {spec.dataset} has only "
                                                           f"{tokens.numel()} tokens, fewer than one sequence")
            windows = corpora.token_windows(tokens, length).to(device)
            splits[split] = (windows[:, :-1], windows[:, 1:])
        if spec.training.batch_size > splits["train"][0].shape[0]:
            raise SpecError("training.batch_size", f"larger than the {splits['train'][0].shape[0]} training "
                                                   f"sequences of {length} tokens in {spec.dataset}")
        entry = corpora.CORPORA[spec.dataset]
        info = datasets.DatasetInfo(
            spec.dataset, entry.title, (datasets.LM_MAX_CONTEXT,), len(corpus.vocabulary), corpus.train.numel(),
            corpus.test.numel(), False, f"word-level text, {len(corpus.vocabulary):,} words", task=self.name)
        return PreparedData(info, *splits["train"], *splits["valid"], *splits["test"], spec.training.batch_size,
                            task=self)

    def batch_loss(self, model, inputs, targets):
        return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def evaluate(self, model, data, split):
        x, y = (data.val_x, data.val_y) if split == "val" else (data.test_x, data.test_y)
        if x.shape[0] == 0:
            return float("nan"), float("nan")
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
        for start in range(0, x.shape[0], EVAL_SEQUENCES):
            logits = model(x[start:start + EVAL_SEQUENCES])
            loss_sum += F.cross_entropy(logits.flatten(0, 1), y[start:start + EVAL_SEQUENCES].flatten(),
                                        reduction="sum").double()
        model.train(was_training)
        loss = loss_sum.item() / y.numel()
        return loss, math.exp(loss) if loss < 700 else float("inf")


LANGUAGE_MODELING = LanguageModeling()
