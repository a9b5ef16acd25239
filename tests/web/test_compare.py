"""Compare: 2-6 experiments on one chart, their specs side by side with the differences marked."""
import json
import re

import pytest

from frontend.models import Experiment
from frontend.queries import flatten_spec, spec_comparison

pytestmark = pytest.mark.django_db


def copy_of(experiment, **spec_changes) -> Experiment:
    spec = json.loads(json.dumps(experiment.spec))
    for dotted, value in spec_changes.items():
        *parents, last = dotted.split(".")
        target = spec
        for part in parents:
            target = target[part]
        target[last] = value
    twin = Experiment.objects.create(spec=spec, model_name=experiment.model_name, dataset_name=experiment.dataset_name,
                                     status="finished", owner=experiment.owner, run_dir=experiment.run_dir)
    for result in experiment.round_results.all():
        result.pk, result.experiment = None, twin
        result.early_stop_test_metric = (result.early_stop_test_metric or 0) * 0.9
        result.save()
    return twin


def test_spec_comparison_marks_exactly_the_differing_fields(finished_experiment):
    twin = copy_of(finished_experiment, **{"training.lr": 0.5, "init_seed": 7})
    rows = spec_comparison([finished_experiment, twin])
    differing = [row["field"] for row in rows if row["differs"]]
    assert sorted(differing) == ["init_seed", "training.lr"]
    assert rows[0]["differs"] and rows[1]["differs"] and not rows[2]["differs"], "differences first"
    assert len(rows) == len(flatten_spec(finished_experiment.spec))


def test_compare_page_draws_one_line_per_experiment_and_the_spec_table(client, finished_experiment):
    twin = copy_of(finished_experiment, **{"pruning.fraction": 0.3})
    html = client.get(f"/compare/?ids={finished_experiment.pk},{twin.pk}").content.decode()
    figure = json.loads(re.search(r'data-figure-for="chart-compare">(.*?)</script>', html, re.S).group(1))
    metas = [trace.get("meta") for trace in figure["data"]]
    assert metas == [f"experiment:{finished_experiment.pk}", f"experiment:{twin.pk}"]
    mine, theirs = figure["data"][0]["y"], figure["data"][1]["y"]
    assert theirs == pytest.approx([0.9 * value for value in mine])
    assert '<tr class="differs"><td>≠ pruning.fraction</td>' in html
    listing = client.get("/").content.decode()
    assert 'id="compare-form"' in listing and f'name="ids" value="{twin.pk}"' in listing


def test_compare_refuses_bad_selections_with_a_message(client, finished_experiment, other_user):
    assert client.get(f"/compare/?ids={finished_experiment.pk}").status_code == 400
    assert client.get("/compare/?ids=1,2,3,4,5,6,7").status_code == 400
    assert client.get("/compare/?ids=1,<script>").status_code == 400
    private = copy_of(finished_experiment)
    Experiment.objects.filter(pk=private.pk).update(owner=other_user, visibility="private")
    assert client.get(f"/compare/?ids={finished_experiment.pk}&ids={private.pk}").status_code == 404
