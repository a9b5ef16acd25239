"""Owners, visibility and share tokens for experiments; API tokens.

The share token is unique: existing rows get their own token in a data step before the
unique constraint is added (a callable default alone would give them all the same value).
"""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import frontend.models


def give_every_experiment_a_token(apps, schema_editor):
    Experiment = apps.get_model("frontend", "Experiment")
    for experiment in Experiment.objects.filter(share_token=""):
        experiment.share_token = frontend.models.new_share_token()
        experiment.save(update_fields=["share_token"])


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0004_replicates"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="experiment", name="owner",
            field=models.ForeignKey(blank=True, help_text="null: imported or made before accounts (team-visible)",
                                    null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="experiments", to=settings.AUTH_USER_MODEL)),
        migrations.AddField(
            model_name="experiment", name="visibility",
            field=models.CharField(choices=[("private", "private (only me)"),
                                            ("team", "team (every account on this server)"),
                                            ("link", "public by link (anyone with the share link, no account needed)")],
                                   default="private", max_length=10)),
        migrations.AddField(
            model_name="experiment", name="share_token",
            field=models.CharField(default="", editable=False, max_length=64)),
        migrations.RunPython(give_every_experiment_a_token, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="experiment", name="share_token",
            field=models.CharField(default=frontend.models.new_share_token, editable=False, max_length=64,
                                   unique=True)),
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key_hash", models.CharField(max_length=64, unique=True)),
                ("label", models.CharField(blank=True, max_length=100)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="api_tokens",
                                           to=settings.AUTH_USER_MODEL)),
            ],
        ),
    ]
