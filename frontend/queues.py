"""Which Celery queue runs an experiment: GPU runs go to the `gpu` queue, the rest to the default one.

A GPU host runs one worker per device, each serving one run at a time:

    CUDA_VISIBLE_DEVICES=0 celery -A lotteryweb worker -Q gpu --pool=solo -n gpu0@%h

Everything else (device "cpu", or "auto") goes to Celery's default queue, which the CPU worker
of run.sh serves. Analyses follow their experiment. Reproduction checks (trainer.reproduce) are
CPU-sized protocols and go to the default queue. Celery calls `route_task` for every task it
sends (settings.CELERY_TASK_ROUTES).
"""
from __future__ import annotations

from django.conf import settings

DEFAULT_QUEUE = "celery"


def queue_for_spec(spec: dict) -> str:
    device = str((spec or {}).get("device", "auto"))
    return settings.LOTTERYWEB_GPU_QUEUE if device.startswith("cuda") else DEFAULT_QUEUE


def route_task(name, args, kwargs, options, task=None, **extra):
    from frontend.models import AnalysisRun, Experiment
    if not args:
        return None
    if name == "frontend.run_experiment":
        spec = Experiment.objects.filter(pk=args[0]).values_list("spec", flat=True).first()
    elif name == "frontend.run_analysis":
        spec = AnalysisRun.objects.filter(pk=args[0]).values_list("experiment__spec", flat=True).first()
    elif name == "frontend.run_reproduction":
        return {"queue": DEFAULT_QUEUE}
    else:
        return None
    return {"queue": queue_for_spec(spec)}


def enqueue_reproduction(reproduction_run_id: int) -> None:
    """Send a queued ReproductionRun's task to the workers (raises if the broker is away)."""
    from frontend.tasks import run_reproduction_task
    run_reproduction_task.delay(reproduction_run_id)


def queue_positions(experiments) -> dict[int, int]:
    """{experiment id: 1-based place among the queued experiments of its queue} (oldest first)."""
    from frontend.models import Experiment
    waiting = Experiment.objects.filter(status=Experiment.Status.QUEUED).order_by("created_at", "id")
    counters: dict[str, int] = {}
    positions = {}
    for pk, spec in waiting.values_list("pk", "spec"):
        queue = queue_for_spec(spec)
        counters[queue] = counters.get(queue, 0) + 1
        positions[pk] = counters[queue]
    return {experiment.pk: positions[experiment.pk] for experiment in experiments if experiment.pk in positions}
