"""One line naming what a benchmark ran on: the torch build, its threads, the CPU and how busy it was."""
from __future__ import annotations

import os

import torch

from trainer.training.stack_size import device_name


def describe(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} "
            f"({device_name(device)}), load average {load():.1f} on {os.cpu_count()} cores")


def load() -> float:
    return os.getloadavg()[0]
