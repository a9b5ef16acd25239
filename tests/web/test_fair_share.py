"""Fair share: queued experiments are taken round-robin between owners, per queue; a delivered message is a
slot that runs its queue's next experiment in that order; the list page shows the real places."""
import pytest

from frontend import fair_share, tasks
from frontend.models import Experiment

pytestmark = pytest.mark.django_db


def queue_for(owner, count: int = 1, device: str = "cpu") -> list[Experiment]:
    """`count` queued experiments of `owner`, stored only (no task sent), oldest first."""
    return [Experiment.objects.create(spec={"device": device, "model": "lenet_300_100"}, model_name="lenet_300_100",
                                      dataset_name="synthetic", owner=owner, visibility="team")
            for _ in range(count)]


def claim(slot: Experiment, worker: str = "w1@host") -> Experiment | None:
    claimed, _ = fair_share.claim_next_experiment(slot.pk, worker)
    return claimed


def test_a_single_experiment_is_not_stuck_behind_another_users_200_point_sweep(client, user, other_user):
    Experiment.objects.bulk_create(
        [Experiment(spec={"device": "cpu"}, model_name="lenet_300_100", dataset_name="synthetic", owner=user,
                    visibility="team") for _ in range(200)])
    sweep = list(Experiment.objects.filter(owner=user).order_by("id"))
    [single] = queue_for(other_user)
    places = fair_share.queue_positions([*sweep, single])
    assert places[single.pk] == 2 and places[sweep[0].pk] == 1 and places[sweep[1].pk] == 3
    assert places[sweep[-1].pk] == 201
    assert "#2 in the celery queue" in client.get("/").content.decode()

    assert claim(sweep[0]).pk == sweep[0].pk, "the oldest first"
    assert claim(sweep[1]).pk == single.pk, "the other user's experiment before the sweep's second"
    assert claim(sweep[2]).pk == sweep[1].pk
    assert Experiment.objects.get(pk=single.pk).status == "running"


def test_three_owners_take_turns_imported_ones_counting_as_one_owner(user, other_user):
    first_a = queue_for(user, 3)
    first_b = queue_for(other_user, 2)
    imported = queue_for(None, 2)
    a, b, c = ([row.pk for row in rows] for rows in (first_a, first_b, imported))
    expected = [a[0], b[0], c[0], a[1], b[1], c[1], a[2]]
    assert fair_share.fair_share_orders() == {"celery": expected}
    taken = [claim(first_a[0]).pk for _ in expected]
    assert taken == expected, "workers take them in the order the list page shows"
    assert claim(first_a[0]) is None


def test_running_work_counts_against_its_owner(user, other_user):
    running, *waiting = queue_for(user, 3)
    Experiment.objects.filter(pk=running.pk).update(status="running")
    [theirs] = queue_for(other_user)
    assert fair_share.fair_share_orders()["celery"] == [theirs.pk, waiting[0].pk, waiting[1].pk]
    assert claim(waiting[0]).pk == theirs.pk


def test_queues_are_shared_out_separately(user, other_user):
    gpu_sweep = queue_for(user, 3, device="cuda")
    Experiment.objects.filter(pk=gpu_sweep[0].pk).update(status="running")
    cpu_mine = queue_for(user, 2, device="cpu")
    [cpu_theirs] = queue_for(other_user, device="auto")
    orders = fair_share.fair_share_orders()
    assert orders == {"gpu": [gpu_sweep[1].pk, gpu_sweep[2].pk],
                      "celery": [cpu_mine[0].pk, cpu_theirs.pk, cpu_mine[1].pk]}, "a gpu run does not count on cpu"
    assert claim(gpu_sweep[1]).pk == gpu_sweep[1].pk
    assert claim(cpu_mine[0]).pk == cpu_mine[0].pk
    assert claim(gpu_sweep[2]).pk == gpu_sweep[2].pk, "a gpu slot takes gpu work only"
    assert claim(gpu_sweep[2]) is None
    positions = fair_share.queue_positions([*cpu_mine, cpu_theirs])
    assert positions == {cpu_theirs.pk: 1, cpu_mine[1].pk: 2}


def test_a_slot_of_a_cancelled_experiment_runs_the_next_one(user):
    cancelled, following = queue_for(user, 2)
    Experiment.objects.filter(pk=following.pk).update(worker="w0@host", message="re-queued after it was failed")
    Experiment.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    assert fair_share.queue_positions([cancelled, following]) == {following.pk: 1}, "a cancelled one has no place"
    claimed, _ = fair_share.claim_next_experiment(cancelled.pk, "w1@host")
    assert claimed.pk == following.pk and claimed.worker == "w1@host"
    cancelled.refresh_from_db()
    following.refresh_from_db()
    assert cancelled.status == "cancelled" and cancelled.message == "cancelled before it started"
    assert following.status == "running"
    assert following.message.startswith("re-queued after it was failed; resumed by w1@host at "), \
        "the resume message names the claimed row's own history"


def test_a_duplicate_slot_finds_nothing_and_returns(user):
    [only] = queue_for(user)
    assert claim(only).pk == only.pk
    assert fair_share.claim_next_experiment(only.pk, "w2@host") == (None, "running")
    assert fair_share.claim_next_experiment(987654, "w2@host") == (None, "missing")
    assert Experiment.objects.get(pk=only.pk).worker == "w1@host", "the first claim stands"


# The task starts with close_old_connections(), which on PostgreSQL closes a test transaction's connection.
@pytest.mark.django_db(transaction=True)
def test_the_task_trains_the_experiment_it_claimed(user, other_user, monkeypatch, settings, tmp_path):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    running, waiting = queue_for(user, 2)
    Experiment.objects.filter(pk=running.pk).update(status="running")
    [theirs] = queue_for(other_user)
    Experiment.objects.filter(pk=theirs.pk).update(spec={"model": "lenet_300_100", "dataset": "synthetic"})
    trained = []

    def training(spec, *_, **__):
        trained.append(spec)
        raise RuntimeError("stop here")
    monkeypatch.setattr(tasks, "run_experiment", training)
    assert tasks.run_experiment_task(waiting.pk) == "failed"
    assert len(trained) == 1
    theirs.refresh_from_db()
    assert theirs.status == "failed" and "stop here" in theirs.message, "the slot of mine ran theirs"
    assert Experiment.objects.get(pk=waiting.pk).status == "queued"
