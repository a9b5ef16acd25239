"""Headless Chromium on the real processes: a 2-configuration × 1-seed sweep made through the form (the count
follows the typing), run by the Celery worker, and the sweep page's table and charts once every point has
finished, without a reload. Screenshot: test-output/browser/10_sweep.png."""
import re

import pytest

from tests.live.conftest import save_screenshot, signed_in_page

pytestmark = [pytest.mark.live, pytest.mark.slow]

TRACES = "(id) => document.getElementById(id).data.length"


def test_a_sweep_made_through_the_form_runs_and_its_page_draws_the_charts(live_app, browser):
    page, errors = signed_in_page(browser, live_app, "/sweeps/", viewport={"width": 1280, "height": 900})
    page.click("#new-sweep")
    page.wait_for_url(re.compile(r".*/sweeps/new/$"))
    page.click('button[data-preset="quick_demo"]')
    page.fill("#id_training__training_steps", "100it")
    page.fill("#id_pruning__rounds", "2")
    page.fill("#id_sweep_name", "browser sweep")
    page.fill("#id_tags", "browser")
    page.select_option("#grid-rows .grid-row:first-child .grid-field", "pruning.fraction")
    page.fill("#grid-rows .grid-row:first-child .grid-values", "0.2, 0.5")
    page.fill("#id_seeds", "3")
    page.wait_for_function("() => document.getElementById('sweep-count').dataset.count === '6'")
    page.click("#add-grid-row")
    page.select_option("#grid-rows .grid-row:nth-child(2) .grid-field", "training.lr")
    page.fill("#grid-rows .grid-row:nth-child(2) .grid-values", "0.001, 0.002")
    page.wait_for_function("() => document.getElementById('sweep-count').dataset.count === '12'")
    page.click("#grid-rows .grid-row:nth-child(2) .remove-grid-row")
    page.fill("#id_seeds", "1")
    page.wait_for_function("() => document.getElementById('sweep-count').dataset.count === '2'")
    assert page.inner_text("#sweep-count") == "2 experiments (2 configurations × 1 seed)"

    page.click("#submit-sweep")
    page.wait_for_url(re.compile(r".*/sweeps/\d+/$"))
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
    assert page.inner_text("#sweep-points tbody").count("fraction=") == 2
    page.wait_for_selector("#sweep-section[data-status=finished]", timeout=180_000)
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of updating its section"
    assert page.inner_text("#sweep-counts").startswith("2 of 2 done")

    page.wait_for_selector("#chart-sweep-sparsity .main-svg")
    names = page.evaluate("() => document.getElementById('chart-sweep-sparsity').data.map(t => t.name)")
    assert "fraction=0.2" in names and "fraction=0.5" in names
    assert page.evaluate(TRACES, "chart-sweep-sparsity") == 4  # a ±std band and a mean line per configuration
    page.wait_for_selector("#chart-sweep-parallel .main-svg")
    dimensions = page.evaluate("() => document.getElementById('chart-sweep-parallel').data[0].dimensions"
                               ".map(d => d.label)")
    assert dimensions == ["pruning.fraction", "best ticket: % of weights remaining"]
    rows = page.inner_text("#sweep-table tbody").splitlines()
    assert len(rows) == 2 and all("1 / 1" in row and "n=1" in row for row in rows)

    page.select_option("#parallel-metric", "dense")
    page.wait_for_url(re.compile(r".*\?parallel=dense$"))
    page.wait_for_selector("#chart-sweep-parallel .main-svg")
    assert page.evaluate("() => document.getElementById('chart-sweep-parallel').data[0].dimensions[1].label") == \
        "dense test accuracy"
    save_screenshot(page, "10_sweep", full_page=True)
    assert errors == []
