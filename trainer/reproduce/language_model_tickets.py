"""Winning tickets in language modelling: a Transformer LM keeps its perplexity with two thirds of its weights gone.

Yu, Edunov, Tian & Morcos 2020 (ICLR), "Playing the lottery with rewards and multiple languages: lottery
tickets in RL and NLP", Section 4 (LSTM language models and Transformers): with late rewinding and
iterative pruning, tickets exist in NLP; embeddings are over-parameterised, and about two thirds of a
Transformer's weights can be removed without losing performance, where randomly re-initialised
sub-networks of the same masks do worse.

Protocol (small): transformer_lm (2 layers, d = 128) on the embedded python_docs corpus, Adam 1e-3, batch
32, context 64, 200 iterations per round, evaluation every 50, late rewinding to k = 20 iterations (10% of
training), layerwise magnitude pruning 20% per round of every prunable matrix (embedding, attention,
feed-forward), 5 rounds (32.8% of the prunable weights left), 3 replicates, the random_reinit control
(the round's mask on a fresh init, trained k..T like the ticket) at round 5, the round nearest 1/3
remaining. Numbers are each training's test perplexity at its early stop (lowest validation loss).

Verdict at that round (trainer.reproduce.task_tickets; perplexity: LOWER is better), paired by replicate,
tolerance = max(one std of dense perplexity across replicates, 1% of the dense mean):
  ticket matches dense   holds when mean(ticket − dense) <= +tolerance; fails when the 95% CI of the
                         difference lies wholly above +tolerance
  ticket beats reinit    holds when the 95% CI of ticket − reinit lies wholly below 0; fails when it lies
                         wholly above −tolerance (the ticket is not lower by more than the tolerance, or higher)
n < 3 paired replicates, or a missing measurement, leaves a sub-claim undecided.
"""
from __future__ import annotations

from functools import partial

from trainer.reproduce import task_tickets
from trainer.reproduce.base import Check, Step
from trainer.tasks import LANGUAGE_MODELING

NAME = "language_model_tickets"
PERPLEXITY = LANGUAGE_MODELING.metric

BUDGET_SETTINGS = {
    # training steps, eval interval, rewind step (k), context length, batch size, rounds, replicates
    "tiny": ("16it", "16it", "1it", 16, 8, 1, 2),  # evaluating the corpus dominates: the ends only, 6 trainings
    "small": ("200it", "50it", "20it", 64, 32, 5, 3),
    "large": ("1000it", "100it", "50it", 64, 32, 8, 5),
}


def lm_spec(budget: str) -> dict:
    steps, eval_interval, rewind, context, batch, rounds, replicates = BUDGET_SETTINGS[budget]
    return task_tickets.imp_spec(
        {"model": "transformer_lm", "dataset": "python_docs", "rewind_step": rewind,
         "training": {"optimizer": "adam", "lr": 0.001, "batch_size": batch, "context_length": context,
                      "training_steps": steps, "eval_interval": eval_interval, "metrics_interval": 25}},
        rounds, replicates)


def steps(budget: str, data_dir) -> list[Step]:
    return [task_tickets.imp_step("Transformer LM IMP on python_docs (late rewinding, replicates, random reinit)",
                                  lm_spec(budget))]


# The shared rules of trainer.reproduce.task_tickets, read in this task's metric.
measure = partial(task_tickets.measure, unit=PERPLEXITY)
measurements = partial(task_tickets.measurements, unit=PERPLEXITY)
judge = partial(task_tickets.judge, unit=PERPLEXITY)
summary = partial(task_tickets.summary, unit=PERPLEXITY)


CHECK = Check(
    name=NAME, title="Language-model tickets: a Transformer keeps its perplexity at a third of its weights",
    claim="Tickets exist in NLP (LSTM language models, Transformers; late rewinding and iterative pruning are key; "
          "embeddings are over-parameterised; ~2/3 of Transformer weights removable), and they beat the same masks "
          "randomly re-initialised.",
    source="Yu, Edunov, Tian & Morcos 2020 (ICLR), 'Playing the lottery with rewards and multiple languages', "
           "Section 4 (language modelling)",
    tolerance="At the round nearest 1/3 remaining (round 5, 32.8%), over >= 3 replicates, test perplexity (lower is "
              "better): ticket mean <= dense + max(1 std of dense, 1% of the dense mean) (FAIL: the 95% CI of "
              "ticket − dense wholly above the tolerance); ticket below the random reinit with the 95% CI of "
              "ticket − reinit below 0 (FAIL: that CI wholly above −tolerance).",
    steps=steps, measure=measure, judge=judge, match_fields=task_tickets.MATCH_FIELDS, summary=summary,
    datasets=("python_docs",), requires=task_tickets.requires_late_rewinding_and_reinit,
    notes="A 2-layer d = 128 Transformer on the embedded Python docs (83K training tokens) for 200 iterations per "
          "round instead of Yu et al.'s Transformer-XL on WikiText-103 for many epochs on GPUs (CPU budget); "
          "the reinit control only at the reference round.")
