"""The language-modelling task end to end on the embedded corpus: perplexity as the metric (lower is better
in records, early stop, verdicts and the CLI table), masks that stay zero under Adam, determinism, and the
spec's task checks."""
import math

import pytest
import torch

from trainer import tasks, verdict
from trainer.cli.display import summary_table
from trainer.events import TICKET
from trainer.imp import run_experiment
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError

TINY_LM = {"model": "transformer_lm", "dataset": "python_docs", "device": "cpu", "rewind_step": "4it",
           "training": {"optimizer": "adam", "lr": 0.003, "batch_size": 8, "training_steps": "16it",
                        "eval_interval": "8it", "metrics_interval": 4, "context_length": 16},
           "pruning": {"fraction": 0.5, "rounds": 2}}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_runs")
    results = run_experiment(ExperimentSpec.from_dict(TINY_LM), root)
    return results, root / results["run_name"]


def test_a_language_model_run_reports_perplexity(lm_run):
    results, _ = lm_run
    assert results["status"] == "finished"
    assert results["task"] == {"name": "language_modeling", "metric": {"key": "perplexity", "label": "perplexity",
                                                                       "higher_is_better": False, "percent": False}}
    for record in results["rounds"]:
        curve = record["curve"]
        assert set(curve) == {"iteration", "val_loss", "val_perplexity", "test_loss", "test_perplexity"}
        for loss, perplexity in zip(curve["val_loss"] + curve["test_loss"],
                                    curve["val_perplexity"] + curve["test_perplexity"]):
            assert perplexity == pytest.approx(math.exp(loss))  # perplexity = exp(mean token cross-entropy)
        best = min(range(len(curve["val_loss"])), key=curve["val_loss"].__getitem__)
        assert record["early_stop"]["iteration"] == curve["iteration"][best]
        assert record["early_stop"]["test_perplexity"] == curve["test_perplexity"][best]
    dense, _, pruned = results["rounds"]
    vocabulary = dense["curve"]["test_perplexity"][0]
    assert vocabulary > 500  # an untrained model is about uniform over the 1,842 words
    assert dense["final"]["test_perplexity"] < vocabulary / 3  # and 16 Adam steps learn a lot
    assert [r["remaining_fraction"] for r in results["rounds"]] == pytest.approx([1.0, 0.5, 0.25], abs=0.01)


def test_pruned_weights_stay_zero_and_embeddings_attention_and_feed_forward_are_pruned(lm_run):
    _, path = lm_run
    run_dir = RunDir.open(path)
    mask, state = run_dir.mask(2), run_dir.final_weights(2)
    assert {"embedding.weight", "blocks.0.query.weight", "blocks.1.ff2.weight"} <= set(mask)
    assert "positions.weight" not in mask
    for name, keep in mask.items():
        assert 0.2 < keep.float().mean() < 0.3, name  # layerwise 50% twice
    for name, keep in mask.items():  # Adam's moments never revive a pruned weight
        assert torch.all(state[name][~keep] == 0), name


def test_the_cli_table_and_the_verdict_speak_of_perplexity(lm_run):
    results, _ = lm_run
    table = summary_table(results)
    assert "test perplexity (early stop)" in table and "%" not in table.splitlines()[2].split("|")[4]
    assert results["verdicts"]["metric"] == "test_perplexity"
    assert results["verdicts"]["higher_is_better"] is False
    assert "perplexity at early stop" in table


def test_same_spec_and_seed_give_the_same_language_model_run(lm_run, tmp_path):
    again = run_experiment(ExperimentSpec.from_dict(TINY_LM), tmp_path)
    first, _ = lm_run
    for a, b in zip(first["rounds"], again["rounds"]):
        assert a["curve"] == b["curve"] and a["train_loss"] == b["train_loss"]


def test_lower_perplexity_is_better_in_the_verdict():
    metric = tasks.LANGUAGE_MODELING.metric
    assert metric.better(80.0, 90.0) and not metric.better(90.0, 80.0)
    assert metric.best([95.0, None, 80.0, float("nan")]) == 80.0
    # dense 100 ± 1 over 3 replicates; a ticket at 90 is better (lower), one at 110 is worse
    dense = {0: verdict.Point(100.0, 10), 1: verdict.Point(101.0, 10), 2: verdict.Point(99.0, 10)}
    better = {0: verdict.Point(90.0, 10), 1: verdict.Point(91.0, 10), 2: verdict.Point(89.5, 10)}
    worse = {0: verdict.Point(110.0, 10), 1: verdict.Point(111.0, 10), 2: verdict.Point(109.0, 10)}
    result = verdict.verdicts({TICKET: {0: dense, 1: better, 2: worse}}, higher_is_better=False, unit=metric,
                              metric="test_perplexity")
    by_round = {row["round"]: row for row in result["rounds"]}
    assert by_round[1]["verdict"] == verdict.MATCHING
    assert by_round[2]["verdict"] == verdict.NOT_SHOWN and "above dense" in by_round[2]["reason"]
    assert result["tolerance"] == pytest.approx(1.0)  # max(std 1.0, 1% of the dense mean 100)
    assert "(perplexity)" in by_round[2]["reason"]


@pytest.mark.parametrize("change, field", [
    ({"model": "lenet_300_100"}, "model"),
    ({"dataset": "fashion_mnist"}, "model"),
    ({"validation_size": 100}, "validation_size"),
    ({"training": {**TINY_LM["training"], "context_length": 300}}, "training.context_length"),
    ({"stack_size": 4}, "stack_size"),
])
def test_the_spec_refuses_a_model_or_setting_of_another_task(change, field):
    with pytest.raises(SpecError) as error:
        ExperimentSpec.from_dict({**TINY_LM, **change}).validate()
    assert error.value.field == field


def test_context_length_is_refused_for_classification():
    with pytest.raises(SpecError) as error:
        ExperimentSpec.from_dict({"training": {"context_length": 32}}).validate()
    assert error.value.field == "training.context_length"


def test_the_lstm_language_model_trains_and_prunes_its_gates(tmp_path):
    spec = {**TINY_LM, "model": "lstm_lm", "pruning": {"fraction": 0.5, "rounds": 1},
            "training": {**TINY_LM["training"], "training_steps": "8it", "eval_interval": "8it"}}
    results = run_experiment(ExperimentSpec.from_dict(spec), tmp_path)
    assert results["status"] == "finished"
    layers = results["rounds"][1]["layers"]
    assert {"lstm.weight_ih_l0", "lstm.weight_hh_l1", "output.weight", "embedding.weight"} <= set(layers)
    assert all(layer["remaining_fraction"] == pytest.approx(0.5, abs=0.01) for layer in layers.values())


def test_studies_of_image_classifiers_refuse_a_language_model_run(lm_run, capsys):
    from trainer import analyses
    from trainer.cli.main import main

    _, path = lm_run
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("connectivity", path, {})
    assert error.value.field == "analysis" and "language modeling" in error.value.message
    assert main(["analyze", str(path), "masking_criteria"]) == 2
    assert "applies to classification runs; this run is language modeling" in capsys.readouterr().err
    with pytest.raises(SpecError) as error:
        analyses.check_runs_with_experiment(["connectivity"], ExperimentSpec.from_dict(TINY_LM))
    assert error.value.field == "analyses"


def test_retraining_modes_run_on_a_language_model_and_speak_of_perplexity(lm_run):
    from trainer import analyses

    _, path = lm_run
    result = analyses.run_analysis("retraining", path, {"rounds": [1], "modes": ["lr_rewinding", "fine_tuning"]})
    assert result["status"] == "finished"
    for entries in result["modes"].values():
        for entry in entries:
            assert "test_perplexity" in entry["final"] and "test_accuracy" not in entry["final"]
    lines = analyses.ANALYSES["retraining"].summary_lines(result)
    assert "early-stop perplexity" in lines[1]
    assert not any("%" in line.split()[-1] for line in lines[2:])  # perplexities, not percentages
