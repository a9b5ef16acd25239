"""The pre-training study: the tasks' targets on hand-made tensors (random labels, rotations), the rotation head
dropped for θ0's output layer, then the study on a tiny rewound run (the chain starts from the pre-trained weights,
masks, determinism, resume, cancel), its parameters, its pre-flight check and the CLI."""
import pytest
import torch

from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, events
from trainer.analyses import events as aevents, pretraining
from trainer.analyses.common import AnalysisContext
from trainer.analyses.pretraining import run_pretraining
from trainer.cli.main import main
from trainer.datasets import DATASETS
from trainer.pruning import masks
from trainer.rundir import RunDir
from trainer.spec import SpecError
from trainer.training.loop import PreparedData

# ---- the tasks on hand-made tensors ---------------------------------------------------------------


def test_random_labels_are_a_fixed_seeded_uniform_labelling_unrelated_to_the_true_labels():
    true = torch.arange(6000) % 10
    labels = pretraining.random_labels(6000, 10, 0, "train")
    assert torch.equal(labels, pretraining.random_labels(6000, 10, 0, "train"))  # deterministic
    assert not torch.equal(labels, pretraining.random_labels(6000, 10, 1, "train"))  # another seed, another draw
    assert set(labels.tolist()) == set(range(10))
    counts = torch.bincount(labels, minlength=10).float()
    assert float(counts.min()) > 500 and float(counts.max()) < 700  # uniform: ~600 each
    agreement = float((labels == true).float().mean())
    assert 0.07 < agreement < 0.13  # chance agreement with the true labels (1/10), not the labels themselves


def test_rotation_labels_are_balanced_and_seeded():
    rotations = pretraining.rotation_labels(10, 0, "train")
    assert sorted(rotations.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotations, pretraining.rotation_labels(10, 0, "train"))
    assert not torch.equal(pretraining.rotation_labels(40, 0, "train"), pretraining.rotation_labels(40, 5, "train"))


def test_an_image_rotated_by_k_quarter_turns_is_rotated_counter_clockwise_k_times():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    images = image.repeat(4, 1, 1, 1)
    rotated = pretraining.rotate_images(images, torch.tensor([0, 1, 2, 3]))
    assert rotated[0, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert rotated[1, 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]  # 90° counter-clockwise: the right column on top
    assert rotated[2, 0].tolist() == [[4.0, 3.0], [2.0, 1.0]]
    assert rotated[3, 0].tolist() == [[3.0, 1.0], [4.0, 2.0]]
    assert images[1, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]  # the input is not changed


def hand_made_data(count: int = 12) -> PreparedData:
    info = DATASETS["synthetic"].info
    draws = torch.Generator().manual_seed(3)

    def split():
        return torch.rand(count, 1, 28, 28, generator=draws), torch.randint(0, 10, (count,), generator=draws)

    return PreparedData(info, *split(), *split(), *split(), batch_size=4)


def test_the_rotation_task_rotates_each_image_by_its_label_and_turns_augmentation_off():
    data = hand_made_data()
    task = pretraining.task_data(pretraining.ROTATION, data, seed=0)
    assert task.info.num_classes == 4 and not task.info.augment
    for images, original, targets in ((task.train_x, data.train_x, task.train_y),
                                      (task.test_x, data.test_x, task.test_y)):
        assert set(targets.tolist()) == {0, 1, 2, 3}
        for index, quarter_turns in enumerate(targets.tolist()):
            assert torch.equal(images[index], torch.rot90(original[index], quarter_turns, dims=(-2, -1)))
    labelled = pretraining.task_data(pretraining.RANDOM_LABELS, data, seed=0)
    assert torch.equal(labelled.train_x, data.train_x) and labelled.info == data.info
    assert torch.equal(labelled.train_y, pretraining.random_labels(12, 10, 0, "train"))


# ---- the study on a tiny rewound run -------------------------------------------------------------

SMALL = {"pretrain_steps": ["15it"], "rounds": 1}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"))  # θk at 10 of 40 iterations, 2 pruned rounds


def context_of(run_path, params) -> AnalysisContext:
    return AnalysisContext(pretraining.NAME, pretraining.PARAMS, run_path, params, callback=events.ignore,
                           data_dir=None, stop_requested=lambda: False)


def test_the_rotation_head_is_four_way_and_is_dropped_for_theta_0s_output_layer(run_path):
    run = context_of(run_path, SMALL).run
    theta_0 = run.theta_init()
    model = pretraining.pretraining_model(run, pretraining.ROTATION, theta_0, seed=0)
    state = model.state_dict()
    assert state["fc3.weight"].shape == (4, 100) and state["fc3.bias"].shape == (4,)
    assert torch.equal(state["fc1.weight"], theta_0["fc1.weight"])  # everything below the head is θ0
    assert pretraining.output_layer_names("lenet_300_100", run.data.info, theta_0) == ["fc3.weight", "fc3.bias"]
    with torch.no_grad():
        for tensor in state.values():
            tensor.add_(1.0)  # stands for the pre-training
    start = pretraining.chain_start(run, pretraining.ROTATION, model.state_dict(), theta_0)
    assert torch.equal(start["fc3.weight"], theta_0["fc3.weight"])
    assert torch.equal(start["fc3.bias"], theta_0["fc3.bias"])
    assert torch.equal(start["fc1.weight"], theta_0["fc1.weight"] + 1.0)


def test_the_chains_start_from_the_pre_trained_weights_and_follow_the_runs_pruning(run_path):
    seen, callback = collector()
    result = analyses.run_analysis(pretraining.NAME, run_path, SMALL, callback=callback)
    run_dir = RunDir.open(run_path)
    assert result["status"] == "finished" and result["rounds"] == 1
    assert result["rewind_iteration"] == 10 == result["run_rewind_iteration"] and result["total_iterations"] == 40
    assert [chain["network"] for chain in result["chains"]] == ["random_labels_15it", "rotation_15it"]
    context = context_of(run_path, SMALL)
    theta_0 = context.run.theta_init()
    for chain in result["chains"]:
        assert chain["pretrain_iterations"] == 15
        assert chain["pretraining"]["status"] == "finished" and chain["pretraining"]["end_iteration"] == 15
        assert chain["pretraining"]["task_classes"] == (4 if chain["task"] == "rotation" else 10)
        pretrained = context.unit_state(f"pretrained/{chain['network']}")
        assert not torch.equal(pretrained["fc1.weight"], theta_0["fc1.weight"])  # pre-training changed θ0
        # the rotation head is dropped for θ0's output layer; random labels trained the network's own
        assert torch.equal(pretrained["fc3.weight"], theta_0["fc3.weight"]) == (chain["task"] == "rotation")
        chain_dir = RunDir(pretraining.chain_directory(context, chain["network"]), run_dir.spec)
        assert torch.equal(chain_dir.load_state(chain_dir.theta_init_path)["fc1.weight"], pretrained["fc1.weight"])
        assert [r["round"] for r in chain["rounds"]] == [0, 1]
        assert [(r["start_iteration"], r["end_iteration"]) for r in chain["rounds"]] == [(0, 40), (10, 40)]
        assert [r["remaining_fraction"] for r in chain["rounds"]] == [
            run_dir.record(r)["remaining_fraction"] for r in (0, 1)]
        mask, final = chain_dir.mask(1), chain_dir.final_weights(1)
        assert masks.remaining_fraction(mask) == pytest.approx(0.5, abs=0.01)
        assert not torch.equal(mask["fc1.weight"], run_dir.mask(1)["fc1.weight"])  # its own pruning
        assert all(torch.count_nonzero(final[n][~m]) == 0 for n, m in mask.items())
    assert result["ticket"] == run_dir.records()
    trained = sorted((e["network"], e["round"]) for e in seen if e["type"] == events.ROUND_FINISHED)
    assert trained == sorted([("pretraining_random_labels_15it", 0), ("pretraining_rotation_15it", 0),
                              ("random_labels_15it", 0), ("random_labels_15it", 1), ("rotation_15it", 0),
                              ("rotation_15it", 1)])
    lines = pretraining.summary_lines(result)
    assert len(lines) == 2 + 3 + 2 * 2 and lines[2].split()[:4] == ["ticket", "(no", "pre-training)", "0"]


def test_two_runs_give_the_same_numbers_and_another_seed_another_draw(run_path, tmp_path):
    params = {"tasks": ["rotation"], "pretrain_steps": ["10it"], "rounds": 1, "rewind_step": "0it"}
    first = run_pretraining(run_path, **params)
    second = run_pretraining(tiny_run(tmp_path), **params)  # the same spec trained again elsewhere
    def numbers(result):
        return [[(x["early_stop"], x["final"]) for x in chain["rounds"]] + [chain["pretraining"]["train_loss"]]
                for chain in result["chains"]]

    assert numbers(first) == numbers(second)
    assert first["rewind_iteration"] == 0 and first["chains"][0]["rounds"][1]["start_iteration"] == 0
    reseeded = run_pretraining(run_path, **params, seed=1)
    assert reseeded["result_dir"] != first["result_dir"] and numbers(reseeded) != numbers(first)


def test_a_cancelled_study_resumes_per_round_and_skips_the_finished_work(run_path):
    params = {"tasks": ["random_labels"], "pretrain_steps": ["5it"], "rounds": 2}
    seen, callback = collector()
    def stop_after_chain_round_0():
        return any(e["type"] == events.ROUND_FINISHED and e["network"] == "random_labels_5it" for e in seen)

    first = run_pretraining(run_path, **params, callback=callback, stop_requested=stop_after_chain_round_0)
    assert first["status"] == "cancelled"
    assert [e["status"] for e in seen if e["type"] == aevents.ANALYSIS_FINISHED] == ["cancelled"]
    seen, callback = collector()
    second = run_pretraining(run_path, **params, callback=callback)
    assert second["status"] == "finished"
    assert [e["unit"] for e in seen if e["type"] == aevents.UNIT_SKIPPED] == ["pretrained/random_labels_5it"]
    assert [e["round"] for e in seen if e["type"] == events.ROUND_SKIPPED] == [0]
    assert [(e["network"], e["round"]) for e in seen if e["type"] == events.ROUND_FINISHED] == [
        ("random_labels_5it", 1), ("random_labels_5it", 2)]
    seen, callback = collector()
    assert run_pretraining(run_path, **params, callback=callback) == second  # finished: nothing trains
    assert not [e for e in seen if e["type"] == events.ROUND_STARTED]


# ---- parameters, the pre-flight check, the CLI ---------------------------------------------------

@pytest.mark.parametrize("params, field, message", [
    ({"tasks": ["jigsaw"]}, "tasks[0]", "unknown choice"),
    ({"pretrain_steps": ["ten"]}, "pretrain_steps[0]", "followed by 'it' or 'ep'"),
    ({"rounds": 0}, "rounds", "must be at least 1"),
    ({"rewind_step": "soon"}, "rewind_step", "got 'soon'"),
    ({"seed": -1}, "seed", "must be at least 0"),
    ({"epochs": 2}, "epochs", "unknown parameter"),
])
def test_bad_parameters_are_spec_errors_naming_the_parameter(params, field, message):
    with pytest.raises(SpecError, match=message) as error:
        analyses.validate(pretraining.NAME, params)
    assert error.value.field == field


def test_the_check_refuses_an_empty_study_a_zero_length_and_rotation_of_non_square_images():
    check = analyses.get_analysis(pretraining.NAME).check
    info = {"model": "lenet_300_100", "dataset": "synthetic", "has_batch_norm": False, "finished_rounds": [0, 1, 2],
            "rewind_step": "0it"}
    check(analyses.validate(pretraining.NAME, None), info)
    for params, field, message in (({"tasks": []}, "tasks", "at least one pre-training task"),
                                   ({"pretrain_steps": []}, "pretrain_steps", "at least one pre-training length"),
                                   ({"pretrain_steps": ["5it", "0ep"]}, "pretrain_steps[0]", "at least one iteration")):
        with pytest.raises(SpecError, match=message) as error:
            check(analyses.validate(pretraining.NAME, params), info)
        assert error.value.field == field
    with pytest.raises(SpecError, match=r"square images; this dataset's inputs are \(3, 32, 16\)") as error:
        pretraining._require_square((3, 32, 16))
    assert error.value.field == "tasks"


def test_a_rewind_step_after_the_end_of_training_is_refused(run_path):
    with pytest.raises(SpecError, match="must be before the end of training") as error:
        run_pretraining(run_path, tasks=["random_labels"], pretrain_steps=["5it"], rewind_step="40it")
    assert error.value.field == "rewind_step"


def test_cli_runs_the_study_and_exits_2_on_bad_parameters(run_path, capsys):
    assert main(["analyze", str(run_path), "pretraining", "--tasks", "random_labels", "--pretrain-steps", "5it",
                 "--rounds", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "random_labels_5it" in out and "ticket (no pre-training)" in out
    assert main(["analyze", str(run_path), "pretraining", "--tasks", "jigsaw"]) == 2
    assert "tasks[0]: unknown choice 'jigsaw'" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "pretraining", "--pretrain-steps", "0it"]) == 2
    assert "pretrain_steps[0]: must be at least one iteration" in capsys.readouterr().err
