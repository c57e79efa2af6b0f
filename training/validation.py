"""The held-out validation curve of a training run, and the images of its validation page.

Every ``val_freq`` iterations (and at the last one) the trainer measures ``val_batches`` batches of
the validation split with training/heldout.py's ``evaluate`` -- recovery PSNR, the recovered minus
anonymized PSNR gap, Q's digit accuracy, identity similarity -- on the same images with the same
passwords each time, and appends one line to ``validation.jsonl`` in the run folder::

    {"epoch": int, "iter": int (global), "time": float, "values": {name: float}}

The names are those results/loss_plot.py's ``VALIDATION_PANELS`` draw. The images are chosen across
identities (``spread_over_identities``), as is the fixed batch of the validation page.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch

from datasets.loader import make_loader
from training.heldout import evaluate
from utils.fileio import end_with_newline

VALIDATION_LOG = "validation.jsonl"


def spread_over_identities(labels: np.ndarray | None, n: int) -> list[int]:
    """``n`` indices (fewer if there are fewer images): the first image of each identity in order
    of appearance, then the second of each, and so on, so that ``n`` images hold ``n`` different
    people whenever the split has that many."""
    if labels is None:
        return list(range(n))
    labels = np.asarray(labels)
    n = min(n, len(labels))
    per_identity: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        per_identity.setdefault(label, []).append(i)
    out: list[int] = []
    rank = 0
    while len(out) < n:
        for indices in per_identity.values():
            if rank < len(indices):
                out.append(indices[rank])
                if len(out) == n:
                    break
        rank += 1
    return out


def values_of(result: dict) -> dict[str, float]:
    """The curve's values from an ``evaluate`` result."""
    keys = ("psnr_recovered", "psnr_anonymized", "psnr_wrong", "q_acc", "cos_recovered", "cos_anonymized",
            "cos_wrong")
    out = {k: float(result[k]) for k in keys}
    out["psnr_gap"] = out["psnr_recovered"] - out["psnr_anonymized"]
    return out


def format_values(iteration: int, v: dict[str, float], images: int) -> str:
    return (f"validation at iteration {iteration} ({images} images): recovery PSNR {v['psnr_recovered']:.2f} dB, "
            f"{v['psnr_gap']:+.2f} dB over the anonymized face (wrong password {v['psnr_wrong']:.2f} dB); "
            f"Q digit accuracy {v['q_acc']:.3f}; FR cosine to the original: recovered {v['cos_recovered']:.3f}, "
            f"anonymized {v['cos_anonymized']:.3f}")


class ValidationCurve:
    """Measures the fixed validation images and appends the figures to ``run_dir/validation.jsonl``."""

    def __init__(self, val_set, cfg, device: torch.device, run_dir: str, batch: int):
        self.cfg, self.device = cfg, device
        self.path = os.path.join(run_dir, VALIDATION_LOG)
        end_with_newline(self.path)  # a resumed run appends after a line cut by a crash
        idx = spread_over_identities(getattr(val_set, "labels", None), cfg["val_batches"] * batch)
        self.images = len(idx)
        self.loader = make_loader(torch.utils.data.Subset(val_set, idx), batch, shuffle=False, drop_last=False,
                                  workers=0, device_type=device.type)

    def due(self, iteration: int, last: bool) -> bool:
        freq = self.cfg["val_freq"]
        return self.images > 0 and freq > 0 and (iteration % freq == 0 or last)

    def measure(self, nets, epoch: int, iteration: int, elapsed: float, autocast: Callable) -> dict[str, float]:
        with autocast():
            values = values_of(evaluate(nets, self.loader, self.cfg, self.device))
        record = {"epoch": epoch, "iter": iteration, "time": round(elapsed, 3),
                  "values": {k: round(v, 6) for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return values
