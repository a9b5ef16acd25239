"""Which database the suite runs on: SQLite by default, PostgreSQL under scripts/with_postgres.sh
(which sets POSTGRES_EXPECTED=1), so the PostgreSQL pass cannot silently fall back to SQLite."""
import os

import pytest
from django.db import IntegrityError, connection, transaction

from frontend.models import Experiment, RoundResult


@pytest.mark.django_db
def test_the_suite_runs_on_the_database_it_was_asked_for():
    expected = "postgresql" if os.environ.get("POSTGRES_EXPECTED") == "1" else "sqlite"
    assert connection.vendor == expected


@pytest.mark.django_db
def test_json_fields_and_unique_training_rows_behave_the_same_on_this_database():
    experiment = Experiment.objects.create(spec={"pruning": {"layer_fractions": {"fc3.weight": 0.1}}, "seeds": [1, 2]},
                                           model_name="lenet_300_100", dataset_name="synthetic")
    assert Experiment.objects.filter(spec__pruning__layer_fractions__has_key="fc3.weight").count() == 1
    fields = dict(status="finished", remaining_fraction=0.5, layers={})
    RoundResult.objects.create(experiment=experiment, network="ticket", replicate=0, round_index=1, **fields)
    RoundResult.objects.create(experiment=experiment, network="ticket", replicate=1, round_index=1, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        RoundResult.objects.create(experiment=experiment, network="ticket", replicate=1, round_index=1, **fields)
