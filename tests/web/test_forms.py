"""The new-experiment form: generated from the spec, validated by the spec, errors next to fields."""
import pytest

from frontend.forms import SPEC_FIELDS, ExperimentForm, form_name
from frontend.presets import ARCHITECTURE_DEFAULTS, PRESETS
from tests.conftest import TINY_SPEC
from tests.web.conftest import form_data
from trainer.models import MODELS
from trainer.spec import ExperimentSpec

TASK_DATASETS = {"classification": "cifar10", "language_modeling": "python_docs", "reinforcement_learning": "cartpole"}


def test_every_spec_field_has_a_form_field_and_a_group():
    form = ExperimentForm()
    shown = {field.name for _, fields, _ in form.groups() for field in fields}
    for dotted in SPEC_FIELDS:
        assert form_name(dotted) in form.fields
        assert form_name(dotted) in shown


def test_valid_data_gives_the_same_spec():
    form = ExperimentForm(form_data())
    assert form.is_valid(), form.errors
    assert form.spec == ExperimentSpec.from_dict(TINY_SPEC)


def test_every_preset_and_architecture_default_is_a_valid_spec():
    for preset in PRESETS.values():
        preset.spec()  # raises SpecError if a preset drifted from the trainer's spec
    for model, defaults in ARCHITECTURE_DEFAULTS.items():
        ExperimentSpec.from_dict({**defaults, "model": model, "dataset": TASK_DATASETS[MODELS[model].task]})


def test_not_installed_datasets_are_listed_but_disabled():
    html = str(ExperimentForm()["dataset"])
    assert '<option value="synthetic"' in html
    assert 'value="cifar10" disabled' in html or ('value="cifar10"' in html and "(not installed)" in html)


BAD_FIELDS = [
    ("pruning__fraction", "1.5", "must be less than 1"),
    ("pruning__fraction", "0", "must be greater than 0"),
    ("pruning__fraction", "lots", "Enter a number"),
    ("pruning__rounds", "0", "must be at least 1"),
    ("pruning__rounds", "2.5", "Enter a whole number"),
    ("pruning__scope", "everywhere", "Select a valid choice"),
    ("pruning__layer_fractions", "fc9.weight=0.1", "not a prunable layer"),
    ("pruning__layer_fractions", "fc3.weight", "layer=fraction"),
    ("pruning__layer_fractions", "fc3.weight=half", "is not a number"),
    ("pruning__layer_fractions", "fc3.weight=1.2", "must be less than 1"),
    ("pruning__prunable_layers", "conv9.weight", "not a prunable layer"),
    ("training__lr", "0", "must be greater than 0"),
    ("training__lr", "20", "must be at most 10"),
    ("training__momentum", "1", "must be less than 1"),
    ("training__batch_size", "0", "must be at least 1"),
    ("training__batch_size", "2600", "larger than the"),
    ("training__training_steps", "ten", "'it' or 'ep'"),
    ("training__eval_interval", "0it", "at least 1 iteration"),
    ("training__lr_milestones", "50it", "milestones need lr_schedule"),
    ("training__optimizer", "lbfgs", "Select a valid choice"),
    ("rewind_step", "500it", "must be before the end of training"),
    ("model", "resnet99", "Select a valid choice"),
    ("dataset", "imagenet", "Select a valid choice"),
    ("dataset", "cifar10", "not installed"),
    ("controls", ["magic"], "Select a valid choice"),
    ("control_rounds", "7", "does not exist"),
    ("control_rounds", "one", "whole numbers"),
    ("init_seed", "-1", "must be at least 0"),
    ("validation_size", "5000", "must be smaller than"),
    ("device", "tpu", "expected 'auto'"),
]


@pytest.mark.parametrize("name, value, message", BAD_FIELDS, ids=[f"{n}={v}" for n, v, _ in BAD_FIELDS])
def test_each_bad_field_gets_a_clear_message_next_to_it(name, value, message):
    form = ExperimentForm(form_data(**{name: value}))
    assert not form.is_valid()
    assert name in form.errors, form.errors
    assert message in " ".join(form.errors[name]), form.errors[name]
    assert list(form.errors) == [name]  # and only there


def test_missing_fields_are_reported_per_field():
    form = ExperimentForm({})
    assert not form.is_valid()
    assert "model" in form.errors and "training__lr" in form.errors


def test_another_tasks_hidden_settings_do_not_block_a_classification_run():
    form = ExperimentForm(form_data(training__context_length="32", reinforcement__envs="3"))
    assert form.is_valid(), form.errors
    assert form.spec.training.context_length == ExperimentSpec().training.context_length
    assert form.spec.reinforcement == ExperimentSpec().reinforcement


def test_the_language_model_preset_runs_through_the_form_with_its_context_length():
    preset = PRESETS["transformer_lm_python_docs"]
    form = ExperimentForm(form_data(preset.overrides, training__context_length="48"))
    assert form.is_valid(), form.errors
    assert form.spec.model == "transformer_lm" and form.spec.training.context_length == 48
    assert form.spec.training.lr == 0.001 and form.spec.training.batch_size == 32 and form.spec.rewind_step == "30it"


def test_the_presets_of_each_task():
    lm, rl = PRESETS["transformer_lm_python_docs"].spec(), PRESETS["a2c_cartpole"].spec()
    assert (lm.training.optimizer, lm.training.lr, lm.training.batch_size, lm.training.context_length) == \
        ("adam", 0.001, 32, 64)
    assert (lm.training.training_steps, lm.rewind_step, lm.pruning.rounds) == ("300it", "30it", 8)
    assert (rl.model, rl.dataset, rl.training.lr, rl.replicates, rl.pruning.rounds) == \
        ("actor_critic", "cartpole", 0.003, 3, 8)
    assert (rl.training.training_steps, rl.training.eval_interval, rl.rewind_step) == ("50it", "10it", "5it")
