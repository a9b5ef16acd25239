"""The result page's winning-ticket verdict table (frontend/verdict_table.py, trainer/verdict.py)."""
import html as html_text
import math
import re

import pytest

from frontend.models import Experiment, RoundResult

pytestmark = pytest.mark.django_db

# accuracy of [replicate 0, 1, 2] per network and round
ACCURACIES = {
    "ticket": {0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925], 2: [0.86, 0.87, 0.88]},
    "random_reinit": {1: [0.80, 0.82, 0.81], 2: [0.80, 0.81, 0.82]},
    "random_prune": {1: [0.78, 0.79, 0.80], 2: [0.78, 0.80, 0.79]},
}


def made_up_experiment(user, accuracies: dict, missing: tuple = ()) -> Experiment:
    """A finished experiment whose rows hold `accuracies`; `missing` lists (network, round, replicate) not run."""
    spec = {"model": "lenet_300_100", "dataset": "synthetic", "replicates": 3, "validation_size": 100}
    experiment = Experiment.objects.create(spec=spec, model_name="lenet_300_100", dataset_name="synthetic",
                                           status=Experiment.Status.FINISHED, owner=user, iterations_per_round=1000)
    for network, by_round in accuracies.items():
        for round_index, values in by_round.items():
            for replicate, accuracy in enumerate(values):
                if (network, round_index, replicate) in missing:
                    continue
                RoundResult.objects.create(
                    experiment=experiment, network=network, replicate=replicate, round_index=round_index,
                    status="finished", remaining_fraction=0.8 ** round_index, layers={}, early_stop_iteration=600,
                    early_stop_test_metric=accuracy, early_stop_val_metric=accuracy, final_test_metric=accuracy)
    return experiment


def verdict_rows(html: str) -> list[list[str]]:
    table = re.search(r'<table class="data" id="verdict-table">(.*?)</table>', html, re.S)
    assert table, "no verdict table on the page"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1).split("<tbody>")[1], re.S)
    return [[html_text.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
             for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in rows]


def test_result_page_shows_the_verdict_per_round(client, user):
    experiment = made_up_experiment(user, ACCURACIES)
    html = client.get(f"/e/{experiment.pk}/").content.decode()
    assert "<h2>Winning-ticket verdict</h2>" in html and "paired t-test" in html
    header = re.search(r'id="verdict-table">\s*<thead>(.*?)</thead>', html, re.S).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == [
        "round", "% remaining", "ticket mean [CI]", "Δ vs dense [CI]", "Δ vs random_prune [CI]",
        "Δ vs random_reinit [CI]", "n", "test", "verdict"]
    first, second = verdict_rows(html)
    # round 1: mean 91.33, std 1.04 points; half-width t(0.975, 2) · s / √3 = 4.302653 · s / √3
    values = [90.5, 91.0, 92.5]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = 4.302653 * std / math.sqrt(3)
    assert first[:3] == ["1", "80.00", f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"]
    assert first[3].startswith("+0.33 [") and ", p=" in first[3]
    assert first[6:8] == ["3", "paired t, df=2"]
    assert first[8].startswith("winning")
    assert second[0] == "2" and second[3].startswith("-4.00 [-4.00, -4.00]")  # every replicate 4 points below
    assert second[8].startswith("not shown") and "below dense" in second[8]


def test_a_control_replicate_missing_is_left_out_and_a_control_not_run_is_said(client, user):
    accuracies = {network: by_round for network, by_round in ACCURACIES.items() if network != "random_prune"}
    experiment = made_up_experiment(user, accuracies, missing={("random_reinit", 1, 2)})
    first, _ = verdict_rows(client.get(f"/e/{experiment.pk}/").content.decode())
    assert first[4].endswith("(n=2)")  # Δ vs random_reinit pairs replicates 0 and 1 only
    assert first[4].startswith(f"{100 * ((0.905 - 0.80) + (0.91 - 0.82)) / 2:+.2f} [")
    assert first[7].startswith("matching") and "not compared with random_prune (not run)" in first[7]


def test_one_replicate_asks_for_more_and_the_page_stays_in_its_query_budget(client, finished_experiment,
                                                                               django_assert_max_num_queries):
    with django_assert_max_num_queries(10):  # 8, plus its tags and its pieces (one query each)
        html = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    rows = verdict_rows(html)
    assert [row[0] for row in rows] == ["1", "2"]
    for row in rows:
        assert row[-1].startswith("more replicates needed") and row[-3] == "1" and row[-2] == "none (n < 2)"
        assert " [" not in row[2]  # one replicate: a mean without an interval


def test_an_experiment_without_pruned_rounds_says_so(client, user):
    experiment = made_up_experiment(user, {"ticket": {0: [0.9, 0.91, 0.92]}})
    html = client.get(f"/e/{experiment.pk}/").content.decode()
    assert 'id="verdict-none"' in html and 'id="verdict-table"' not in html
