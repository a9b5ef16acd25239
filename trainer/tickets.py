"""Ticket files: one round's mask and the weights its survivors rewind to (θk), portable.

A ticket file is a torch.save'd dict that `trainer` loads without the run directory it came from:

    {"format": "lotteryweb-ticket", "version": 1, "spec": {...}, "round": r, "replicate": i,
     "rewind_iteration": k, "remaining_fraction": f, "test_accuracy": early-stop accuracy in the run,
     "mask": {name: bool tensor}, "theta_rewind": {name: tensor}}

`trainer.imp.train_ticket` trains it again (iterations k..T of the spec's schedule) and returns the round record,
e.g. `python -m trainer retrain ticket.pt`. The web app exports these files from a result page.
"""
from __future__ import annotations

from pathlib import Path

import torch

from trainer import replicate_stats
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError

TICKET_FORMAT = "lotteryweb-ticket"
TICKET_VERSION = 1


class TicketError(ValueError):
    pass


def ticket_payload(run_dir: RunDir, round_index: int, replicate: int = 0) -> dict:
    """The ticket of a finished round of a run (its replicate `replicate`)."""
    if not 0 <= replicate < run_dir.spec.replicates:
        raise TicketError(f"replicate {replicate} does not exist (the run has {run_dir.spec.replicates})")
    part = run_dir.replicate(replicate)
    record = part.record(round_index)
    if record is None or record.get("status") != "finished":
        raise TicketError(f"round {round_index} of replicate {replicate} has not finished in {run_dir.path}")
    if not part.theta_rewind_path.is_file():
        raise TicketError(f"{part.theta_rewind_path} is missing")
    return {"format": TICKET_FORMAT, "version": TICKET_VERSION, "spec": run_dir.spec.to_dict(),
            "round": round_index, "replicate": replicate,
            "rewind_iteration": record.get("start_iteration", 0) if round_index else 0,
            "remaining_fraction": record["remaining_fraction"],
            "test_accuracy": replicate_stats.reported(record).get("test_accuracy"),
            "mask": {name: tensor.bool() for name, tensor in part.mask(round_index).items()},
            "theta_rewind": part.load_state(part.theta_rewind_path)}


def save_ticket(payload: dict, path: Path) -> None:
    torch.save(payload, path)


def load_ticket(path: Path) -> dict:
    """A ticket file, checked; TicketError says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise TicketError(f"{path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or holding code objects
        raise TicketError(f"{path} is not a ticket file ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != TICKET_FORMAT:
        raise TicketError(f"{path} is not a lotteryweb ticket file")
    if payload.get("version") != TICKET_VERSION:
        raise TicketError(f"{path} is a ticket file of version {payload.get('version')}; "
                          f"this trainer reads {TICKET_VERSION}")
    try:
        ExperimentSpec.from_dict(payload["spec"])
    except (SpecError, KeyError) as error:
        raise TicketError(f"{path} holds an invalid spec: {error}") from None
    mask, theta = payload.get("mask"), payload.get("theta_rewind")
    if not isinstance(mask, dict) or not isinstance(theta, dict) or any(name not in theta for name in mask):
        raise TicketError(f"{path} has no consistent mask and weights")
    for name, tensor in mask.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != theta[name].shape:
            raise TicketError(f"{path}: the mask of {name} does not match its weights")
    return payload
