"""IMP variants as branches of a finished run: masking criteria, survivor re-initialisations and
frozen pruned weights (Zhou et al. 2019), and structured (neuron/filter) pruning.

A variant shares the ticket's round 0 (θ0, the dense training, θk) and replays rounds 1..R
with its own rule, exactly like IMP otherwise: round r scores round r-1's trained weights
(the variant's own) against the weights round r-1 started from (θ0 for round 0, else the
variant's re-initialised θk), prunes the spec's fraction of the survivors, resets them to θk
(then re-initialises them as the variant says) and trains iterations k..T. Each round's record
adds the supermask score (test accuracy of the masked network at its untrained init: θ0
re-initialised as the variant says, pruned weights zero or frozen at their θ0 values; Zhou
et al. score the masked θ0, which late rewinding would otherwise replace by θk) and the
network's cost (trainer.pruning.structured.count_flops_and_parameters). The analyses
`masking_criteria` and `structured_pruning` (trainer/analyses/) run the chains and store them.

The default variant (large_final, rewind, zero, unstructured) reproduces the ticket's rounds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from trainer.pruning import criteria, rules, structured
from trainer.seeds import generator

from trainer.spec import PRUNING_STRUCTURES as STRUCTURES  # noqa: E402  (one list, the spec's)


@dataclass(frozen=True)
class Variant:
    criterion: str = "large_final"   # criteria.CRITERIA (unstructured only)
    reinit: str = "rewind"           # criteria.REINITS
    masked_weights: str = "zero"     # criteria.MASKED_WEIGHTS
    structure: str = "unstructured"  # "units": whole neurons (fc) / filters (conv) by norm
    norm: str = "l1"                 # structured.NORMS

    def validate(self) -> None:
        for value, allowed, what in ((self.criterion, criteria.CRITERIA, "criterion"),
                                     (self.reinit, criteria.REINITS, "reinit"),
                                     (self.masked_weights, criteria.MASKED_WEIGHTS, "masked_weights"),
                                     (self.structure, STRUCTURES, "structure"), (self.norm, structured.NORMS, "norm")):
            if value not in allowed:
                raise ValueError(f"{what}: unknown choice {value!r}; choose one of {', '.join(allowed)}")

    @property
    def name(self) -> str:
        """The branch's directory and event network name, e.g. 'variant_large_init-reshuffled'."""
        parts = [self.criterion if self.structure == "unstructured" else f"units_{self.norm}"]
        if self.reinit != "rewind":
            parts.append(self.reinit)
        if self.masked_weights != "zero":
            parts.append(self.masked_weights)
        return "variant_" + "-".join(parts)


def variant_mask(run, variant: Variant, previous_mask, trained: dict, started_from: dict):
    """The next mask of `variant`: prune `previous_mask` by the run's fractions and scope, ranking
    the survivors by the variant's criterion on `trained` against the weights their training
    `started_from`, or its units by norm."""
    spec = run.spec.pruning
    fraction, layer_fractions = run.round_fractions()
    if variant.structure == "units":
        info = run.data.info
        names = [n for n in structured.structured_prunable_names(run.spec.model, info.input_shape, info.num_classes)
                 if n in previous_mask]
        return structured.prune_units(previous_mask, trained, fraction, names=names, norm=variant.norm,
                                      scope=spec.scope, layer_fractions=layer_fractions)
    scores = criteria.criterion_scores(variant.criterion, started_from, trained, list(previous_mask))
    return rules.prune_by_scores(previous_mask, scores, fraction, spec.scope, layer_fractions)


def round_start_state(run, variant: Variant, round_index: int, mask, base: dict) -> dict:
    """`base` with the survivors of `mask` re-initialised as `variant` says (one seeded draw per
    round, so θk for training and θ0 for the supermask get the same permutation)."""
    return criteria.reinit_survivors(variant.reinit, base, mask, model_name=run.spec.model,
                                     generator=generator(run.spec.init_seed, "reinit", variant.name, round_index))


def round_started_from(run, variant: Variant, round_index: int, mask) -> dict:
    """The weights round `round_index` of `variant` trained from: θ0 for the dense round 0, else
    θk re-initialised by the variant (what the next round's criterion compares with)."""
    if round_index == 0:
        return run.theta_init()
    return round_start_state(run, variant, round_index, mask, run.theta_rewind())


def train_variant_round(run, variant: Variant, round_index: int, previous_mask, trained: dict, trained_from: dict):
    """Round r of `variant` from round r-1's mask, trained weights and the weights they trained
    from: prune, re-initialise the survivors from θk, score the supermask at θ0, train k..T.
    Returns (segment, record, mask, model)."""
    mask = variant_mask(run, variant, previous_mask, trained, trained_from)
    frozen = variant.masked_weights == "frozen_init"
    untrained = round_start_state(run, variant, round_index, mask, run.theta_init())
    supermask = criteria.supermask_score(run.model_with(untrained), mask, run.data.test_x, run.data.test_y,
                                         frozen_values=untrained if frozen else None)
    state = round_start_state(run, variant, round_index, mask, run.theta_rewind())
    model = run.model_with(state)
    segment, record = run.train_round(round_index, variant.name, model, mask, run.rewind_iteration,
                                      frozen_values=state if frozen else None)
    record.update({"variant": asdict(variant), "supermask_test_accuracy": supermask})  # the record holds the costs
    return segment, record, mask, model
