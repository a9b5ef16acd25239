"""Presets of the new-experiment form and the defaults each architecture starts from.

A preset is a partial spec (nested dict) applied over ExperimentSpec's defaults. The paper presets
follow the published settings; those marked "scaled down" shorten training so a CPU finishes them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from trainer import models
from trainer.spec import ExperimentSpec

# Frankle & Carbin (2019), Figure 2 and Appendix: Adam, batch 60.
_LENET_TRAINING = {"optimizer": "adam", "lr": 0.0012, "batch_size": 60}


def _paper_pruning(model: str) -> dict:
    # One home for the papers' pruning rates: the model registry (a bare spec gets the same).
    return models.paper_pruning_fields(model, (3, 32, 32), 10)


# Frankle et al. (2020, "Linear mode connectivity and the LTH"): SGD, 63K iterations, global pruning,
# late rewinding. The rewind point here is illustrative; the paper sweeps it.
_CIFAR_SGD_TRAINING = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001, "batch_size": 128,
                       "training_steps": "63000it", "lr_schedule": "multistep",
                       "lr_milestones": ["32000it", "48000it"], "lr_gamma": 0.1, "eval_interval": "2000it"}

# Yu, Edunov, Tian & Morcos (2020, "Playing the lottery with rewards and multiple languages"): late rewinding,
# 20% of each layer per round. Scaled down for a CPU: a 2-layer model on the embedded Python docs, 300 iterations
# of Adam per round, rewind to iteration 30 (10% of training); A2C on CartPole for 50 updates per round.
_CONSTANT_ADAM = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant",
                  "lr_milestones": []}
_LM_TRAINING = {**_CONSTANT_ADAM, "lr": 0.001, "batch_size": 32, "context_length": 64, "training_steps": "300it",
                "eval_interval": "50it", "metrics_interval": 10}
_A2C_TRAINING = {**_CONSTANT_ADAM, "lr": 0.003, "training_steps": "50it", "eval_interval": "10it",
                 "metrics_interval": 5}
_LAYERWISE_20 = {"scope": "layerwise", "fraction": 0.2, "layer_fractions": {}, "prunable_layers": []}

ARCHITECTURE_DEFAULTS: dict[str, dict] = {
    "lenet_300_100": {"training": {**_LENET_TRAINING, "training_steps": "50000it", "eval_interval": "1000it",
                                   "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant",
                                   "lr_milestones": []},
                      "pruning": _paper_pruning("lenet_300_100"), "rewind_step": "0it"},
    "conv2": {"training": {"optimizer": "adam", "lr": 0.0002, "batch_size": 60, "training_steps": "20000it",
                           "eval_interval": "1000it", "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant",
                           "lr_milestones": []},
              "pruning": _paper_pruning("conv2"), "rewind_step": "0it"},
    "conv4": {"training": {"optimizer": "adam", "lr": 0.0003, "batch_size": 60, "training_steps": "25000it",
                           "eval_interval": "1000it", "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant",
                           "lr_milestones": []},
              "pruning": _paper_pruning("conv4"), "rewind_step": "0it"},
    "conv6": {"training": {"optimizer": "adam", "lr": 0.0003, "batch_size": 60, "training_steps": "30000it",
                           "eval_interval": "1000it", "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant",
                           "lr_milestones": []},
              "pruning": _paper_pruning("conv6"), "rewind_step": "0it"},
    "vgg16": {"training": _CIFAR_SGD_TRAINING, "pruning": _paper_pruning("vgg16"), "rewind_step": "2000it"},
    "resnet20": {"training": _CIFAR_SGD_TRAINING, "pruning": _paper_pruning("resnet20"), "rewind_step": "2000it"},
    **{model: {"training": _LM_TRAINING, "pruning": _LAYERWISE_20, "rewind_step": "30it"}
       for model in ("transformer_lm", "transformer_lm_untied", "lstm_lm")},
    "actor_critic": {"training": _A2C_TRAINING, "pruning": _LAYERWISE_20, "rewind_step": "5it"},
}


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    note: str
    overrides: dict = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.overrides.get("dataset", ExperimentSpec().dataset)

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec.from_dict(self.overrides)


def _with_architecture(model: str, dataset: str, **extra) -> dict:
    overrides = copy.deepcopy(ARCHITECTURE_DEFAULTS[model])
    overrides.update({"model": model, "dataset": dataset})
    for key, value in extra.items():
        if isinstance(value, dict):
            overrides.setdefault(key, {}).update(value)
        else:
            overrides[key] = value
    return overrides


PRESETS: dict[str, Preset] = {preset.key: preset for preset in [
    Preset("quick_demo", "Quick demo: LeNet-300-100 on synthetic data",
           "Seconds on a CPU: 300 iterations per round, 3 rounds, random-reinit control.",
           _with_architecture("lenet_300_100", "synthetic",
                              training={"training_steps": "300it", "eval_interval": "50it", "metrics_interval": 10},
                              pruning={"rounds": 3}, controls=["random_reinit"])),
    Preset("lenet_fashion_scaled", "Frankle & Carbin LeNet-300-100, Fashion-MNIST (scaled down)",
           "The paper's optimizer and pruning rates (20% per round, output layer 10%); 2 epochs per round "
           "instead of 50K iterations, 8 rounds, random-reinit control.",
           _with_architecture("lenet_300_100", "fashion_mnist",
                              training={"training_steps": "2ep", "eval_interval": "250it"},
                              pruning={"rounds": 8}, controls=["random_reinit"])),
    Preset("lenet_mnist", "Frankle & Carbin LeNet-300-100, MNIST",
           "As in the paper: Adam 1.2e-3, batch 60, 50K iterations per round, 20% per round (output 10%), "
           "15 rounds, both controls.",
           _with_architecture("lenet_300_100", "mnist", pruning={"rounds": 15},
                              controls=["random_reinit", "random_prune"])),
    Preset("conv2_cifar", "Frankle & Carbin Conv-2, CIFAR-10",
           "As in the paper: Adam 2e-4, 20K iterations, conv 10% / fc 20% / output 10% per round.",
           _with_architecture("conv2", "cifar10", pruning={"rounds": 15}, controls=["random_reinit"])),
    Preset("conv2_cifar_scaled", "Frankle & Carbin Conv-2, CIFAR-10 (scaled down)",
           "The paper's optimizer and rates; 2 epochs per round, 6 rounds.",
           _with_architecture("conv2", "cifar10", training={"training_steps": "2ep", "eval_interval": "250it"},
                              pruning={"rounds": 6}, controls=["random_reinit"])),
    Preset("conv4_cifar", "Frankle & Carbin Conv-4, CIFAR-10",
           "As in the paper: Adam 3e-4, 25K iterations, conv 10% / fc 20% / output 10% per round.",
           _with_architecture("conv4", "cifar10", pruning={"rounds": 15}, controls=["random_reinit"])),
    Preset("conv6_cifar", "Frankle & Carbin Conv-6, CIFAR-10",
           "As in the paper: Adam 3e-4, 30K iterations, conv 15% / fc 20% / output 10% per round.",
           _with_architecture("conv6", "cifar10", pruning={"rounds": 15}, controls=["random_reinit"])),
    Preset("vgg16_cifar_rewind", "VGG-16, CIFAR-10, late rewinding (after Frankle et al. 2020)",
           "SGD 0.1 with momentum, 63K iterations, LR x0.1 at 32K and 48K, global 20% per round "
           "(output layer not pruned), rewind to iteration 2000.",
           _with_architecture("vgg16", "cifar10", pruning={"rounds": 12}, controls=["random_reinit"])),
    Preset("resnet20_cifar_rewind", "ResNet-20, CIFAR-10, late rewinding (after Frankle et al. 2020)",
           "SGD 0.1 with momentum, 63K iterations, LR x0.1 at 32K and 48K, global 20% per round "
           "(output layer not pruned), rewind to iteration 2000.",
           _with_architecture("resnet20", "cifar10", pruning={"rounds": 8}, controls=["random_reinit"])),
    Preset("transformer_lm_python_docs", "Transformer LM on the Python docs, late rewinding, 8 rounds "
                                         "(after Yu et al. 2020, scaled down)",
           "Language modelling, test perplexity (lower is better): Adam 1e-3, batch 32, context 64, "
           "300 iterations per round, rewind to iteration 30, 20% of each layer per round, random-reinit control.",
           _with_architecture("transformer_lm", "python_docs", pruning={"rounds": 8}, controls=["random_reinit"])),
    Preset("a2c_cartpole", "A2C on CartPole-v1, 8 rounds, 3 replicates (after Yu et al. 2020, scaled down)",
           "Reinforcement learning, mean return (higher is better): Adam 3e-3, 50 updates per round, "
           "evaluated every 10, rewind to update 5, 20% of each layer per round.",
           _with_architecture("actor_critic", "cartpole", pruning={"rounds": 8}, replicates=3)),
]}

DEFAULT_PRESET = "lenet_fashion_scaled"
