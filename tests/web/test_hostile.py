"""A corpus of hostile input to the form, the spec upload and the pages: each gets a 4xx with a
message, never a 500, and the stored experiments stay as they were."""
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from frontend.models import Experiment
from tests.web.conftest import form_data

pytestmark = pytest.mark.django_db


FORM_ATTACKS = {
    "wrong type": {"training__lr": "fast"},
    "huge number": {"training__batch_size": "9" * 400},
    "huge float": {"pruning__fraction": "1e999"},
    "negative size": {"validation_size": "-100"},
    "unknown choice": {"model": "gpt5"},
    "script in a choice": {"training__optimizer": "<script>alert(1)</script>"},
    "script in a layer name": {"pruning__layer_fractions": "<script>alert(1)</script>=0.1"},
    "script in a step": {"rewind_step": "<img src=x onerror=alert(1)>"},
    "nul byte": {"training__training_steps": "10\x00it"},
    "unknown visibility": {"visibility": "everyone"},
    "unknown analysis": {"analyses": ["astrology"]},
}


@pytest.mark.parametrize("attack", FORM_ATTACKS)
def test_hostile_form_posts_get_a_400_with_the_message_and_store_nothing(client, stored, queued, attack):
    response = client.post("/new/", form_data(**FORM_ATTACKS[attack]))
    assert response.status_code == 400, attack
    html = response.content.decode()
    assert "has-error" in html or "form-errors" in html
    assert "<script>alert(1)</script>" not in html, "echoed input is escaped"
    assert not queued


def test_an_oversized_form_post_is_a_400(client, stored, queued, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = client.post("/new/", {**form_data(), "padding": "x" * 20_000})
    assert response.status_code == 400 and not queued


SPEC_FILES = {
    "not json": (b"model: lenet", "not valid JSON"),
    "a list": (b"[1, 2, 3]", "spec"),
    "unknown field": (json.dumps({"model": "lenet_300_100", "teleport": True}).encode(), "teleport"),
    "bad value": (json.dumps({"pruning": {"fraction": -1}}).encode(), "pruning.fraction"),
    "script": (json.dumps({"model": "<script>alert(1)</script>"}).encode(), "model"),
    "binary": (bytes(range(256)), "not UTF-8 text"),
    "huge": (b" " * 70_000 + b"{}", "at most"),
}


@pytest.mark.parametrize("case", SPEC_FILES)
def test_broken_spec_files_get_a_400_naming_the_problem(client, stored, queued, case):
    content, expected = SPEC_FILES[case]
    response = client.post("/new/upload/", {"spec_file": SimpleUploadedFile("spec.json", content)})
    assert response.status_code == 400, case
    html = response.content.decode()
    assert expected in html and "<script>alert(1)</script>" not in html
    assert not queued


def test_a_good_spec_file_or_results_file_fills_in_the_form(client, finished_run, queued):
    results, run_path = finished_run
    for name in ("spec.json", "results.json"):
        response = client.post("/new/upload/", {"spec_file": SimpleUploadedFile(name, (run_path / name).read_bytes())})
        assert response.status_code == 200, name
        html = response.content.decode()
        assert 'name="pruning__rounds"' in html and 'value="2"' in html
    assert client.post("/new/upload/", {}).status_code == 400
    assert not queued and Experiment.objects.count() == 0


@pytest.mark.parametrize("path", ["/e/99999999999999999999/", "/e/1/masks/99999999999/?network=<script>",
                                  "/e/1/masks/1/?network=../../etc", "/s/%00/",
                                  "/compare/?ids=" + ",".join(["1"] * 500),
                                  "/e/1/export/ticket/1.pt?replicate=-1",
                                  "/e/1/export/ticket/1.pt?replicate=" + "9" * 50])
def test_hostile_urls_are_4xx(client, finished_experiment, stored, path):
    path = path.replace("/e/1/", f"/e/{finished_experiment.pk}/")
    assert 400 <= client.get(path).status_code < 500, path
