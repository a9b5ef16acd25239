"""Headless Chromium (Debian's package, driven by Playwright; no browser download): the form, the live
page with a moving progress bar and growing curves, then the result page's charts and mask heatmaps,
all without a reload. Screenshots go to test-output/browser/; with LOTTERYWEB_UPDATE_SCREENSHOTS=1 the
README's screenshots in docs/screenshots/ are refreshed too."""
import re

import pytest

from tests.conftest import analysis_params
from tests.live.conftest import OUTPUT, add_finished_experiment, save_screenshot, signed_in_page
from trainer.analyses import ANALYSES
from trainer.reproduce import CHECKS

pytestmark = [pytest.mark.live, pytest.mark.slow]

LIVE_POINTS = """() => {
  const chart = document.getElementById('live-metric');
  return chart && chart.data ? chart.data.reduce((sum, trace) => sum + trace.x.length, 0) : -1;
}"""
PROGRESS = "() => Number(document.getElementById('progress-bar').getAttribute('aria-valuenow'))"


def test_form_live_progress_and_result_charts_in_chromium(live_app, browser):
    page, errors = signed_in_page(browser, live_app, "/new/", viewport={"width": 1280, "height": 860})
    page.click('button[data-preset="quick_demo"]')
    # the remaining-fraction preview follows the typing: 5 rounds -> rows for rounds 0..5
    page.fill("#id_pruning__rounds", "5")
    page.wait_for_function("() => document.querySelectorAll('#remaining-preview tbody tr').length === 6")
    # fc1 and fc2 keep 0.8^5 of their weights, the output layer fc3 (10% per round) 0.9^5
    assert page.inner_text("#remaining-preview tbody tr:last-child td:nth-child(2)") == "32.9%"
    page.fill("#id_pruning__rounds", "2")
    page.fill("#id_training__training_steps", "1000it")
    page.fill("#id_init_seed", "202")
    page.fill("#id_replicates", "2")
    page.wait_for_function("() => document.querySelectorAll('#remaining-preview tbody tr').length === 3")
    assert page.is_disabled('button[data-preset="conv2_cifar"]')  # CIFAR-10 is not installed
    page.evaluate("() => window.scrollTo(0, 0)")
    save_screenshot(page, "01_new_experiment", "new_experiment")

    page.click("#submit-experiment")
    page.wait_for_url(re.compile(r".*/e/\d+/$"))
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads

    page.wait_for_function(f"() => ({PROGRESS})() > 0", timeout=60_000)
    first_progress = page.evaluate(PROGRESS)
    first_points = page.evaluate(LIVE_POINTS)
    page.wait_for_function(f"() => ({PROGRESS})() > {first_progress} && ({LIVE_POINTS})() > {first_points}",
                           timeout=60_000)
    # replicate 1 trains beside replicate 0 (stacked) and has its own live line
    page.wait_for_function("() => { const chart = document.getElementById('live-metric'); if (!chart) return true;"
                           " const trace = chart.data.find(t => t.meta === 'ticket:1:0');"
                           " return trace && trace.x.length > 0; }",
                           timeout=60_000)
    save_screenshot(page, "02_live", "live")

    # a dropped connection comes back by itself and re-reads the state it missed
    page.wait_for_function("() => document.getElementById('experiment-page').dataset.connections === '1'")
    points_before_drop = page.evaluate(LIVE_POINTS)
    page.evaluate("() => window.lotteryLiveSocket.close()")
    page.wait_for_function("() => !document.getElementById('experiment-page') || "
                           "document.getElementById('experiment-page').dataset.connections === '2'", timeout=30_000)
    assert page.evaluate("() => !document.getElementById('experiment-page') || "
                         f"({LIVE_POINTS})() >= {points_before_drop}")

    page.wait_for_selector("#result-page", timeout=180_000)
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of turning into the results"
    page.wait_for_selector("#chart-sparsity-accuracy .main-svg")
    traces = page.evaluate("() => document.getElementById('chart-sparsity-accuracy').data.map(t => t.name)")
    # two replicates: each network is its mean across replicates with a min-max band
    assert "winning ticket (early stop, mean of 2)" in traces and "random reinit (early stop, mean of 2)" in traces
    assert "winning ticket min–max of 2 replicates" in traces
    assert "mean ± std of 2 replicates" in page.inner_text("#round-table")
    page.wait_for_selector("#mask-figures #mask-layer-0 .main-svg")
    assert page.evaluate("() => document.getElementById('mask-layer-0').data[0].type") == "heatmap"
    page.wait_for_selector("#mask-input-pixels .main-svg")
    assert page.evaluate("() => document.getElementById('mask-figures').dataset.loadedRound") == "2"
    save_screenshot(page, "03_result", "result")
    page.locator("#mask-figures").scroll_into_view_if_needed()
    page.evaluate("() => window.scrollBy(0, -60)")
    save_screenshot(page, "04_result_masks", "result_masks")

    # the round slider loads another round's masks
    page.eval_on_selector("#mask-round", "slider => { slider.value = '1'; slider.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.getElementById('mask-figures').dataset.loadedRound === '1'")
    assert "round 1" in page.inner_text("#mask-layer-0")

    page.goto(live_app.base_url + "/")
    # Two replicates: the best ticket is judged on their mean per round.
    assert "mean test accuracy of 2 replicates (round" in page.inner_text("#experiment-list")
    save_screenshot(page, "05_list", "list")
    assert not errors, errors
    page.close()


# A language model and an agent through the form's presets, shrunk to seconds: their charts speak of their metric.
TASK_EXPERIMENTS = [
    ("transformer_lm_python_docs", {"#id_training__training_steps": "8it", "#id_training__eval_interval": "4it",
                                    "#id_rewind_step": "2it", "#id_pruning__rounds": "1",
                                    "#id_training__batch_size": "8", "#id_training__context_length": "16"},
     "test perplexity", "08_language_model"),
    ("a2c_cartpole", {"#id_training__training_steps": "6it", "#id_training__eval_interval": "3it",
                      "#id_rewind_step": "2it", "#id_pruning__rounds": "1", "#id_replicates": "1",
                      "#id_reinforcement__eval_episodes": "2", "#id_reinforcement__rollout_steps": "8"},
     "mean return", "09_agent"),
]


@pytest.mark.parametrize("preset, fields, metric, screenshot", TASK_EXPERIMENTS, ids=["language_model", "agent"])
def test_a_language_model_and_an_agent_run_through_the_form_in_chromium(live_app, browser, preset, fields, metric,
                                                                         screenshot):
    page, errors = signed_in_page(browser, live_app, "/new/", viewport={"width": 1280, "height": 860})
    page.click(f'button[data-preset="{preset}"]')
    for selector, value in fields.items():
        page.fill(selector, value)
    page.click("#submit-experiment")
    page.wait_for_url(re.compile(r".*/e/\d+/$"))
    page.wait_for_selector("#result-page", timeout=180_000)
    page.wait_for_selector("#chart-sparsity-accuracy .main-svg")
    axis = page.evaluate("() => document.getElementById('chart-sparsity-accuracy').layout.yaxis.title.text")
    assert metric in axis
    assert metric in page.inner_text("#round-table")
    page.wait_for_selector("#mask-figures #mask-layer-0 .main-svg")
    save_screenshot(page, screenshot, full_page=True)
    assert not errors, errors
    page.close()


FILL_ANALYSIS_FORM = """([name, params]) => {
  const form = document.getElementById('analysis-form-' + name);
  for (const [key, value] of Object.entries(params)) {
    const inputs = form.querySelectorAll('[name="' + name + '-' + key + '"]');
    if (inputs[0].type === 'checkbox') {
      if (typeof value === 'boolean') inputs[0].checked = value;
      else inputs.forEach(input => { input.checked = value.includes(input.value); });
    } else {
      inputs[0].value = Array.isArray(value) ? value.join(', ') : String(value);
    }
  }
}"""
CHART_TRACES = ("id => { const chart = document.getElementById(id);"
                " return chart && chart.data ? chart.data.length : 0; }")


def test_every_analysis_chart_renders_in_chromium(live_app, browser, analysis_results):
    """Each analysis is asked for through its form on a finished experiment's page; the real Celery worker
    finds the engine's stored result (the session ran the same parameters), and the polling section shows
    every chart without a reload."""
    by_run: dict = {}
    for name in ANALYSES:
        by_run.setdefault(analysis_results[name][1], []).append(name)
    page, errors = signed_in_page(browser, live_app, viewport={"width": 1280, "height": 900})
    for run_path, names in by_run.items():
        experiment_id = add_finished_experiment(live_app.database_env, run_path, live_app.username)
        url = f"{live_app.base_url}/e/{experiment_id}/"
        for name in names:
            page.goto(url)
            page.click(f"#analysis-{name} summary")
            page.evaluate(FILL_ANALYSIS_FORM, [name, analysis_params(name, run_path)])
            page.click(f"#analysis-form-{name} button[type=submit]")
            page.wait_for_url(re.compile(rf".*/e/{experiment_id}/#analysis-{name}$"))
        page.evaluate("() => { window.sameDocument = true; }")
        for name in names:
            page.wait_for_selector(f"#analysis-{name} .analysis-run[data-status=finished] .chart .main-svg",
                                   timeout=120_000)
        # When any run of the page ends, the whole Analyses section is reloaded; a section served with nothing
        # queued or running no longer polls. Checking and screenshotting before then can meet a detached node.
        page.wait_for_selector("#analyses:not([data-analyses-poll])", state="attached", timeout=30_000)
        for name in names:
            section = f"#analysis-{name}"
            page.wait_for_selector(f"{section} .analysis-run[data-status=finished] .chart .main-svg")
            chart_ids = page.eval_on_selector_all(f"{section} .analysis-run[data-status=finished] .chart",
                                                  "charts => charts.map(chart => chart.id)")
            assert chart_ids, name
            for chart_id in chart_ids:
                page.wait_for_selector(f"#{chart_id} .main-svg")
                assert page.evaluate(CHART_TRACES, chart_id) > 0, chart_id
            page.locator(section).screenshot(path=str(OUTPUT / f"06_analysis_{name}.png"))
        assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of polling"
        if "connectivity" in names:
            page.locator("#analysis-retraining").scroll_into_view_if_needed()
            page.evaluate("() => document.getElementById('analysis-retraining').scrollIntoView()")
            save_screenshot(page, "06_analyses", "analyses")
    assert not errors, errors
    page.close()


# The check the browser runs through the page: quick at the "tiny" budget (seconds of training).
BROWSER_CHECK = "tickets_vs_dense"


def test_reproductions_page_runs_a_check_in_chromium(live_app, browser):
    """The header leads to the Reproductions page; one check is run with the tiny budget on the real
    worker, and its verdict badge and chart appear in place (the page polls, it does not reload)."""
    page, errors = signed_in_page(browser, live_app, "/", viewport={"width": 1280, "height": 900})
    page.click("#nav-reproductions")
    page.wait_for_url(re.compile(r".*/reproductions/$"))
    assert page.eval_on_selector_all("article.check", "cards => cards.map(card => card.id)") == [
        f"check-{name}" for name in CHECKS]
    card = f"#check-{BROWSER_CHECK}"
    assert CHECKS[BROWSER_CHECK].source in page.inner_text(f"{card} .check-source")
    assert page.input_value("#reproduction-budget") == "small"
    page.select_option("#reproduction-budget", "tiny")
    page.click(f"#run-{BROWSER_CHECK}")
    page.wait_for_url(re.compile(rf".*/reproductions/#check-{BROWSER_CHECK}$"))
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
    page.wait_for_selector(f"{card} .verdict-badge", timeout=180_000)
    assert page.inner_text(f"{card} .verdict-badge") in ("PASS", "FAIL", "INCONCLUSIVE")
    assert "budget tiny" in page.inner_text(f"{card} .check-ran")
    chart = f"reproduction-chart-{BROWSER_CHECK}"
    page.wait_for_selector(f"#{chart} .main-svg")
    assert page.evaluate(CHART_TRACES, chart) > 0
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of polling"
    # the page's head (budget, Run all) and the check's card down to its chart
    bottom = page.evaluate(f"() => document.querySelector('{card}').getBoundingClientRect().bottom + window.scrollY")
    save_screenshot(page, "07_reproductions", "reproductions", full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": min(bottom + 16, 1400)})
    assert not errors, errors
    page.close()
