"""Data migrations run on stored rows: migrate back, store rows as the older code did, migrate forward."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from trainer.events import TICKET


def migrated_to(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


@pytest.fixture
def back_to_the_latest_afterwards():
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("back_to_the_latest_afterwards")
def test_0011_recomputes_the_stored_best_ticket_of_experiments_with_replicates_on_their_mean():
    apps = migrated_to(("frontend", "0010_labels_list"))
    experiment_model, round_model = apps.get_model("frontend", "Experiment"), apps.get_model("frontend", "RoundResult")
    spec = {"model": "lenet_300_100", "dataset": "mnist", "pruning": {"fraction": 0.5, "rounds": 2}}
    # What 0010 stored: replicate 0's best ticket, round 2 (0.90 against its dense 0.905).
    with_replicates = experiment_model.objects.create(
        spec={**spec, "replicates": 2}, model_name="lenet_300_100", dataset_name="mnist", status="finished",
        name="two", best_ticket_round=2, best_ticket_remaining=0.25, best_ticket_metric=0.90)
    single = experiment_model.objects.create(
        spec=spec, model_name="lenet_300_100", dataset_name="mnist", status="finished", name="one",
        best_ticket_round=2, best_ticket_remaining=0.25, best_ticket_metric=0.90)
    for replicate, accuracies in {0: [0.905, 0.90, 0.90], 1: [0.905, 0.90, 0.82]}.items():
        for round_index, accuracy in enumerate(accuracies):
            for experiment in (with_replicates, single) if replicate == 0 else (with_replicates,):
                round_model.objects.create(
                    experiment_id=experiment.pk, network=TICKET, replicate=replicate, round_index=round_index,
                    status="finished", remaining_fraction=0.5 ** round_index, layers={}, early_stop_iteration=10,
                    early_stop_test_metric=accuracy, final_test_metric=accuracy)
    apps = migrated_to(("frontend", "0011_best_ticket_replicate_mean"))
    experiment_model = apps.get_model("frontend", "Experiment")
    recomputed = experiment_model.objects.get(pk=with_replicates.pk)
    assert (recomputed.best_ticket_round, recomputed.best_ticket_remaining) == (1, 0.5)
    assert recomputed.best_ticket_metric == pytest.approx(0.90)
    untouched = experiment_model.objects.get(pk=single.pk)
    assert (untouched.best_ticket_round, untouched.best_ticket_metric) == (2, pytest.approx(0.90))
