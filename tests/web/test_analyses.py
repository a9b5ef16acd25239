"""The web side of the analyses: the per-analysis forms (validation = Analysis.validate, errors beside
their fields, 400), the views, the Celery task (eager) and every chart builder on real tiny results."""
import dataclasses
import html as html_module
import json
import re
from pathlib import Path

import pytest

from frontend import charts, progress, records, services
from frontend.forms import AnalysisForm, ExperimentForm
from frontend.models import AnalysisRun, Experiment
from frontend.records import slim_result
from frontend.tasks import run_analysis_task
from tests.conftest import ANALYSIS_PARAMS, single_torch_thread
from tests.web.conftest import form_data
from trainer.analyses import ANALYSES, run_analysis
from trainer.spec import SpecError

pytestmark = pytest.mark.django_db
OLD_TRANSFER_RESULT = Path(__file__).parents[1] / "trainer" / "analyses" / "fixtures" / \
    "transfer_result_before_optimizer_transfer.json"


@pytest.fixture
def queued(monkeypatch):
    """Record queued analysis runs instead of running them."""
    calls = []
    monkeypatch.setattr(run_analysis_task, "delay", lambda analysis_run_id: calls.append(analysis_run_id))
    return calls


@pytest.fixture
def finished_bn_experiment(db, finished_bn_run, user):
    results, run_path = finished_bn_run
    spec = results["spec"]
    experiment = Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"],
                                           owner=user, status=Experiment.Status.FINISHED, run_name=results["run_name"],
                                           run_dir=str(run_path), results_path=str(run_path / "results.json"))
    for record in results["rounds"]:
        records.store_record(experiment.pk, record)
    return experiment


def post_data(name: str, values: dict) -> dict:
    """POST data of one analysis form: its defaults as the page shows them, then `values` (field -> text)."""
    form = AnalysisForm(ANALYSES[name])
    data = {}
    for field_name, field in form.fields.items():
        initial = field.initial
        if isinstance(initial, bool):
            if initial:
                data[f"{name}-{field_name}"] = "on"
        elif initial not in (None, ""):
            data[f"{name}-{field_name}"] = initial
    for field_name, value in values.items():
        key = f"{name}-{field_name}"
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_the_retraining_form_defaults_to_each_modes_own_masks_and_names_the_other_honestly():
    field = AnalysisForm(ANALYSES["retraining"]).fields["mask_chain"]
    assert field.initial == "own"
    labels = dict(field.choices)
    assert "Renda" in labels["own"] and "not Renda et al.'s procedure" in labels["imp_masks"]
    criteria = dict(AnalysisForm(ANALYSES["masking_criteria"]).fields["criteria"].choices)
    assert criteria["large_final_same_sign"] == "large final same sign"


def field_error(html: str, name: str, field_name: str) -> str:
    block = re.search(rf'<div class="field has-error" id="field-{name}-{field_name}">(.*?)</small>', html, re.S)
    assert block, f"no error shown next to {name}.{field_name}"
    return re.sub(r"<[^>]+>", "", re.search(r'class="field-error"[^>]*>(.*?)</div>', block.group(1), re.S).group(1))


# ---- forms ------------------------------------------------------------------------------------

def test_every_analysis_has_a_form_from_its_schema(client, finished_experiment):
    html = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    assert "<h2>Analyses</h2>" in html
    for name, analysis in ANALYSES.items():
        assert f'id="analysis-form-{name}"' in html
        for param in analysis.params:
            assert f'id="field-{name}-{param.name}"' in html
            assert param.help in html_module.unescape(html)
    assert 'name="connectivity-points" value="25"' in html  # defaults are prefilled
    assert 'name="retraining-modes" value="lr_rewinding"' in html


BAD_PARAMS = [
    ("retraining", {"rounds": "0"}, "rounds", "must be at least 1"),
    ("retraining", {"rounds": "1, 7"}, "rounds", "[1]: round 7 is not a finished round"),
    ("retraining", {"mask_chain": "sideways"}, "mask_chain", "Select a valid choice"),
    ("connectivity", {"points": "2"}, "points", "must be at least 3"),
    ("connectivity", {"points": "many"}, "points", "cannot read 'many' as int"),
    ("connectivity", {"points": ""}, "points", "a value is required (default 25)"),
    ("connectivity", {"rewind_steps": "5 apples"}, "rewind_steps", "5 apples"),
    ("connectivity", {"round": "9"}, "round", "round 9 is not a finished round"),
    ("masking_criteria", {"rounds": "0"}, "rounds", "must be at least 1"),
    ("masking_criteria", {"criteria": "biggest"}, "criteria", "Select a valid choice"),
    ("pruning_at_init", {"synflow_iterations": "0"}, "synflow_iterations", "must be at least 1"),
    ("pruning_at_init", {"score_examples": "1.5"}, "score_examples", "cannot read '1.5' as int"),
    ("structured_pruning", {"rounds": "-2"}, "rounds", "must be at least 1"),
    ("transfer", {}, "target_dataset", "choose the dataset to train the ticket on"),
    ("transfer", {"target_dataset": "cifar10"}, "target_dataset", "Select a valid choice"),
    ("transfer", {"target_dataset": "synthetic", "validation_size": "-1"}, "validation_size", "must be at least 0"),
    ("transfer", {"target_dataset": "synthetic", "rounds": "0, 0"}, "rounds", "has repeated entries"),
    ("transfer", {"target_optimizer": "adam"}, "target_lr", "give the learning rate to train with adam"),
    ("transfer", {"target_optimizer": "adam", "target_lr": "0.001", "target_momentum": "0.9"}, "target_momentum",
     "Adam has no momentum"),
    ("transfer", {"target_optimizer": "rmsprop"}, "target_optimizer", "Select a valid choice"),
    ("transfer", {"target_optimizer": "sgd", "target_lr": "0"}, "target_lr", "must be at least"),
    ("early_phase", {"noise_alphas": "0"}, "noise_alphas", "[0]: must be at least 0.01"),
    ("early_phase", {"noise_alphas": "1, loud"}, "noise_alphas", "cannot read 'loud' as float"),
    ("early_phase", {"flip_fraction": "1.5"}, "flip_fraction", "must be at most 1.0"),
    ("early_phase", {"perturbations": "scramble"}, "perturbations", "Select a valid choice"),
    ("early_phase", {"rounds": "0"}, "rounds", "must be at least 1"),
    ("pretraining", {"pretrain_steps": "0it"}, "pretrain_steps", "[0]: must be at least one iteration"),
    ("pretraining", {"tasks": "jigsaw"}, "tasks", "Select a valid choice"),
    ("pretraining", {"rewind_step": "soon"}, "rewind_step", "got 'soon'"),
    ("edge_popup", {"kept_percents": "0, 50"}, "kept_percents", "[0]: must be at least 0.1"),
    ("edge_popup", {"widths": ""}, "widths", "choose at least one value"),
    ("edge_popup", {"iterations": "0it"}, "iterations", "must be at least one iteration"),
    ("learned_supermask", {"weights": None}, "weights", "choose at least one value"),
    ("learned_supermask", {"lr": "fast"}, "lr", "cannot read 'fast' as float"),
    ("malach", {"widths": "0, 10"}, "widths", "[0]: must be at least 1"),
    ("malach", {"target_iterations": "0it"}, "target_iterations", "must be at least one iteration"),
    ("weight_agnostic", {"weight_values": "0, 1"}, "weight_values", "must not contain 0"),
    ("weight_agnostic", {"rounds": "9"}, "rounds", "round 9 is not a finished round"),
]


@pytest.mark.parametrize("name, values, field_name, message", BAD_PARAMS,
                         ids=[f"{case[0]}-{case[2]}-{index}" for index, case in enumerate(BAD_PARAMS)])
def test_bad_parameter_is_a_400_with_its_message_beside_the_field(client, finished_experiment, queued, name, values,
                                                                   field_name, message):
    response = client.post(f"/e/{finished_experiment.pk}/analyses/{name}/", post_data(name, values))
    assert response.status_code == 400
    html = response.content.decode().replace("&#x27;", "'")
    assert message in field_error(html, name, field_name)
    assert re.search(r'<details class="analysis-form-box" open>\s*<summary>Run', html)  # the form stays open
    assert not AnalysisRun.objects.exists() and not queued


@pytest.mark.parametrize("values, field_name, message", [
    ({"prune_fraction": "1.5"}, "prune_fraction", "must be at most 0.99"),
    ({"threshold": "-0.1"}, "threshold", "must be at least 0.0"),
    ({"window": "x"}, "window", "cannot read 'x' as int"),
    ({"train_examples": "0"}, "train_examples", "must be at least 1"),
])
def test_bad_early_bird_parameter_is_a_400(client, finished_bn_experiment, queued, values, field_name, message):
    response = client.post(f"/e/{finished_bn_experiment.pk}/analyses/early_bird/", post_data("early_bird", values))
    assert response.status_code == 400
    assert message in field_error(response.content.decode().replace("&#x27;", "'"), "early_bird", field_name)


def test_early_bird_on_a_model_without_batch_norm_is_a_400(client, finished_experiment, queued):
    response = client.post(f"/e/{finished_experiment.pk}/analyses/early_bird/", post_data("early_bird", {}))
    assert response.status_code == 400
    assert "has no batch norm" in response.content.decode()
    assert not queued


def test_early_phase_on_a_run_without_rewinding_is_a_400(client, finished_experiment, queued):
    response = client.post(f"/e/{finished_experiment.pk}/analyses/early_phase/", post_data("early_phase", {}))
    assert response.status_code == 400
    assert "perturbs tickets at θk with k &gt; 0" in response.content.decode()
    assert not AnalysisRun.objects.exists() and not queued


def test_unknown_analysis_is_a_404_and_an_unfinished_experiment_a_409(client, finished_experiment, queued):
    assert client.post(f"/e/{finished_experiment.pk}/analyses/astrology/", {}).status_code == 404
    running = Experiment.objects.create(spec={}, model_name="lenet_300_100", dataset_name="synthetic", status="running",
                                        owner=finished_experiment.owner)
    assert client.post(f"/e/{running.pk}/analyses/retraining/", post_data("retraining", {})).status_code == 409
    assert client.get(f"/e/{finished_experiment.pk}/analyses/retraining/").status_code == 405
    assert not queued


# ---- views and services -----------------------------------------------------------------------

def test_valid_parameters_store_and_queue_one_run_and_the_same_again_reuses_it(client, finished_experiment, queued):
    data = post_data("connectivity", {"points": "9", "rewind_steps": "50it, 0it"})
    response = client.post(f"/e/{finished_experiment.pk}/analyses/connectivity/", data)
    assert response.status_code == 302
    assert response["Location"].endswith(f"/e/{finished_experiment.pk}/#analysis-connectivity")
    (run,) = AnalysisRun.objects.all()
    assert run.status == "queued" and queued == [run.pk]
    assert run.params == {"round": 0, "rewind_steps": ["0it", "50it"], "points": 9, "seed": 0, "bn_batches": 20}
    client.post(f"/e/{finished_experiment.pk}/analyses/connectivity/", data)
    assert AnalysisRun.objects.count() == 1 and queued == [run.pk]  # same parameters: the same run

    state = client.get(f"/e/{finished_experiment.pk}/analyses.json").json()
    assert state["active"] is True and state["runs"][0]["status"] == "queued"
    fragment = client.get(f"/e/{finished_experiment.pk}/analyses/").content.decode()
    assert f'id="analysis-run-{run.pk}"' in fragment and "data-analyses-poll" in fragment
    assert "rewind_steps=0it, 50it; points=9" in fragment

    assert client.post(f"/e/{finished_experiment.pk}/analyses/runs/{run.pk}/cancel/").status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested


def test_a_failed_request_is_queued_again(finished_experiment, queued):
    params = ANALYSES["retraining"].validate({})
    first = services.request_analysis(finished_experiment, "retraining", params)
    AnalysisRun.objects.filter(pk=first.pk).update(status="failed")
    second = services.request_analysis(finished_experiment, "retraining", params)
    assert second.pk != first.pk and queued == [first.pk, second.pk]


def test_broker_down_marks_the_analysis_failed_instead_of_a_500(client, finished_experiment, monkeypatch):
    def refuse(analysis_run_id):
        raise ConnectionError("connection refused")
    monkeypatch.setattr(run_analysis_task, "delay", refuse)
    response = client.post(f"/e/{finished_experiment.pk}/analyses/retraining/", post_data("retraining", {}))
    assert response.status_code == 302
    run = AnalysisRun.objects.get()
    assert run.status == "failed" and "is Redis running?" in run.message


# ---- the task (eager Celery) ------------------------------------------------------------------

# the task closes stale database connections, which would end a test transaction
@pytest.mark.django_db(transaction=True)
def test_task_runs_the_analysis_and_stores_the_engines_result(client, finished_experiment, analysis_results):
    stored, run_path = analysis_results["structured_pruning"]
    data = post_data("structured_pruning", {"norms": ["l1", "l2"]})
    with single_torch_thread():
        response = client.post(f"/e/{finished_experiment.pk}/analyses/structured_pruning/", data)
    assert response.status_code == 302
    run = AnalysisRun.objects.get()
    assert run.status == "finished" and run.finished_at is not None
    assert run.result == slim_result(stored)  # the engine found its finished work: the same result
    html = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    assert f'id="analysis-{run.pk}-accuracy"' in html and f'id="analysis-{run.pk}-costs"' in html
    assert "data-analyses-poll" not in html  # nothing left to poll


# the task closes stale database connections, which would end a test transaction
@pytest.mark.django_db(transaction=True)
def test_task_reports_progress_while_it_trains(finished_experiment, settings):
    settings.LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND = 1000
    run = AnalysisRun.objects.create(experiment=finished_experiment, name="connectivity",
                                     params=ANALYSES["connectivity"].validate({"points": 5, "seed": 3}))
    seen = []
    original = progress.AnalysisProgressRecorder.write

    def spy(recorder):
        original(recorder)
        seen.append(AnalysisRun.objects.values_list("progress_text", flat=True).get(pk=run.pk))
    progress.AnalysisProgressRecorder.write = spy
    try:
        with single_torch_thread():
            assert run_analysis_task(run.pk) == "finished"
    finally:
        progress.AnalysisProgressRecorder.write = original
    assert any("copy a, round 0 (100% of weights): iteration" in text for text in seen), seen
    assert any(text.startswith("interpolating from k=0") for text in seen), seen
    run.refresh_from_db()
    assert run.status == "finished" and len(run.result["curves"][0]["alpha"]) == 5


# the task closes stale database connections, which would end a test transaction
@pytest.mark.django_db(transaction=True)
def test_task_failure_and_cancel_before_start(finished_experiment):
    failing = AnalysisRun.objects.create(experiment=finished_experiment, name="transfer",
                                         params={"target_dataset": None})  # no target: the engine refuses
    assert run_analysis_task(failing.pk) == "failed"
    failing.refresh_from_db()
    assert "target_dataset" in failing.message
    cancelled = AnalysisRun.objects.create(experiment=finished_experiment, name="retraining", params={},
                                           cancel_requested=True)
    assert run_analysis_task(cancelled.pk) == "cancelled"
    assert run_analysis_task(123456) == "missing"


# the task closes stale database connections, which would end a test transaction
@pytest.mark.django_db(transaction=True)
def test_analyses_chosen_on_the_new_form_run_after_the_imp_run(client):
    data = form_data(analyses=["structured_pruning"])
    with single_torch_thread():
        response = client.post("/new/", data)
    assert response.status_code == 302
    experiment = Experiment.objects.get()
    assert experiment.status == "finished" and experiment.analyses == ["structured_pruning"]
    (run,) = experiment.analysis_runs.all()
    assert run.status == "finished" and run.params == ANALYSES["structured_pruning"].validate({})


def test_new_form_refuses_early_bird_for_a_model_without_batch_norm(client):
    response = client.post("/new/", form_data(analyses=["early_bird"]))
    assert response.status_code == 400
    assert "Early-bird tickets: lenet_300_100 has no batch norm" in response.content.decode()
    assert not Experiment.objects.exists()


def test_new_form_refuses_early_phase_for_a_run_without_rewinding(client):
    response = client.post("/new/", form_data(analyses=["early_phase"]))
    assert response.status_code == 400
    assert "perturbs tickets at θk with k &gt; 0" in response.content.decode()
    assert not Experiment.objects.exists()



def test_new_form_offers_the_analyses_the_registry_says_can_run_with_the_experiment(client):
    offered = set(ExperimentForm().fields["analyses"].choices)
    assert offered == {(name, analysis.title) for name, analysis in ANALYSES.items() if analysis.runs_with_experiment}
    assert ("transfer", ANALYSES["transfer"].title) not in offered  # it has no default target dataset
    response = client.post("/new/", form_data(analyses=["transfer"]))
    assert response.status_code == 400 and not Experiment.objects.exists()


def test_both_forms_refuse_what_the_registry_entrys_check_refuses_with_its_message(client, finished_experiment, queued,
                                                                                 monkeypatch):
    seen = []

    def refuse(params, info):
        seen.append(info)
        raise SpecError("modes", "refused by the registry's check")

    monkeypatch.setitem(ANALYSES, "retraining", dataclasses.replace(ANALYSES["retraining"], check=refuse))
    response = client.post(f"/e/{finished_experiment.pk}/analyses/retraining/", post_data("retraining", {}))
    assert response.status_code == 400 and not queued
    assert "refused by the registry's check" in field_error(response.content.decode().replace("&#x27;", "'"),
                                                            "retraining", "modes")
    finished = sorted(finished_experiment.round_results.filter(network="ticket", replicate=0)
                      .values_list("round_index", flat=True))
    assert seen == [{"model": "lenet_300_100", "dataset": "synthetic", "task": "classification",
                     "has_batch_norm": False, "finished_rounds": finished, "rewind_step": "0it"}]
    response = client.post("/new/", form_data(analyses=["retraining"]))
    assert response.status_code == 400 and Experiment.objects.count() == 1
    assert "Retraining modes after pruning: refused by the registry&#x27;s check" in response.content.decode()
    assert seen[-1]["finished_rounds"] == [0, 1, 2], "the new run as planned: every round of its spec"


def test_a_round_the_experiment_has_not_finished_is_refused_beside_its_field(client, finished_experiment, queued):
    response = client.post(f"/e/{finished_experiment.pk}/analyses/connectivity/", post_data("connectivity",
                                                                                           {"round": "7"}))
    assert response.status_code == 400 and not queued
    assert "round 7 is not a finished round" in field_error(response.content.decode(), "connectivity", "round")

# ---- charts on real tiny results --------------------------------------------------------------

def figures_of(analysis_results, name):
    result = slim_result(analysis_results[name][0])
    figures = charts.analysis_figures(ANALYSES[name].chart, result)
    for item in figures:
        assert item["caption"] and "\n" not in item["caption"]
        json.loads(charts.figure_json(item["figure"]))
        assert item["figure"].data, f"{name}/{item['id']} has no traces"
        assert all(len(trace.x) for trace in item["figure"].data)
    return {item["id"]: item["figure"] for item in figures}, result


def names(figure):
    return [trace.name for trace in figure.data]


def test_retraining_chart(analysis_results):
    figures, _ = figures_of(analysis_results, "retraining")
    accuracy = figures["accuracy"]
    assert accuracy.layout.xaxis.type == "log"
    assert list(accuracy.data[0].x) == pytest.approx([100.0, 80.0, 64.0], rel=0.01)
    # The session's run trains at a constant learning rate, where replaying the schedule is fine-tuning: the
    # later line would hide under the earlier one, so it is dashed and named as the same.
    assert names(accuracy) == ["weight rewinding", "lr rewinding", "fine tuning (= lr rewinding)"]
    assert list(accuracy.data[2].y) == list(accuracy.data[1].y) and accuracy.data[2].line.dash == "dash"
    assert accuracy.data[1].line.dash is None


def test_retraining_chart_names_coinciding_modes_only_when_their_numbers_are_equal():
    def record(remaining, accuracy):
        return {"status": "finished", "remaining_fraction": remaining, "round": 1,
                "early_stop": {"test_accuracy": accuracy}, "final": {"test_accuracy": accuracy}}
    dense = {**record(1.0, 0.9), "round": 0}
    result = {"dense": dense, "mask_chain": "own",
              "modes": {"weight_rewinding": [record(0.8, 0.91)], "lr_rewinding": [record(0.8, 0.92)],
                        "fine_tuning": [record(0.8, 0.92)]}}
    [item] = charts.analysis_figures("retraining_figures", result)
    assert names(item["figure"]) == ["weight rewinding", "lr rewinding", "fine tuning (= lr rewinding)"]
    assert "Fine tuning and lr rewinding give the same numbers" in item["caption"]
    assert "constant learning rate" in item["caption"]
    result["modes"]["fine_tuning"] = [record(0.8, 0.915)]
    [item] = charts.analysis_figures("retraining_figures", result)
    assert names(item["figure"]) == ["weight rewinding", "lr rewinding", "fine tuning"]
    assert "same numbers" not in item["caption"]
    assert all(trace.line.dash is None for trace in item["figure"].data)


def test_connectivity_charts(analysis_results):
    figures, result = figures_of(analysis_results, "connectivity")
    assert [name.split(" (")[0] for name in names(figures["interpolation"])] == ["k = 0 it", "k = 50 it"]
    assert len(figures["interpolation"].data[0].x) == 9
    instability = figures["instability"]
    assert list(instability.data[0].x) == [0, 50]
    assert instability.layout.shapes[0].y0 == pytest.approx(2.0)  # the 2% stability line
    assert list(instability.data[0].y) == pytest.approx([100 * v for v in result["instability_vs_k"]["instability"]])


def test_masking_criteria_charts(analysis_results):
    figures, _ = figures_of(analysis_results, "masking_criteria")
    assert names(figures["accuracy"]) == ["large final", "large init", "movement"]
    assert names(figures["supermask"]) == names(figures["accuracy"])
    assert all(0 <= y <= 100 for trace in figures["supermask"].data for y in trace.y)


def test_pruning_at_init_chart_and_collapse_warning(analysis_results):
    figures, result = figures_of(analysis_results, "pruning_at_init")
    assert names(figures["accuracy"]) == ["IMP (this run)", "snip", "synflow", "magnitude"]
    chart = ANALYSES["pruning_at_init"].chart
    assert charts.analysis_warnings(chart, result) == []
    result["methods"]["synflow"][1]["collapsed_layers"] = ["fc2.weight"]
    (warning,) = charts.analysis_warnings(chart, result)
    assert warning.startswith("synflow at 64.1% of weights (round 2): fc2.weight collapsed")


def test_early_bird_charts(analysis_results):
    figures, result = figures_of(analysis_results, "early_bird")
    heatmap = figures["distances"].data[0]
    epochs = result["epochs"]
    assert heatmap.type == "heatmap" and len(heatmap.z) == len(epochs) == len(heatmap.z[0])
    assert heatmap.z[0][0] == 0
    bars = figures["comparison"].data[0]
    assert bars.type == "bar" and [label.split("<br>")[0] for label in bars.x][:2] == ["early-bird ticket",
                                                                                       "one-shot IMP ticket"]
    marked = dict(result, early_bird_epoch=epochs[-1])  # the marker, whether or not this tiny search settled
    shapes = charts.analyses.early_bird_figures(marked)[0]["figure"].layout.shapes
    assert {shape.x0 for shape in shapes if shape.type == "line"} >= {epochs[-1]}


def test_structured_pruning_charts(analysis_results):
    figures, _ = figures_of(analysis_results, "structured_pruning")
    assert names(figures["accuracy"]) == ["unstructured IMP (this run)", "units by l1", "units by l2"]
    costs = names(figures["costs"])
    assert "units by l1: parameters (shrunk)" in costs and "units by l2: FLOPs (shrunk)" in costs
    assert "units by l1: effective parameters" in costs
    effective = figures["costs"].data[0]
    assert effective.y[0] == pytest.approx(100.0) and effective.y[-1] < 100.0


def test_transfer_chart(analysis_results):
    figures, _ = figures_of(analysis_results, "transfer")
    assert names(figures["accuracy"]) == ["ticket from synthetic, trained on synthetic", "random reinit (control)",
                                          "ticket found on synthetic", "random reinit found on synthetic"]


def test_transfer_across_optimizers_chart(finished_run):
    run_path = finished_run[1]
    with single_torch_thread():
        result = run_analysis("transfer", run_path, {"rounds": [0, 2], "target_optimizer": "sgd", "target_lr": 0.05})
    assert result["source_training"]["optimizer"] == "adam"
    figures, slim = figures_of({"transfer": (result, run_path)}, "transfer")
    accuracy = figures["accuracy"]
    source = f"adam lr {result['source_training']['lr']:g}"
    assert names(accuracy) == [f"ticket from synthetic with {source}, trained on synthetic with sgd lr 0.05",
                               "random ticket (control)"]
    assert list(accuracy.data[1].x) == pytest.approx([100 * r["remaining_fraction"]
                                                      for r in result["controls"]["random_ticket"]])
    (item,) = charts.analysis_figures(ANALYSES["transfer"].chart, slim)
    assert "with sgd lr 0.05" in item["caption"] and "random ticket" in item["caption"]


def test_a_dataset_transfer_stored_before_optimizer_transfer_still_charts():
    old = json.loads(OLD_TRANSFER_RESULT.read_text())
    assert "target_training" not in old
    figures, _ = figures_of({"transfer": (old, None)}, "transfer")
    assert names(figures["accuracy"]) == ["ticket from synthetic, trained on synthetic", "random reinit (control)",
                                          "ticket found on synthetic"]
    assert list(figures["accuracy"].data[0].y) == pytest.approx([100 * r["early_stop"]["test_accuracy"]
                                                                 for r in old["transfer"]])


def test_early_phase_charts(analysis_results):
    figures, result = figures_of(analysis_results, "early_phase")
    assert names(figures["accuracy"]) == ["ticket at θk (unperturbed)", "rewind to 0 (k = 0)", "init signs",
                                          "shuffle layer", "shuffle unit same sign"]
    ticket = figures["accuracy"].data[0]
    assert list(ticket.x) == pytest.approx([100 * r["remaining_fraction"] for r in result["ticket"]])
    assert list(ticket.y) == pytest.approx([100 * r["early_stop"]["test_accuracy"] for r in result["ticket"]])
    noise = figures["noise"]
    assert names(noise) == ["round 1 (80% left)", "round 1 (80% left): rewind to 0",
                            "round 2 (64.1% left)", "round 2 (64.1% left): rewind to 0"]
    first = noise.data[0]
    assert list(first.x) == [0.0, 1.0, 2.0]  # α = 0: the unperturbed ticket
    assert first.y[0] == pytest.approx(100 * result["ticket"][0]["early_stop"]["test_accuracy"])
    assert first.y[2] == pytest.approx(100 * result["perturbations"]["noise_2"][0]["early_stop"]["test_accuracy"])
    without_noise = {**result, "perturbations": {k: v for k, v in result["perturbations"].items() if "noise" not in k}}
    assert [item["id"] for item in charts.analysis_figures("early_phase_figures", without_noise)] == ["accuracy"]


def test_pretraining_chart(analysis_results):
    figures, result = figures_of(analysis_results, "pretraining")
    assert names(figures["accuracy"]) == ["the run's ticket (no pre-training, k = 0)",
                                          "random labels, t = 20it (k = 0)", "rotation, t = 20it (k = 0)"]
    ticket, rotation = figures["accuracy"].data[0], figures["accuracy"].data[2]
    assert list(ticket.x) == pytest.approx([100 * r["remaining_fraction"] for r in result["ticket"]])
    chain = result["chains"][1]["rounds"]
    assert list(rotation.x) == pytest.approx([100 * r["remaining_fraction"] for r in chain])
    assert list(rotation.y) == pytest.approx([100 * r["early_stop"]["test_accuracy"] for r in chain])


def test_edge_popup_chart(analysis_results):
    figures, _ = figures_of(analysis_results, "edge_popup")
    assert names(figures["accuracy"]) == ["edge-popup, width ×0.5", "dense, width ×0.5 (trained)",
                                          "edge-popup, width ×1", "dense, width ×1 (trained)", "chance"]
    assert list(figures["accuracy"].data[0].x) == [30, 70]


def test_learned_supermask_chart(analysis_results):
    figures, _ = figures_of(analysis_results, "learned_supermask")
    assert names(figures["accuracy"]) == ["sampled masks (mean)", "expected mask (w·σ(s))",
                                          "dense (trained, the run's round 0)", "chance"]


def test_malach_charts(analysis_results):
    figures, result = figures_of(analysis_results, "malach")
    approximation = figures["approximation"]
    assert names(approximation) == ["relative MSE", "agreement (same predicted class)"]
    assert list(approximation.data[0].x) == [20, 40]
    assert list(approximation.data[0].y) == pytest.approx([e["relative_mse"] for e in result["approximation"]])
    two_layer = figures["two_layer"]
    assert names(two_layer) == ["neuron subnetwork", "random features", "weight subnetwork",
                                "target network (trained)", "chance"]
    features = [e for e in result["two_layer"] if e["model"] == "random_features"]
    assert list(two_layer.data[1].y) == pytest.approx([100 * e["test_accuracy"] for e in features])
    assert charts.analysis_figures("malach_figures", {"approximation": [], "two_layer": []}) == []


def test_weight_agnostic_chart(analysis_results):
    figures, result = figures_of(analysis_results, "weight_agnostic")
    ticket, random = result["ticket"], result["random"]
    assert names(figures["accuracy"]) == [
        f"round 0 (100% left), mean {100 * ticket[0]['mean_accuracy']:.2f}%",
        f"round 0 (100% left): random mask, mean {100 * random[0]['mean_accuracy']:.2f}%",
        f"round 2 ({100 * ticket[1]['remaining_fraction']:.3g}% left), mean {100 * ticket[1]['mean_accuracy']:.2f}%",
        f"round 2 ({100 * ticket[1]['remaining_fraction']:.3g}% left): random mask, "
        f"mean {100 * random[1]['mean_accuracy']:.2f}%", "chance"]
    line = figures["accuracy"].data[2]
    assert list(line.x) == [-1.0, 0.5, 1.0]
    assert list(line.y) == pytest.approx([100 * a for a in ticket[1]["test_accuracy"]])


def test_charts_of_an_empty_result_are_empty():
    assert charts.analysis_figures(ANALYSES["retraining"].chart, None) == []
    assert charts.analysis_figures("no_such_builder", {"x": 1}) == []
    assert charts.analysis_figures(ANALYSES["edge_popup"].chart, {}) == []


def test_every_analysis_has_chart_test_parameters_and_its_registry_entry_names_a_builder():
    assert set(ANALYSIS_PARAMS) | {"early_bird"} == set(ANALYSES)
    assert {analysis.chart for analysis in ANALYSES.values()} == set(charts.analyses.BUILDERS)


def test_progress_recorder_is_throttled():
    now = [0.0]
    recorder = progress.AnalysisProgressRecorder(1, messages_per_second=2, clock=lambda: now[0])
    writes = []
    recorder.write = lambda: (writes.append(recorder.text), setattr(recorder, "last_write", now[0]))
    recorder.handle({"type": "round_started", "network": "lr_rewinding", "round": 2, "remaining_fraction": 0.64,
                     "start_iteration": 0, "end_iteration": 100})
    for iteration in range(10, 60, 10):
        recorder.handle({"type": "metrics", "network": "lr_rewinding", "round": 2, "iteration": iteration})
    now[0] = 0.6
    recorder.handle({"type": "eval", "network": "lr_rewinding", "round": 2, "iteration": 60})
    assert writes == ["lr rewinding, round 2 (64% of weights): iteration 0 of 100",
                      "lr rewinding, round 2 (64% of weights): iteration 60 of 100"]
    assert recorder.fraction == pytest.approx(0.6)
