"""The experiment spec: typed dataclasses with a help string per field.

One spec describes one IMP run. It round-trips through JSON, validates every
field with an error that names it, and hashes to the name of its run
directory. The CLI flags and the web form are generated from the same field
metadata, so the three cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from trainer import datasets, models
from trainer.steps import Step, StepFormatError, full_batches


class SpecError(ValueError):
    """A bad spec value. `field` is the dotted path of the offending field."""

    def __init__(self, field_path: str, message: str):
        self.field = field_path
        self.message = message
        super().__init__(f"{field_path}: {message}")


def _option(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
            minimum: float | None = None, maximum: float | None = None,
            exclusive_minimum: float | None = None, exclusive_maximum: float | None = None,
            step: bool = False, default_factory: Any = dataclasses.MISSING):
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
                "exclusive_minimum": exclusive_minimum, "exclusive_maximum": exclusive_maximum,
                "step": step}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# The most iterations one experiment may train in all (iterations per round × trainings): about 15
# times a paper-scale ResNet-20 experiment with 20 rounds, 16 replicates and both controls (63K × 21 × 16 × 3).
MAX_TOTAL_ITERATIONS = 1_000_000_000

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "multistep")
PRUNING_STRATEGIES = ("magnitude", "random")
PRUNING_SCOPES = ("layerwise", "global")
PRUNING_SCHEDULES = ("iterative", "one_shot")
CONTROL_KINDS = ("random_reinit", "random_reinit_from_scratch", "random_prune")
MASK_CRITERIA = ("large_final", "large_init", "magnitude_increase", "movement", "large_final_same_sign")
PRUNING_STRUCTURES = ("unstructured", "units")
UNIT_NORMS = ("l1", "l2")
_CRITERIA_ONCE_SCORED_AGAINST_THETA_K = ("large_init", "magnitude_increase", "movement")


@dataclass
class TrainingSpec:
    optimizer: str = _option("sgd", help="Optimizer: 'sgd' (with momentum) or 'adam'.", choices=OPTIMIZERS)
    lr: float = _option(0.1, help="Peak learning rate.", exclusive_minimum=0.0, maximum=10.0)
    momentum: float = _option(0.0, help="SGD momentum (ignored by Adam).", minimum=0.0, exclusive_maximum=1.0)
    weight_decay: float = _option(0.0, help="L2 weight decay.", minimum=0.0, maximum=1.0)
    batch_size: int = _option(60, help="Examples per iteration.", minimum=1, maximum=65536)
    training_steps: str = _option("20ep", help="Training length per round, e.g. '50000it' or '40ep'.", step=True)
    lr_schedule: str = _option("constant", help="'constant' or 'multistep' (multiply by lr_gamma at each milestone).",
                               choices=LR_SCHEDULES)
    lr_milestones: list[str] = _option(
        help="Steps where a multistep schedule multiplies the LR by lr_gamma, e.g. ['80ep', '120ep'].",
        default_factory=list, step=True)
    lr_gamma: float = _option(0.1, help="LR factor at each milestone.", exclusive_minimum=0.0, maximum=1.0)
    warmup_steps: str = _option("0it", help="Linear LR warmup from 0 over this many steps.", step=True)
    eval_interval: str = _option("1ep", help="Evaluate validation and test sets every this many steps.", step=True)
    metrics_interval: int = _option(100, help="Report the running train loss every this many iterations.",
                                    minimum=1, maximum=1_000_000)
    context_length: int = _option(64, help="Language modelling only: tokens per training sequence (the model "
                                           "predicts each next token from the ones before it in the sequence).",
                                  minimum=2, maximum=4096)


@dataclass
class ReinforcementSpec:
    """Reinforcement learning only (A2C, trainer.rl): one iteration = one update on envs × rollout_steps steps."""
    envs: int = _option(8, help="Environments stepped in parallel (vectorised) per rollout.", minimum=1, maximum=256)
    rollout_steps: int = _option(32, help="Steps per environment in one rollout (one training iteration).",
                                 minimum=1, maximum=4096)
    gamma: float = _option(0.99, help="Discount factor of the returns.", minimum=0.0, maximum=1.0)
    gae_lambda: float = _option(0.95, help="λ of generalised advantage estimation (1 = Monte-Carlo returns).",
                                minimum=0.0, maximum=1.0)
    value_coef: float = _option(0.5, help="Weight of the value loss.", minimum=0.0, maximum=100.0)
    entropy_coef: float = _option(0.01, help="Weight of the entropy bonus.", minimum=0.0, maximum=10.0)
    eval_episodes: int = _option(10, help="Seeded evaluation episodes per split (validation and test use "
                                          "different seeds); the metric is their mean return.",
                                 minimum=1, maximum=1000)


@dataclass
class PruningSpec:
    strategy: str = _option("magnitude", help="'magnitude' (keep largest |w|) or 'random'.", choices=PRUNING_STRATEGIES)
    scope: str = _option(
        "layerwise",
        help="'layerwise' (each layer loses `fraction`) or 'global' (one threshold over all prunable layers).",
        choices=PRUNING_SCOPES)
    fraction: float = _option(0.2, help="Fraction of the surviving weights pruned per round.",
                              exclusive_minimum=0.0, exclusive_maximum=1.0)
    layer_fractions: dict[str, float] = _option(
        help="Per-layer overrides of `fraction`, e.g. {'fc3.weight': 0.1} for the output layer at half rate. "
             "Overridden layers are pruned on their own even under global scope.",
        default_factory=dict, exclusive_minimum=0.0, exclusive_maximum=1.0)
    prunable_layers: list[str] = _option(
        help="Parameter names that may be pruned; empty = every conv/linear weight of the model.",
        default_factory=list)
    rounds: int = _option(10, help="Pruning rounds after the dense round 0.", minimum=1, maximum=100)
    criterion: str = _option(
        "large_final",
        help="Which survivors to keep (Zhou et al. 2019): 'large_final' |w_T| (IMP), "
             "'large_init' |w_0|, 'magnitude_increase' |w_T|-|w_0|, 'movement' |w_T-w_0|, "
             "'large_final_same_sign' |w_T| where w_T kept the sign of w_0 (sign "
             "changers go first). w_0 = the weights the pruned round started from: "
             "θ0 for round 0, θk after.",
        choices=MASK_CRITERIA)
    structure: str = _option(
        "unstructured",
        help="'unstructured' (single weights) or 'units' (whole neurons of fc layers and "
             "filters of conv layers, ranked by `unit_norm`; the output layer is not pruned).",
        choices=PRUNING_STRUCTURES)
    unit_norm: str = _option("l1", help="Norm that ranks neurons/filters when structure is 'units'.",
                             choices=UNIT_NORMS)
    schedule: str = _option("iterative", help="'iterative' (prune `fraction` each round) or 'one_shot' "
                                              "(one round straight to the sparsity `rounds` iterative rounds reach).",
                            choices=PRUNING_SCHEDULES)


@dataclass
class ExperimentSpec:
    model: str = _option("lenet_300_100", help="Architecture (see `python -m trainer list`).")
    dataset: str = _option("fashion_mnist", help="Dataset (see `python -m trainer list`).")
    training: TrainingSpec = field(default_factory=TrainingSpec, metadata={"help": "Training hyperparameters."})
    pruning: PruningSpec = field(default_factory=PruningSpec, metadata={"help": "Pruning schedule."})
    reinforcement: ReinforcementSpec = field(default_factory=ReinforcementSpec,
                                             metadata={"help": "Reinforcement-learning agent settings."})
    rewind_step: str = _option(
        "0it", help="Rewind survivors to the weights at this step of round 0 ('0it' = θ0; >0 = late rewinding).",
        step=True)
    init_seed: int = _option(0, help="Seed of the initial weights θ0.", minimum=0, maximum=2**31 - 1)
    data_seed: int = _option(0, help="Seed of the data order (and augmentation).", minimum=0, maximum=2**31 - 1)
    validation_size: int | None = _option(None, help="Training examples held out for validation (early stopping); "
                                                     "null = 5000, or a sixth of a smaller training set.",
                                          minimum=0, maximum=1_000_000)
    device: str = _option("auto", help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    controls: list[str] = _option(
        help="Control experiments run on the finished IMP run: 'random_reinit' (the round's mask "
             "on a fresh init, trained k..T like the ticket), 'random_reinit_from_scratch' (the same, "
             "trained 0..T: Frankle & Carbin's control), 'random_prune' (a random mask of the "
             "round's per-layer sparsity on θk).",
        default_factory=list, choices=CONTROL_KINDS)
    control_rounds: list[int] = _option(help="Rounds that get controls; empty = every pruned round.",
                                        default_factory=list, minimum=1, maximum=100)
    replicates: int = _option(
        1,
        help="Independent copies of the whole experiment (ticket and controls), each with its own "
             "init and data-order seeds; replicate 0 uses init_seed and data_seed. "
             "Charts show their mean and min-max band. Adding replicates to a run keeps its rounds.",
        minimum=1, maximum=16)
    stack_size: int | None = _option(
        None,
        help="Networks trained together in one step (replicates, controls); "
             "null = chosen from the model and device (CPU: 8 for MLPs, 1 for convnets).",
        minimum=1, maximum=64)

    # ---- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ExperimentSpec:
        spec = _build(cls, _with_paper_pruning(data), "")
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> ExperimentSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError("spec",
                            f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
        return cls.from_dict(data)

    # ---- identity ---------------------------------------------------------------------
    def run_hash(self) -> str:
        """Hash of the non-default fields that change the ticket's results.

        Controls and replicates are branches of a run (replicate 0 is the run itself), so
        they do not rename it; a new field
        with a no-op default leaves old hashes (and run directories) valid.
        """
        changed = _non_default(self, ExperimentSpec())
        for branch_field in ("controls", "control_rounds", "replicates", "stack_size"):
            changed.pop(branch_field, None)
        if self.pruning.criterion in _CRITERIA_ONCE_SCORED_AGAINST_THETA_K and Step.parse(self.rewind_step).amount > 0:
            # Their round-1 masks once compared the dense weights with θk instead of θ0: such a run gets a
            # new directory rather than resuming masks of the old definition.
            changed["criterion_start"] = "round_start"
        canonical = json.dumps(changed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def run_name(self) -> str:
        return f"{self.model}_{self.dataset}_{self.run_hash()}"

    # ---- validation beyond single fields ----------------------------------------------
    def validate(self) -> None:
        _check_fields(self, "")

        if self.model not in models.MODELS:
            raise SpecError("model", f"unknown model {self.model!r}; choose one of {', '.join(models.MODELS)}")
        if self.dataset not in datasets.DATASETS:
            raise SpecError("dataset",
                            f"unknown dataset {self.dataset!r}; choose one of {', '.join(datasets.DATASETS)}")
        if not (self.device in ("auto", "cpu", "cuda") or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise SpecError("device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        info = datasets.DATASETS[self.dataset].info
        self._check_task(info)
        if self.validation_size is not None and self.validation_size >= info.train_size:
            raise SpecError("validation_size",
                            f"must be smaller than the {info.train_size} training examples of {self.dataset}")
        parameter_names = models.prunable_parameter_names(self.model, info.input_shape, info.num_classes)
        for index, name in enumerate(self.pruning.prunable_layers):
            if name not in parameter_names:
                raise SpecError(f"pruning.prunable_layers[{index}]",
                                f"{name!r} is not a prunable layer of {self.model}; "
                                f"choose from {', '.join(parameter_names)}")
        allowed = self.pruning.prunable_layers or parameter_names
        for name in self.pruning.layer_fractions:
            if name not in allowed:
                raise SpecError(f"pruning.layer_fractions.{name}",
                                f"{name!r} is not a prunable layer of {self.model}; choose from {', '.join(allowed)}")
        if self.pruning.strategy != "magnitude" and (self.pruning.criterion != "large_final"
                                                     or self.pruning.structure != "unstructured"):
            raise SpecError("pruning.strategy", "criterion and structure rank weights: they need strategy 'magnitude'")
        milestones = [Step.parse(text) for text in self.training.lr_milestones]
        if len({m.unit for m in milestones}) > 1:
            raise SpecError("training.lr_milestones", "use one unit ('it' or 'ep') for all milestones")
        if [m.amount for m in milestones] != sorted(m.amount for m in milestones):
            raise SpecError("training.lr_milestones", "milestones must be in increasing order")
        if self.training.lr_schedule == "constant" and milestones:
            raise SpecError("training.lr_milestones", "milestones need lr_schedule 'multistep'")
        if Step.parse(self.training.training_steps).amount < 1:
            raise SpecError("training.training_steps", "must be at least 1 iteration")
        if Step.parse(self.training.eval_interval).amount < 1:
            raise SpecError("training.eval_interval", "must be at least 1 iteration")
        for index, round_number in enumerate(self.control_rounds):
            if round_number > self.rounds_total():
                raise SpecError(f"control_rounds[{index}]",
                                f"round {round_number} does not exist; the run has rounds 1..{self.rounds_total()}")
        # Early, with the registry's size: a form, the API and the CLI refuse it before any data is loaded.
        self.check_workload(self.iterations_per_epoch())

    def task(self) -> str:
        """The task of the run's dataset (trainer.tasks): 'classification', 'language_modeling' or
        'reinforcement_learning'."""
        return datasets.DATASETS[self.dataset].info.task if self.dataset in datasets.DATASETS else "classification"

    def _check_task(self, info) -> None:
        model_task = models.MODELS[self.model].task
        if model_task != info.task:
            suitable = [name for name, entry in models.MODELS.items() if entry.task == info.task]
            raise SpecError("model", f"{self.model} is a {model_task.replace('_', ' ')} model and {self.dataset} is a "
                                     f"{info.task.replace('_', ' ')} dataset; choose one of {', '.join(suitable)}")
        if info.task != "classification" and self.validation_size is not None:
            raise SpecError("validation_size", f"{self.dataset} has its own validation split (corpora) or "
                                               "seeded validation episodes (environments); leave it empty")
        if info.task == "language_modeling" and self.training.context_length > info.input_shape[0]:
            raise SpecError("training.context_length", f"{self.model} reads at most {info.input_shape[0]} tokens")
        if info.task != "language_modeling" and self.training.context_length != TrainingSpec.context_length:
            raise SpecError("training.context_length", "applies to language modelling only")
        if info.task != "reinforcement_learning" and self.reinforcement != ReinforcementSpec():
            raise SpecError("reinforcement", "applies to reinforcement learning only")
        if info.task == "reinforcement_learning":
            steps = {"training.training_steps": self.training.training_steps, "rewind_step": self.rewind_step,
                     "training.eval_interval": self.training.eval_interval,
                     "training.warmup_steps": self.training.warmup_steps}
            for name, text in steps.items():
                if Step.parse(text).unit == "ep":
                    raise SpecError(name, "an environment has no epochs: give iterations ('500it'; one iteration "
                                          "is one update on a rollout)")
        if info.task != "classification" and self.stack_size not in (None, 1):
            raise SpecError("stack_size", f"{info.task.replace('_', ' ')} networks train one at a time")

    def resolved_validation_size(self, train_size: int | None = None) -> int:
        """Validation examples held out of a training set of `train_size` examples (default: the
        registry's size; a run passes the size of the data it actually loaded). Corpora and environments
        bring their own validation split: none is held out of their training data."""
        if self.task() != "classification":
            return 0
        if self.validation_size is not None:
            return self.validation_size
        if train_size is None:
            train_size = datasets.DATASETS[self.dataset].info.train_size
        # Frankle & Carbin hold out 5000 of MNIST's 60000; small sets keep a sixth.
        return min(5000, train_size // 6)

    def rounds_total(self) -> int:
        """Pruned rounds actually run (one-shot runs have a single pruned round)."""
        return 1 if self.pruning.schedule == "one_shot" else self.pruning.rounds

    def training_examples(self, train_size: int | None = None) -> int:
        if train_size is None:
            train_size = datasets.DATASETS[self.dataset].info.train_size
        return train_size - self.resolved_validation_size(train_size)

    def iterations_per_epoch(self, train_size: int | None = None) -> int:
        """Iterations of one pass over the training examples (a corpus: its training tokens cut into
        sequences of context_length; an environment has no epochs: 1, and 'ep' steps are refused)."""
        task = self.task()
        if task == "reinforcement_learning":
            return 1
        examples = self.training_examples(train_size)
        if task == "language_modeling":
            examples = max(1, (examples - 1) // self.training.context_length)
        return full_batches(examples, self.training.batch_size)

    def check_dataset_fit(self, train_size: int | None = None) -> None:
        """Checks that need the dataset's size (`train_size` examples before the validation split;
        default the registry's): validation split, batch size, rewind point, warmup."""
        if self.task() != "classification":  # a corpus's windows and an environment's rollouts: checked by the task
            self.check_lengths(self.iterations_per_epoch(train_size))
            return
        examples = self.training_examples(train_size)
        if examples < 1:
            available = examples + self.resolved_validation_size(train_size)
            raise SpecError("validation_size",
                            f"must be smaller than the {available} training examples of {self.dataset}")
        if self.training.batch_size > examples:
            raise SpecError("training.batch_size",
                            f"larger than the {examples} training examples of {self.dataset}")
        self.check_lengths(self.iterations_per_epoch(train_size))

    def trainings(self) -> int:
        """Networks the experiment trains: every replicate's rounds 0..R and its controls."""
        control_rounds = len(self.control_rounds) if self.control_rounds else self.rounds_total()
        return self.replicates * (self.rounds_total() + 1 + len(self.controls) * control_rounds)

    def check_workload(self, iterations_per_epoch: int) -> None:
        """Refuse an absurd but well-typed request (e.g. 10^20 iterations) instead of running it."""
        per_round = Step.parse(self.training.training_steps).to_iterations(iterations_per_epoch)
        total = per_round * self.trainings()
        if total > MAX_TOTAL_ITERATIONS:
            raise SpecError("training.training_steps",
                            f"{self.training.training_steps} is {per_round:,} iterations per round; with "
                            f"{self.trainings()} trainings (replicates × (rounds + 1 + controls)) that is {total:,} "
                            f"iterations in all, above the limit of {MAX_TOTAL_ITERATIONS:,}")

    def check_lengths(self, iterations_per_epoch: int) -> None:
        """Checks that need the dataset size: workload bound, rewind point inside training, etc."""
        self.check_workload(iterations_per_epoch)
        total = Step.parse(self.training.training_steps).to_iterations(iterations_per_epoch)
        rewind = Step.parse(self.rewind_step).to_iterations(iterations_per_epoch)
        if rewind >= total:
            raise SpecError("rewind_step", f"rewind point {self.rewind_step} ({rewind} iterations) "
                                           f"must be before the end of training ({total} iterations)")
        warmup = Step.parse(self.training.warmup_steps).to_iterations(iterations_per_epoch)
        if warmup > total:
            raise SpecError("training.warmup_steps",
                            f"warmup ({warmup} iterations) is longer than training ({total} iterations)")


def _with_paper_pruning(data: Any) -> Any:
    """`data` with the pruning fields it leaves out taken from its model's paper rates
    (trainer.models.PaperPruning): a bare spec for Conv-6 prunes convs at 15%, fc at 20%, the output
    layer at 10%. A field given (even `layer_fractions: {}` for uniform rates) is kept as given."""
    if not isinstance(data, dict) or not isinstance(data.get("pruning", {}), dict):
        return data  # _build reports the wrong type
    model, dataset = data.get("model", ExperimentSpec.model), data.get("dataset", ExperimentSpec.dataset)
    if model not in models.MODELS or dataset not in datasets.DATASETS:
        return data  # validate() names the unknown one
    info = datasets.DATASETS[dataset].info
    paper = models.paper_pruning_fields(model, info.input_shape, info.num_classes)
    given = data.get("pruning", {})
    missing = {key: value for key, value in paper.items() if key not in given}
    if "layer_fractions" in missing and given.get("prunable_layers"):
        missing["layer_fractions"] = {name: fraction for name, fraction in missing["layer_fractions"].items()
                                      if name in given["prunable_layers"]}
    if "layer_fractions" in missing and given.get("structure") == "units":
        output = models.output_parameter_name(model, info.input_shape, info.num_classes)
        missing["layer_fractions"].pop(output, None)  # structured pruning never prunes the output layer
    return {**data, "pruning": {**given, **missing}} if missing else data


# ---- generic field machinery -------------------------------------------------------------

def spec_fields(cls=ExperimentSpec, prefix: str = ""):
    """Yield (dotted_name, dataclass_field, python_type) for every leaf field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from spec_fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


def unwrap_optional(hint):
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def field_metavar(hint) -> str:
    """How a field's value is written as text: INT, FLOAT, TEXT, A,B,... (a list), NAME=X,... (per layer)."""
    hint = unwrap_optional(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        return "A,B,..."
    if origin is dict:
        return "NAME=X,..."
    return {int: "INT", float: "FLOAT", str: "TEXT"}.get(hint, "VALUE")


def parse_field_text(text: str, hint, dotted: str):
    """A field's value written as text (a CLI flag, a sweep's value) -> the JSON value the spec expects
    (the spec validates it). 'null' is None for a field that may be null."""
    if hint is not unwrap_optional(hint) and text.strip().lower() in ("null", "none"):
        return None
    hint = unwrap_optional(hint)
    origin = typing.get_origin(hint)
    try:
        if origin is list:
            (item,) = typing.get_args(hint)
            return [parse_field_text(part.strip(), item, dotted) for part in text.split(",") if part.strip()]
        if origin is dict:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError
            return {key.strip(): float(value) for key, value in pairs}
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise SpecError(dotted, f"cannot read {text!r} as {field_metavar(hint)}") from None
    return text


def _build(cls, data: Any, prefix: str):
    path = prefix.rstrip(".") or "spec"
    if not isinstance(data, dict):
        raise SpecError(path, f"expected an object, got {_type_name(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise SpecError(f"{prefix}{key}", f"unknown field; known fields are {', '.join(known)}")
    values = {}
    for name, _field in known.items():
        if name not in data:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, data[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(data[name], hint, f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, hint, path: str):
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _coerce(value, hint, path)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise SpecError(path, f"expected a list, got {_type_name(value)}")
        return [_coerce(item, item_type, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        key_type, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise SpecError(path, f"expected an object, got {_type_name(value)}")
        return {_coerce(k, key_type, path): _coerce(v, item_type, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, got {_type_name(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"expected an integer, got {_type_name(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"expected a number, got {_type_name(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise SpecError(path, "expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, got {_type_name(value)}")
        return value
    raise TypeError(f"unsupported spec type {hint} at {path}")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _check_fields(obj, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{path}.")
            continue
        if isinstance(value, list):
            items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        elif isinstance(value, dict):
            items = [(f"{path}.{key}", item) for key, item in value.items()]
        else:
            items = [(path, value)]
        for item_path, item in items:
            _check_value(item, f.metadata, item_path)


def _check_value(value: Any, meta, path: str) -> None:
    choices = meta.get("choices")
    if choices and value not in choices:
        raise SpecError(path, f"unknown choice {value!r}; choose one of {', '.join(choices)}")
    if meta.get("step"):
        try:
            Step.parse(value)
        except StepFormatError as error:
            raise SpecError(path, str(error)) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise SpecError(path, f"must be at least {meta['minimum']} (got {value})")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise SpecError(path, f"must be at most {meta['maximum']} (got {value})")
        if meta.get("exclusive_minimum") is not None and value <= meta["exclusive_minimum"]:
            raise SpecError(path, f"must be greater than {meta['exclusive_minimum']} (got {value})")
        if meta.get("exclusive_maximum") is not None and value >= meta["exclusive_maximum"]:
            raise SpecError(path, f"must be less than {meta['exclusive_maximum']} (got {value})")


def _non_default(obj, default) -> dict:
    changed = {}
    for f in dataclasses.fields(obj):
        value, default_value = getattr(obj, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            nested = _non_default(value, default_value)
            if nested:
                changed[f.name] = nested
        elif value != default_value:
            changed[f.name] = value
    return changed
