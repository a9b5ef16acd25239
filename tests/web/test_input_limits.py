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
def test_the_api_accepts_a_language_model_and_queues_it(api, queued):
    spec = {"model": "transformer_lm", "dataset": "python_docs", "training": {"training_steps": "10it"}}
    response = api("POST", "/api/experiments/", {"spec": spec})
    assert response.status_code == 201, response.content
    experiment = Experiment.objects.get(pk=response.json()["id"])
    assert experiment.task.name == "language_modeling" and experiment.metric.label == "perplexity"
    assert len(queued) == 1


@pytest.mark.django_db
def test_the_api_refuses_a_language_model_on_an_image_dataset_naming_the_model(api, queued, stored):
    spec = {"model": "transformer_lm", "dataset": "mnist"}
    response = api("POST", "/api/experiments/", {"spec": spec})
    assert response.status_code == 400
    assert response.json()["field"] == "spec.model" and "language modeling model" in response.json()["error"]
    assert queued == []


@pytest.mark.django_db
def test_the_form_offers_every_task_with_its_datasets_and_models(client):
    page = client.get("/new/").content.decode()
    assert 'value="fashion_mnist"' in page
    for name in ("python_docs", "cartpole", "transformer_lm", "transformer_lm_untied", "lstm_lm", "actor_critic"):
        assert f'value="{name}"' in page
    assert 'value="language_modeling"' in page and 'value="reinforcement_learning"' in page


@pytest.mark.django_db
def test_the_form_refuses_a_language_model_on_an_image_dataset_beside_the_model_field(client, queued):
    response = client.post("/new/", form_data(model="lstm_lm", dataset="mnist", task="language_modeling"))
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="field-model"' in page and "language modeling model" in page
    assert queued == []
