"""Round results hold the task's metric (accuracy, perplexity or mean return), so the *_accuracy
columns are renamed *_metric; RenameField keeps every stored value."""
from django.db import migrations, models

RENAMED = ["early_stop_val", "early_stop_test", "final_test", "final_val"]


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0007_reproduction_runs"),
    ]

    operations = [
        migrations.RenameField(model_name="roundresult", old_name=f"{prefix}_accuracy", new_name=f"{prefix}_metric")
        for prefix in RENAMED
    ] + [
        migrations.AlterField(
            model_name="curve", name="evals",
            field=models.JSONField(default=dict,
                                   help_text="{iteration: [...], val_loss, val_<metric>, test_loss, test_<metric>}"),
        ),
    ]
