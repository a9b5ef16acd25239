"""Training lengths as values: "500it" and "40ep" parse into one Step type.

Schedules, rewind points and eval intervals all speak this one unit, so a
spec can say "rewind to 2ep" and the trainer turns it into iterations once
the dataset (and so the iterations per epoch) is known.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_STEP_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


class StepFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    amount: int
    unit: str  # "it" (iterations) or "ep" (epochs)

    @classmethod
    def parse(cls, text: str) -> Step:
        if not isinstance(text, str):
            raise StepFormatError(f"expected a string like '500it' or '40ep', got {text!r}")
        match = _STEP_PATTERN.match(text)
        if not match:
            raise StepFormatError(f"expected a number followed by 'it' or 'ep' (e.g. '500it', '40ep'), got {text!r}")
        return cls(int(match.group(1)), match.group(2))

    def to_iterations(self, iterations_per_epoch: int) -> int:
        if self.unit == "it":
            return self.amount
        return self.amount * iterations_per_epoch

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def full_batches(examples: int, batch_size: int) -> int:
    """Iterations per epoch: the last partial batch is dropped, so every step sees batch_size examples."""
    return max(1, examples // batch_size)


def iterations(text: str, iterations_per_epoch: int) -> int:
    return Step.parse(text).to_iterations(iterations_per_epoch)
