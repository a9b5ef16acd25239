"""Pruning a wider random network approximates a target network better.

Malach, Yehudai, Shalev-Shwartz & Shamir 2020 (ICML), "Proving the Lottery Ticket Hypothesis: Pruning is All
You Need", Theorem 2.1 and Section 4: a ReLU target of depth l is approximated to any accuracy by a
weight-subnetwork of a random network of depth 2l once the random network is wide enough (polynomial width);
the approximation error falls as the width grows.

Protocol (small): the dataset of the edge-popup check's LeNet run (its one-shot run is shared; only its data
is used), then trainer.analyses.malach: a depth-2 target MLP (32 hidden units) trained 2 epochs, and random
depth-4 MLPs of hidden widths 25..400 whose top-50% weight-subnetworks are trained (scores only, one epoch)
to match the target's logits (MSE). Measured: the test MSE relative to the target's mean square logit.

Verdict: holds when the widest network's relative error is below 0.9 × the narrowest's, fails when it is not
below the narrowest's; undecided in between. Reported beside it (not judged): whether every step up in width
lowered the error, the agreement with the target, and part (b)'s two-layer accuracies.
"""
from __future__ import annotations

from trainer.analyses import malach
from trainer.reproduce import edge_popup_subnetworks
from trainer.reproduce.base import FAILS, HOLDS, UNDECIDED, Check, Decision, Finding, Step, decide, missing

NAME = "malach_width"
RATIO = 0.9  # the widest net's error must fall below 90% of the narrowest's

# target training, score training, widths
BUDGET_SETTINGS = {
    "tiny": ("30it", "30it", (10, 100)),
    "small": ("2ep", "1ep", (25, 50, 100, 200, 400)),
    "large": ("5ep", "5ep", (25, 50, 100, 200, 400, 800)),
}


def steps(budget: str, data_dir) -> list[Step]:
    run = edge_popup_subnetworks.steps(budget, data_dir)[0]
    target_iterations, iterations, widths = BUDGET_SETTINGS[budget]
    params = {"target_iterations": target_iterations, "iterations": iterations, "widths": list(widths)}
    return [run, Step("target MLP, its approximations by width, two-layer models", run.spec,
                      1 + len(widths) * (1 + len(malach.TWO_LAYER_MODELS)), analysis=malach.NAME, params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    _, analysis = session.run_all(protocol_steps)
    return measurements(analysis)


def measurements(analysis: dict) -> dict:
    entries = sorted(analysis["approximation"], key=lambda entry: entry["width"])
    widths = [entry["width"] for entry in entries]
    errors = [entry["relative_mse"] for entry in entries]
    known = [error for error in errors if error is not None]
    measured = {"widths": widths, "relative_mse": errors, "agreement": [entry["agreement"] for entry in entries],
                "narrowest_relative_mse": errors[0] if errors else None,
                "widest_relative_mse": errors[-1] if errors else None,
                "rises": sum(later > earlier for earlier, later in zip(known, known[1:])),
                "target_accuracy": analysis["target"]["test_accuracy"]}
    chart = {"title": "Malach et al.: approximating a target by pruning random nets of growing width",
             "x_label": "hidden width of the random depth-2l net", "y_label": "test MSE / target's mean square logit",
             "log_x": True, "series": [{"name": "weight-subnetwork (relative MSE)", "x": widths, "y": errors}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    narrow, wide = measured["narrowest_relative_mse"], measured["widest_relative_mse"]
    if narrow is None or wide is None or len(measured["widths"]) < 2:
        return decide([missing("the narrowest and widest approximations")])
    text = (f"relative error {narrow:.3f} at width {measured['widths'][0]}, {wide:.3f} at width "
            f"{measured['widths'][-1]}; it rose at {measured['rises']} of {len(measured['widths']) - 1} steps")
    outcome = HOLDS if wide < RATIO * narrow else FAILS if wide >= narrow else UNDECIDED
    return decide([Finding(outcome, text)])


def summary(measured: dict) -> str:
    pairs = ", ".join(f"n={width}: {'-' if error is None else f'{error:.3f}'}"
                      for width, error in zip(measured["widths"], measured["relative_mse"]))
    return f"relative approximation error {pairs} (claim: falls as the random net widens)"


CHECK = Check(
    name=NAME, title="Malach et al.: wider random nets approximate a target better",
    claim="A depth-l ReLU target is approximated by pruning the weights of a random depth-2l network; the "
          "approximation error falls as the random network gets wider.",
    source="Malach, Yehudai, Shalev-Shwartz & Shamir 2020 (ICML), 'Proving the Lottery Ticket Hypothesis: Pruning "
           "is All You Need', Theorem 2.1 and Section 4",
    tolerance="Test MSE of the logits relative to the target's mean square logit. PASS when the widest random "
              "net's error < 0.9 × the narrowest's; FAIL when it is not below the narrowest's; INCONCLUSIVE otherwise.",
    steps=steps, measure=measure, judge=judge, match_fields=edge_popup_subnetworks.MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="The subnetwork is found by training scores (edge-popup, top 50% per layer), not by the theorem's "
          "construction; bias-free MLPs; a depth-2 target of 32 units; one seed.")
