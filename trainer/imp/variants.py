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
network's cost (trainer.pruning.structured.count_flops_and_parameters). An IMP run with a criterion or
unit structure in its spec prunes with `variant_mask`; the masking-criteria study
(trainer.analyses.masking_criteria) trains the variants' chains.

The default variant (large_final, rewind, zero, unstructured) reproduces the ticket's rounds.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.pruning import criteria, rules, structured
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
