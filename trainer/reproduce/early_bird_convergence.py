"""Early-bird tickets: the batch-norm channel mask converges early in training.

You, Li, Xu, Fu, Wang, Chen, Baraniuk, Wang & Lin 2020 (ICLR), "Drawing Early-Bird Tickets: Towards
More Efficient Training of Deep Networks", Section 3 (VGG16 and PreResNet101 on
CIFAR, 160 epochs, SGD 0.1 with drops at 50% and 75%): the channel mask from the largest |γ| (network
slimming's L1 on γ), compared epoch to epoch by normalised Hamming distance, settles (the last 5
distances below 0.1) within the first ~10-20% of the epochs.

Protocol (small): ResNet-20 (the batch-norm model of the registry small enough for a CPU) on 240
training examples (4 iterations of batch 60 per epoch) for 40 epochs, SGD momentum 0.9, learning rate
0.1 dropped tenfold at 50% and 75%, weight decay 1e-4; trainer.analyses.early_bird with the paper's
p = 0.5, threshold 0.1, window 5 and L1 1e-4 (it also trains the early-bird ticket from θ0).

Verdict on the early-bird epoch as a fraction of the epochs: holds when <= 20%; fails when > 40% or
when the mask never settles; undecided in between. The earliest possible early bird is epoch
window + 1, so a budget with fewer than 5 × (window + 1) epochs cannot show 20% and is undecided.
"""
from __future__ import annotations

from trainer.analyses import early_bird
from trainer.reproduce.base import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Check,
    Decision,
    Finding,
    Step,
    decide,
    full_spec,
    image_dataset,
    points,
)

NAME = "early_bird_convergence"
CLAIM_FRACTION = 0.2
FAIL_FRACTION = 0.4

# epochs, training examples, test examples, validation examples, window
BUDGET_SETTINGS = {"tiny": (4, 60, 60, 60, 2), "small": (40, 240, 300, 300, 5), "large": (80, 2000, 2000, 1000, 5)}
MATCH_FIELDS = ("model", "training.optimizer", "training.lr_schedule")


def early_bird_spec(budget: str, data_dir) -> dict:
    epochs, _, _, validation, _ = BUDGET_SETTINGS[budget]
    return full_spec({
        "model": "resnet20", "dataset": image_dataset(budget, "cifar10", data_dir), "device": "cpu",
        "validation_size": validation,
        "training": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 60,
                     "training_steps": f"{epochs}ep", "lr_schedule": "multistep",
                     "lr_milestones": [f"{epochs // 2}ep", f"{3 * epochs // 4}ep"], "lr_gamma": 0.1,
                     "eval_interval": "1ep", "metrics_interval": 10},
        "pruning": {"rounds": 1},
    })


def steps(budget: str, data_dir) -> list[Step]:
    _, train_examples, test_examples, _, window = BUDGET_SETTINGS[budget]
    params = {"prune_fraction": 0.5, "threshold": 0.1, "window": window, "bn_l1": 1e-4,
              "train_examples": train_examples, "test_examples": test_examples, "one_shot_imp": False}
    # the analysis needs only θ0 of the run directory: no IMP training (Session creates the directory)
    return [Step("early-bird search and ticket (ResNet-20)", early_bird_spec(budget, data_dir), 2,
                 analysis=early_bird.NAME, params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    [result] = session.run_all(protocol_steps)
    epochs = result["epochs"]
    found = result["early_bird_epoch"]
    ticket = result.get("ticket", {})
    measured = {
        "early_bird_epoch": found, "epochs": epochs[-1] if epochs else None, "window": result["window"],
        "early_bird_fraction": found / epochs[-1] if found and epochs else None,
        "search_test_accuracy": (result["search"].get("final") or {}).get("test_accuracy"),
        "ticket_test_accuracy": (ticket.get("final") or {}).get("test_accuracy"),
        "ticket_remaining_fraction": ticket.get("remaining_fraction"),
    }
    chart = {"title": "Distance between consecutive epochs' channel masks",
             "x_label": "epoch", "y_label": "normalised Hamming distance", "log_x": False,
             "series": [{"name": "mask distance (epoch e-1 to e)", "x": epochs[1:],
                         "y": result["consecutive_distances"]},
                        {"name": "threshold", "x": [epochs[0], epochs[-1]] if epochs else [],
                         "y": [result["threshold"]] * 2 if epochs else []}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    epochs, found = measured["epochs"], measured["early_bird_epoch"]
    if not epochs:
        return decide([Finding(UNDECIDED, "the search recorded no epoch")])
    if found is None:
        return decide([Finding(FAILS, f"the mask never settled within {epochs} epochs")])
    fraction = found / epochs
    text = f"early bird at epoch {found} of {epochs} ({100 * fraction:.0f}% of training)"
    earliest = (measured["window"] + 1) / epochs
    if fraction <= CLAIM_FRACTION:
        return decide([Finding(HOLDS, text)])
    if fraction > FAIL_FRACTION:
        return decide([Finding(FAILS, text)])
    if earliest > CLAIM_FRACTION:
        text += f"; the earliest possible early bird is {100 * earliest:.0f}% of this budget's epochs"
    return decide([Finding(UNDECIDED, text)])


def summary(measured: dict) -> str:
    if measured["early_bird_epoch"] is None:
        return f"no early bird within {measured['epochs']} epochs (claim: within the first ~10-20%)"
    return (f"early bird at epoch {measured['early_bird_epoch']} of {measured['epochs']} "
            f"({100 * measured['early_bird_fraction']:.0f}%); ticket {points(measured['ticket_test_accuracy'])} vs "
            f"search {points(measured['search_test_accuracy'])} (claim: within the first ~10-20% of epochs)")


CHECK = Check(
    name=NAME, title="Early-bird masks converge early",
    claim="The mask converges within the first ~10-20% of epochs.",
    source="You et al. 2020 (ICLR), 'Drawing Early-Bird Tickets', Section 3 (mask distance, early-bird detection)",
    tolerance="PASS when the early-bird epoch (the last 5 consecutive mask distances < 0.1) is within the first "
              "20% of the epochs; FAIL when it is after 40% or the mask never settles; INCONCLUSIVE in between.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("cifar10", "fashion_mnist"),
    notes="ResNet-20 on 240 training examples for 40 epochs instead of VGG16/PreResNet101 on CIFAR-10 for 160 "
          "(CPU budget); Fashion-MNIST when CIFAR-10 is not installed.")
