"""What the training loop tells the user about its progress.

* ``TrainingBar``: tqdm's bar, whose total and estimate follow whichever ends the run first: the
  iteration count, or the time limit (``time_limit_min``) at the speed of this run so far.
* ``SlowSteps``: says once, in the log, when steps run much slower than this run's own first steps
  (a machine that other jobs keep busy), with the figures and what to try.
"""
from __future__ import annotations

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
                 factor: float = 3.0, clock: Callable[[], float] = time.perf_counter):
        self.log, self.first, self.factor, self.clock = log, first, factor, clock
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
        if lo <= self.steps <= hi:
            self.early.append(took)
            if self.steps == hi:
                self.baseline = statistics.median(self.early)
            return None
        if self.baseline is None:
            return None
        self.recent.append(took)
        if len(self.recent) < self.recent.maxlen:
            return None
        median = statistics.median(self.recent)
        if median <= self.factor * self.baseline:
            return None
        self.said = True
        message = slow_message(median, self.baseline, lo, hi)
        self.log(message)
        return message


def slow_message(median: float, baseline: float, lo: int, hi: int) -> str:
    cores = os.cpu_count() or 1
    try:
        load = f"load average {os.getloadavg()[0]:.1f} on {cores} cores"
    except OSError:
        load = f"{cores} cores"
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (f"slow steps: {median:.2f} s per step lately, {median / baseline:.1f}x this run's steps {lo}-{hi} "
            f"({baseline:.2f} s); {load}, OMP_NUM_THREADS {threads}, OMP_WAIT_POLICY {policy}. Other processes "
            "are probably using the cores: stop them (see top), or resume this run (--resume) with "
            "OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS=1: spinning OpenMP threads on shared cores cost most "
            "(docs/training_notes.md)")
