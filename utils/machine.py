"""How busy the machine is now: the cores that other processes keep busy.

The 1-minute load average lags: a job that ended half a minute ago still reads as a busy core (it
decays with a 1-minute time constant), so a run started right after another one took the busy
machine's settings on an idle CPU (passive OpenMP waits, which cost the smoke step about 1.8x alone,
docs/training_notes.md). /proc/stat, read twice a short interval apart while this process sleeps,
says what other processes use now; a machine counts as busy only when both measures say so.
No torch import: main_train.py asks before torch is imported.
"""
from __future__ import annotations

import os
import time


def _cpu_times(path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from the first line of /proc/stat."""
    with open(path) as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user and nice
    return total - idle, total


def busy_cores(interval: float = 0.25, loadavg=None, cpu_times=None, cores: int | None = None) -> float:
    """Cores kept busy by other processes: the smaller of the 1-minute load average and the share of
    all cores busy during ``interval`` seconds (this process sleeping) times the core count. Where
    /proc/stat cannot be read, the load average alone; where neither can, 0."""
    cores = cores or os.cpu_count() or 1
    try:
        load = (loadavg or os.getloadavg)()[0]
    except OSError:
        load = None
    read = cpu_times or _cpu_times
    try:
        b0, t0 = read()
        time.sleep(interval)
        b1, t1 = read()
    except (OSError, ValueError, IndexError):
        return load or 0.0
    now = cores * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return now if load is None else min(load, now)
