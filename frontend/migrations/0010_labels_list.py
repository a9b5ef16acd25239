"""The list page at scale: each experiment's best ticket stored on its row (shown and sorted without reading
rounds), filled in for existing experiments, and a generated name for those stored without one."""
from django.db import migrations, models

from frontend.labels import default_name
from frontend.models import task_of_dataset  # a plain function of the dataset name
from frontend.records import round_row
from trainer.events import TICKET
from trainer.verdict import best_ticket


def fill_names_and_best_tickets(apps, schema_editor):
    experiment_model = apps.get_model("frontend", "Experiment")
    round_model = apps.get_model("frontend", "RoundResult")
    for experiment in experiment_model.objects.all().iterator():
        rounds = [round_row(result) for result in round_model.objects.filter(
            experiment_id=experiment.pk, network=TICKET, replicate=0)]
        ticket = best_ticket(rounds, task_of_dataset(experiment.dataset_name).metric)
        experiment_model.objects.filter(pk=experiment.pk).update(
            name=experiment.name or default_name(experiment.spec),
            best_ticket_remaining=ticket["remaining_fraction"] if ticket else None,
            best_ticket_metric=ticket["reported_test_metric"] if ticket else None,
            best_ticket_round=ticket["round"] if ticket else None)


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0009_lab_scale"),
    ]

    operations = [
        migrations.AddField(
            model_name="experiment",
            name="best_ticket_metric",
            field=models.FloatField(blank=True, help_text="its reported test metric", null=True),
        ),
        migrations.AddField(
            model_name="experiment",
            name="best_ticket_remaining",
            field=models.FloatField(blank=True, db_index=True, null=True),
        ),
        migrations.AddField(
            model_name="experiment",
            name="best_ticket_round",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(fill_names_and_best_tickets, migrations.RunPython.noop),
    ]
