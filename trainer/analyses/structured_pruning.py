"""Structured pruning on a finished IMP run: whole neurons (fc) and filters (conv) by L1/L2 norm.

Each norm is one chain of rounds branching off the run's dense round 0 (as the masking
criteria are): round r removes the run's fraction of the surviving units of every
structurally prunable layer (all conv/linear weights but the output layer's; per-layer
overrides and scope as in the run's spec), rewinds the survivors to θk and trains k..T.
Every round reports its cost beside its sparsity: parameters and multiply-accumulates of
the dense architecture, of the surviving weights, and of the shrunk dense-equivalent
network (trainer.pruning.structured.count_flops_and_parameters); the run's tickets get theirs too.
A weight survives only between two live units (trainer.pruning.structured.effective_mask): a pruned
neuron also removes its column in the next layer, so % remaining is the effective fraction.
"""
from __future__ import annotations

from trainer import events
from trainer.analyses.common import AnalysisContext, execute
from trainer.analyses.masking_criteria import RESULTS_VERSION as CHAINS_VERSION, run_chains
from trainer.analyses.params import Param
from trainer.imp.variants import Variant
from trainer.pruning import structured
from trainer.spec import SpecError

NAME = "structured_pruning"
# run_chains' results version plus one: % remaining counts only weights between live units, and dead
# units' biases and batch norms train at 0 (trainer.pruning.structured), so older results mean something else
RESULTS_VERSION = CHAINS_VERSION + 1

PARAMS = (
    Param("norms", "str_list", ("l1",), "Unit ranking: l1 or l2 norm of each neuron's/filter's surviving weights.",
          choices=structured.NORMS, unordered=True),
    Param("rounds", "int", None, "Pruned rounds per chain; default: the run's.", minimum=1, maximum=100, optional=True),
)


def run_structured_pruning(run_path, norms=("l1",), rounds=None, *, callback: events.Callback = events.ignore,
                           data_dir=None, stop_requested=lambda: False) -> dict:
    """Result as masking_criteria's: {"variants": {"variant_units_l1": {...}}, "ticket": [...], "rounds"}."""
    return execute(NAME, PARAMS, run_path, {"norms": list(norms), "rounds": rounds}, _body, callback=callback,
                   data_dir=data_dir, stop_requested=stop_requested, version=RESULTS_VERSION)


def _body(context: AnalysisContext) -> dict:
    if not context.params["norms"]:
        raise SpecError("norms", "choose at least one")
    variants = [Variant(structure="units", norm=norm) for norm in context.params["norms"]]
    return run_chains(context, variants, context.params["rounds"])
