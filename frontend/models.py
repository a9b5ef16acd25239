"""What the web app stores: experiments, one result row per (network, replicate, round), one curve row per training.

The run directory (weights, masks, results.json) stays the trainer's; the database holds what pages
and the live view read often. Curves are stored as one JSON record per (network, round), never one
row per point, so a result page with many rounds and controls is a handful of queries.
"""
import hashlib
import secrets

from django.conf import settings
from django.db import models

from frontend.labels import default_name
from trainer import datasets, tasks
from trainer.tasks import Metric, Task


def new_share_token() -> str:
    """An unguessable link token (256 bits)."""
    return secrets.token_urlsafe(32)


class RunStatus(models.TextChoices):
    """The life of a queued job (an experiment piece, an analysis run, a reproduction run)."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Tag(models.Model):
    """A free label on experiments and sweeps ("baseline", "paper-fig-3"); lower case, no spaces."""

    name = models.CharField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Sweep(models.Model):
    """A base spec, a grid (or an explicit list of points) over spec fields, and a number of seeds.

    Each point is an ordinary Experiment (SweepPoint links them; a finished experiment with the same
    spec is reused). The sweep's status follows from its points' experiments."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="sweeps")
    visibility = models.CharField(max_length=10, choices=[("private", "private (only me)"),
                                                          ("team", "team (every account on this server)"),
                                                          ("link", "public by link")], default="private")
    share_token = models.CharField(max_length=64, unique=True, default=new_share_token, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    description = models.TextField(blank=True, help_text="Markdown, rendered sanitised")
    tags = models.ManyToManyField(Tag, blank=True, related_name="sweeps")
    base_spec = models.JSONField(help_text="ExperimentSpec.to_dict() every point starts from")
    grid = models.JSONField(default=dict, blank=True, help_text="{dotted spec field: [values]}, crossed")
    points = models.JSONField(default=list, blank=True, help_text="explicit [{dotted field: value}], instead of a grid")
    seeds = models.PositiveIntegerField(default=1, help_text="each configuration runs with this many seeds")
    preset = models.CharField(max_length=100, blank=True)
    analyses = models.JSONField(default=list, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Sweep {self.pk} ({self.name})"


class Experiment(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        DIVERGED = "diverged"
        CANCELLED = "cancelled"
        FAILED = "failed"

    DONE_STATUSES = (Status.FINISHED, Status.DIVERGED, Status.CANCELLED, Status.FAILED)

    class Visibility(models.TextChoices):
        PRIVATE = "private", "private (only me)"
        TEAM = "team", "team (every account on this server)"
        LINK = "link", "public by link (anyone with the share link, no account needed)"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="experiments",
                              help_text="null: imported or made before accounts (team-visible)")
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    share_token = models.CharField(max_length=64, unique=True, default=new_share_token, editable=False)
    name = models.CharField(max_length=200, blank=True, db_index=True, help_text="default generated at creation")
    description = models.TextField(blank=True, help_text="Markdown, rendered sanitised")
    tags = models.ManyToManyField(Tag, blank=True, related_name="experiments")
    sweep = models.ForeignKey(Sweep, null=True, blank=True, on_delete=models.SET_NULL, related_name="experiments",
                              help_text="the sweep that created it (a reused experiment keeps its first sweep)")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    preset = models.CharField(max_length=100, blank=True)
    spec = models.JSONField(help_text="ExperimentSpec.to_dict() as submitted")
    model_name = models.CharField(max_length=50, db_index=True)
    dataset_name = models.CharField(max_length=50, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    message = models.TextField(blank=True, help_text="Why the run failed, diverged or was cancelled")
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True, help_text="the Celery worker running (or last running) it")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="written every few seconds while a worker runs it (frontend.recovery)")
    analyses = models.JSONField(default=list, blank=True,
                                help_text="Analysis names queued with default parameters when the IMP run finishes")

    run_name = models.CharField(max_length=200, blank=True)
    run_dir = models.CharField(max_length=1000, blank=True)
    results_path = models.CharField(max_length=1000, blank=True)

    # Live progress, written by frontend.progress at most a few times a second.
    rounds_total = models.PositiveIntegerField(default=0)
    iterations_per_round = models.PositiveIntegerField(default=0)
    trainings_total = models.PositiveIntegerField(default=0, help_text="ticket rounds + control trainings")
    trainings_done = models.PositiveIntegerField(default=0)
    current_network = models.CharField(max_length=30, blank=True)
    current_replicate = models.PositiveSmallIntegerField(default=0)
    current_round = models.IntegerField(null=True, blank=True)
    current_iteration = models.PositiveIntegerField(default=0)
    current_start_iteration = models.PositiveIntegerField(default=0)
    current_remaining_fraction = models.FloatField(null=True, blank=True)
    # Sequence number of the last channel message whose data is already in the database.
    last_seq = models.PositiveIntegerField(default=0)

    # The best ticket (frontend.records.refresh_best_ticket: with replicates, of their mean per round), rewritten
    # whenever a ticket round is stored, so the list page shows and sorts by it without reading any round.
    best_ticket_remaining = models.FloatField(null=True, blank=True, db_index=True)
    best_ticket_metric = models.FloatField(null=True, blank=True, help_text="its reported test metric")
    best_ticket_round = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Experiment {self.pk} ({self.model_name} on {self.dataset_name}, {self.status})"

    def save(self, *args, **kwargs):
        if not self.name:  # every way of making one (form, API, import, sweep) gets a readable name
            self.name = default_name(self.spec)
        super().save(*args, **kwargs)

    @property
    def display_name(self) -> str:
        """The name, or for a row stored without one (bulk-made), what it was run with."""
        return self.name or f"{self.model_name} · {self.dataset_name}"

    @property
    def is_done(self) -> bool:
        return self.status in self.DONE_STATUSES

    @property
    def task(self) -> Task:
        return task_of_dataset(self.dataset_name)

    @property
    def metric(self) -> Metric:
        return self.task.metric

    @property
    def replicate_count(self) -> int:
        return int(self.spec.get("replicates") or 1)


class SweepPoint(models.Model):
    """One point of a sweep: its swept values and seed index, and the experiment that runs it."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="sweep_points")
    index = models.PositiveIntegerField()
    config = models.JSONField(help_text="{dotted spec field: value} of this configuration (seed excluded)")
    seed_index = models.PositiveIntegerField(default=0)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="sweep_points")
    reused = models.BooleanField(default=False, help_text="an existing finished experiment with the same spec")

    class Meta:
        ordering = ["sweep", "index"]
        constraints = [models.UniqueConstraint(fields=["sweep", "index"], name="one_point_per_index")]


class ExperimentPiece(models.Model):
    """One independent part of an experiment (a chunk of replicate chains, a chunk of controls) that
    runs as its own Celery task on whichever worker is idle (frontend.distributed)."""

    Status = RunStatus

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="pieces")
    phase = models.CharField(max_length=20, help_text="chains | controls")
    index = models.PositiveIntegerField()
    networks = models.JSONField(help_text="what it trains: replicate indices, or [kind, round, replicate] triples")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    message = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment", "phase", "index"]
        constraints = [models.UniqueConstraint(fields=["experiment", "phase", "index"], name="one_piece_per_index")]


def task_of_dataset(dataset_name: str) -> Task:
    """The task of a run on `dataset_name`. Not stored: the engine derives it from the dataset
    (DatasetInfo.task), so a column could only disagree with it. Unknown datasets are classification."""
    entry = datasets.DATASETS.get(dataset_name)
    return tasks.get(entry.info.task) if entry else tasks.CLASSIFICATION


class RoundResult(models.Model):
    """One finished round of one network (the ticket or a control): the trainer's record without curves."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="round_results")
    network = models.CharField(max_length=30)
    replicate = models.PositiveSmallIntegerField(default=0, help_text="0 = the run's own seeds")
    round_index = models.PositiveIntegerField()
    status = models.CharField(max_length=20)
    message = models.TextField(blank=True)
    remaining_fraction = models.FloatField()
    layers = models.JSONField(help_text="name -> {shape, total, remaining, remaining_fraction}")
    early_stop_iteration = models.IntegerField(null=True)
    # The task's metric (accuracy, perplexity, mean return: Experiment.metric), as the records store it.
    early_stop_val_metric = models.FloatField(null=True)
    early_stop_test_metric = models.FloatField(null=True)
    final_test_metric = models.FloatField(null=True)
    final_val_metric = models.FloatField(null=True)
    wall_seconds = models.FloatField(null=True)
    costs = models.JSONField(default=dict, blank=True,
                             help_text="dense/masked/effective -> {parameters, weights, macs} per example")

    class Meta:
        ordering = ["network", "replicate", "round_index"]
        constraints = [models.UniqueConstraint(fields=["experiment", "network", "replicate", "round_index"],
                                               name="one_result_per_training")]


class Curve(models.Model):
    """All evaluation points and train-loss points of one training (network, replicate, round), as parallel lists."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="curves")
    network = models.CharField(max_length=30)
    replicate = models.PositiveSmallIntegerField(default=0)
    round_index = models.PositiveIntegerField()
    evals = models.JSONField(default=dict,
                             help_text="{iteration: [...], val_loss, val_<metric>, test_loss, test_<metric>}")
    train_loss = models.JSONField(default=dict, help_text="{iteration: [...], loss: [...]}")

    class Meta:
        ordering = ["network", "replicate", "round_index"]
        constraints = [models.UniqueConstraint(fields=["experiment", "network", "replicate", "round_index"],
                                               name="one_curve_per_training")]


class AnalysisRun(models.Model):
    """One analysis (trainer.analyses) of a finished experiment's run directory, with its parameters.

    The result itself lives in the run directory (<run_dir>/analyses/<name>/<hash>/result.json); the
    row keeps a copy for the result page and the live progress for the polling endpoint.
    """

    Status = RunStatus

    DONE_STATUSES = (Status.FINISHED, Status.FAILED, Status.CANCELLED)

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="analysis_runs")
    name = models.CharField(max_length=50, help_text="a key of trainer.analyses.ANALYSES")
    params = models.JSONField(help_text="validated parameters, defaults filled in")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    message = models.TextField(blank=True, help_text="Why the analysis failed or was cancelled")
    result = models.JSONField(null=True, blank=True, help_text="result.json of the finished analysis")
    cancel_requested = models.BooleanField(default=False)
    progress_text = models.CharField(max_length=300, blank=True)
    progress_fraction = models.FloatField(null=True, blank=True, help_text="of the training in flight, 0..1")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "-created_at", "-id"]

    def __str__(self):
        return f"AnalysisRun {self.pk} ({self.name} of experiment {self.experiment_id}, {self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in self.DONE_STATUSES


class ReproductionRun(models.Model):
    """One run of one reproduction check (trainer.reproduce) at one budget, queued from the Reproductions page.

    The check's runs and its result live under <runs dir>/reproduce/<check>/<budget>/; the row keeps
    a copy of the result (verdict, measured numbers, chart) for the page and the live progress.
    """

    Status = RunStatus

    DONE_STATUSES = (Status.FINISHED, Status.FAILED, Status.CANCELLED)

    check_name = models.CharField(max_length=60, help_text="a key of trainer.reproduce.CHECKS")
    budget = models.CharField(max_length=10, help_text="one of trainer.reproduce.BUDGETS")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    result = models.JSONField(null=True, blank=True, help_text="the check's result (verdict, measured, chart, ...)")
    message = models.TextField(blank=True, help_text="Why the check failed or was cancelled, or that it was re-queued")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="reproduction_runs")
    cancel_requested = models.BooleanField(default=False)
    progress_done = models.PositiveIntegerField(default=0, help_text="steps (trainings, analyses) of the check done")
    progress_total = models.PositiveIntegerField(default=0)
    progress_text = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="the Celery worker running (or last running) it")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="written every few seconds while a worker runs it (frontend.recovery)")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"ReproductionRun {self.pk} ({self.check_name}, {self.budget}, {self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in self.DONE_STATUSES

    @property
    def progress_fraction(self) -> float | None:
        return self.progress_done / self.progress_total if self.progress_total else None


class ApiToken(models.Model):
    """A user's key for the JSON API ("Authorization: Token <key>"). Only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, label: str = "") -> tuple["ApiToken", str]:
        """A new token for `user` and its key, which is shown once and never stored."""
        key = secrets.token_urlsafe(32)
        return cls.objects.create(user=user, key_hash=cls.hash_key(key), label=label), key
