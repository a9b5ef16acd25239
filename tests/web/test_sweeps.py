"""Sweeps in the web app: created from the form and the API, finished points reused, size and bad-grid
refusals (4xx, nothing stored), sharing, cancel, the per-configuration numbers over seeds, charts and CSV."""
import csv
import io
import json
import math

import pytest

from frontend import charts, services, sweep_results
from frontend.models import Experiment, RoundResult, Sweep, SweepPoint
from tests.conftest import TINY_SPEC
from tests.web.conftest import form_data
from trainer.sweeps import SweepDefinition

pytestmark = pytest.mark.django_db

BASE = {"dataset": "synthetic", "training": {"training_steps": "50it"}, "pruning": {"rounds": 1}}


def sweep_body(**overrides) -> dict:
    return {"name": "lr scan", "base_spec": BASE, "grid": {"training.lr": [0.05, 0.01]}, "seeds": 2, **overrides}


def test_api_creates_one_queued_experiment_per_point_in_grid_order(api, user, queued):
    response = api("POST", "/api/sweeps/", sweep_body(tags="scan, Paper Fig3", visibility="team"))
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["size"] == 4 and created["fields"] == ["training.lr"] and created["status"] == "queued"
    assert created["tags"] == ["paper-fig3", "scan"]
    points = created["points"]
    assert [(p["config"]["training.lr"], p["seed_index"]) for p in points] == [
        (0.05, 0), (0.05, 1), (0.01, 0), (0.01, 1)]
    assert queued == [p["experiment"] for p in points] and not any(p["reused"] for p in points)
    experiments = {e.pk: e for e in Experiment.objects.all()}
    first, second = experiments[points[0]["experiment"]], experiments[points[1]["experiment"]]
    assert first.name == "lr scan: lr=0.05, seed 0" and first.sweep_id == created["id"] and first.visibility == "team"
    assert first.spec["training"]["lr"] == 0.05 and first.spec["init_seed"] == 0
    assert second.spec["init_seed"] != 0 and second.spec["data_seed"] != 0  # seed 1: derived seeds
    detail = api("GET", f"/api/sweeps/{created['id']}/").json()
    assert detail["counts"] == {"queued": 4} and len(detail["configurations"]) == 2
    assert [row["id"] for row in api("GET", "/api/sweeps/").json()["sweeps"]] == [created["id"]]


def test_a_finished_experiment_with_the_same_spec_is_reused_not_queued_again(finished_experiment, user, queued):
    definition = SweepDefinition.from_dict({"base_spec": TINY_SPEC, "grid": {"pruning.fraction": [0.2, 0.3]}})
    before = Experiment.objects.count()
    sweep = services.create_sweep(user, definition, "fractions")
    points = list(SweepPoint.objects.filter(sweep=sweep).order_by("index"))
    assert [p.reused for p in points] == [True, False]
    assert points[0].experiment_id == finished_experiment.pk  # fraction 0.2 is the finished run's spec
    assert Experiment.objects.count() == before + 1 and queued == [points[1].experiment_id]
    finished_experiment.refresh_from_db()
    assert finished_experiment.sweep_id is None  # a reused experiment keeps its own (first) sweep


def test_another_users_private_experiment_is_not_reused(finished_experiment, other_user, user, queued):
    Experiment.objects.filter(pk=finished_experiment.pk).update(owner=other_user, visibility="private")
    definition = SweepDefinition.from_dict({"base_spec": TINY_SPEC})
    sweep = services.create_sweep(user, definition, "again")
    (point,) = sweep.sweep_points.all()
    assert not point.reused and point.experiment_id != finished_experiment.pk and queued == [point.experiment_id]


def test_a_sweep_above_the_size_limit_is_refused_with_its_count(api, queued, settings):
    settings.LOTTERYWEB_MAX_SWEEP_POINTS = 3
    response = api("POST", "/api/sweeps/", sweep_body())
    assert response.status_code == 400
    assert response.json() == {"error": "the sweep has 4 experiments (2 configurations × 2 seeds), above the limit "
                                        "of 3", "field": "seeds"}
    assert not Sweep.objects.exists() and not Experiment.objects.exists() and queued == []


BAD_SWEEPS = [
    ({"grid": {"lr": [0.1]}}, "grid.lr", "unknown spec field 'lr'; sweepable fields are model, dataset"),
    ({"grid": {"training.lr": [0.05, 20]}}, "grid.training.lr",
     "configuration 2 (lr=20): training.lr: must be at most"),
    ({"grid": {"training.lr": [0.05, 0.05]}}, "grid", "have the same spec"),
    ({"grid": {"training.lr": []}}, "grid.training.lr", "non-empty list"),
    ({"grid": {"training.lr": 0.1}}, "grid.training.lr", "non-empty list"),
    ({"grid": None, "points": [{"pruning.rounds": 2}, {"pruning.rounds": 0}]}, "points[1].pruning.rounds",
     "configuration 2 (rounds=0)"),
    ({"grid": {"training.lr": [0.1]}, "points": [{"pruning.rounds": 2}]}, "points", "not both"),
    ({"seeds": 0}, "seeds", "at least 1"),
    ({"seeds": True}, "seeds", "at least 1"),
    ({"base_spec": {"dataset": "cifar10"}}, "base_spec.dataset", "not installed"),
    ({"base_spec": {**BASE, "training": {"training_steps": "lots"}}}, "base_spec.training.training_steps", ""),
    ({"grid": {"dataset": ["synthetic", "python_docs"]}}, "base_spec.model",
     "configuration 2 (dataset=python_docs): model"),
    ({"name": ""}, "name", "non-empty"),
    ({"tags": "not a tag!"}, "tags", "tag"),
    ({"colour": "blue"}, "colour", "unknown keys"),
]


@pytest.mark.parametrize("change, field, words", BAD_SWEEPS, ids=[case[1] + ":" + case[2][:20] for case in BAD_SWEEPS])
def test_bad_sweeps_get_a_json_400_naming_the_field_and_store_nothing(api, queued, change, field, words):
    response = api("POST", "/api/sweeps/", sweep_body(**change))
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field and words in response.json()["error"]
    assert not Sweep.objects.exists() and not Experiment.objects.exists() and queued == []


def sweep_form(grid_rows, **fields) -> dict:
    data = form_data({"training": {**TINY_SPEC["training"], "training_steps": "40it"}},
                     sweep_name="form sweep", seeds="1", tags="demo", description="*why*")
    data.update(fields)
    data["grid_field"] = [row[0] for row in grid_rows]
    data["grid_values"] = [row[1] for row in grid_rows]
    return data


def test_the_form_previews_then_creates_a_sweep(client, queued):
    page = client.get("/sweeps/new/")
    assert page.status_code == 200 and b'name="grid_field"' in page.content and b"training.lr (number)" in page.content
    rows = [("training.lr", "0.001, 0.002"), ("pruning.rounds", "1,2"), ("", "")]
    preview = client.post("/sweeps/new/", {**sweep_form(rows, seeds="2"), "preview": "1"})
    assert preview.status_code == 200 and b"8 experiments" in preview.content
    assert b"lr=0.001, rounds=1 \xe2\x80\x93 seed 1" in preview.content and not Sweep.objects.exists()
    created = client.post("/sweeps/new/", sweep_form(rows))
    sweep = Sweep.objects.get()
    assert created.status_code == 302 and created["Location"] == f"/sweeps/{sweep.pk}/"
    assert sweep.grid == {"training.lr": [0.001, 0.002], "pruning.rounds": [1, 2]} and sweep.seeds == 1
    assert [tag.name for tag in sweep.tags.all()] == ["demo"] and len(queued) == 4
    assert sweep.base_spec["training"]["training_steps"] == "40it"
    page = client.get(f"/sweeps/{sweep.pk}/")
    assert page.status_code == 200 and b"<em>why</em>" in page.content and b'id="chart-sweep-parallel"' in page.content
    assert b"form sweep" in client.get("/sweeps/").content


@pytest.mark.parametrize("rows, seeds, words", [
    ([("training.lr", "0.001, 0.002")], "3", "above the limit of 5"),
    ([("training.lr", "0.001, lots")], "1", "cannot read &#x27;lots&#x27; as FLOAT"),
    ([("training.lr", "0.001, 50")], "1", "configuration 2 (lr=50): training.lr: must be at most 10.0"),
    ([("training.lrr", "0.1")], "1", "unknown spec field"),
    ([("training.lr", "0.1"), ("training.lr", "0.2")], "1", "is swept twice"),
    ([("training.lr", "0.1")], "0", "greater than or equal to 1"),
])
def test_the_form_refuses_bad_sweeps_beside_the_form(client, queued, settings, rows, seeds, words):
    settings.LOTTERYWEB_MAX_SWEEP_POINTS = 5
    response = client.post("/sweeps/new/", sweep_form(rows, seeds=seeds))
    assert response.status_code == 400 and words in response.content.decode()
    assert not Sweep.objects.exists() and queued == []


def make_sweep(user, grid=None, seeds=2, visibility="private") -> Sweep:
    definition = SweepDefinition.from_dict({"base_spec": BASE, "grid": grid or {"training.lr": [0.05, 0.01]},
                                            "seeds": seeds})
    return services.create_sweep(user, definition, "hand-made", visibility=visibility)


def test_sweeps_follow_the_sharing_rules(client, api, user, other_user, queued):
    sweep = make_sweep(other_user)
    for path in (f"/sweeps/{sweep.pk}/", f"/sweeps/{sweep.pk}/state.json", f"/sweeps/{sweep.pk}/export/points.csv"):
        assert client.get(path).status_code == 404
    assert api("GET", f"/api/sweeps/{sweep.pk}/").status_code == 404
    assert b"hand-made" not in client.get("/sweeps/").content
    Sweep.objects.filter(pk=sweep.pk).update(visibility="team")
    assert client.get(f"/sweeps/{sweep.pk}/").status_code == 200
    assert client.post(f"/sweeps/{sweep.pk}/cancel/").status_code == 403
    assert api("POST", f"/api/sweeps/{sweep.pk}/cancel/").status_code == 403
    assert not Experiment.objects.filter(cancel_requested=True).exists()


def test_cancel_stops_the_points_the_sweep_made_and_leaves_reused_ones(client, finished_experiment, user, queued):
    definition = SweepDefinition.from_dict({"base_spec": TINY_SPEC, "grid": {"pruning.fraction": [0.2, 0.3, 0.4]}})
    sweep = services.create_sweep(user, definition, "to cancel")
    made = list(Experiment.objects.filter(sweep=sweep).order_by("pk"))
    Experiment.objects.filter(pk=made[0].pk).update(status="running")
    response = client.post(f"/sweeps/{sweep.pk}/cancel/")
    assert response.status_code == 302
    assert all(e.cancel_requested for e in Experiment.objects.filter(sweep=sweep))
    finished_experiment.refresh_from_db()
    assert not finished_experiment.cancel_requested and finished_experiment.status == "finished"
    sweep.refresh_from_db()
    assert sweep.cancel_requested


def finish_with_rounds(experiment: Experiment, rounds: list[tuple[float, float]]) -> None:
    """Mark `experiment` finished with ticket rounds (remaining fraction, reported test accuracy)."""
    Experiment.objects.filter(pk=experiment.pk).update(status="finished", iterations_per_round=50)
    for round_index, (remaining, accuracy) in enumerate(rounds):
        RoundResult.objects.create(experiment=experiment, network="ticket", replicate=0, round_index=round_index,
                                   status="finished", remaining_fraction=remaining, layers={},
                                   early_stop_iteration=40, early_stop_test_metric=accuracy,
                                   final_test_metric=accuracy - 0.01)


def test_per_configuration_mean_std_and_n_over_seeds_charts_and_csv(client, user, queued):
    sweep = make_sweep(user)
    points = sweep_results.points_of(sweep)
    by_point = {(p["config"]["training.lr"], p["seed_index"]): p["experiment"] for p in points}
    finish_with_rounds(by_point[(0.05, 0)], [(1.0, 0.90), (0.5, 0.895)])
    finish_with_rounds(by_point[(0.05, 1)], [(1.0, 0.80), (0.5, 0.70)])   # round 1 lost 10 points: best is dense
    finish_with_rounds(by_point[(0.01, 0)], [(1.0, 0.60), (0.5, 0.61)])   # lr 0.01: one seed still queued

    table = sweep_results.configuration_table(sweep, sweep_results.points_of(sweep))
    fast, slow = table
    assert fast["config"] == {"training.lr": 0.05} and fast["done"] == 2
    dense = fast["summary"]["dense"]
    assert dense["count"] == 2 and dense["mean"] == pytest.approx(0.85)
    assert dense["std"] == pytest.approx(math.sqrt(0.005))
    best = fast["summary"]["best_remaining"]
    assert best["mean"] == pytest.approx(0.75) and best["std"] == pytest.approx(math.sqrt(0.125)) and best["count"] == 2
    assert fast["summary"]["best_metric"]["mean"] == pytest.approx((0.895 + 0.80) / 2)
    assert fast["dense_text"] == "85.00 ± 7.07" and fast["summary"]["verdict"]["text"].startswith(
        "more replicates needed (n=2")
    assert slow["summary"]["dense"] == {"mean": 0.6, "std": 0.0, "min": 0.6, "max": 0.6, "count": 1}
    assert slow["summary"]["best_remaining"]["mean"] == 0.5 and slow["done"] == 1

    figure = charts.sweep_sparsity_vs_metric([{"label": row["label"], "curve": row["summary"]["curve"]}
                                              for row in table]).to_plotly_json()
    means = {trace["name"]: list(trace["y"]) for trace in figure["data"] if trace.get("meta", "").startswith("mean")}
    assert means["lr=0.05"] == pytest.approx([85.0, 79.75]) and means["lr=0.01"] == pytest.approx([60.0, 61.0])
    band = next(trace for trace in figure["data"] if trace.get("meta") == "band:0")
    assert band["y"][0] == pytest.approx(85.0 + 100 * math.sqrt(0.005))  # the upper edge: mean + std
    parallel = charts.sweep_parallel_coordinates(table, ["training.lr"], [75.0, 50.0], "best").to_plotly_json()
    dimensions = parallel["data"][0]["dimensions"]
    assert [d["label"] for d in dimensions] == ["training.lr", "best"]
    assert list(dimensions[0]["values"]) == [0.05, 0.01] and list(dimensions[1]["values"]) == [75.0, 50.0]

    page = client.get(f"/sweeps/{sweep.pk}/?parallel=dense")
    assert page.status_code == 200 and "85.00 ± 7.07" in page.content.decode()
    assert b"Swept fields vs. dense test accuracy" in page.content
    state = client.get(f"/sweeps/{sweep.pk}/state.json").json()
    assert state["active"] and [run["status"] for run in state["runs"]] == ["finished", "finished", "finished",
                                                                            "queued"]

    configurations = list(csv.DictReader(io.StringIO(
        client.get(f"/sweeps/{sweep.pk}/export/configurations.csv").content.decode())))
    assert configurations[0]["training.lr"] == "0.05" and configurations[0]["dense_test_accuracy_n"] == "2"
    assert float(configurations[0]["dense_test_accuracy_mean"]) == pytest.approx(0.85)
    assert float(configurations[1]["best_ticket_remaining_fraction_mean"]) == 0.5
    point_rows = list(csv.DictReader(io.StringIO(client.get(f"/sweeps/{sweep.pk}/export/points.csv").content.decode())))
    assert [row["status"] for row in point_rows] == ["finished", "finished", "finished", "queued"]
    assert point_rows[1]["best_ticket_round"] == "0" and point_rows[3]["dense_test_accuracy"] == ""
    assert client.get(f"/sweeps/{sweep.pk}/export/other.csv").status_code == 404
    api_table = json.loads(json.dumps(sweep_results.configuration_table(sweep, sweep_results.points_of(sweep))[0]
                                      ["summary"]["dense"]))
    assert api_table["count"] == 2
