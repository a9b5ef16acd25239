"""The web side of the reproduction checks: the Reproductions page, its POSTs (run, run all, cancel;
bad input is a 4xx with a message), the Celery task (eager) with its progress and result, crash
recovery of a check, and the badge on an experiment whose spec matches a check's protocol.

The checks here are fakes registered over trainer.reproduce's CHECKS / run_check / matching_checks,
so these tests exercise the web app, not the science (the browser test runs a real check)."""
import html as html_module
import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from frontend import queues, recovery, services, tasks
from frontend.models import Experiment, ReproductionRun
from frontend.progress import ReproductionProgressRecorder
from tests.conftest import single_torch_thread
from trainer import reproduce
from trainer.spec import SpecError

pytestmark = pytest.mark.django_db(transaction=True)  # the tasks close old connections, as on a worker (PostgreSQL)


@dataclass(frozen=True)
class FakeCheck:
    name: str
    title: str
    claim: str
    source: str
    tolerance: str
    notes: str = ""

    def protocol(self, budget: str) -> dict:
        return {"spec": {"model": "lenet_300_100", "dataset": "synthetic"}, "budget": budget}


FAKE_CHECKS = {
    "tickets_fake": FakeCheck("tickets_fake", "Tickets beat random reinit", "Winning tickets learn faster and reach "
                              "higher test accuracy than the same mask randomly reinitialised.",
                              "Frankle & Carbin, ICLR 2019, Figure 4", "at least 1 point above random reinit",
                              "5,000 iterations per round instead of 50,000"),
    "stability_fake": FakeCheck("stability_fake", "LeNet is stable at k=0", "Instability below 2% at k=0.",
                                "Frankle et al., ICML 2020, Figure 3", "instability < 0.02"),
}


def fake_result(name: str, budget: str, verdict: str = "PASS", status: str = "finished") -> dict:
    check = FAKE_CHECKS[name]
    return {"name": name, "title": check.title, "claim": check.claim, "source": check.source,
            "tolerance": check.tolerance, "budget": budget, "status": status, "verdict": verdict,
            "reason": f"ticket 97.1% vs random reinit 94.2%: {verdict.lower()} reason",
            "measured": {"ticket test accuracy": 0.971, "random reinit test accuracy": 0.942, "missing": None,
                         "random_reinit_minus_dense": -0.03},
            "summary": "ticket 97.1% vs random reinit 94.2% (claim: ticket above)",
            "chart": {"title": "Test accuracy vs sparsity", "x_label": "% of weights remaining",
                      "y_label": "test accuracy", "log_x": True,
                      "series": [{"name": "ticket", "x": [100, 51.2, 26.2], "y": [0.97, 0.971, None]},
                                 {"name": "random reinit", "x": [100, 51.2, 26.2], "y": [0.97, 0.95, 0.942]}]},
            "protocol": check.protocol(budget), "run_paths": [], "wall_seconds": 3.5}


@pytest.fixture
def fake_checks(monkeypatch):
    """Two fake checks; run_check reports two steps and returns a PASS (or what `engine` is told)."""
    engine = {"calls": [], "verdict": "PASS", "during": None}

    def run_check(name, runs_root, *, budget="small", data_dir=None, callback=None, stop_requested=lambda: False):
        engine["calls"].append({"name": name, "budget": budget, "runs_root": str(runs_root)})
        if name not in FAKE_CHECKS:
            raise SpecError("check", f"unknown check {name!r}")
        callback({"type": "round_started", "check": name, "network": "ticket", "round": 0})
        callback({"type": "check_progress", "check": name, "done": 1, "total": 2, "message": "dense trained"})
        if engine["during"]:
            engine["during"]()
        if stop_requested():
            return fake_result(name, budget, "INCONCLUSIVE", "cancelled")
        callback({"type": "check_progress", "check": name, "done": 2, "total": 2, "message": "ticket trained"})
        return fake_result(name, budget, engine["verdict"])

    monkeypatch.setattr(reproduce, "CHECKS", FAKE_CHECKS)
    monkeypatch.setattr(reproduce, "run_check", run_check)
    monkeypatch.setattr(reproduce, "matching_checks",
                        lambda spec: ["tickets_fake"] if spec.get("model") == "lenet_300_100" else [])
    return engine


@pytest.fixture
def held(monkeypatch):
    """Record queued reproduction runs instead of running them."""
    calls = []
    monkeypatch.setattr(tasks.run_reproduction_task, "delay", lambda run_id: calls.append(run_id))
    return calls


def text_of(response) -> str:
    return html_module.unescape(re.sub(r"\s+", " ", response.content.decode()))


def card(html: str, name: str) -> str:
    found = re.search(rf'<article class="check" id="check-{name}".*?</article>', html, re.S)
    assert found, f"no card for {name}"
    return found.group(0)


# ---- the page ---------------------------------------------------------------------------------

def test_page_lists_every_check_in_order_with_claim_source_and_tolerance(client, fake_checks):
    response = client.get("/reproductions/")
    assert response.status_code == 200
    html = response.content.decode()
    assert re.findall(r'<article class="check" id="check-(\w+)"', html) == list(FAKE_CHECKS)
    text = text_of(response)
    for check in FAKE_CHECKS.values():
        assert check.title in text and check.claim in text and check.source in text and check.tolerance in text
    assert text.count("no verdict yet") == 2
    assert "Differs from the paper:</span> 5,000 iterations per round instead of 50,000" in text
    assert text.count("Differs from the paper") == 1  # a check without notes shows none
    assert 'href="/reproductions/" id="nav-reproductions"' in html  # the site header links to it
    assert re.search(r'<option value="small" selected>small: ', html)  # the default budget
    assert [m for m in re.findall(r'<option value="(\w+)"', html)] == list(reproduce.BUDGETS)
    assert 'formaction="/reproductions/run/tickets_fake/"' in html and 'id="run-all"' in html
    assert "data-poll" not in html  # nothing to poll


def test_signed_out_visitors_are_sent_to_sign_in(anonymous_client, fake_checks):
    response = anonymous_client.get("/reproductions/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert anonymous_client.get("/reproductions/state.json").status_code == 302


# ---- running a check --------------------------------------------------------------------------

def test_running_a_check_records_its_progress_and_shows_its_verdict_and_chart(client, user, fake_checks, settings):
    response = client.post("/reproductions/run/tickets_fake/", {"budget": "tiny"})
    assert response.status_code == 302 and response["Location"] == "/reproductions/#check-tickets_fake"
    run = ReproductionRun.objects.get()
    assert (run.check_name, run.budget, run.status, run.requested_by) == ("tickets_fake", "tiny", "finished", user)
    assert fake_checks["calls"] == [{"name": "tickets_fake", "budget": "tiny",
                                     "runs_root": str(settings.LOTTERYWEB_RUNS_DIR)}]
    assert (run.progress_done, run.progress_total) == (2, 2)
    assert run.progress_text == "2 of 2 steps done: ticket trained"
    assert run.result["verdict"] == "PASS" and run.started_at <= run.finished_at

    page = client.get("/reproductions/")
    tickets = card(page.content.decode(), "tickets_fake")
    assert '<span class="verdict-badge verdict-pass" title="latest finished run">PASS</span>' in tickets
    tickets_text = html_module.unescape(re.sub(r"\s+", " ", tickets))
    assert "ticket 97.1% vs random reinit 94.2% (claim: ticket above)" in tickets_text  # summary
    assert "pass reason" in tickets_text  # reason
    assert "<dt>ticket test accuracy</dt><dd>0.971</dd>" in tickets and "<dt>missing</dt><dd>–</dd>" in tickets
    assert "<dt>random reinit minus dense</dt><dd>-0.03</dd>" in tickets  # labels are read with spaces
    assert "budget <b>tiny</b> (a smoke test)" in tickets and "queued by alice" in tickets and "in 4 s" in tickets
    figure = json.loads(re.search(r'data-figure-for="reproduction-chart-tickets_fake">(.*?)</script>', tickets,
                                  re.S).group(1))
    assert [trace["name"] for trace in figure["data"]] == ["ticket", "random reinit"]
    assert figure["data"][0]["y"] == [0.97, 0.971, None]  # a missing point stays a gap
    assert figure["layout"]["xaxis"]["type"] == "log"
    assert figure["layout"]["xaxis"]["title"]["text"] == "% of weights remaining"
    assert figure["layout"]["yaxis"]["title"]["text"] == "test accuracy"
    assert figure["layout"]["title"]["text"] == "Test accuracy vs sparsity"
    assert "no verdict yet" in card(page.content.decode(), "stability_fake")


@pytest.mark.parametrize("verdict, css", [("FAIL", "verdict-fail"), ("INCONCLUSIVE", "verdict-inconclusive")])
def test_fail_and_inconclusive_have_their_own_badges(client, fake_checks, verdict, css):
    fake_checks["verdict"] = verdict
    client.post("/reproductions/run/stability_fake/", {"budget": "small"})
    assert f'<span class="verdict-badge {css}" title="latest finished run">{verdict}</span>' in card(
        client.get("/reproductions/").content.decode(), "stability_fake")


def test_a_running_check_shows_its_progress_beside_the_last_verdict_and_is_polled(client, fake_checks, held):
    client.post("/reproductions/run/tickets_fake/", {"budget": "tiny"})
    tasks.run_reproduction_task(held[0])  # the worker runs the first one
    client.post("/reproductions/run/tickets_fake/", {"budget": "small"})  # a second one waits
    waiting = ReproductionRun.objects.get(budget="small")
    ReproductionRun.objects.filter(pk=waiting.pk).update(status="running", progress_done=1, progress_total=4,
                                                         progress_text="1 of 4 steps done: dense trained")
    html = client.get("/reproductions/").content.decode()
    tickets = card(html, "tickets_fake")
    assert "PASS" in tickets  # the earlier verdict stays until the new run finishes
    assert f'data-run-id="{waiting.pk}" data-status="running"' in tickets
    assert "1 of 4 steps done: dense trained" in tickets and 'style="width: 25%"' in tickets
    assert f'form="cancel-{waiting.pk}"' in tickets  # whoever queued it may cancel it
    assert "data-poll" in html
    state = client.get("/reproductions/state.json").json()
    assert state["active"] is True
    assert {(row["check"], row["status"], row["progress_fraction"]) for row in state["runs"]} == {
        ("tickets_fake", "running", 0.25)}


def test_run_all_queues_each_check_once_with_the_chosen_budget(client, fake_checks, held):
    response = client.post("/reproductions/run-all/", {"budget": "large"})
    assert response.status_code == 302 and response["Location"] == "/reproductions/"
    runs = list(ReproductionRun.objects.order_by("id"))
    assert [(run.check_name, run.budget, run.status) for run in runs] == [
        ("tickets_fake", "large", "queued"), ("stability_fake", "large", "queued")]
    assert held == [run.pk for run in runs]
    client.post("/reproductions/run-all/", {"budget": "large"})  # again while they wait: nothing new
    assert ReproductionRun.objects.count() == 2 and len(held) == 2
    client.post("/reproductions/run/tickets_fake/")  # no budget: the default, "small"
    assert ReproductionRun.objects.filter(check_name="tickets_fake", budget="small").exists()


def test_the_reproduction_task_goes_to_the_default_queue(fake_checks):
    assert queues.route_task("frontend.run_reproduction", (1,), {}, {}) == {"queue": queues.DEFAULT_QUEUE}


# ---- bad requests -----------------------------------------------------------------------------

@pytest.mark.parametrize("path, data, status, message", [
    ("/reproductions/run/no_such_check/", {"budget": "small"}, 404, "There is no reproduction check 'no_such_check'."),
    ("/reproductions/run/tickets_fake/", {"budget": "huge"}, 400, "Choose one of tiny, small, large (got 'huge')."),
    ("/reproductions/run-all/", {"budget": ""}, 400, "Choose one of tiny, small, large (got '')."),
    ("/reproductions/runs/999/cancel/", {}, 404, "There is no reproduction run 999."),
])
def test_bad_posts_are_4xx_with_a_message(client, fake_checks, held, path, data, status, message):
    response = client.post(path, data)
    assert response.status_code == status
    assert message in text_of(response)
    assert not ReproductionRun.objects.exists() and not held


@pytest.mark.parametrize("path", ["/reproductions/run/tickets_fake/", "/reproductions/run-all/",
                                  "/reproductions/runs/1/cancel/"])
def test_get_on_a_post_address_is_405_and_signed_out_posts_are_403(client, anonymous_client, fake_checks, held, path):
    response = client.get(path)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert "This address only takes the Reproductions page's form (POST)." in text_of(response)
    response = anonymous_client.post(path, {"budget": "tiny"})
    assert response.status_code == 403
    assert "Sign in to run or cancel reproduction checks." in text_of(response)
    assert not ReproductionRun.objects.exists() and not held


def test_a_broker_that_is_down_fails_the_run_with_a_message(client, fake_checks, monkeypatch):
    def down(_):
        raise ConnectionError("Error 111 connecting to localhost:6379")
    monkeypatch.setattr(tasks.run_reproduction_task, "delay", down)
    assert client.post("/reproductions/run/tickets_fake/", {"budget": "tiny"}).status_code == 302
    run = ReproductionRun.objects.get()
    assert run.status == "failed" and run.message.startswith("could not queue the check (is Redis running?)")
    assert "could not queue the check" in card(client.get("/reproductions/").content.decode(), "tickets_fake")


def test_an_engine_error_fails_the_run_with_its_message(client, fake_checks, held):
    run = services.request_reproduction("tickets_fake", "tiny", None)
    ReproductionRun.objects.filter(pk=run.pk).update(check_name="retired_check")  # e.g. a check removed since
    assert tasks.run_reproduction_task(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.message == "check: unknown check 'retired_check'"
    assert run.finished_at is not None


# ---- cancelling -------------------------------------------------------------------------------

def test_a_queued_check_is_cancelled_at_once_and_its_task_then_does_nothing(client, fake_checks, held):
    client.post("/reproductions/run/tickets_fake/", {"budget": "tiny"})
    run = ReproductionRun.objects.get()
    response = client.post(f"/reproductions/runs/{run.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == "/reproductions/#check-tickets_fake"
    run.refresh_from_db()
    assert (run.status, run.message, run.cancel_requested) == ("cancelled", "cancelled before it started", True)
    assert tasks.run_reproduction_task(run.pk) == "cancelled" and fake_checks["calls"] == []


def test_a_running_check_stops_when_cancelled_and_keeps_no_verdict(client, fake_checks):
    def cancel_meanwhile():
        run = ReproductionRun.objects.get()
        assert run.status == "running"
        assert client.post(f"/reproductions/runs/{run.pk}/cancel/").status_code == 302
    fake_checks["during"] = cancel_meanwhile
    client.post("/reproductions/run/tickets_fake/", {"budget": "tiny"})
    run = ReproductionRun.objects.get()
    assert run.status == "cancelled" and run.message == "cancelled; finished steps are kept for a rerun"
    assert run.result["status"] == "cancelled"
    tickets = card(client.get("/reproductions/").content.decode(), "tickets_fake")
    assert "no verdict yet" in tickets and "cancelled; finished steps are kept" in tickets


def test_only_whoever_queued_a_check_or_a_superuser_cancels_it(client, other_user, fake_checks, held,
                                                                django_user_model):
    run = services.request_reproduction("tickets_fake", "tiny", other_user)
    response = client.post(f"/reproductions/runs/{run.pk}/cancel/")
    assert response.status_code == 403
    assert "Only whoever queued a check (or a superuser) cancels it." in text_of(response)
    assert ReproductionRun.objects.get(pk=run.pk).status == "queued"
    assert f'form="cancel-{run.pk}"' not in client.get("/reproductions/").content.decode()
    admin = django_user_model.objects.create_superuser("root", password="root-password-1")
    client.force_login(admin)
    assert client.post(f"/reproductions/runs/{run.pk}/cancel/").status_code == 302
    assert ReproductionRun.objects.get(pk=run.pk).status == "cancelled"


# ---- crash recovery ---------------------------------------------------------------------------

def lost_run(heartbeat_age_seconds: float, **fields) -> ReproductionRun:
    now = timezone.now()
    return ReproductionRun.objects.create(
        check_name="tickets_fake", budget="small", status="running", worker="celery@cpu-1", progress_done=3,
        progress_total=7, started_at=now - timedelta(hours=1),
        heartbeat_at=now - timedelta(seconds=heartbeat_age_seconds),
        **fields)


def test_a_check_whose_worker_was_lost_is_requeued_with_a_message(settings, fake_checks, held):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    lost, alive = lost_run(300), lost_run(5)
    assert recovery.requeue_lost_reproductions() == [lost.pk] and held == [lost.pk]
    lost.refresh_from_db()
    assert lost.status == "queued"
    assert lost.message.startswith("worker celery@cpu-1 stopped answering after 3 of 7 steps (last heartbeat ")
    assert "finished steps are reused" in lost.message
    assert ReproductionRun.objects.get(pk=alive.pk).status == "running"
    assert recovery.requeue_lost_reproductions() == [], "a re-queued check is not queued twice"
    assert tasks.run_reproduction_task(lost.pk) == "finished"
    lost.refresh_from_db()
    assert "stopped answering" in lost.message, "the finished run still says it was re-queued"


def test_a_lost_check_whose_cancel_was_requested_is_cancelled(settings, fake_checks, held):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    lost = lost_run(300, cancel_requested=True)
    assert recovery.requeue_lost_reproductions() == [] and held == []
    lost.refresh_from_db()
    assert lost.status == "cancelled" and lost.message.startswith("cancelled; worker celery@cpu-1 stopped answering")


@pytest.mark.django_db(transaction=True)  # the heartbeat thread writes through its own connection
def test_the_reproduction_heartbeat_is_written_while_it_runs(settings):
    settings.LOTTERYWEB_HEARTBEAT_SECONDS = 0.05
    run = lost_run(300)
    with recovery.heartbeat(run.pk, ReproductionRun):
        time.sleep(0.3)
    run.refresh_from_db()
    assert run.heartbeat_at > timezone.now() - timedelta(seconds=5)


# ---- badges on an experiment's page ---------------------------------------------------------

def experiment_row(owner, model: str = "lenet_300_100", status: str = "finished", **fields) -> Experiment:
    spec = {"model": model, "dataset": "synthetic", "pruning": {"rounds": 1}}
    return Experiment.objects.create(spec=spec, model_name=model, dataset_name="synthetic", status=status, owner=owner,
                                     **fields)


def test_an_experiment_matching_a_check_shows_its_badge_with_the_latest_verdict(client, user, fake_checks):
    experiment = experiment_row(user)
    html = client.get(f"/e/{experiment.pk}/").content.decode()
    badges = re.search(r'<p class="reproduction-badges".*?</p>', html, re.S).group(0)
    assert 'href="/reproductions/#check-tickets_fake"' in badges
    assert "matches the protocol of <b>Tickets beat random reinit</b>" in badges and "(not run yet)" in badges
    assert "stability_fake" not in badges
    fake_checks["verdict"] = "FAIL"
    client.post("/reproductions/run/tickets_fake/", {"budget": "small"})
    html = client.get(f"/e/{experiment.pk}/").content.decode()
    assert re.search(r'<span class="verdict-badge verdict-fail" title="latest finished run, budget small">FAIL</span>',
                     html)
    other = experiment_row(user, model="conv2")
    assert "reproduction-badges" not in client.get(f"/e/{other.pk}/").content.decode()


def test_the_live_page_and_a_share_link_show_the_badge_too(client, anonymous_client, user, fake_checks):
    running = experiment_row(user, status="running")
    running_html = client.get(f"/e/{running.pk}/").content.decode()
    assert "matches the protocol of <b>Tickets beat random reinit</b>" in running_html
    shared = experiment_row(user, visibility=Experiment.Visibility.LINK)
    html = anonymous_client.get(f"/s/{shared.share_token}/").content.decode()
    assert "matches the protocol of <b>Tickets beat random reinit</b>" in html
    assert "/reproductions/#check-" not in html  # no link to a page a share-link visitor cannot open


# ---- with the real checks ---------------------------------------------------------------------

@pytest.fixture
def real_checks():
    """trainer.reproduce as it is (the fixtures above replace it only for their own tests)."""
    assert set(reproduce.CHECKS) >= {"tickets_vs_dense", "lenet_stability"}
    return reproduce.CHECKS


def test_the_page_shows_every_real_check(client, real_checks):
    response = client.get("/reproductions/")
    html, text = response.content.decode(), text_of(response)
    assert re.findall(r'<article class="check" id="check-(\w+)"', html) == list(real_checks)
    for check in real_checks.values():
        assert html_module.unescape(check.title) in text and check.source in text and check.tolerance in text


def test_an_experiment_run_with_a_checks_protocol_shows_its_badge(client, user, real_checks):
    spec = real_checks["tickets_vs_dense"].protocol("small")["steps"][0]["spec"]
    experiment = Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"],
                                           status="finished", owner=user)
    html = html_module.unescape(client.get(f"/e/{experiment.pk}/").content.decode())
    assert f"matches the protocol of <b>{real_checks['tickets_vs_dense'].title}</b>" in html
    assert 'href="/reproductions/#check-tickets_vs_dense"' in html


def test_a_real_check_runs_through_the_task_at_the_tiny_budget(client, real_checks, settings, tmp_path):
    """lenet_stability at "tiny" (seconds): the real check_progress events reach the row, the result
    (a smoke test: INCONCLUSIVE) and its chart reach the page."""
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    with single_torch_thread():
        client.post("/reproductions/run/lenet_stability/", {"budget": "tiny"})
    run = ReproductionRun.objects.get()
    assert run.status == "finished", run.message
    assert run.progress_total > 0 and run.progress_done == run.progress_total
    assert run.result["verdict"] == "INCONCLUSIVE" and "smoke-test" in run.result["reason"]
    assert (tmp_path / "reproduce" / "lenet_stability" / "tiny" / "result.json").is_file()
    stability = card(client.get("/reproductions/").content.decode(), "lenet_stability")
    badge = '<span class="verdict-badge verdict-inconclusive" title="latest finished run">INCONCLUSIVE</span>'
    assert badge in stability
    figure = json.loads(re.search(r'data-figure-for="reproduction-chart-lenet_stability">(.*?)</script>', stability,
                                  re.S).group(1))
    assert figure["data"] and figure["layout"]["xaxis"]["title"]["text"] == run.result["chart"]["x_label"]


def test_the_progress_line_names_the_step_and_the_training_in_flight():
    run = ReproductionRun.objects.create(check_name="tickets_vs_dense", budget="small", status="running")
    now = [0.0]
    recorder = ReproductionProgressRecorder(run.pk, messages_per_second=1, clock=lambda: now[0])

    def shown() -> tuple:
        row = ReproductionRun.objects.get(pk=run.pk)
        return row.progress_done, row.progress_total, row.progress_text

    recorder.handle({"type": "check_progress", "done": 1, "total": 4, "message": "training LeNet-300-100 IMP"})
    assert shown() == (1, 4, "1 of 4 steps done: training LeNet-300-100 IMP")
    now[0] = 0.5
    recorder.handle({"type": "round_started", "network": "random_reinit", "round": 3})
    assert shown()[2] == "1 of 4 steps done: training LeNet-300-100 IMP", "throttled: at most one write a second"
    now[0] = 1.2
    recorder.handle({"type": "metrics", "iteration": 300, "loss": 0.2})
    assert shown()[2] == "1 of 4 steps done: training LeNet-300-100 IMP · random reinit round 3, iteration 300"
    now[0] = 1.3
    recorder.handle({"type": "check_progress", "done": 2, "total": 4, "message": "IMP done"})
    assert shown() == (2, 4, "2 of 4 steps done: IMP done"), "a step's end is written at once"
    assert ReproductionRun.objects.get(pk=run.pk).progress_fraction == 0.5
