"""The web app's pages of language-modelling and reinforcement-learning runs: the result page, its charts,
the best ticket, the verdict, the CSV exports, the live state and the masks speak of the task's metric
(perplexity: lower is better; mean return), while classification pages keep "accuracy" in percent."""
import csv
import io
import json
import re

import pytest
import torch
from django.core.management import call_command

from frontend import charts, live, progress, queries
from frontend.models import Curve, Experiment
from tests.conftest import train_spec_once
from tests.trainer.tasks.test_language_modeling import TINY_LM
from tests.trainer.tasks.test_reinforcement import TINY_RL
from trainer import events
from trainer.tasks.language_modeling import PERPLEXITY


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    return train_spec_once(tmp_path_factory, TINY_LM, "web_lm_runs")


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    return train_spec_once(tmp_path_factory, TINY_RL, "web_rl_runs")


def imported(run) -> Experiment:
    _, run_path = run
    call_command("import_run", str(run_path))
    return Experiment.objects.get(run_dir=str(run_path.resolve()))


def page_figures(page: str) -> dict[str, dict]:
    """dom id -> the plotly figure a result page embeds."""
    found = re.findall(r'<script type="application/json" data-figure-for="([\w-]+)">(.*?)</script>', page, re.S)
    return {dom_id: json.loads(text) for dom_id, text in found}


@pytest.mark.django_db
def test_a_language_model_result_page_speaks_of_perplexity(lm_run, client):
    results, _ = lm_run
    experiment = imported(lm_run)
    assert experiment.task.name == "language_modeling"
    page = client.get(f"/e/{experiment.pk}/").content.decode()
    assert "test perplexity (early stop)" in page and "test acc." not in page
    assert "Task: Language modelling; metric: test perplexity (lower is better)" in page
    figures = page_figures(page)
    sparsity = figures["chart-sparsity-accuracy"]
    assert sparsity["layout"]["yaxis"]["title"]["text"] == "test perplexity"
    assert sparsity["layout"]["yaxis"]["type"] == "log"
    dense_perplexity = results["rounds"][0]["early_stop"]["test_perplexity"]
    assert sparsity["data"][0]["y"][0] == pytest.approx(dense_perplexity)  # as it is, not × 100
    assert "test perplexity" in sparsity["data"][0]["hovertemplate"]
    assert figures["chart-training-curves"]["layout"]["yaxis"]["title"]["text"] == "validation perplexity"
    # the round table shows perplexity with two decimals, no percent scaling
    assert f"<td>{dense_perplexity:.2f}</td>" in page
    # per-layer-type sparsity of the language model
    table = page[page.index('id="layer-type-table"'):]
    table = table[:table.index("</table>")]
    for layer_type in ("embedding", "attention", "feed forward"):
        assert f"<td>{layer_type}</td>" in table
    assert "within 1% of dense" in page or "best-ticket" not in page
    # the studies of image classifiers are not offered on a language model's page
    assert 'id="analysis-form-connectivity"' not in page and "Run linear mode connectivity" not in page


@pytest.mark.django_db
def test_a_reinforcement_learning_result_page_speaks_of_the_mean_return(rl_run, client):
    results, _ = rl_run
    experiment = imported(rl_run)
    page = client.get(f"/e/{experiment.pk}/").content.decode()
    assert "test mean return (early stop)" in page and "Reinforcement learning" in page
    figures = page_figures(page)
    assert figures["chart-sparsity-accuracy"]["layout"]["yaxis"]["title"]["text"] == "test mean return"
    assert "type" not in figures["chart-sparsity-accuracy"]["layout"]["yaxis"]  # a return may be 0 or negative
    assert figures["chart-training-curves"]["layout"]["yaxis"]["title"]["text"] == "validation mean return"
    # two replicates: the verdict table is there, in the metric's own unit and direction
    method = page[page.index('id="verdict-method"'):]
    assert method.startswith('id="verdict-method">Test mean return at early stop (higher is better)')
    assert 'id="layer-type-table"' not in page  # per-layer types are the language models'
    ticket_cell = re.search(r'<table class="data" id="verdict-table">.*?<tbody>\s*<tr><td>1</td><td>[\d.]+</td>'
                            r'<td>([-\d.]+)', page, re.S).group(1)
    returns = [r["early_stop"]["test_return"] for r in [results["rounds"][1]] +
               [rep["rounds"][1] for rep in results["replicates"]]]
    assert float(ticket_cell) == pytest.approx(sum(returns) / len(returns), abs=0.01)


def perplexity_rows(values: dict[int, float]) -> list[dict]:
    return [{"round": round_index, "status": "finished", "remaining_fraction": 0.8 ** round_index,
             "reported_test_metric": value} for round_index, value in values.items()]


def test_the_best_ticket_of_a_language_model_is_judged_by_a_lower_perplexity():
    # round 1 is 30% worse (higher); round 2 is better (lower); round 3 is 0.5% worse, inside the 1% tolerance
    rows = perplexity_rows({0: 100.0, 1: 130.0, 2: 60.0, 3: 100.5, 4: 101.5})
    assert queries.best_ticket(rows, PERPLEXITY)["round"] == 3
    assert queries.best_ticket(rows[:4], PERPLEXITY)["round"] == 3
    assert queries.best_ticket(rows[:3], PERPLEXITY)["round"] == 2
    # read as accuracy (higher is better), the 30% worse perplexity of round 1 would count and the better one not
    assert queries.best_ticket(rows[:3])["round"] == 1
    label = queries.best_ticket_label(queries.best_ticket(rows[:3], PERPLEXITY), PERPLEXITY)
    assert label == "64% of weights: 60.00 test perplexity (round 2)"


@pytest.mark.django_db
def test_csv_exports_of_a_language_model_name_perplexity(lm_run, client):
    results, _ = lm_run
    experiment = imported(lm_run)
    metrics = list(csv.DictReader(io.StringIO(client.get(f"/e/{experiment.pk}/export/metrics.csv").content.decode())))
    assert "early_stop_test_perplexity" in metrics[0] and "early_stop_test_accuracy" not in metrics[0]
    dense = next(row for row in metrics if row["network"] == "ticket" and row["round"] == "0")
    assert float(dense["final_test_perplexity"]) == pytest.approx(results["rounds"][0]["final"]["test_perplexity"])
    curves = list(csv.DictReader(io.StringIO(client.get(f"/e/{experiment.pk}/export/curves.csv").content.decode())))
    evals = [row for row in curves if row["kind"] == "eval" and row["round"] == "0"]
    assert [float(row["val_perplexity"]) for row in evals] == pytest.approx(
        results["rounds"][0]["curve"]["val_perplexity"])


@pytest.mark.django_db
def test_the_masks_of_a_language_model_downsample_the_embedding(lm_run, client):
    experiment = imported(lm_run)
    response = client.get(f"/e/{experiment.pk}/masks/1/")
    assert response.status_code == 200, response.content
    figures = {item["title"]: item["figure"] for item in response.json()}
    embedding = figures["embedding.weight"]
    heatmap = embedding["data"][0]
    assert len(heatmap["z"]) <= 100 and embedding["layout"]["yaxis"]["title"]["text"] == "token"
    assert "input pixels" not in figures  # a token context is not an image
    assert 0 < sum(map(sum, heatmap["z"])) / (len(heatmap["z"]) * len(heatmap["z"][0])) < 1


def test_lstm_gate_weights_draw_as_heatmaps_with_their_gate_rows():
    masks = {"lstm.weight_ih_l0": torch.rand(800, 200) > 0.2, "lstm.weight_hh_l0": torch.rand(800, 200) > 0.2}
    items = charts.mask_figures(masks, 1, (256,))
    assert [item["title"] for item in items] == list(masks)
    layout = items[1]["figure"].layout
    assert layout.yaxis.title.text == "gate unit (4 × hidden)" and layout.xaxis.title.text == "hidden unit"
    assert len(items[0]["figure"].data[0].z) == 100


@pytest.mark.django_db
def test_the_live_state_of_a_language_model_draws_perplexity_from_its_eval_events():
    spec = {**TINY_LM, "device": "cpu"}
    experiment = Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"])
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda *_: None)
    recorder.handle(events.make_event(events.ROUND_STARTED, round=0, start_iteration=0, remaining_fraction=1.0))
    for iteration, perplexity in ((0, 900.0), (8, 300.0)):
        recorder.handle(events.make_event(events.EVAL, round=0, iteration=iteration, val_loss=6.0,
                                          val_perplexity=perplexity, test_loss=6.0, test_perplexity=perplexity))
    recorder.flush()
    assert Curve.objects.get(experiment=experiment).evals["val_perplexity"] == [900.0, 300.0]
    state = live.live_state(experiment.pk)
    assert state["metric"]["key"] == "perplexity"
    figure = state["figures"]["metric"]
    assert figure["layout"]["yaxis"]["title"]["text"] == "validation perplexity"
    assert figure["data"][0]["y"] == [900.0, 300.0]


@pytest.mark.django_db
def test_compare_refuses_experiments_of_different_tasks(lm_run, finished_experiment, client):
    experiment = imported(lm_run)
    response = client.get(f"/compare/?ids={experiment.pk},{finished_experiment.pk}")
    assert response.status_code == 400 and "perplexity" in response.content.decode()


@pytest.mark.django_db
def test_a_classification_page_keeps_accuracy_in_percent(finished_experiment, client):
    page = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    assert "test acc. (early stop)" in page and 'id="task-line"' not in page
    sparsity = page_figures(page)["chart-sparsity-accuracy"]
    assert sparsity["layout"]["yaxis"]["title"]["text"] == "test accuracy (%)"
    assert "Best ticket (within one point of dense)" in page or 'id="best-ticket"' not in page


@pytest.mark.django_db
def test_the_form_opens_on_a_task_preset_with_its_task_picked(client):
    page = client.get("/new/?preset=a2c_cartpole").content.decode()
    assert re.search(r'<option value="reinforcement_learning" selected>', page)
    assert 'data-task="reinforcement_learning"' in page and 'id="id_reinforcement__envs"' in page
    page = client.get("/new/?preset=transformer_lm_python_docs").content.decode()
    assert re.search(r'<option value="language_modeling" selected>', page)
    assert re.search(r'id="id_training__context_length"[^>]*value="64"|value="64"[^>]*id="id_training__context_length"',
                     page)


def test_the_retraining_chart_of_a_language_model_speaks_of_perplexity(lm_run):
    from trainer import analyses

    _, path = lm_run
    result = analyses.run_analysis("retraining", path, {"rounds": [1], "modes": ["fine_tuning"]})
    [chart] = charts.analysis_figures("retraining_figures", result, None)
    assert chart["figure"].layout.yaxis.title.text == "test perplexity"
    assert chart["figure"].layout.yaxis.type == "log"
    assert "Test perplexity at early stop" in chart["caption"]
    values = [y for trace in chart["figure"].data for y in trace.y]
    dense = result["dense"]["early_stop"]["test_perplexity"]
    assert dense in values and all(10 < value < 5000 for value in values)  # as they are, not × 100
