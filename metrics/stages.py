"""Wall time per stage of an evaluation: what evaluate.py prints at the end, and what
bench/evaluate.py compares between the two measuring paths."""
from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import contextmanager


class StageTimer:
    """``with timer("stage"): ...`` adds the block's wall time to that stage (stages keep the order in
    which they first ran); a stage may run many times."""

    def __init__(self):
        self.seconds: OrderedDict[str, float] = OrderedDict()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def rounded(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def table(self, images: int) -> str:
        """One line per stage: seconds, seconds per image and share of the total."""
        total = self.total or 1.0
        width = max([len(k) for k in self.seconds] + [5])
        lines = [f"{'stage':<{width}}  {'s':>8}  {'s/img':>7}  share"]
        for k, v in self.seconds.items():
            lines.append(f"{k:<{width}}  {v:8.2f}  {v / max(images, 1):7.4f}  {100 * v / total:4.1f}%")
        lines.append(f"{'total':<{width}}  {self.total:8.2f}  {self.total / max(images, 1):7.4f}")
        return "\n".join(lines)
