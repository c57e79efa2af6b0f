"""What an evaluation measures on the test data alone, kept for the next evaluation of the same data.

The original and the five baselines do not depend on the checkpoint, yet they are six of the sixteen
views of every face: their dlib and small-recogniser embeddings, their detections (dlib HOG, YuNet),
the baselines' quality figures and the sharpness of all six are the same for every model evaluated
on that data. The cache keeps them in one file per data folder and image size, in parts: one per
kind of measurement, each named by everything its values depend on (the measuring code's version,
the libraries', the recogniser's weights, the detector's settings, the baselines, the device kind).
A face is found by the SHA-256 of its image tensor and landmarks, so changed data never meets old
values. A part whose name differs is simply another part; a damaged or foreign file is ignored and
replaced. The file is written atomically: two evaluations at once lose entries, never consistency.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from utils.fileio import atomic_torch_save

CACHE_FORMAT = "face-identity-transformer/evaluation-cache/1"
MEASURING_VERSION = 1  # raise when the measurement of the original or the baselines changes


def image_keys(images: torch.Tensor, landmarks: torch.Tensor) -> list[str]:
    """One key per face: its image tensor and landmarks, hashed."""
    x = images.detach().float().cpu().contiguous().numpy()
    lm = landmarks.detach().float().cpu().contiguous().numpy()
    return [hashlib.sha256(x[i].tobytes() + lm[i].tobytes()).hexdigest() for i in range(len(x))]


def weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class MeasureCache:
    """``part(name)`` -> {face key: array}; ``save()`` writes the file when something was added."""

    def __init__(self, path: str | None):
        self.path, self.parts, self.added, self.hits, self.misses = path, {}, False, 0, 0
        if path and os.path.isfile(path):
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(data, dict) and data.get("format") == CACHE_FORMAT:
                    for name, p in data["parts"].items():
                        values = p["values"].numpy()
                        self.parts[name] = dict(zip(p["keys"], values))
            except Exception:  # a damaged or foreign file: measured again, and replaced
                self.parts = {}

    def part(self, name: str) -> dict:
        return self.parts.setdefault(f"v{MEASURING_VERSION} {name}", {})

    def lookup(self, name: str, keys: list[str], compute) -> np.ndarray:
        """The values of ``keys`` in part ``name``; ``compute(indices)`` measures the missing ones
        (an array with one row per index, in order) and they are kept."""
        part = self.part(name)
        miss = [i for i, k in enumerate(keys) if k not in part]
        self.hits += len(keys) - len(miss)
        self.misses += len(miss)
        if miss:
            new = np.asarray(compute(miss))
            for j, i in enumerate(miss):
                part[keys[i]] = new[j]
            self.added = True
        return np.stack([part[k] for k in keys])

    def save(self) -> bool:
        """Write the file (atomically) if entries were added; False when it cannot be written."""
        if not (self.path and self.added):
            return False
        parts = {}
        for name, entries in self.parts.items():
            if entries:
                keys = list(entries)
                parts[name] = {"keys": keys, "values": torch.from_numpy(np.stack([entries[k] for k in keys]))}
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            atomic_torch_save({"format": CACHE_FORMAT, "parts": parts}, self.path)
        except OSError:
            return False
        self.added = False
        return True
