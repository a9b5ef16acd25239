"""The JSON API (token auth, sharing rules, JSON errors) and the exports (CSV, ticket files)."""
import csv
import io
import json

import pytest

from frontend.models import ApiToken, Experiment, RoundResult
from trainer.tickets import load_ticket

pytestmark = pytest.mark.django_db


SPEC = {"dataset": "synthetic", "training": {"training_steps": "50it"}, "pruning": {"rounds": 1}}


def test_without_a_valid_key_the_api_answers_401(client, anonymous_client, api):
    assert anonymous_client.get("/api/experiments/").status_code == 401
    response = api("GET", "/api/experiments/", key_override="wrong")
    assert response.status_code == 401 and "Authorization: Token" in response.json()["error"]


def test_create_list_get_cancel_through_the_api(api, user, queued):
    response = api("POST", "/api/experiments/", {"spec": SPEC, "visibility": "team"})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["owner"] == "alice" and created["visibility"] == "team" and created["status"] == "queued"
    assert created["spec"]["training"]["training_steps"] == "50it" and queued == [created["id"]]
    listed = api("GET", "/api/experiments/").json()["experiments"]
    assert [row["id"] for row in listed] == [created["id"]]
    assert api("GET", f"/api/experiments/{created['id']}/").json()["progress"]["status"] == "queued"
    cancelled = api("POST", f"/api/experiments/{created['id']}/cancel/")
    assert cancelled.status_code == 200 and Experiment.objects.get(pk=created["id"]).cancel_requested
    assert api("GET", f"/api/experiments/{created['id']}/results/").status_code == 404  # not run yet
    assert api("DELETE", f"/api/experiments/{created['id']}/").status_code == 405


def test_the_api_follows_the_sharing_rules(api, finished_experiment, other_user):
    Experiment.objects.filter(pk=finished_experiment.pk).update(owner=other_user, visibility="private")
    assert api("GET", f"/api/experiments/{finished_experiment.pk}/").status_code == 404
    assert api("GET", f"/api/experiments/{finished_experiment.pk}/results/").status_code == 404
    assert api("POST", f"/api/experiments/{finished_experiment.pk}/cancel/").status_code == 404
    assert api("GET", "/api/experiments/").json()["experiments"] == []
    Experiment.objects.filter(pk=finished_experiment.pk).update(visibility="team", status="running")
    assert api("GET", f"/api/experiments/{finished_experiment.pk}/").status_code == 200
    assert api("POST", f"/api/experiments/{finished_experiment.pk}/cancel/").status_code == 403
    assert not Experiment.objects.get(pk=finished_experiment.pk).cancel_requested


def test_results_of_a_finished_run_are_its_results_json(api, finished_experiment, finished_run):
    response = api("GET", f"/api/experiments/{finished_experiment.pk}/results/")
    assert response.status_code == 200 and response.json() == finished_run[0]
    detail = api("GET", f"/api/experiments/{finished_experiment.pk}/").json()
    assert {(r["network"], r["round"]) for r in detail["rounds"]} == set(
        RoundResult.objects.filter(experiment=finished_experiment).values_list("network", "round_index"))
    assert api("POST", f"/api/experiments/{finished_experiment.pk}/cancel/").status_code == 409


@pytest.mark.parametrize("body, status, field", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"spec": SPEC, "owner": "mallory"}).encode(), 400, "owner"),
    (json.dumps({"spec": {**SPEC, "model": "<script>alert(1)</script>"}}).encode(), 400, "spec.model"),
    (json.dumps({"spec": {**SPEC, "pruning": {"fraction": 1e308}}}).encode(), 400, "spec.pruning.fraction"),
    (json.dumps({"spec": {**SPEC, "training": {"batch_size": -5}}}).encode(), 400, "spec.training.batch_size"),
    (json.dumps({"spec": {**SPEC, "training": {"lr": "fast"}}}).encode(), 400, "spec.training.lr"),
    (json.dumps({"spec": {**SPEC, "dataset": "cifar10"}}).encode(), 400, "spec.dataset"),
    (json.dumps({"spec": SPEC, "visibility": "world"}).encode(), 400, "visibility"),
    (json.dumps({"spec": SPEC, "analyses": ["astrology"]}).encode(), 400, "analyses"),
    (json.dumps({"spec": SPEC, "analyses": "retraining"}).encode(), 400, "analyses"),
    (b"{" + b'"x": "' + b"a" * 70_000 + b'"}', 413, None),
    ("{\"spec\": \"\udcff\"}".encode("utf-8", "surrogatepass"), 400, None),
])
def test_hostile_api_bodies_get_a_json_4xx_and_store_nothing(api, queued, stored, body, status, field):
    response = api("POST", "/api/experiments/", raw=body)
    assert response.status_code == status, response.content[:300]
    payload = response.json()
    assert payload["error"]
    if field:
        assert payload["field"] == field
    assert not queued  # and `stored` checks that the stored experiment is unchanged


@pytest.mark.parametrize("analyses, message", [
    (["transfer"], "'transfer' cannot run with its default parameters"),
    (["structured_pruning", "early_bird"], "Early-bird tickets: lenet_300_100 has no batch norm"),
])
def test_analyses_the_registry_refuses_for_the_spec_are_a_400_and_nothing_is_queued(api, queued, analyses, message):
    response = api("POST", "/api/experiments/", body={"spec": SPEC, "analyses": analyses})
    assert response.status_code == 400
    assert response.json()["field"] == "analyses" and message in response.json()["error"]
    assert not queued and not Experiment.objects.exists()
    accepted = api("POST", "/api/experiments/", body={"spec": SPEC, "analyses": ["structured_pruning"]})
    assert accepted.status_code == 201 and Experiment.objects.get().analyses == ["structured_pruning"]


def test_keys_are_made_on_the_account_page_shown_once_and_revocable(client, anonymous_client, user):
    page = client.post("/account/token/", {"label": "notebook"}).content.decode()
    key = page.split('id="new-key"')[1].split("<code>")[1].split("</code>")[0]
    assert len(key) >= 40 and key not in client.get("/account/token/").content.decode(), "shown once"
    token = ApiToken.objects.get(user=user)
    assert token.key_hash != key, "only its hash is stored"
    assert anonymous_client.get("/api/experiments/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    assert client.post("/account/token/", {"revoke": "1; DROP TABLE"}).status_code == 200
    client.post("/account/token/", {"revoke": str(token.pk)})
    assert anonymous_client.get("/api/experiments/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_metrics_and_curves_export_as_csv(client, finished_experiment):
    response = client.get(f"/e/{finished_experiment.pk}/export/metrics.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == RoundResult.objects.filter(experiment=finished_experiment).count()
    ticket_round_2 = next(r for r in rows if r["network"] == "ticket" and r["round"] == "2")
    stored = RoundResult.objects.get(experiment=finished_experiment, network="ticket", round_index=2)
    assert float(ticket_round_2["early_stop_test_accuracy"]) == stored.early_stop_test_metric
    csv_text = client.get(f"/e/{finished_experiment.pk}/export/curves.csv").content.decode()
    curves = list(csv.DictReader(io.StringIO(csv_text)))
    evals = [r for r in curves if r["network"] == "ticket" and r["round"] == "0" and r["kind"] == "eval"]
    stored_curve = finished_experiment.curves.get(network="ticket", round_index=0)
    assert [int(r["iteration"]) for r in evals] == stored_curve.evals["iteration"]


def test_a_ticket_downloads_as_a_file_the_trainer_loads(client, anonymous_client, finished_experiment, tmp_path):
    response = client.get(f"/e/{finished_experiment.pk}/export/ticket/2.pt")
    assert response.status_code == 200
    path = tmp_path / "ticket.pt"
    path.write_bytes(response.content)
    ticket = load_ticket(path)
    assert ticket["round"] == 2 and ticket["remaining_fraction"] == RoundResult.objects.get(
        experiment=finished_experiment, network="ticket", round_index=2).remaining_fraction
    assert client.get(f"/e/{finished_experiment.pk}/export/ticket/9.pt").status_code == 404
    assert client.get(f"/e/{finished_experiment.pk}/export/ticket/1.pt?replicate=x").status_code == 400
    # through a share link, without an account
    Experiment.objects.filter(pk=finished_experiment.pk).update(visibility="link")
    token = Experiment.objects.get(pk=finished_experiment.pk).share_token
    assert anonymous_client.get(f"/s/{token}/export/ticket/1.pt").status_code == 200
    assert anonymous_client.get(f"/s/{token}/export/metrics.csv").status_code == 200
