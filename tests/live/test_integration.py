"""The real path: web form over HTTP -> Redis -> Celery worker -> trainer -> database + Redis channel
layer -> websocket -> result page. Real redis-server, Celery worker and daphne processes."""
import json
import re
import time

import pytest
import redis
from websockets.sync.client import connect

from frontend.listeners import KEY_PREFIX
from tests.live.conftest import HttpSession
from tests.web.conftest import form_data

pytestmark = [pytest.mark.live, pytest.mark.slow]


def submit(session: HttpSession, **field_values) -> int:
    status, _, _ = session.request("/new/")
    assert status == 200
    data = form_data(**field_values)
    data["csrfmiddlewaretoken"] = session.cookie("csrftoken")
    status, headers, body = session.request("/new/", data, headers={"Referer": session.base_url + "/new/"})
    assert status == 302, body.decode(errors="replace")[:2000]
    return int(re.fullmatch(r"/e/(\d+)/", headers["Location"]).group(1))


def socket_to(live_app, experiment_id, session: HttpSession):
    return connect(f"{live_app.ws_base}/ws/e/{experiment_id}/", origin=live_app.base_url, open_timeout=10,
                   additional_headers=session.session_cookie_header())


def test_experiment_through_form_worker_websocket_database_and_result_page(live_app):
    session = HttpSession(live_app.base_url)
    session.login()
    experiment_id = submit(session, init_seed="101", training__training_steps="300it", training__eval_interval="50it")

    received = []
    late_joiner = None
    with socket_to(live_app, experiment_id, session) as websocket:
        first = json.loads(websocket.recv(timeout=10))
        assert first["type"] == "snapshot"
        last_seq = first["seq"]
        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline, "the run did not finish in time"
            live_app.check_alive()
            message = json.loads(websocket.recv(timeout=60))
            assert message["type"] == "events"
            received.append((time.monotonic(), message))
            assert message["seq"] == last_seq + 1, "live messages are consecutive after the snapshot"
            last_seq = message["seq"]
            if late_joiner is None and any(e["type"] == "eval" for e in message["events"]) \
                    and message["progress"]["status"] == "running":
                # a second browser joins mid-run: state first, then the next live message, no gap
                late_joiner = socket_to(live_app, experiment_id, session)
                snapshot = json.loads(late_joiner.recv(timeout=10))
                assert snapshot["type"] == "snapshot" and snapshot["seq"] >= message["seq"]
                assert any(curve["evals"]["iteration"] for curve in snapshot["curves"])
                late_seq = snapshot["seq"]
            if message["progress"]["status"] in ("finished", "failed", "diverged", "cancelled"):
                break
    assert message["progress"]["status"] == "finished", message["progress"]

    events = [event for _, message in received for event in message["events"]]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    evals = {(e["network"], e["round"]) for e in events if e["type"] == "eval"}
    assert evals == {("ticket", 0), ("ticket", 1), ("ticket", 2), ("random_reinit", 1), ("random_reinit", 2)}
    # throttled: about 10 messages a second at most (allow for delivery jitter)
    span = received[-1][0] - received[0][0]
    print(f"live: {len(received)} messages carrying {len(events)} events in {span:.1f} s")
    assert len(received) <= 10 * span + 3, (len(received), span)

    assert late_joiner is not None, "the run ended before a second browser could join mid-run"
    with late_joiner:
        while late_seq < last_seq:
            message = json.loads(late_joiner.recv(timeout=10))
            if message["seq"] > late_seq:
                assert message["seq"] == late_seq + 1
                late_seq = message["seq"]

    # What the worker stored, read straight from the database the processes share (SQLite or PostgreSQL).
    rounds = live_app.query("SELECT network, round_index, status, remaining_fraction FROM frontend_roundresult "
                            "WHERE experiment_id = ? ORDER BY network, round_index", (experiment_id,))
    curves = live_app.query("SELECT network, round_index, evals FROM frontend_curve WHERE experiment_id = ?",
                            (experiment_id,))
    status = live_app.query("SELECT status FROM frontend_experiment WHERE id = ?", (experiment_id,))
    assert status == [("finished",)]
    assert [(n, r, s) for n, r, s, _ in rounds] == [("random_reinit", 1, "finished"), ("random_reinit", 2, "finished"),
                                                     ("ticket", 0, "finished"), ("ticket", 1, "finished"),
                                                     ("ticket", 2, "finished")]
    evals = [json.loads(value) if isinstance(value, str) else value for _, _, value in curves]
    assert len(evals) == 5 and all(curve["iteration"][-1] == 300 for curve in evals)

    status, _, body = session.request(f"/e/{experiment_id}/")
    html = body.decode()
    assert status == 200 and 'id="result-page"' in html
    for dom_id in ("chart-sparsity-accuracy", "chart-early-stop", "chart-training-curves"):
        figure = json.loads(re.search(rf'data-figure-for="{dom_id}">(.*?)</script>', html, re.S).group(1))
        assert figure["data"], dom_id
    masks = session.json(f"/e/{experiment_id}/masks/2/")
    assert masks[0]["id"] == "mask-input-pixels" and masks[1]["figure"]["data"][0]["type"] == "heatmap"
    results = session.json(f"/e/{experiment_id}/results.json")
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2]
    status, headers, body = session.request("/static/vendor/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and "javascript" in headers["Content-Type"]

    # A browser that arrives after the end gets the finished state right away.
    with socket_to(live_app, experiment_id, session) as websocket:
        snapshot = json.loads(websocket.recv(timeout=10))
        assert snapshot["progress"]["status"] == "finished" and len(snapshot["rounds"]) == 5


def test_the_real_worker_announces_the_queue_it_listens_on(live_app, redis_server):
    """The Celery worker of live_app consumes from the default queue only: its announcement is in Redis
    (frontend.listeners), so a cuda experiment would be shown as having no worker on 'gpu'."""
    client = redis.Redis.from_url(redis_server)
    deadline = time.monotonic() + 30
    keys = []
    while time.monotonic() < deadline and not keys:
        keys = [key.decode() for key in client.scan_iter(match=f"{KEY_PREFIX}*")]
        time.sleep(0.2)
    assert keys and all(key.startswith(f"{KEY_PREFIX}celery:") for key in keys), keys
    assert 0 < client.ttl(keys[0]) <= 15
