"""Early-bird tickets (You et al. 2020) of a batch-norm model, beside a finished IMP run of it.

One dense training run from the run's θ0 records the channel mask (top 1-p of |γ| over all
batch norms) after every epoch; the early-bird epoch is the first at which the last `window`
consecutive mask distances are below `threshold`. The early-bird ticket (that mask as filter
+ batch-norm masks, from θ0) trains like any ticket and is compared with a one-shot IMP ticket
at the same effective sparsity (weights between two live units; trainer.pruning.structured) and with the
run's nearest IMP round. trainer.early_bird does the work.
"""
from __future__ import annotations

import torch

from trainer import datasets, early_bird, events, models
from trainer.analyses.common import AnalysisContext, Cancelled, execute
from trainer.analyses.params import Param
from trainer.spec import SpecError

NAME = "early_bird"
# % remaining counts only weights between live units and one-shot IMP
# is pruned to that effective fraction (trainer.pruning.structured): older results mean something else
RESULTS_VERSION = 2

PARAMS = (
    Param("prune_fraction", "float", 0.5, "Fraction p of all batch-norm channels pruned (smallest |γ|).",
          minimum=0.01, maximum=0.99),
    Param("threshold", "float", 0.1, "Mask distance under which consecutive epochs count as settled.",
          minimum=0.0, maximum=1.0),
    Param("window", "int", 5, "Consecutive distances that must all be under the threshold.", minimum=1, maximum=100),
    Param("bn_l1", "float", 1e-4, "L1 penalty on the batch-norm scales during the search (network slimming).",
          minimum=0.0, maximum=1.0),
    Param("train_examples", "int", None, "Train on the first n training examples only (a quick run); default: all.",
          minimum=1, maximum=1_000_000, optional=True),
    Param("test_examples", "int", None, "Evaluate on the first n test examples only; default: all.",
          minimum=1, maximum=1_000_000, optional=True),
    Param("one_shot_imp", "bool", True, "Also train a one-shot IMP ticket at the early-bird ticket's sparsity."),
)


def run_early_bird(run_path, prune_fraction=0.5, threshold=0.1, window=5, bn_l1=1e-4, train_examples=None,
                   test_examples=None, one_shot_imp=True, *, callback: events.Callback = events.ignore, data_dir=None,
                   stop_requested=lambda: False) -> dict:
    """Result: trainer.early_bird.early_bird_on's dict (epochs, consecutive_distances, distance_matrix,
    early_bird_epoch, search, ticket, one_shot_imp, imp = the run's nearest round)."""
    params = {"prune_fraction": prune_fraction, "threshold": threshold, "window": window, "bn_l1": bn_l1,
              "train_examples": train_examples, "test_examples": test_examples, "one_shot_imp": one_shot_imp}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested, version=RESULTS_VERSION)


def _body(context: AnalysisContext) -> dict:
    spec = context.run_dir.spec
    with torch.device("meta"):  # layers only, to look for batch norms
        info = datasets.DATASETS[spec.dataset].info
        architecture = models.MODELS[spec.model].architecture(info.input_shape, info.num_classes)
    if not early_bird.bn_producers(architecture):
        raise SpecError("run_dir", f"{spec.model} has no batch norm; early-bird tickets need a model with it "
                                   f"(vgg16, resnet20)")
    if (done := context.reuse_finished()) is not None:
        return done
    context.start()
    finished = [r for r in context.run_dir.records() if r["status"] == "finished" and r["round"] > 0]
    result = early_bird.early_bird_on(context.run, **context.params,
                                      imp_run_dir=context.run_dir.path if finished else None,
                                      callback=context.callback, stop_requested=context.stop_requested)
    if result["search"]["status"] == "cancelled" or result.get("ticket", {}).get("status") == "cancelled":
        raise Cancelled()
    return context.finish(result)
