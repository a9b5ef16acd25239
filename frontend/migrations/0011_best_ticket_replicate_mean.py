"""The stored best ticket of an experiment with replicates is judged on the replicates' mean per round (the numbers
its sparsity chart draws), no longer on replicate 0 alone: recomputed for the experiments that have replicates."""
from django.db import migrations

from frontend.models import task_of_dataset  # a plain function of the dataset name
from frontend.records import round_row
from trainer.events import TICKET
from trainer.verdict import best_ticket, mean_over_replicates


def best_tickets_of_replicate_means(apps, schema_editor):
    experiment_model = apps.get_model("frontend", "Experiment")
    round_model = apps.get_model("frontend", "RoundResult")
    for experiment in experiment_model.objects.all().iterator():
        replicates = int((experiment.spec or {}).get("replicates") or 1)
        if replicates <= 1:
            continue
        rows = [round_row(result) for result in round_model.objects.filter(experiment_id=experiment.pk, network=TICKET)]
        ticket = best_ticket(mean_over_replicates(rows, replicates), task_of_dataset(experiment.dataset_name).metric)
        experiment_model.objects.filter(pk=experiment.pk).update(
            best_ticket_remaining=ticket["remaining_fraction"] if ticket else None,
            best_ticket_metric=ticket["reported_test_metric"] if ticket else None,
            best_ticket_round=ticket["round"] if ticket else None)


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0010_labels_list"),
    ]

    operations = [
        migrations.RunPython(best_tickets_of_replicate_means, migrations.RunPython.noop),
    ]
