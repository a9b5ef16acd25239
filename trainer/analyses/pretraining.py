"""Dense pre-training before IMP (Frankle, Schwab & Morcos 2020, "The Early Phase of Neural Network
Training", ICLR, Section 5: the data-dependence of the early phase), on a finished IMP run.

The question: late rewinding (to θk, k > 0) finds matching tickets where rewinding to θ0 does not;
is what the network learns in those first k iterations something any training teaches, or does it
need the real task? For each pre-training task and length t, θ0 of the run is trained densely for
t iterations on a task other than the real one, and the usual IMP chain then runs from those
weights, as if they were the initialisation:

  random_labels  the training set with a fixed random labelling (one label per example drawn
                 uniformly from the classes, seeded), through the network's own output layer
                 (kept afterwards: the chain starts from the whole pre-trained network)
  rotation       self-supervised rotation prediction: each training image rotated by 0, 90, 180
                 or 270° (a seeded, balanced assignment: one rotation per image), the target is
                 the rotation; a separate 4-way output layer (its own seeded initialisation)
                 replaces the network's during pre-training and is dropped afterwards: the chain
                 starts with θ0's output layer (square images only)

Pre-training uses the run's optimiser and learning-rate schedule from iteration 0, its data order
and a dense network. The chain is trainer.imp.Run itself, in its own run directory under the
study's directory: its θ0 is the pre-trained network, round 0 trains it 0..T on the real labels
and captures θk (k = `rewind_step`, default the run's), round r prunes round r-1 by the run's
pruning settings, rewinds the survivors to θk and trains k..T. The chain is resumed per round as
an IMP run is; each pre-trained network is a unit of work stored at once.

The result sets each chain's accuracy against % remaining beside the run's own ticket (the same
pruning schedule, no pre-training). The paper's claims (SCIENCE.md): short random-label
pre-training helps a little and long hurts; self-supervised rotation pre-training lets IMP with
early rewinding get closer to the late-rewinding ticket.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from trainer import datasets, events, models
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    check_rounds,
    execute,
    percent_text,
    round_finished,
    round_started,
    segment_record,
)
from trainer.analyses.params import Param
from trainer.imp import Run
from trainer.imp.rounds import run_ticket_rounds
from trainer.pruning import masks
from trainer.rundir import RunDir, save_tensor_dict_atomically
from trainer.seeds import derive_seed, generator
from trainer.spec import SpecError
from trainer.steps import Step
from trainer.training.loop import PreparedData, train_segment

NAME = "pretraining"
RANDOM_LABELS = "random_labels"
ROTATION = "rotation"
TASKS = (RANDOM_LABELS, ROTATION)
ROTATIONS = 4  # 0, 90, 180, 270 degrees

PARAMS = (
    Param("tasks", "str_list", TASKS, "Pre-training tasks, one IMP chain each: random_labels (the training set "
          "with a fixed random labelling, the network's own output layer) and rotation (predict whether the image "
          "was rotated by 0/90/180/270°, with a separate 4-way output layer dropped afterwards; square images only).",
          choices=TASKS, unordered=True, labels=("random labels", "rotation prediction (self-supervised)")),
    Param("pretrain_steps", "step_list", ("1ep",), "Lengths t of the dense pre-training, e.g. '200it' or '1ep' "
          "(epochs of the run's training set); one chain per task and length.", unordered=True),
    Param("rounds", "int", None, "Pruned rounds per chain; default: the run's.", minimum=1, maximum=100,
          optional=True),
    Param("rewind_step", "step", None, "The chains rewind to this iteration of the training that starts from the "
          "pre-trained weights; default: the run's rewind step. '0it' rewinds to the pre-trained weights themselves "
          "(the paper's question: does pre-training stand in for late rewinding?).", optional=True),
    Param("seed", "int", 0, "Which random labelling, rotation assignment and rotation head; another seed is "
          "another draw.", minimum=0, maximum=2**31 - 1),
)


def run_pretraining(run_path, tasks=TASKS, pretrain_steps=("1ep",), rounds=None, rewind_step=None, seed=0, *,
                    callback: events.Callback = events.ignore, data_dir=None, stop_requested=lambda: False) -> dict:
    """Pre-train θ0 on each task for each length, run an IMP chain from it; the result JSON (also in result.json).

    Result: {"chains": [{"network", "task", "pretrain_steps", "pretrain_iterations", "pretraining": record of
    the pre-training (its curve is on the pre-training task), "rounds": [the chain's round records]}],
    "ticket": [the run's round records], "rewind_iteration" (the chains'), "run_rewind_iteration",
    "total_iterations", "rounds"}.
    """
    params = {"tasks": list(tasks), "pretrain_steps": list(pretrain_steps), "rounds": rounds,
              "rewind_step": rewind_step, "seed": seed}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


# ---- the pre-training tasks ---------------------------------------------------------------

def random_labels(count: int, num_classes: int, *parts) -> torch.Tensor:
    """A fixed labelling of `count` examples, each label uniform over the classes, seeded by `parts`."""
    return torch.randint(0, num_classes, (count,), generator=generator(NAME, RANDOM_LABELS, *parts))


def rotation_labels(count: int, *parts) -> torch.Tensor:
    """Which rotation (0..3, times 90°) each of `count` images gets: a seeded shuffle of 0,1,2,3,0,1,...,
    so the four rotations are equally frequent."""
    order = torch.randperm(count, generator=generator(NAME, ROTATION, *parts))
    return order % ROTATIONS


def rotate_images(images: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Image i rotated counter-clockwise by rotations[i] × 90° (images: N × C × H × W, H = W)."""
    rotated = images.clone()
    for quarter_turns in range(1, ROTATIONS):
        chosen = (rotations == quarter_turns).nonzero().flatten().to(images.device)
        if chosen.numel():
            rotated[chosen] = torch.rot90(images[chosen], quarter_turns, dims=(-2, -1))
    return rotated


def task_data(task: str, data: PreparedData, seed: int) -> PreparedData:
    """The run's data recast as the pre-training task: the same splits, the task's inputs and targets."""
    splits = {"train": (data.train_inputs, data.train_y), "val": (data.val_inputs, data.val_y),
              "test": (data.test_inputs, data.test_y)}
    recast = {}
    for split, (inputs, targets) in splits.items():
        if task == RANDOM_LABELS:
            labels = random_labels(targets.shape[0], data.info.num_classes, seed, split)
            recast[split] = (inputs, labels.to(targets.device))
        else:
            rotations = rotation_labels(targets.shape[0], seed, split)
            # A turn moves pixels without changing them: turning the stored images is turning their inputs.
            own = inputs.own_rows()  # the split's rows in order, as the rotations are
            rotated = replace(own, stored=rotate_images(own.stored, rotations))
            recast[split] = (rotated, rotations.to(targets.device))
    # Rotation targets would be ambiguous under flips (a flipped 90° turn is a 270° turn of a flipped
    # image), so the data's augmentation is off for that task.
    info = replace(data.info, num_classes=ROTATIONS, augment=False) if task == ROTATION else data.info
    return PreparedData(info, *recast["train"], *recast["val"], *recast["test"], data.batch_size)


def output_layer_names(model_name: str, info, state: dict) -> list[str]:
    """The tensors of the output layer (its weight and, when present, bias)."""
    weight = models.output_parameter_name(model_name, info.input_shape, info.num_classes)
    layer = weight.rsplit(".", 1)[0]
    return [name for name in state if name.rsplit(".", 1)[0] == layer]


def pretraining_model(run: Run, task: str, theta_0: dict, seed: int) -> torch.nn.Module:
    """θ0 ready for the task: as it is for random labels; for rotation, θ0 with a fresh 4-way output layer."""
    if task == RANDOM_LABELS:
        return run.model_with(theta_0)
    info = run.data.info
    head_seed = derive_seed(run.spec.init_seed, NAME, "rotation_head", seed) % (2**31)
    model = models.build_model(run.spec.model, info.input_shape, ROTATIONS, head_seed).to(run.device)
    head = set(output_layer_names(run.spec.model, info, theta_0))
    state = model.state_dict()
    model.load_state_dict({name: (state[name] if name in head else tensor) for name, tensor in theta_0.items()})
    return model


def chain_start(run: Run, task: str, pretrained: dict, theta_0: dict) -> dict:
    """The chain's θ0: the pre-trained network; after rotation prediction its 4-way head is dropped for θ0's
    output layer (random-label pre-training trained the network's own output layer, which is kept)."""
    head = set(output_layer_names(run.spec.model, run.data.info, theta_0)) if task == ROTATION else set()
    return {name: (theta_0[name] if name in head else pretrained[name]).detach().clone() for name in theta_0}


# ---- the study ----------------------------------------------------------------------------

def chain_name(task: str, steps: str) -> str:
    return f"{task}_{steps}"


def _body(context: AnalysisContext) -> dict:
    params = context.params
    spec = context.run_dir.spec
    check(params, {"finished_rounds": context.finished_rounds(), "dataset": spec.dataset})
    chain_spec = _chain_spec(context)
    if (done := context.reuse_finished()) is not None:
        return done
    run = context.run
    iterations = {steps: Step.parse(steps).to_iterations(run.data.iterations_per_epoch)
                  for steps in params["pretrain_steps"]}
    rewind_iteration = Step.parse(chain_spec.rewind_step).to_iterations(run.data.iterations_per_epoch)
    if rewind_iteration >= run.total_iterations:
        raise SpecError("rewind_step", f"{chain_spec.rewind_step} ({rewind_iteration} iterations) must be before the "
                                       f"end of training ({run.total_iterations} iterations)")
    context.start()
    chains = []
    for task in params["tasks"]:
        for steps in params["pretrain_steps"]:
            network = chain_name(task, steps)
            pretraining = _pretrain(context, task, steps, iterations[steps])
            rounds = _run_chain(context, chain_spec, network, context.unit_state(_unit(network)))
            chains.append({"network": network, "task": task, "pretrain_steps": steps,
                           "pretrain_iterations": iterations[steps], "pretraining": pretraining, "rounds": rounds})
    return context.finish({
        "chains": chains, "ticket": context.run_dir.records(), "rounds": chain_spec.rounds_total(),
        "tasks": params["tasks"], "pretrain_steps": params["pretrain_steps"],
        "rewind_iteration": rewind_iteration, "run_rewind_iteration": run.rewind_iteration,
        "total_iterations": run.total_iterations, "model": spec.model, "dataset": spec.dataset,
    })


def _unit(network: str) -> str:
    return f"pretrained/{network}"


def chain_directory(context: AnalysisContext, network: str):
    return context.directory / "chains" / network


def _chain_spec(context: AnalysisContext):
    """The run's spec with the study's rounds and rewind step, one replicate, no controls."""
    spec, params = context.run_dir.spec, context.params
    pruning = replace(spec.pruning, rounds=params["rounds"] or spec.pruning.rounds)
    chain_spec = replace(spec, pruning=pruning, rewind_step=params["rewind_step"] or spec.rewind_step,
                         replicates=1, controls=[], control_rounds=[])
    chain_spec.validate()
    return chain_spec


def _pretrain(context: AnalysisContext, task: str, steps: str, iterations: int) -> dict:
    """The pre-training record of (task, steps); trains and stores the chain's starting weights unless stored."""
    network = f"pretraining_{chain_name(task, steps)}"
    unit = _unit(chain_name(task, steps))
    stored = context.unit_record(unit)
    if stored is not None:
        return stored
    context.check_stop()
    run, seed = context.run, context.params["seed"]
    theta_0 = run.theta_init()
    model = pretraining_model(run, task, theta_0, seed)
    mask = masks.dense_mask(model, run.prunable)
    data = task_data(task, run.data, seed)
    round_started(context.callback, network, 0, mask, 0, iterations)
    segment = train_segment(model, mask, data, run.spec, 0, iterations, round_index=0, network=network,
                            callback=context.callback, stop_requested=context.stop_requested)
    if segment.status == "cancelled":
        raise Cancelled()
    record = segment_record(segment, mask, round_index=0, network=network, start_iteration=0,
                            end_iteration=iterations, task=task, pretrain_steps=steps,
                            task_classes=data.info.num_classes)
    context.save_unit(unit, record, state=chain_start(run, task, model.state_dict(), theta_0))
    round_finished(context.callback, record)
    return record


def _run_chain(context: AnalysisContext, chain_spec, network: str, start: dict) -> list[dict]:
    """The IMP chain from `start` (trainer.imp.Run in its own run directory); its round records."""
    run_dir = RunDir(chain_directory(context, network), chain_spec)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    (run_dir.path / "spec.json").write_text(chain_spec.to_json())
    if not run_dir.theta_init_path.exists():
        save_tensor_dict_atomically(start, run_dir.theta_init_path)

    def relabel(event: dict) -> None:
        context.callback({**event, "network": network} if event.get("network") == events.TICKET else event)

    context.check_stop()
    chain = Run(chain_spec, run_dir, context.data_dir, relabel, context.stop_requested)
    if run_ticket_rounds(chain) == "cancelled":
        raise Cancelled()
    return [{**record, "network": network} for record in run_dir.records()]


def _require_square(input_shape) -> None:
    if len(input_shape) != 3 or input_shape[-1] != input_shape[-2]:
        raise SpecError("tasks", f"rotation prediction needs square images; this dataset's inputs are "
                                 f"{tuple(input_shape)}")


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    if not params.get("tasks"):
        raise SpecError("tasks", "choose at least one pre-training task")
    steps = params.get("pretrain_steps") or []
    if not steps:
        raise SpecError("pretrain_steps", "choose at least one pre-training length")
    for index, text in enumerate(steps):
        if Step.parse(text).amount < 1:
            raise SpecError(f"pretrain_steps[{index}]", "must be at least one iteration")
    if ROTATION in params["tasks"] and info.get("dataset") is not None:
        _require_square(datasets.DATASETS[info["dataset"]].info.input_shape)


def summary_lines(result: dict) -> list[str]:
    lines = [(f"pre-trained densely, then IMP rewinding to iteration {result.get('rewind_iteration')} of the training "
              f"from the pre-trained weights (the run rewinds to {result.get('run_rewind_iteration')})"),
             f"{'network':<28} {'round':>5} {'% remaining':>11} {'early-stop acc':>14} {'final acc':>9}"]
    groups = [("ticket (no pre-training)", result.get("ticket") or [])]
    groups += [(chain["network"], chain["rounds"]) for chain in result.get("chains") or []]
    for network, records in groups:
        for record in records:
            lines.append(f"{network:<28} {record['round']:>5} {100 * record['remaining_fraction']:>11.1f} "
                         f"{percent_text((record.get('early_stop') or {}).get('test_accuracy')):>14} "
                         f"{percent_text((record.get('final') or {}).get('test_accuracy')):>9}")
    return lines


