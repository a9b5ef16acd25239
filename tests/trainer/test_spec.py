import hashlib
import json
import subprocess
import sys

import pytest

from trainer.spec import ExperimentSpec, SpecError, _non_default
from trainer.steps import Step, StepFormatError


def test_json_round_trip_keeps_every_field():
    spec = ExperimentSpec.from_dict({
        "model": "conv2", "dataset": "synthetic", "rewind_step": "2ep", "init_seed": 7, "data_seed": 3,
        "validation_size": 100, "controls": ["random_reinit"], "control_rounds": [1],
        "training": {"optimizer": "adam", "lr": 0.001, "batch_size": 32, "training_steps": "5ep",
                     "lr_schedule": "multistep", "lr_milestones": ["2ep", "4ep"], "lr_gamma": 0.5,
                     "warmup_steps": "10it", "eval_interval": "50it"},
        "pruning": {"scope": "global", "fraction": 0.3, "layer_fractions": {"fc3.weight": 0.15},
                    "rounds": 4, "schedule": "one_shot"},
    })
    again = ExperimentSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_dict() == json.loads(spec.to_json())


def hash_of_non_default_fields(spec: ExperimentSpec) -> str:
    canonical = json.dumps(_non_default(spec, ExperimentSpec()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_a_criterion_run_with_late_rewinding_does_not_resume_masks_of_the_old_start_weights():
    """Round 1 of such a run once scored the dense weights against θk: it must not find that directory."""
    late = ExperimentSpec.from_dict({"dataset": "synthetic", "rewind_step": "10it",
                                     "pruning": {"criterion": "movement"}})
    assert late.run_hash() != hash_of_non_default_fields(late)
    at_theta_0 = ExperimentSpec.from_dict({"dataset": "synthetic", "pruning": {"criterion": "movement"}})
    assert at_theta_0.run_hash() == hash_of_non_default_fields(at_theta_0), "unchanged where nothing changed"


def test_same_spec_same_hash_and_controls_do_not_rename_the_run():
    a = ExperimentSpec(dataset="synthetic")
    b = ExperimentSpec.from_json(a.to_json())
    assert a.run_hash() == b.run_hash()
    b.controls = ["random_prune"]
    assert a.run_hash() == b.run_hash()
    b.pruning.fraction = 0.3
    assert a.run_hash() != b.run_hash()
    assert a.run_name().startswith("lenet_300_100_synthetic_")


def test_defaults_validate():
    ExperimentSpec().validate()


BAD_SPECS = [
    ({"modle": "conv2"}, "modle", "unknown field"),
    ({"training": {"lrr": 0.1}}, "training.lrr", "unknown field"),
    ({"model": "resnet999"}, "model", "unknown model"),
    ({"dataset": "imagenet"}, "dataset", "unknown dataset"),
    ({"pruning": {"fraction": 1.0}}, "pruning.fraction", "less than 1"),
    ({"pruning": {"fraction": 0}}, "pruning.fraction", "greater than 0"),
    ({"pruning": {"fraction": "0.2"}}, "pruning.fraction", "expected a number"),
    ({"pruning": {"rounds": 0}}, "pruning.rounds", "at least 1"),
    ({"pruning": {"rounds": 2.5}}, "pruning.rounds", "expected an integer"),
    ({"pruning": {"rounds": True}}, "pruning.rounds", "expected an integer"),
    ({"pruning": {"scope": "sideways"}}, "pruning.scope", "unknown choice"),
    ({"pruning": {"strategy": "largest"}}, "pruning.strategy", "unknown choice"),
    ({"pruning": {"layer_fractions": {"fc9.weight": 0.1}}}, "pruning.layer_fractions.fc9.weight",
     "not a prunable layer"),
    ({"pruning": {"layer_fractions": {"fc3.weight": 1.5}}}, "pruning.layer_fractions.fc3.weight", "less than 1"),
    ({"pruning": {"prunable_layers": ["fc1.bias"]}}, "pruning.prunable_layers[0]", "not a prunable layer"),
    ({"training": {"optimizer": "rmsprop"}}, "training.optimizer", "unknown choice"),
    ({"training": {"lr": -1}}, "training.lr", "greater than 0"),
    ({"training": {"lr": float("nan")}}, "training.lr", "finite"),
    ({"training": {"batch_size": 0}}, "training.batch_size", "at least 1"),
    ({"training": {"batch_size": 10**9}}, "training.batch_size", "at most"),
    ({"training": {"momentum": 1.0}}, "training.momentum", "less than 1"),
    ({"training": {"training_steps": "forty epochs"}}, "training.training_steps", "'it' or 'ep'"),
    ({"training": {"training_steps": "0it"}}, "training.training_steps", "at least 1"),
    ({"training": {"eval_interval": "0ep"}}, "training.eval_interval", "at least 1"),
    ({"training": {"lr_milestones": ["80ep", "40ep"], "lr_schedule": "multistep"}}, "training.lr_milestones",
     "increasing"),
    ({"training": {"lr_milestones": ["80ep"]}}, "training.lr_milestones", "multistep"),
    ({"training": "fast"}, "training", "expected an object"),
    ({"rewind_step": 100}, "rewind_step", "expected a string"),
    ({"init_seed": -1}, "init_seed", "at least 0"),
    ({"device": "tpu"}, "device", "expected 'auto'"),
    ({"controls": ["random_everything"]}, "controls[0]", "unknown choice"),
    ({"control_rounds": [11]}, "control_rounds[0]", "does not exist"),
    ({"dataset": "synthetic", "validation_size": 3000}, "validation_size", "smaller than"),
]


@pytest.mark.parametrize("data, field, words", BAD_SPECS, ids=[case[1] for case in BAD_SPECS])
def test_bad_spec_raises_one_error_naming_the_field(data, field, words):
    with pytest.raises(SpecError) as caught:
        ExperimentSpec.from_dict(data)
    assert caught.value.field == field
    assert words in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_not_json_and_not_an_object():
    with pytest.raises(SpecError, match="not valid JSON"):
        ExperimentSpec.from_json("{model: conv2")
    with pytest.raises(SpecError, match="expected an object"):
        ExperimentSpec.from_json("[1, 2]")


def test_rewind_after_the_end_of_training_is_rejected_once_lengths_are_known():
    spec = ExperimentSpec.from_dict({"rewind_step": "3ep", "training": {"training_steps": "2ep"}})
    with pytest.raises(SpecError) as caught:
        spec.check_lengths(iterations_per_epoch=100)
    assert caught.value.field == "rewind_step"


def test_steps_parse_iterations_and_epochs():
    assert Step.parse("500it").to_iterations(917) == 500
    assert Step.parse("40ep").to_iterations(917) == 36680
    assert str(Step.parse(" 3ep ")) == "3ep"
    for bad in ("", "3", "ep", "3.5ep", "-1it", "3 epochs"):
        with pytest.raises(StepFormatError):
            Step.parse(bad)


def test_trainer_never_imports_django():
    code = ("import sys, trainer, trainer.cli, trainer.imp, trainer.spec, trainer.training.loop;"
            "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')];"
            "print(bad); sys.exit(1 if bad else 0)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr
