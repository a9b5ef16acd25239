"""Pieces: the independent trainings of an experiment, planned so that any worker can train any of them.

An experiment has two phases. The chains phase trains every replicate's IMP chain (trainer.imp.rounds):
the replicates split into pieces of at most min(stack size, ceil(replicates / max_pieces)), and a piece
trains the chains of its replicates round by round, stacked. The controls phase, once every chain has
ended, trains the controls of the finished rounds (trainer.imp.controls): grouped by start iteration as
always, each group chunked the same way.

The plan depends only on the run (its spec, the device's stack size) and `max_pieces`, never on how
many workers happen to be idle: an experiment spread over many workers trains the same networks in
the same stacks as one worker with the same `max_pieces`, so its results are the same. max_pieces=1
is the single-process order (all replicates in one stack when they fit). A piece is resumable: the
rounds it finds on disk are skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from trainer import events
from trainer.imp.controls import by_start, planned_controls, train_controls
from trainer.imp.rounds import run_ticket_rounds
from trainer.training.stacked import chunks

CHAINS = "chains"
CONTROLS = "controls"


@dataclass(frozen=True)
class Piece:
    """One independent part of an experiment. `networks`: replicate indices (chains), or
    (kind, round, replicate) triples (controls)."""
    phase: str
    index: int
    networks: tuple

    def to_json(self) -> list:
        return [list(network) if isinstance(network, tuple) else network for network in self.networks]

    @classmethod
    def from_json(cls, phase: str, index: int, networks: list) -> Piece:
        return cls(phase, index, tuple(tuple(network) if isinstance(network, list) else network
                                       for network in networks))


def piece_size(count: int, stack_size: int, max_pieces: int) -> int:
    """The most networks of one piece: a stack at most, and few enough to give up to `max_pieces` pieces."""
    return max(1, min(stack_size, math.ceil(count / max(1, max_pieces))))


def plan_chain_pieces(run, max_pieces: int = 1) -> list[Piece]:
    """The replicates' chains in pieces; every replicate is in one, whether its chain is done or not."""
    count = len(run.replicates)
    parts = chunks(count, piece_size(count, run.stack_size(), max_pieces))
    return [Piece(CHAINS, index, tuple(part)) for index, part in enumerate(parts)]


def run_chain_piece(run, piece: Piece) -> str:
    """Train (or resume) the chains of the piece's replicates: "finished", "diverged" (all of its
    chains did) or "cancelled"."""
    announce_piece(run, piece)
    status = run_ticket_rounds(run, [run.replicates[index] for index in piece.networks])
    run.callback(events.make_event(events.PIECE_FINISHED, phase=piece.phase, index=piece.index, status=status))
    return status


def chains_status(run) -> str:
    """Once every chain piece ended: "diverged" when every replicate's chain diverged, else "finished"."""
    diverged = [any(record["status"] == "diverged" for record in replicate.run_dir.records())
                for replicate in run.replicates]
    return "diverged" if all(diverged) else "finished"


def plan_control_pieces(run, max_pieces: int = 1, kinds: list[str] | None = None,
                        rounds: list[int] | None = None) -> list[Piece]:
    """The controls of the finished rounds (the spec's kinds and rounds by default) in pieces, done or not.
    Plan them once every chain has ended: which rounds finished decides what there is to control."""
    kinds = run.spec.controls if kinds is None else kinds
    rounds = run.spec.control_rounds if rounds is None else rounds
    planned = [(kind, round_index, replicate.index)
               for kind, round_index, replicate in planned_controls(run, kinds, rounds)]
    pieces = []
    for group in by_start(run, planned).values():
        for part in chunks(len(group), piece_size(len(group), run.stack_size(), max_pieces)):
            pieces.append(Piece(CONTROLS, len(pieces), tuple(group[index] for index in part)))
    return pieces


def run_control_piece(run, piece: Piece) -> str:
    """Train (or resume) the piece's controls: "finished" or "cancelled"."""
    announce_piece(run, piece)
    status = train_controls(run, [(kind, round_index, run.replicates[replicate])
                                  for kind, round_index, replicate in piece.networks])
    run.callback(events.make_event(events.PIECE_FINISHED, phase=piece.phase, index=piece.index, status=status))
    return status


RUNNERS = {CHAINS: run_chain_piece, CONTROLS: run_control_piece}


def run_piece(run, piece: Piece) -> str:
    return RUNNERS[piece.phase](run, piece)


def announce_piece(run, piece: Piece) -> None:
    run.callback(events.make_event(events.PIECE_STARTED, phase=piece.phase, index=piece.index,
                                   networks=piece.to_json(), run_dir=str(run.run_dir.path)))
