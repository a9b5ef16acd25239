"""Issue 10 item 7, the web side: an absurd but well-typed workload is refused by the API and the form,
naming the field, and nothing is stored or queued (the trainer and CLI side is tests/trainer/test_input_limits.py)."""
import pytest

from frontend.models import Experiment
from tests.trainer.conftest import ABSURD_WORKLOAD
from tests.web.conftest import form_data


@pytest.mark.django_db
def test_api_refuses_an_absurd_workload_and_keeps_stored_experiments(api, queued, stored):
    response = api("POST", "/api/experiments/", {"spec": ABSURD_WORKLOAD})
    assert response.status_code == 400
    assert response.json()["field"] == "spec.training.training_steps"
    assert "above the limit" in response.json()["error"]
    assert queued == []


@pytest.mark.django_db
def test_form_refuses_an_absurd_workload(client, queued, stored):
    response = client.post("/new/", form_data(training__training_steps="99999999999999999999it"))
    assert response.status_code == 400
    assert "above the limit" in response.content.decode()
    assert queued == [] and Experiment.objects.filter(status="queued").count() == 0


@pytest.mark.django_db
def test_a_language_model_is_refused_by_the_api_with_the_way_to_run_it(api, queued, stored):
    spec = {"model": "transformer_lm", "dataset": "python_docs", "training": {"training_steps": "10it"}}
    response = api("POST", "/api/experiments/", {"spec": spec})
    assert response.status_code == 400
    assert response.json()["field"] == "spec.dataset"
    assert "python -m trainer run" in response.json()["error"]
    assert queued == []


@pytest.mark.django_db
def test_the_form_offers_image_classification_only(client):
    page = client.get("/new/").content.decode()
    assert 'value="fashion_mnist"' in page
    assert 'value="python_docs"' not in page and 'value="transformer_lm"' not in page
