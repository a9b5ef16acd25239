"""Ticket files: exported from a run, loaded and trained again by the trainer alone."""
import pytest
import torch

from trainer.cli.main import main
from trainer.imp import train_ticket
from trainer.rundir import RunDir
from trainer.tickets import TicketError, load_ticket, save_ticket, ticket_payload


def test_a_ticket_file_trains_again_to_the_runs_result(finished_run, tmp_path):
    results, run_path = finished_run
    run_dir = RunDir.open(run_path)
    path = tmp_path / "ticket.pt"
    save_ticket(ticket_payload(run_dir, 2), path)
    payload = load_ticket(path)
    assert payload["remaining_fraction"] == results["rounds"][2]["remaining_fraction"]
    assert all(torch.equal(payload["mask"][name], run_dir.mask(2)[name]) for name in payload["mask"])
    record = train_ticket(payload)
    # same spec, seeds, mask and θk on the same device: the same training as round 2 of the run
    assert record["curve"] == results["rounds"][2]["curve"]
    assert record["layers"] == results["rounds"][2]["layers"]


def test_bad_ticket_files_and_requests_give_one_clear_error(finished_run, tmp_path):
    _, run_path = finished_run
    run_dir = RunDir.open(run_path)
    with pytest.raises(TicketError, match="round 7 of replicate 0 has not finished"):
        ticket_payload(run_dir, 7)
    with pytest.raises(TicketError, match="replicate 3 does not exist"):
        ticket_payload(run_dir, 1, replicate=3)
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(TicketError, match="is not a ticket file"):
        load_ticket(tmp_path / "garbage.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(TicketError, match="not a lotteryweb ticket file"):
        load_ticket(tmp_path / "other.pt")
    payload = ticket_payload(run_dir, 1)
    payload["mask"]["fc1.weight"] = payload["mask"]["fc1.weight"][:10]
    torch.save(payload, tmp_path / "inconsistent.pt")
    with pytest.raises(TicketError, match="does not match its weights"):
        load_ticket(tmp_path / "inconsistent.pt")


def test_cli_exports_and_retrains_a_ticket(finished_run, tmp_path, capsys):
    _, run_path = finished_run
    path = tmp_path / "t.pt"
    assert main(["export-ticket", str(run_path), "1", str(path)]) == 0
    assert "rewinds to iteration 0" in capsys.readouterr().out
    assert main(["retrain", str(path), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["retrain", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
