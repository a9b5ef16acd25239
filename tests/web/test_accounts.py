"""Accounts and sharing: who sees, changes and deletes which experiment, through every door."""
from pathlib import Path

import pytest

from frontend.models import Experiment
from tests.web.conftest import form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def bobs(finished_experiment, other_user):
    """The session's finished run as bob's private experiment (alice is the signed-in client)."""
    Experiment.objects.filter(pk=finished_experiment.pk).update(owner=other_user, visibility="private")
    finished_experiment.refresh_from_db()
    return finished_experiment


READ_PATHS = ["", "result/", "state.json", "results.json", "masks/1/", "analyses/", "analyses.json"]


def test_signed_out_visitors_are_sent_to_the_login_page(anonymous_client, finished_experiment):
    for path in ["/", "/new/", f"/e/{finished_experiment.pk}/", f"/e/{finished_experiment.pk}/results.json"]:
        response = anonymous_client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), path
    assert anonymous_client.post(f"/e/{finished_experiment.pk}/cancel/").status_code == 302
    assert Experiment.objects.filter(pk=finished_experiment.pk).exists()


def test_login_and_logout(anonymous_client, user):
    assert "Sign in" in anonymous_client.get("/login/").content.decode()
    wrong = anonymous_client.post("/login/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200 and "Wrong user name or password" in wrong.content.decode()
    right = anonymous_client.post("/login/", {"username": "alice", "password": "alice-password-1", "next": "/new/"})
    assert right.status_code == 302 and right["Location"] == "/new/"
    assert "alice" in anonymous_client.get("/").content.decode()
    assert anonymous_client.post("/logout/").status_code == 302
    assert anonymous_client.get("/").status_code == 302


def test_nobody_reads_or_changes_another_users_private_experiment(client, bobs):
    for path in READ_PATHS:
        assert client.get(f"/e/{bobs.pk}/{path}").status_code == 404, path
    for path in ["cancel/", "delete/", "visibility/", "analyses/retraining/"]:
        assert client.post(f"/e/{bobs.pk}/{path}", {"visibility": "link"}).status_code == 404, path
    assert f"/e/{bobs.pk}/" not in client.get("/").content.decode(), "not listed either"
    bobs.refresh_from_db()
    assert bobs.visibility == "private" and not bobs.cancel_requested


def test_team_visible_is_readable_by_every_account_but_changed_only_by_its_owner(client, bobs):
    Experiment.objects.filter(pk=bobs.pk).update(visibility="team")
    for path in READ_PATHS:
        assert client.get(f"/e/{bobs.pk}/{path}").status_code == 200, path
    page = client.get(f"/e/{bobs.pk}/").content.decode()
    assert 'id="visibility-form"' not in page and 'id="delete-form"' not in page
    assert "Only the experiment's owner runs analyses" in page
    for path in ["delete/", "visibility/", "analyses/retraining/"]:
        assert client.post(f"/e/{bobs.pk}/{path}", {"visibility": "private"}).status_code == 403, path
    assert Experiment.objects.get(pk=bobs.pk).visibility == "team"
    assert f"/e/{bobs.pk}/" in client.get("/").content.decode()


def test_a_share_link_shows_a_read_only_page_without_an_account_until_withdrawn(anonymous_client, bobs, other_user):
    token = bobs.share_token
    assert len(token) >= 40
    assert anonymous_client.get(f"/s/{token}/").status_code == 404, "private: the token opens nothing"
    Experiment.objects.filter(pk=bobs.pk).update(visibility="link")
    for path in READ_PATHS:
        response = anonymous_client.get(f"/s/{token}/{path}")
        assert response.status_code == 200, path
    page = anonymous_client.get(f"/s/{token}/").content.decode()
    assert "Shared read-only by link" in page and 'id="chart-sparsity-accuracy"' in page
    assert f'data-url-base="/s/{token}/masks/"' in page and f'href="/s/{token}/results.json"' in page
    assert "csrfmiddlewaretoken" not in page.split('id="analyses"')[0], "no forms before the analyses"
    assert anonymous_client.post(f"/s/{token}/cancel/").status_code == 404
    assert anonymous_client.get(f"/s/{token[:-1]}x/").status_code == 404
    # the owner withdraws it
    Experiment.objects.filter(pk=bobs.pk).update(visibility="private")
    assert anonymous_client.get(f"/s/{token}/").status_code == 404


def test_the_owner_shares_and_deletes_their_experiment(client, finished_experiment):
    page = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    assert 'id="visibility-form"' in page and 'id="delete-form"' in page
    assert client.post(f"/e/{finished_experiment.pk}/visibility/", {"visibility": "everyone"}).status_code == 400
    response = client.post(f"/e/{finished_experiment.pk}/visibility/", {"visibility": "link"})
    assert response.status_code == 302
    finished_experiment.refresh_from_db()
    assert finished_experiment.visibility == "link"
    assert f"/s/{finished_experiment.share_token}/" in client.get(f"/e/{finished_experiment.pk}/").content.decode()
    run_dir = finished_experiment.run_dir
    assert client.post(f"/e/{finished_experiment.pk}/delete/").status_code == 302
    assert not Experiment.objects.filter(pk=finished_experiment.pk).exists()
    assert (Path(run_dir) / "results.json").is_file(), "the run directory stays (the CLI's and other experiments')"


def test_a_running_experiment_is_not_deleted(client, finished_experiment):
    Experiment.objects.filter(pk=finished_experiment.pk).update(status="running")
    assert client.post(f"/e/{finished_experiment.pk}/delete/").status_code == 409
    assert Experiment.objects.filter(pk=finished_experiment.pk).exists()


def test_a_new_experiment_belongs_to_its_creator_with_the_chosen_visibility(client, user, queued):
    response = client.post("/new/", {**form_data(), "visibility": "team"})
    assert response.status_code == 302
    experiment = Experiment.objects.get()
    assert experiment.owner == user and experiment.visibility == "team"
