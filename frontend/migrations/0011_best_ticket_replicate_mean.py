"""The stored best ticket of an experiment with replicates is judged on the replicates' mean per round (the numbers
its sparsity chart draws), no longer on replicate 0 alone: recomputed for the experiments that have replicates."""
from django.db import migrations

from frontend.records import best_ticket_fields  # reads the rows' fields only, as the historical models have them
from trainer.events import TICKET


def best_tickets_of_replicate_means(apps, schema_editor):
    experiment_model = apps.get_model("frontend", "Experiment")
    round_model = apps.get_model("frontend", "RoundResult")
    for experiment in experiment_model.objects.all().iterator():
        replicates = int((experiment.spec or {}).get("replicates") or 1)
        if replicates <= 1:
            continue
        ticket_results = round_model.objects.filter(experiment_id=experiment.pk, network=TICKET)
        experiment_model.objects.filter(pk=experiment.pk).update(
            **best_ticket_fields(ticket_results, experiment.spec, experiment.dataset_name))


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0010_labels_list"),
    ]

    operations = [
        migrations.RunPython(best_tickets_of_replicate_means, migrations.RunPython.noop),
    ]
