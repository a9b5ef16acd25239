"""Score training of several networks stacked (train_scores_stacked): each network's scores, losses and
batch-norm statistics equal its training alone, whatever its mask rule, objective or weight decay; a
diverging network does not stop the others; a stop request cancels them all."""
import copy

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.conftest import TinyBN, tiny_spec
from trainer import models
from trainer.seeds import generator
from trainer.training.loop import prepare_data
from trainer.training.score_masks import (
    ScoreJob,
    ScoreTraining,
    identity_masks,
    sampled_masks,
    top_k_masks,
    train_scores,
    train_scores_stacked,
)


@pytest.fixture(scope="module")
def data():
    return prepare_data(tiny_spec(), torch.device("cpu"))


def plan(iterations=30, weight_decay=1e-4):
    return ScoreTraining(iterations, 0.1, 0.9, weight_decay, data_seed=3, metrics_interval=10)


def lenet_job(index: int, make_masks, network: str, score_seed: int = 0, **fields) -> ScoreJob:
    model = models.build_model("lenet_300_100", (1, 28, 28), 10, init_seed=100 + index)
    names = models.prunable_parameter_names("lenet_300_100", (1, 28, 28), 10)
    frozen = {name: model.get_parameter(name).detach().clone() for name in names}
    draws = generator(score_seed, "scores", index)
    scores = {name: torch.randn(weight.shape, generator=draws) for name, weight in frozen.items()}
    return ScoreJob(network, model, frozen, scores, make_masks, **fields)


def train_alone(job: ScoreJob, data, training: ScoreTraining):
    job = copy.deepcopy(job)
    decay = training.weight_decay if job.weight_decay is None else job.weight_decay
    alone = ScoreTraining(training.iterations, training.lr, training.momentum, decay, training.data_seed,
                          training.metrics_interval)
    result = train_scores(job.model, job.frozen, job.scores, job.make_masks, data, alone, network=job.network,
                          objective=job.objective)
    return job, result


def assert_same_training(stacked_job, stacked_result, alone_job, alone_result):
    assert stacked_result.status == alone_result.status
    assert stacked_result.train_loss["iteration"] == alone_result.train_loss["iteration"]
    assert stacked_result.train_loss["loss"] == pytest.approx(alone_result.train_loss["loss"], rel=1e-4)
    for name, score in alone_job.scores.items():
        torch.testing.assert_close(stacked_job.scores[name], score, rtol=1e-4, atol=1e-5)
    for (name, buffer), (_, alone_buffer) in zip(stacked_job.model.named_buffers(), alone_job.model.named_buffers()):
        torch.testing.assert_close(buffer, alone_buffer, rtol=1e-4, atol=1e-5, msg=name)


def test_top_k_networks_of_different_k_train_stacked_as_they_train_alone(data):
    jobs = [lenet_job(index, lambda scores, _, k=k: top_k_masks(scores, k), f"k{k}")
            for index, k in enumerate((0.1, 0.5, 0.9))]
    alone = [train_alone(job, data, plan()) for job in jobs]
    before = [copy.deepcopy(job.scores) for job in jobs]
    results = train_scores_stacked(jobs, data, plan())
    for job, result, (alone_job, alone_result), start in zip(jobs, results, alone, before):
        assert_same_training(job, result, alone_job, alone_result)
        assert any(not torch.equal(job.scores[name], start[name]) for name in start)  # the scores did train
        assert not job.scores["fc1.weight"].requires_grad


def test_bernoulli_masks_keep_each_networks_own_samples(data):
    def sampler(choice):
        return lambda scores, iteration: sampled_masks(scores, generator(0, "supermask", choice, iteration))
    jobs = [lenet_job(index, sampler(index), f"supermask_{index}") for index in range(2)]
    alone = [train_alone(job, data, plan(20)) for job in jobs]
    results = train_scores_stacked(jobs, data, plan(20))
    for job, result, (alone_job, alone_result) in zip(jobs, results, alone):
        assert_same_training(job, result, alone_job, alone_result)


def test_different_rules_objectives_and_weight_decays_share_one_stack(data):
    """Malach's three two-layer models of one width: only the last layer trained, whole units masked, weights
    masked; plus an objective that is not the labels' cross-entropy."""
    width = 16

    def mlp(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width, bias=False), torch.nn.ReLU(),
                                   torch.nn.Linear(width, 10, bias=False))
    last = mlp(1)
    features = ScoreJob("random_features", last, {"3.weight": torch.ones(10, width)},
                        {"3.weight": last.get_parameter("3.weight").detach().clone()}, identity_masks,
                        weight_decay=0.0)
    units = mlp(1)
    unit_scores = {"units": torch.randn(width, generator=generator(0, "units"))}

    def unit_rows(scores, _):
        return {"1.weight": top_k_masks({"units": scores["units"]}, 0.5)["units"][:, None]}
    neurons = ScoreJob("neurons", units, {"1.weight": units.get_parameter("1.weight").detach().clone()},
                       unit_scores, unit_rows)
    weights = mlp(1)
    frozen = {name: weights.get_parameter(name).detach().clone() for name in ("1.weight", "3.weight")}
    weight_scores = {name: torch.randn(w.shape, generator=generator(1, name)) for name, w in frozen.items()}
    squared = ScoreJob("weights_mse", weights, frozen, weight_scores, lambda scores, _: top_k_masks(scores, 0.3),
                       objective=lambda outputs, inputs, targets: F.mse_loss(outputs, F.one_hot(targets, 10).float()))
    jobs = [features, neurons, squared]
    alone = [train_alone(job, data, plan(20, weight_decay=1e-3)) for job in jobs]
    results = train_scores_stacked(jobs, data, plan(20, weight_decay=1e-3))
    for job, result, (alone_job, alone_result) in zip(jobs, results, alone):
        assert_same_training(job, result, alone_job, alone_result)
    for name in ("1.weight", "3.weight"):  # no network's model weight was trained
        assert torch.equal(units.get_parameter(name), mlp(1).get_parameter(name))


def test_batch_norm_networks_get_their_own_statistics_back(data):
    def job(index, k):
        torch.manual_seed(index)
        model = TinyBN((1, 28, 28), 10)
        frozen = {name: model.get_parameter(name).detach().clone() for name in ("conv1.weight", "conv2.weight",
                                                                                "fc.weight")}
        scores = {name: torch.randn(w.shape, generator=generator(index, name)) for name, w in frozen.items()}
        return ScoreJob(f"bn{index}", model, frozen, scores, lambda current, _: top_k_masks(current, k))
    jobs = [job(0, 0.3), job(1, 0.7)]
    alone = [train_alone(one, data, plan(20)) for one in jobs]
    results = train_scores_stacked(jobs, data, plan(20))
    for one, result, (alone_job, alone_result) in zip(jobs, results, alone):
        assert_same_training(one, result, alone_job, alone_result)
        assert not torch.equal(one.model.bn1.running_mean, torch.zeros(4))  # the statistics moved


def test_a_diverging_network_is_reported_and_the_others_go_on(data):
    def exploding(outputs, inputs, targets):
        return F.cross_entropy(outputs, targets) * float("inf")
    jobs = [lenet_job(0, lambda scores, _: top_k_masks(scores, 0.5), "fine"),
            lenet_job(1, lambda scores, _: top_k_masks(scores, 0.5), "diverges", objective=exploding)]
    alone_job, alone_result = train_alone(jobs[0], data, plan())
    results = train_scores_stacked(jobs, data, plan())
    assert results[1].status == "diverged" and "iteration 10" in results[1].message
    assert results[1].train_loss["iteration"] == []
    assert_same_training(jobs[0], results[0], alone_job, alone_result)


def test_a_stop_request_cancels_every_network(data):
    seen = []
    jobs = [lenet_job(index, lambda scores, _: top_k_masks(scores, 0.5), f"n{index}") for index in range(2)]
    results = train_scores_stacked(jobs, data, plan(), callback=seen.append, stop_requested=lambda: True)
    assert [result.status for result in results] == ["cancelled", "cancelled"]
    assert sorted(event["network"] for event in seen) == ["n0", "n1"]  # one metrics event each, at iteration 10
    assert {event["iteration"] for event in seen} == {10}
