"""Issue 10 item 5, the web side: the form's architecture defaults and presets apply the same pruning
rates as a bare spec (the spec side is tests/trainer/test_paper_defaults.py)."""
from frontend.presets import ARCHITECTURE_DEFAULTS, PRESETS
from tests.web.test_forms import TASK_DATASETS
from trainer.models import MODELS
from trainer.spec import ExperimentSpec


def test_the_form_applies_the_same_rates_as_a_bare_spec():
    for model, defaults in ARCHITECTURE_DEFAULTS.items():
        dataset = "fashion_mnist" if model == "lenet_300_100" else TASK_DATASETS[MODELS[model].task]
        # an environment has no epochs: its bare spec needs lengths in iterations
        lengths = {"training": {"training_steps": "50it", "eval_interval": "10it"}} if model == "actor_critic" else {}
        bare = ExperimentSpec.from_dict({"model": model, "dataset": dataset, **lengths}).pruning
        for key in ("scope", "fraction", "layer_fractions", "prunable_layers"):
            assert defaults["pruning"][key] == getattr(bare, key), (model, key)
    vgg = PRESETS["vgg16_cifar_rewind"].spec()
    assert "fc.weight" not in vgg.pruning.prunable_layers and vgg.pruning.prunable_layers
