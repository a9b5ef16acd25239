"""List page at scale (not a timed test): 10,000 experiments and 200 sweeps; how long does the server take
to answer the experiment list, unfiltered, with each filter, a search, each sort and a deep page?

Builds a throwaway SQLite database in a temporary directory (migrated, then filled in bulk): experiments
spread over owners, visibilities, models, datasets of the three tasks, statuses and tags, ticket rounds
for the finished ones (their best ticket stored as the app stores it), 200 sweeps of 10 points each. A
private redis-server answers the pages' "is a worker listening" question. Each request is made with
Django's test client signed in as a team member, in this process, so the time is the server's (URL
routing, middleware, queries, template) without a network. Prints p50/p95 per kind of request and overall
against the 150 ms target, and the queries one page costs.

    .venv/bin/python bench/list_page.py [--experiments 10000] [--sweeps 200] [--repeats 15]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.live.conftest import free_port, start_process, wait_until  # noqa: E402

TARGET_MS = 150.0
OWNERS = ("alice", "bob", "carol", "dave", "erin", "frank")
VIEWER = "alice"
TAGS = ("baseline", "paper-fig-1", "paper-fig-3", "ablation", "rewind", "wide", "seed-study", "lr-sweep",
        "structured", "random-init", "late-reset", "cifar", "draft", "keep", "to-check")
# (model, dataset) pairs of the three tasks, so the task filter has something to split
RUNS = (("lenet_300_100", "mnist"), ("lenet_300_100", "fashion_mnist"), ("conv2", "cifar10"), ("conv4", "cifar10"),
        ("conv6", "cifar10"), ("vgg19", "cifar10"), ("resnet20", "cifar10"), ("lenet_300_100", "synthetic"))
STATUS_WEIGHTS = {"finished": 70, "failed": 8, "cancelled": 5, "diverged": 4, "running": 5, "queued": 8}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def other_task_runs() -> list[tuple[str, str]]:
    """A language model and an agent run, whatever the registries call them."""
    from trainer import datasets, models
    found = []
    for task in ("language_modeling", "reinforcement_learning"):
        model = next((name for name, entry in models.MODELS.items() if entry.task == task), None)
        dataset = next((name for name, entry in datasets.DATASETS.items() if entry.info.task == task), None)
        if model and dataset:
            found.append((model, dataset))
    return found


def ticket_records(rng: random.Random, rounds: int, fraction: float) -> list[dict]:
    """A plausible ticket chain: accuracy holds, then falls off as the network gets sparse."""
    dense = rng.uniform(0.85, 0.99)
    rows = []
    for index in range(rounds + 1):
        remaining = (1 - fraction) ** index
        accuracy = dense + rng.uniform(-0.004, 0.008) - max(0.0, 0.15 - remaining) * rng.uniform(0.5, 2.0)
        rows.append({"round": index, "remaining_fraction": remaining, "accuracy": accuracy,
                     "iteration": rng.randrange(100, 5000)})
    return rows


def fill_database(experiment_count: int, sweep_count: int, seed: int = 0) -> dict:
    """Everything in bulk; returns what the requests filter by."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from frontend.labels import default_name
    from frontend.models import Experiment, RoundResult, Sweep, SweepPoint, Tag, task_of_dataset
    from frontend.records import best_ticket

    rng = random.Random(seed)
    users = [get_user_model().objects.create_user(name, password=f"{name}-password-1") for name in OWNERS]
    tags = [Tag.objects.create(name=name) for name in TAGS]
    runs = list(RUNS) + other_task_runs()
    statuses = [status for status, weight in STATUS_WEIGHTS.items() for _ in range(weight)]
    now = timezone.now()
    experiments, chains = [], []
    for _ in range(experiment_count):
        model, dataset = rng.choice(runs)
        fraction, rounds = rng.choice((0.2, 0.2, 0.5, 0.8)), rng.choice((3, 5, 8, 10))
        spec = {"model": model, "dataset": dataset, "device": rng.choice(("cpu", "cpu", "cpu", "cuda")),
                "pruning": {"fraction": fraction, "rounds": rounds}, "init_seed": rng.randrange(5)}
        status = rng.choice(statuses)
        owner = None if rng.random() < 0.05 else rng.choice(users)
        visibility = rng.choices(("team", "private", "link"), weights=(70, 20, 10))[0]
        experiment = Experiment(spec=spec, name=default_name(spec), model_name=model, dataset_name=dataset,
                                status=status, owner=owner, visibility=visibility, rounds_total=rounds,
                                description="Notes with *Markdown*." if rng.random() < 0.3 else "")
        chain = ticket_records(rng, rounds, fraction) if status == "finished" else []
        ticket = best_ticket([{"round": row["round"], "status": "finished", "remaining_fraction":
                               row["remaining_fraction"], "reported_test_metric": row["accuracy"]} for row in chain],
                             task_of_dataset(dataset).metric)
        if ticket:
            experiment.best_ticket_remaining = ticket["remaining_fraction"]
            experiment.best_ticket_metric = ticket["reported_test_metric"]
            experiment.best_ticket_round = ticket["round"]
        experiments.append(experiment)
        chains.append(chain)
    Experiment.objects.bulk_create(experiments, batch_size=500)
    # created_at is auto_now_add: spread the rows over a year, newest last
    for index, experiment in enumerate(experiments):
        experiment.created_at = now - timezone.timedelta(minutes=50 * (experiment_count - index))
    Experiment.objects.bulk_update(experiments, ["created_at"], batch_size=500)

    RoundResult.objects.bulk_create([
        RoundResult(experiment=experiment, network="ticket", replicate=0, round_index=row["round"], status="finished",
                    remaining_fraction=row["remaining_fraction"], layers={}, early_stop_iteration=row["iteration"],
                    early_stop_test_metric=row["accuracy"], final_test_metric=row["accuracy"])
        for experiment, chain in zip(experiments, chains) for row in chain], batch_size=1000)
    through = Experiment.tags.through
    through.objects.bulk_create([through(experiment_id=experiment.pk, tag_id=tag.pk) for experiment in experiments
                                 for tag in rng.sample(tags, rng.choice((0, 1, 1, 2, 3)))], batch_size=1000)

    sweeps = Sweep.objects.bulk_create([
        Sweep(owner=rng.choice(users), visibility="team", name=f"sweep {index}", base_spec={}, grid={}, seeds=2)
        for index in range(sweep_count)])
    members = rng.sample(experiments, min(len(experiments), 10 * sweep_count))
    points = []
    for sweep_index, sweep in enumerate(sweeps):
        for index, experiment in enumerate(members[10 * sweep_index:10 * sweep_index + 10]):
            experiment.sweep = sweep
            points.append(SweepPoint(sweep=sweep, index=index, config={"pruning.fraction": 0.2}, seed_index=index % 2,
                                     experiment=experiment))
    Experiment.objects.bulk_update(members, ["sweep"], batch_size=500)
    SweepPoint.objects.bulk_create(points, batch_size=1000)
    return {"sweep": sweeps[len(sweeps) // 2].pk, "search": "heron", "owner": OWNERS[1]}


def request_kinds(found: dict) -> dict[str, list[str]]:
    sorts = ("name", "status", "owner", "model", "dataset", "best", "created", "id")
    return {
        "no filter": ["/"],
        "status filter": ["/?status=finished", "/?status=queued"],
        "owner filter": [f"/?owner={found['owner']}", "/?owner=-"],
        "model filter": ["/?model=conv4"],
        "dataset filter": ["/?dataset=cifar10"],
        "task filter": ["/?task=classification", "/?task=language_modeling"],
        "tag filter": ["/?tag=paper-fig-3"],
        "sweep filter": [f"/?sweep={found['sweep']}"],
        "name search": [f"/?q={found['search']}", "/?q=conv6"],
        "sort (each column, both ways)": [f"/?sort={prefix}{key}" for key in sorts for prefix in ("", "-")],
        "deep page": ["/?page=150", "/?sort=name&page=120"],
        "filters combined": ["/?status=finished&tag=baseline&sort=-best&page=2", "/?task=classification&q=brisk"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15, help="requests of each URL (after one warm-up)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        redis_port = free_port()
        redis = start_process("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no"], root)
        try:
            os.environ.update(DJANGO_SETTINGS_MODULE="lotteryweb.settings", LOTTERYWEB_DB_PATH=str(root / "db.sqlite3"),
                              LOTTERYWEB_RUNS_DIR=str(root / "runs"), LOTTERYWEB_LOG_LEVEL="WARNING",
                              LOTTERYWEB_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", LOTTERYWEB_DEBUG="0")
            os.environ.pop("DATABASE_URL", None)
            import django
            django.setup()
            import redis as redis_client
            from django.core.management import call_command
            from django.db import connection
            from django.test import Client
            from django.test.utils import CaptureQueriesContext, setup_test_environment

            wait_until(lambda: _redis_answers(redis_client, redis_port), 20, "redis-server", [redis])
            setup_test_environment()  # lets the test client's host in
            call_command("migrate", verbosity=0)
            began = time.perf_counter()
            found = fill_database(args.experiments, args.sweeps)
            print(f"built {args.experiments} experiments and {args.sweeps} sweeps in "
                  f"{time.perf_counter() - began:.0f} s (SQLite in {root})")
            from django.contrib.auth import get_user_model
            client = Client()
            client.force_login(get_user_model().objects.get(username=VIEWER))
            with CaptureQueriesContext(connection) as captured:
                assert client.get("/").status_code == 200
            print(f"queries for one page (session and user included): {len(captured.captured_queries)}")

            everything: list[float] = []
            print(f"{'request kind':<32}{'URLs':>5}{'p50 ms':>9}{'p95 ms':>9}")
            for kind, urls in request_kinds(found).items():
                durations = []
                for url in urls:
                    response = client.get(url)  # warm-up, and the URL must work
                    assert response.status_code == 200, (url, response.status_code, response.content[:300])
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        client.get(url)
                        durations.append(1000 * (time.perf_counter() - started))
                everything += durations
                median, p95 = statistics.median(durations), percentile(durations, 0.95)
                print(f"{kind:<32}{len(urls):>5}{median:>9.1f}{p95:>9.1f}")
            p95 = percentile(everything, 0.95)
            print(f"{'overall':<32}{'':>5}{statistics.median(everything):>9.1f}{p95:>9.1f}"
                  f"   target < {TARGET_MS:.0f} ms: {'met' if p95 < TARGET_MS else 'NOT met'} (p95)")
        finally:
            redis.stop()


def _redis_answers(redis_client, port: int) -> bool:
    try:
        return bool(redis_client.Redis(port=port, socket_timeout=0.5).ping())
    except Exception:
        return False


if __name__ == "__main__":
    main()
