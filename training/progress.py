"""What the training loop tells the user about its progress.

* ``TrainingBar``: tqdm's bar, whose total and estimate follow whichever ends the run first: the
  iteration count, or the time limit (``time_limit_min``) at the speed of this run so far.
* ``SlowSteps``: says once, in the log, when steps run much slower than this run's own first steps
  (a machine that other jobs keep busy), or than the figure ``bench/train_step.py --record`` measured
  for this machine and configuration (a machine that was already busy when the run started), with
  the figures and what to try.
* ``StepTimes``: those recorded bench figures, one JSON file per user (``$FIT_STEP_TIMES``, else
  ``$XDG_CACHE_HOME/face-identity-transformer/step_times.json``), keyed by ``step_key``.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable

from tqdm import tqdm


class TrainingBar(tqdm):
    """A tqdm bar over iterations that, under a time limit, counts toward the iteration the limit
    will stop at (this segment's mean speed so far times the time left), when that comes first.

    ``clock`` (seconds, monotonic) starts at construction, as the time limit does."""

    def __init__(self, *args, time_limit_s: float = 0.0, clock: Callable[[], float] = time.monotonic, **kwargs):
        self._clock = clock
        self._limit_s = float(time_limit_s or 0.0)
        self._t0 = clock()
        super().__init__(*args, **kwargs)
        self._iters_total = self.total
        self._n0 = self.n

    def update(self, n: int = 1):
        if self._limit_s > 0 and self._iters_total is not None:
            elapsed = self._clock() - self._t0
            done = self.n + n - self._n0
            if elapsed > 0 and done > 0:
                left = max(0.0, self._limit_s - elapsed)
                at_limit = self.n + n + math.ceil(done / elapsed * left)
                limited = at_limit < self._iters_total
                self.total = at_limit if limited else self._iters_total
                self.set_description_str("train (to the time limit)" if limited else "train", refresh=False)
        return super().update(n)


class SlowSteps:
    """Times the steps of a training segment (``step()`` after each) and logs once when the median
    of the last ``window`` steps is more than ``factor`` times the median of the steps numbered
    ``first`` (1-based, inclusive; the very first steps warm up and are left out)."""

    def __init__(self, log: Callable[[str], None], first: tuple[int, int] = (5, 25), window: int = 20,
                 factor: float = 3.0, clock: Callable[[], float] = time.perf_counter,
                 bench: float | None = None):
        self.log, self.first, self.factor, self.clock = log, first, factor, clock
        self.bench = bench  # seconds per step that bench/train_step.py measured here, if recorded
        self.recent: deque[float] = deque(maxlen=window)
        self.early: list[float] = []
        self.baseline: float | None = None
        self.steps = 0
        self.said = False
        self._last = clock()

    def step(self) -> str | None:
        """Record the step that just ended; returns the message when this call said it."""
        now = self.clock()
        took, self._last = now - self._last, now
        self.steps += 1
        if self.said:
            return None
        lo, hi = self.first
        if self.steps < lo:
            return None
        if self.steps <= hi:
            self.early.append(took)
            if self.steps == hi:
                self.baseline = statistics.median(self.early)
        if self.steps > hi or self.bench:
            self.recent.append(took)
        if len(self.recent) < self.recent.maxlen:
            return None
        median = statistics.median(self.recent)
        if self.bench and median > self.factor * self.bench:
            against = (f"{median / self.bench:.1f}x the figure bench/train_step.py recorded on this machine "
                       f"({self.bench:.2f} s)")
        elif self.baseline is not None and self.steps > hi and median > self.factor * self.baseline:
            against = f"{median / self.baseline:.1f}x this run's steps {lo}-{hi} ({self.baseline:.2f} s)"
        else:
            return None
        self.said = True
        message = slow_message(median, against)
        self.log(message)
        return message


def cpu_model() -> str:
    """The CPU's model name (Linux), else ``?``."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        return "?"


def step_key(cfg, device, threads: int, precision: str, batch: int) -> str:
    """What a step's time depends on: the machine, threads, precision (``bf16`` or ``fp32``), layout,
    the batch of one process and the network sizes."""
    parts = [cpu_model() if device.type == "cpu" else device.type, f"threads {threads}", precision,
             f"channels_last {cfg.channels_last}", f"{cfg.img_size}px batch {batch}",
             f"G {cfg.which_model_netG} ngf {cfg.ngf} norm {cfg.norm}", f"D ndf {cfg.ndf}",
             f"FR width {cfg.fr_width} crop {cfg.fr_crop_height}x{cfg.fr_crop_width}"]
    return " | ".join(str(p) for p in parts)


class StepTimes:
    """Seconds per training step that bench/train_step.py --record measured, by ``step_key``."""

    def __init__(self, path: str | None = None):
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        self.path = path or os.environ.get("FIT_STEP_TIMES") or os.path.join(
            cache, "face-identity-transformer", "step_times.json")

    def read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                table = json.load(f)
        except (OSError, ValueError):
            return {}  # no figure recorded (or an unreadable file): the run's own first steps still count
        if not isinstance(table, dict):
            return {}
        return {k: float(v) for k, v in table.items()
                if isinstance(v, (int, float)) and math.isfinite(v) and v > 0}

    def get(self, key: str) -> float | None:
        return self.read().get(key)

    def record(self, key: str, seconds: float) -> None:
        from utils.fileio import atomic_write_text
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"a step time must be a positive number of seconds, not {seconds}")
        table = self.read()
        table[key] = float(seconds)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write_text(self.path, json.dumps(table, indent=1, sort_keys=True) + "\n")


def slow_message(median: float, against: str) -> str:
    cores = os.cpu_count() or 1
    try:
        load = f"load average {os.getloadavg()[0]:.1f} on {cores} cores"
    except OSError:
        load = f"{cores} cores"
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (f"slow steps: {median:.2f} s per step lately, {against}; {load}, OMP_NUM_THREADS {threads}, "
            f"OMP_WAIT_POLICY {policy}. Other processes "
            "are probably using the cores: stop them (see top), or resume this run (--resume) with "
            "OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS=1: spinning OpenMP threads on shared cores cost most "
            "(docs/training_notes.md)")
