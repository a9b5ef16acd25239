"""The winning-ticket verdict (trainer.verdict) on made-up replicate numbers, and its place in
results.json and the CLI summary."""
import math

import pytest

from trainer import verdict
from trainer.cli.main import summary_table

TOTAL = 1000  # iterations per training in the made-up runs


def record(round_index: int, replicate: int, accuracy: float | None, iteration: int = 600, early_stop: bool = True):
    """A round record as trainer.imp writes it; accuracy None is a diverged training."""
    if accuracy is None:
        return {"round": round_index, "replicate": replicate, "status": "diverged",
                "remaining_fraction": 0.8 ** round_index,
                "early_stop": {}, "final": {}}
    final = {"iteration": TOTAL, "test_accuracy": accuracy - 0.002}
    return {"round": round_index, "replicate": replicate, "status": "finished",
            "remaining_fraction": 0.8 ** round_index,
            "early_stop": {"iteration": iteration, "test_accuracy": accuracy} if early_stop else {},
            "final": final if early_stop else {**final, "test_accuracy": accuracy}}


def made_up_results(ticket: dict[int, list], controls: dict[str, dict[int, list]] | None = None,
                    iterations: dict[int, list] | None = None, early_stop: bool = True) -> dict:
    """A results.json dict: ticket[round][replicate] accuracies (None = diverged, a shorter list =
    replicate not run), controls[kind][round][replicate] likewise."""
    controls = controls or {}
    iterations = iterations or {}
    replicates = max(len(values) for values in ticket.values())

    def records_of(table: dict[int, list], replicate: int, with_iterations: bool) -> list[dict]:
        found = []
        for round_index, values in sorted(table.items()):
            if replicate < len(values):
                iteration = iterations.get(round_index, [600] * replicates)[replicate] if with_iterations else 600
                found.append(record(round_index, replicate, values[replicate], iteration, early_stop))
        return found

    def entry(replicate: int) -> dict:
        return {"replicate": replicate, "rounds": records_of(ticket, replicate, True),
                "controls": {kind: records_of(table, replicate, False) for kind, table in controls.items()}}

    first = entry(0)
    return {"rounds": first["rounds"], "controls": first["controls"],
            "dataset": {"validation_size": 100 if early_stop else 0},
            "replicates": [entry(index) for index in range(1, replicates)]}


def round_of(result: dict, round_index: int) -> dict:
    return next(row for row in result["rounds"] if row["round"] == round_index)


BOTH_CONTROLS_LOW = {"random_reinit": {1: [0.80, 0.82, 0.81]}, "random_prune": {1: [0.78, 0.79, 0.80]}}


def test_t_quantiles_match_the_printed_table():
    # two-sided 95%: the familiar t-table column
    for df, expected in [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)]:
        assert verdict.student_t_quantile(0.95, df) == pytest.approx(expected, abs=1e-3)
    assert verdict.student_t_quantile(0.99, 5) == pytest.approx(4.032, abs=1e-3)
    assert verdict.student_t_quantile(0.95, 1000) == pytest.approx(1.962, abs=1e-3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        verdict.student_t_central(1.0, 0)


def test_confidence_intervals_and_p_value_by_hand():
    results = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.90, 0.92, 0.94]}, BOTH_CONTROLS_LOW)
    row = round_of(verdict.of_results(results), 1)
    # ticket: mean 0.92, sample std 0.02, half-width t(0.975, 2) · s / √3 with t = 4.302653
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert row["ticket"]["mean"] == pytest.approx(0.92)
    assert row["ticket"]["ci"] == pytest.approx([0.92 - half, 0.92 + half], abs=1e-6)
    # vs dense: differences 0.00, 0.01, 0.02 -> mean 0.01, std 0.01
    dense = row["vs_dense"]
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert dense["mean_difference"] == pytest.approx(0.01)
    assert dense["ci"] == pytest.approx([0.01 - half, 0.01 + half], abs=1e-6)
    t = 0.01 / (0.01 / math.sqrt(3))
    assert dense["t"] == pytest.approx(t)
    # df = 2 has the closed form P(|T| > t) = 1 - t / sqrt(t² + 2)
    assert dense["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)
    assert row["vs_dense"]["n"] == 3 and row["remaining_fraction"] == pytest.approx(0.8)


def test_winning_when_matching_and_better_than_both_controls():
    results = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]}, BOTH_CONTROLS_LOW)
    result = verdict.of_results(results)
    row = round_of(result, 1)
    assert row["verdict"] == "winning", row["reason"]
    assert set(row["vs_controls"]) == {"random_reinit", "random_prune"}
    assert all(c["ci"][0] > 0 for c in row["vs_controls"].values())
    assert result["test"].startswith("paired t-test") and result["confidence"] == 0.95
    assert result["tolerance"] == pytest.approx(0.01)  # one std of the dense replicates (above the 0.5 point floor)


def test_matching_without_controls_says_which_were_not_run():
    results = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]},
                              {"random_reinit": {1: [0.80, 0.82, 0.81]}})
    row = round_of(verdict.of_results(results), 1)
    assert row["verdict"] == "matching"
    assert row["notes"] == ["not compared with random_prune (not run)"]
    assert "cannot be winning" in row["reason"]
    no_controls = round_of(verdict.of_results(made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]})), 1)
    assert no_controls["verdict"] == "matching"
    assert no_controls["notes"] == ["not compared with random_reinit (not run)",
                                    "not compared with random_prune (not run)"]


def test_matching_but_not_winning_when_a_control_is_as_good():
    # the random re-initialisation is as good as the ticket: the CI of the difference straddles 0
    controls = {"random_reinit": {1: [0.915, 0.905, 0.92]}, "random_prune": {1: [0.78, 0.79, 0.80]}}
    row = round_of(verdict.of_results(made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]}, controls)), 1)
    assert row["verdict"] == "matching"
    assert "not significantly better than random_reinit" in row["reason"]
    assert "random_prune" not in row["reason"]


def test_not_shown_below_tolerance_or_at_more_iterations():
    below = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.88, 0.89, 0.90]}, BOTH_CONTROLS_LOW)  # 2 points below
    row = round_of(verdict.of_results(below), 1)
    assert row["verdict"] == "not shown" and "2.00 points below dense" in row["reason"]
    later = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]}, BOTH_CONTROLS_LOW,
                            iterations={0: [500, 500, 500], 1: [700, 800, 900]})
    row = round_of(verdict.of_results(later), 1)
    assert row["verdict"] == "not shown" and "more iterations" in row["reason"]


def test_fewer_than_three_replicates_asks_for_more():
    controls = {"random_reinit": {1: [0.80, 0.82]}, "random_prune": {1: [0.78, 0.79]}}
    row = round_of(verdict.of_results(made_up_results({0: [0.90, 0.91], 1: [0.95, 0.96]}, controls)), 1)
    assert row["verdict"] == "more replicates needed" and "at least 3" in row["reason"]
    assert row["ticket"]["ci"] is not None  # n = 2 still has an interval (df = 1)
    single = round_of(verdict.of_results(made_up_results({0: [0.90], 1: [0.95]})), 1)
    assert single["verdict"] == "more replicates needed" and single["ticket"]["ci"] is None


def test_pairs_by_replicate_and_drops_a_replicate_missing_on_one_side():
    # paired differences are all +0.01 although the replicates differ a lot: the paired CI is exact
    row = round_of(verdict.of_results(made_up_results({0: [0.85, 0.90, 0.95], 1: [0.86, 0.91, 0.96]})), 1)
    assert row["vs_dense"]["ci"] == pytest.approx([0.01, 0.01])
    assert row["ticket"]["ci"][1] - row["ticket"]["ci"][0] > 0.1  # the unpaired interval is wide
    # random_prune of replicate 2 was not run and random_reinit of replicate 1 diverged
    controls = {"random_reinit": {1: [0.80, None, 0.81, 0.79]}, "random_prune": {1: [0.78, 0.79, 0.80, 0.80]}}
    results = made_up_results({0: [0.90, 0.91, 0.92, 0.93], 1: [0.905, 0.91, 0.925, 0.935]}, controls)
    results["replicates"][1]["controls"]["random_prune"] = []  # replicate 2
    row = round_of(verdict.of_results(results), 1)
    reinit, prune = row["vs_controls"]["random_reinit"], row["vs_controls"]["random_prune"]
    assert reinit["replicates"] == [0, 2, 3] and prune["replicates"] == [0, 1, 3]
    assert reinit["mean_difference"] == pytest.approx(((0.905 - 0.80) + (0.925 - 0.81) + (0.935 - 0.79)) / 3)
    assert prune["mean_difference"] == pytest.approx(((0.905 - 0.78) + (0.91 - 0.79) + (0.935 - 0.80)) / 3)
    assert row["vs_dense"]["n"] == 4 and row["verdict"] == "winning"
    # with only two pairs left for a control, the round cannot be winning
    results["replicates"][0]["controls"]["random_prune"] = []  # replicate 1
    row = round_of(verdict.of_results(results), 1)
    assert row["verdict"] == "matching" and "random_prune: 2 paired replicates" in row["reason"]


def test_a_round_whose_replicates_all_diverged_is_not_shown():
    row = round_of(verdict.of_results(made_up_results({0: [0.90, 0.91, 0.92], 1: [0.90, 0.91, 0.92],
                                                       2: [None, None, None]})), 2)
    assert row["verdict"] == "not shown" and row["vs_dense"]["n"] == 0


def test_lower_is_better_metrics_flip_the_direction():
    point = verdict.Point
    loss = {"ticket": {0: {0: point(0.30, 500), 1: point(0.31, 500), 2: point(0.32, 500)},
                       1: {0: point(0.28, 400), 1: point(0.29, 400), 2: point(0.31, 400)}},
            "random_reinit": {1: {0: point(0.50, 400), 1: point(0.52, 400), 2: point(0.51, 400)}},
            "random_prune": {1: {0: point(0.55, 400), 1: point(0.56, 400), 2: point(0.57, 400)}}}
    assert round_of(verdict.verdicts(loss, higher_is_better=False, metric="test_loss"), 1)["verdict"] == "winning"
    # read as "higher is better", the ticket's lower loss is 1.67 points "below" dense: not even matching
    row = round_of(verdict.verdicts(loss, higher_is_better=True), 1)
    assert row["verdict"] == "not shown" and "1.67 points below dense" in row["reason"]
    worse = {**loss, "ticket": {**loss["ticket"], 1: {i: point(v, 400) for i, v in enumerate([0.40, 0.41, 0.42])}}}
    row = round_of(verdict.verdicts(worse, higher_is_better=False), 1)
    assert row["verdict"] == "not shown" and "above dense" in row["reason"]


def test_without_early_stop_the_end_of_training_accuracy_is_used():
    results = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]}, BOTH_CONTROLS_LOW, early_stop=False)
    result = verdict.of_results(results)
    row = round_of(result, 1)
    assert result["point"] == "end of training"
    assert row["ticket"]["mean"] == pytest.approx((0.905 + 0.91 + 0.925) / 3)
    assert row["vs_dense"]["ticket_mean_iteration"] == TOTAL and row["verdict"] == "winning"


def test_rows_of_the_web_app_give_the_same_verdict_as_results():
    results = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925]}, BOTH_CONTROLS_LOW)
    rows = []
    for entry in [{"rounds": results["rounds"], "controls": results["controls"]}] + results["replicates"]:
        for network, records in [("ticket", entry["rounds"])] + list(entry["controls"].items()):
            rows += [{"network": network, "replicate": r["replicate"], "round": r["round"], "status": r["status"],
                      "remaining_fraction": r["remaining_fraction"],
                      "early_stop_iteration": r["early_stop"]["iteration"],
                      "reported_test_metric": r["early_stop"]["test_accuracy"]} for r in records]
    assert verdict.of_rows(rows, TOTAL) == verdict.of_results(results)


def test_the_cli_summary_prints_the_verdicts():
    results = made_up_results({0: [0.90, 0.91, 0.92], 1: [0.905, 0.91, 0.925], 2: [0.88, 0.89, 0.90]},
                              {"random_reinit": {1: [0.80, 0.82, 0.81], 2: [0.80, 0.82, 0.81]},
                               "random_prune": {1: [0.78, 0.79, 0.80], 2: [0.78, 0.79, 0.80]}})
    lines = summary_table(results).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Winning-ticket verdict"))
    assert "paired t-test" in lines[header] and "within 1.00 points of dense" in lines[header]
    assert lines[header + 1].startswith("  round 1: 80.0% remaining") and lines[header + 1].endswith(
        "-> winning (within 1.00 points of dense at no more iterations, and significantly better than "
        "random_prune and random_reinit (paired t-test, 95% CI above 0))")
    assert "-> not shown" in lines[header + 2] and "n=3" in lines[header + 2]


def test_results_json_of_a_real_run_has_the_verdicts(finished_run):
    results, _ = finished_run  # one replicate: every pruned round asks for more
    rows = results["verdicts"]["rounds"]
    assert [row["round"] for row in rows] == [r["round"] for r in results["rounds"] if r["round"] > 0]
    assert all(row["verdict"] == "more replicates needed" for row in rows)
    assert rows[0]["notes"] == ["not compared with random_prune (not run)"]
