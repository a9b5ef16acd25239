"""python manage.py import_run RUN_DIR [...]: show CLI runs (and their analyses) in the web app."""
from django.core.management.base import BaseCommand, CommandError

from frontend import services


class Command(BaseCommand):
    help = ("Import run directories made with `python -m trainer run` (results.json, every replicate's rounds "
            "and controls, finished analyses) as experiments. Importing a directory again refreshes it.")

    def add_arguments(self, parser):
        parser.add_argument("run_dirs", nargs="+", help="run directories, e.g. runs/lenet_300_100_fashion_mnist_<hash>")

    def handle(self, *args, **options):
        for path in options["run_dirs"]:
            try:
                experiment, created, analyses = services.import_run_directory(path)
            except services.NotAvailable as error:
                raise CommandError(str(error)) from None
            verb = "imported" if created else "refreshed"
            self.stdout.write(f"{verb} {path} as experiment {experiment.pk} ({experiment.status}, "
                              f"{experiment.round_results.count()} trainings, {analyses} new analyses): "
                              f"/e/{experiment.pk}/")
