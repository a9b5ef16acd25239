"""How many networks train together in one stacked step: measured on this machine, then cached.

Whether stacking pays depends on the torch build, the machine and the model: on the same 2 CPU
cores LeNet-300-100 ran 2.07x per network at K=4 with one torch build and 0.98x with another, and
Conv-2 0.72x. So the stack size is timed, not ruled: a few real training steps (the loops of
trainer.training.loop and trainer.training.stacked_loop on random data of the run's shapes) at K = 1
and at K = 2, 4, 8, ... while the throughput per network still grows, and the K with the most
network-steps per second wins if it beats one at a time by MIN_GAIN; otherwise 1.

The decision is cached in a JSON file under a key of device name, torch version, thread count,
model, input shape, batch size and optimizer, so a machine measures once (the file is
LOTTERYWEB_STACK_SIZE_CACHE, default ~/.cache/lotteryweb/stack_sizes.json; the CLI and the workers
share it). A run records the stack size it used (trainer.imp.run), so resuming it never re-chooses.
A cached decision stands until the file is deleted: re-timing it whenever the load changed would give
one spec different stacks, and stacked and solo training agree only to rounding. The load at the time
of the measurement is stored beside it, so a decision timed on a busy machine can be seen and deleted.

LOTTERYWEB_STACK_SIZE=K pins the default (no measurement; a spec's stack_size still wins): for a lab
that wants one stack size on every worker, and for the test suite, whose results must not hang on how
busy the machine was when it measured.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer import datasets, events, models
from trainer.pruning.masks import dense_mask
from trainer.spec import ExperimentSpec
from trainer.training.loop import PreparedData
from trainer.training.stacked import estimate_training_bytes
from trainer.training.stacked_loop import train_segments_stacked

CPU_CANDIDATES = (1, 2, 4, 8, 16)
CUDA_STACK_CAP = 64
CUDA_MEMORY_SAFETY = 0.5  # use at most this share of the free GPU memory
MIN_GAIN = 1.10  # a stack must beat one network at a time by this factor per network, or K=1
CLEAR_DROP = 0.9  # larger K are tried until the throughput falls below this share of the best (noise tolerance)
WARMUP_STEPS = 2  # excluded from the timing: first-call allocations and kernel selection
MAX_TIMED_STEPS = 8  # per block; fewer (down to WARMUP_STEPS) for models whose step is slow
BLOCK_SECONDS = 0.02  # the time one solo block aims at
BLOCKS = 3  # solo and stacked blocks alternate; each side keeps its fastest (load only slows)
MEASURE_BUDGET_SECONDS = 2.0  # no new block after this; larger models measure fewer K
CACHE_ENV = "LOTTERYWEB_STACK_SIZE_CACHE"
PIN_ENV = "LOTTERYWEB_STACK_SIZE"
MAX_PINNED = 1024

StepTimer = Callable[[int], float]  # seconds of one training step of k stacked networks


@dataclass
class Decision:
    stack_size: int
    seconds_per_step: dict[int, float] = field(default_factory=dict)  # fastest block of each measured K
    measure_seconds: float = 0.0
    cached: bool = False

    def speedups(self) -> dict[int, float]:
        """Per-network throughput of each measured K relative to one at a time."""
        solo = self.seconds_per_step.get(1)
        return {k: k * solo / seconds for k, seconds in self.seconds_per_step.items()} if solo else {}


def decide(candidates: Sequence[int], seconds_per_step: StepTimer, *, budget_seconds: float = MEASURE_BUDGET_SECONDS,
           clock: Callable[[], float] = time.perf_counter) -> Decision:
    """Time K=1 and the candidates in increasing order; stop at the first K whose per-network
    throughput falls clearly below the best so far (a larger one would not do better) or when
    the budget is spent."""
    began = clock()
    fastest: dict[int, float] = {}

    def measure(k: int) -> None:
        seconds = seconds_per_step(k)
        fastest[k] = min(seconds, fastest.get(k, seconds))

    best, best_rate = 1, 0.0
    for k in sorted(set(candidates) - {1}):
        for block in range(BLOCKS):
            if block and clock() - began > budget_seconds:
                break
            measure(1)  # alongside each stacked block: a load change hits both sides
            measure(k)
        rate = k / fastest[k]
        if rate > best_rate:
            best, best_rate = k, rate
        if rate < CLEAR_DROP * best_rate or clock() - began > budget_seconds:
            break
    if 1 not in fastest:
        measure(1)
    chosen = best if best_rate >= MIN_GAIN / fastest[1] else 1
    return Decision(chosen, dict(sorted(fastest.items())), clock() - began)


class TrainingStepTimer:
    """Seconds per step of the real training loops for k networks of `model_name` on random data:
    train_segment for k=1 (what a chunk of one runs) and train_segments_stacked above. The first
    call times WARMUP_STEPS steps; later calls as many as make a solo block last BLOCK_SECONDS."""

    def __init__(self, model_name: str, input_shape, batch_size: int, device, num_classes: int, optimizer: str):
        self.model_name, self.device = model_name, torch.device(device)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.batch_size, self.optimizer = batch_size, optimizer
        self.timed_steps = WARMUP_STEPS
        steps = WARMUP_STEPS + MAX_TIMED_STEPS
        generator = torch.Generator().manual_seed(0)
        info = datasets.DatasetInfo("stack_size", "stack size measurement", self.input_shape, num_classes,
                                    batch_size * steps, 1, False, "random tensors")
        x = torch.randn(batch_size * steps + 1, *self.input_shape, generator=generator).to(self.device)
        y = torch.randint(0, num_classes, (batch_size * steps + 1,), generator=generator).to(self.device)
        held_x, held_y = x[-1:], y[-1:]  # the loops evaluate at the start and the end: keep that cheap
        self.data = PreparedData(info, x[:-1], y[:-1], held_x, held_y, held_x, held_y, batch_size)
        self.networks: dict[int, tuple[list, list]] = {}

    def _spec(self, steps: int) -> ExperimentSpec:
        # metrics every WARMUP_STEPS iterations: the first metrics event ends the warm-up
        return ExperimentSpec.from_dict({
            "model": self.model_name, "dataset": "synthetic",
            "training": {"optimizer": self.optimizer, "lr": 1e-3, "batch_size": self.batch_size,
                         "training_steps": f"{steps}it", "eval_interval": f"{steps}it",
                         "metrics_interval": WARMUP_STEPS}})

    def __call__(self, k: int) -> float:
        if k not in self.networks:
            built = [models.build_model(self.model_name, self.input_shape, self.num_classes, seed).to(self.device)
                     for seed in range(k)]
            names = models.prunable_parameter_names(self.model_name, self.input_shape, self.num_classes)
            self.networks[k] = built, [dense_mask(model, names) for model in built]
        built, masks = self.networks[k]
        metrics_times: list[float] = []

        def clock(event: dict) -> None:
            if event["type"] == events.METRICS and event["network"] == "n0":
                metrics_times.append(time.perf_counter())

        timed = self.timed_steps
        train_segments_stacked(built, masks, self.data, self._spec(WARMUP_STEPS + timed), 0, WARMUP_STEPS + timed,
                               round_index=0, networks=[f"n{index}" for index in range(k)],
                               data_seeds=list(range(k)), callback=clock)
        seconds = (metrics_times[-1] - metrics_times[0]) / timed
        if k == 1 and len(self.networks) == 1:  # the first solo block sets the block length
            even = 2 * round(BLOCK_SECONDS / seconds / 2) if seconds > 0 else MAX_TIMED_STEPS
            self.timed_steps = min(MAX_TIMED_STEPS, max(WARMUP_STEPS, even))
        return seconds


# ---- candidates, cache, the entry point ---------------------------------------------------------
def candidates_for(model_name: str, input_shape, batch_size: int, device: torch.device, num_classes: int,
                   optimizer: str) -> list[int]:
    """K = 1, 2, 4, ...: up to 16 on a CPU; on CUDA up to what fits in CUDA_MEMORY_SAFETY of the
    free memory (estimated from the model's parameters and one batch's activations), at most 64."""
    if device.type != "cuda":
        return list(CPU_CANDIDATES)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    per_network = estimate_training_bytes(model_name, input_shape, batch_size, num_classes, optimizer)
    cap = max(1, min(CUDA_STACK_CAP, int(free_bytes * CUDA_MEMORY_SAFETY // per_network)))
    return [2 ** power for power in range(cap.bit_length()) if 2 ** power <= cap]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cache_key(model_name: str, input_shape, batch_size: int, device: torch.device, optimizer: str) -> str:
    shape = "x".join(str(size) for size in input_shape)
    return (f"{device_name(device)} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
            f"{model_name} | {shape} | batch {batch_size} | {optimizer}")


def cache_path() -> Path:
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "lotteryweb" / "stack_sizes.json"


def read_cache(path: Path) -> dict:
    """The cached decisions; an unreadable or malformed file counts as empty (it is rewritten)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def write_cache(path: Path, entries: dict) -> None:
    """Write the whole file atomically (a rename): concurrent readers see the old or the new file.
    A cache that cannot be written only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".stack_sizes.", delete=False) as handle:
            json.dump(entries, handle, indent=1)
        os.replace(handle.name, path)
    except OSError:
        return


def load_per_core() -> float:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _cached_decision(entry) -> Decision | None:
    """The cached decision, unless it is malformed."""
    if not isinstance(entry, dict):
        return None
    size, timings = entry.get("stack_size"), entry.get("seconds_per_step", {})
    if not isinstance(size, int) or size < 1 or not isinstance(timings, dict):
        return None
    try:
        seconds = {int(k): float(v) for k, v in timings.items()}
    except (TypeError, ValueError):
        seconds = {}
    return Decision(size, seconds, float(entry.get("measure_seconds", 0.0) or 0.0), cached=True)


def stack_size_decision(model_name: str, input_shape, batch_size: int, device, num_classes: int = 10,
                        optimizer: str = "sgd", *, timer: StepTimer | None = None,
                        cache_file: Path | None = None, load: Callable[[], float] = load_per_core) -> Decision:
    """The cached decision for this machine and setup, else a fresh measurement (then cached)."""
    device = torch.device(device)
    candidates = candidates_for(model_name, input_shape, batch_size, device, num_classes, optimizer)
    key = cache_key(model_name, input_shape, batch_size, device, optimizer)
    path = cache_file or cache_path()
    entries = read_cache(path)
    cached = _cached_decision(entries.get(key))
    if cached is not None:
        cached.stack_size = min(cached.stack_size, max(candidates))  # free GPU memory may have shrunk
        return cached
    if timer is None:
        timer = TrainingStepTimer(model_name, input_shape, batch_size, device, num_classes, optimizer)
    load_before = load()
    decision = decide(candidates, timer)
    entries = read_cache(path)  # another process may have added entries meanwhile
    entries[key] = {"stack_size": decision.stack_size,
                    "seconds_per_step": {str(k): v for k, v in decision.seconds_per_step.items()},
                    "measure_seconds": round(decision.measure_seconds, 3),
                    "load_per_core": round(load_before, 2),
                    "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    write_cache(path, entries)
    return decision


def choose_stack_size(model_name: str, input_shape, batch_size: int, device, num_classes: int = 10,
                      optimizer: str = "sgd", **measurement) -> int:
    """How many networks of this model to train in one step on `device` (see the module's doc);
    `measurement` passes timer, cache_file and load on to stack_size_decision."""
    return stack_size_decision(model_name, input_shape, batch_size, device, num_classes, optimizer,
                               **measurement).stack_size


def pinned_stack_size() -> int | None:
    """LOTTERYWEB_STACK_SIZE as a stack size, or None when unset; a bad value is an error that says so."""
    text = os.environ.get(PIN_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_PINNED:
        raise ValueError(f"{PIN_ENV}={text!r}: give a whole number of networks from 1 to {MAX_PINNED}, or unset it "
                         "to measure")
    return int(text)


def stack_size_for(spec: ExperimentSpec, data: PreparedData) -> int:
    """The spec's stack size if it sets one, else LOTTERYWEB_STACK_SIZE, else the one chosen for its model and
    data on this machine."""
    return spec.stack_size or pinned_stack_size() or choose_stack_size(
        spec.model, data.info.input_shape, data.batch_size, data.device, data.info.num_classes, spec.training.optimizer)
