"""Image classification (the lottery-ticket papers' task): cross-entropy on the labels, accuracy on the
split, the dataset's tensors batched by trainer.training.loop.DataOrder."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer import datasets
from trainer.tasks.base import ACCURACY, PreparedData, Task

EVAL_BATCH_SIZE = 1000


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: datasets.Inputs | torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) on a whole split (Inputs are normalized batch by batch)."""
    count = len(y)
    if count == 0:
        return float("nan"), float("nan")
    inputs = datasets.as_inputs(x)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=y.device)
    correct = torch.zeros((), device=y.device, dtype=torch.long)
    for start in range(0, count, EVAL_BATCH_SIZE):
        logits = model(inputs.rows(slice(start, start + EVAL_BATCH_SIZE)))
        target = y[start:start + EVAL_BATCH_SIZE]
        loss_sum += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    model.train(was_training)
    return loss_sum.item() / count, correct.item() / count


class Classification(Task):
    name = "classification"
    title = "Image classification"
    metric = ACCURACY
    stackable = True
    traces_units = True

    def prepare(self, spec, device: torch.device, data_dir=None):
        tensors = datasets.load_dataset(spec.dataset, data_dir)
        # The hold-out comes from the data actually loaded (a data directory may hold a smaller set).
        spec.check_dataset_fit(len(tensors.train_y))
        validation_size = spec.resolved_validation_size(len(tensors.train_y))
        return PreparedData(tensors.info, *datasets.run_splits(tensors, validation_size, device),
                            spec.training.batch_size)

    def batch_loss(self, model, inputs, targets):
        return F.cross_entropy(model(inputs), targets)

    def evaluate(self, model, data, split):
        if split == "val":
            return evaluate(model, data.val_inputs, data.val_y)
        return evaluate(model, data.test_inputs, data.test_y)


CLASSIFICATION = Classification()
