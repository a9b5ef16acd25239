"""charts (frontend/charts/): figures are built on the server from stored rows and masks."""
import json

import pytest
import torch

from frontend import charts
from trainer.analyses import ANALYSES


def rows(network, accuracies):
    return [{"network": network, "round": index, "status": "finished", "remaining_fraction": 0.8 ** index,
             "early_stop_test_metric": accuracy, "final_test_metric": accuracy - 0.01,
             "early_stop_iteration": 100 * (index + 1)} for index, accuracy in enumerate(accuracies)]


def test_sparsity_vs_accuracy_has_log_x_and_two_lines_per_network():
    figure = charts.sparsity_vs_accuracy({"ticket": rows("ticket", [0.9, 0.91, 0.92]),
                                          "random_reinit": rows("random_reinit", [0.9, 0.85])})
    assert figure.layout.xaxis.type == "log"
    names = [trace.name for trace in figure.data]
    assert names == ["winning ticket (early stop)", "winning ticket (end of training)",
                     "random reinit (early stop)", "random reinit (end of training)"]
    assert list(figure.data[0].x) == pytest.approx([100.0, 80.0, 64.0])
    assert list(figure.data[0].y) == pytest.approx([90.0, 91.0, 92.0])


def test_unfinished_rounds_are_left_out():
    diverged = rows("ticket", [0.9, 0.5])
    diverged[1]["status"] = "diverged"
    figure = charts.early_stop_iterations({"ticket": diverged})
    assert list(figure.data[0].y) == [100]


def test_fully_connected_mask_is_downsampled_to_survivor_fractions():
    mask = torch.rand(300, 784, generator=torch.Generator().manual_seed(0)) < 0.3
    figure = charts.masks.mask_heatmap("fc1.weight", mask, 3)
    z = torch.tensor(figure.data[0].z)
    assert z.shape[0] <= charts.masks.HEATMAP_MAX_ROWS and z.shape[1] <= charts.masks.HEATMAP_MAX_COLUMNS
    assert 0.0 <= float(z.min()) and float(z.max()) <= 1.0
    assert abs(float(z.mean()) - float(mask.float().mean())) < 0.01
    assert "fc1.weight (300 × 784), round 3" in figure.layout.title.text


def test_conv_mask_is_a_filter_by_input_channel_grid():
    mask = torch.ones(64, 32, 3, 3, dtype=torch.bool)
    mask[0, 0, 0, :] = False  # a third of one kernel pruned
    z = charts.masks.mask_heatmap("conv2.weight", mask, 1).data[0].z
    assert len(z) == 64 and len(z[0]) == 32
    assert abs(z[0][0] - 2 / 3) < 1e-3 and z[1][1] == 1.0


def test_mnist_shaped_first_layer_gets_the_28x28_pixel_image():
    masks = {"fc1.weight": torch.zeros(300, 784, dtype=torch.bool),
             "fc2.weight": torch.ones(100, 300, dtype=torch.bool)}
    masks["fc1.weight"][:5, 0] = True  # 5 weights survive from the top-left pixel
    items = charts.mask_figures(masks, 2, (1, 28, 28))
    assert [item["id"] for item in items] == ["mask-input-pixels", "mask-layer-0", "mask-layer-1"]
    z = items[0]["figure"].data[0].z
    assert len(z) == 28 and len(z[0]) == 28 and z[0][0] == 5 and sum(map(sum, z)) == 5
    conv_items = charts.mask_figures({"conv1.weight": torch.ones(64, 3, 3, 3, dtype=torch.bool)}, 0, (3, 32, 32))
    assert [item["id"] for item in conv_items] == ["mask-layer-0"]


def test_figure_json_is_safe_inside_a_script_element():
    figure = charts.sparsity_vs_accuracy({"</script><script>alert(1)</script>": rows("ticket", [0.9])})
    text = charts.figure_json(figure)
    assert "</script>" not in text and "<" not in text
    assert json.loads(text)["data"][0]["name"].startswith("</script>")


def test_live_figures_have_one_line_per_planned_training():
    curves = [{"network": "ticket", "round": 0, "evals": {"iteration": [0, 50], "val_accuracy": [0.1, 0.5]},
               "train_loss": {"iteration": [10], "loss": [2.0]}}]
    figures = charts.live_figures(curves, [("ticket", 0, 0), ("ticket", 1, 0), ("ticket", 0, 1),
                                           ("random_prune", 0, 1)])
    accuracy = figures["metric"]
    assert [trace.meta for trace in accuracy.data] == ["ticket:0:0", "ticket:1:0", "ticket:0:1", "random_prune:0:1"]
    assert list(accuracy.data[0].y) == [10.0, 50.0] and accuracy.data[0].showlegend
    assert not accuracy.data[1].showlegend  # empty lines join the legend with their first point
    assert accuracy.data[1].name == "round 0, replicate 1"  # every replicate has its own line
    assert accuracy.data[0].line.color != accuracy.data[1].line.color


def test_with_replicates_the_sparsity_chart_draws_mean_and_min_max_band():
    bands = {"ticket": [
        {"round": 0, "remaining_fraction": 1.0, "replicates": 3,
         "reported": {"mean": 0.8, "std": 0.01, "min": 0.79, "max": 0.81, "count": 3},
         "final": {"mean": 0.78, "std": 0.01, "min": 0.77, "max": 0.79, "count": 3}},
        {"round": 1, "remaining_fraction": 0.5, "replicates": 3,
         "reported": {"mean": 0.82, "std": 0.02, "min": 0.80, "max": 0.85, "count": 3},
         "final": None}]}
    figure = charts.sparsity_vs_accuracy({"ticket": rows("ticket", [0.9, 0.8])}, bands)
    band, mean, final = figure.data
    assert band.meta == "band:ticket" and band.fill == "toself"
    # the band's outline: max left to right, then min right to left
    assert list(band.x) == [100.0, 50.0, 50.0, 100.0]
    assert list(band.y) == pytest.approx([81.0, 85.0, 80.0, 79.0])
    assert mean.meta == "mean:ticket" and list(mean.y) == pytest.approx([80.0, 82.0])
    assert "mean of 3" in mean.name
    assert list(final.x) == [100.0], "a round without a finished final point is left out of the end line"


def test_with_replicates_every_accuracy_vs_sparsity_analysis_chart_shades_the_imp_band(analysis_results):
    band = [{"round": 0, "remaining_fraction": 1.0, "replicates": 3,
             "reported": {"mean": 0.8, "std": 0.01, "min": 0.79, "max": 0.81, "count": 3}},
            {"round": 1, "remaining_fraction": 0.5, "replicates": 3,
             "reported": {"mean": 0.82, "std": 0.02, "min": 0.80, "max": 0.85, "count": 3}}]
    shaded = 0
    for name, (result, _) in analysis_results.items():
        for item in charts.analysis_figures(ANALYSES[name].chart, result, band):
            figure = item["figure"]
            is_sparsity_chart = figure.layout.xaxis.title.text == "% of weights remaining"
            has_band = any(trace.meta == "band:imp" for trace in figure.data)
            assert has_band == is_sparsity_chart, (name, item["id"])
            if has_band:
                assert figure.data[0].meta == "band:imp", "drawn underneath the lines"
                shaded += 1
        assert all(trace.meta != "band:imp" for item in charts.analysis_figures(ANALYSES[name].chart, result)
                   for trace in item["figure"].data)
    assert shaded >= 5  # retraining, masking criteria, pruning at init, structured, transfer
