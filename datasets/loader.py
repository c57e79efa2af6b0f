"""DataLoader construction: seeded shuffling, pinned memory on CUDA, persistent workers."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _worker_init(worker_id: int) -> None:
    # One thread per worker: decoding and resizing are per-image work, parallel across workers.
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


worker_init = _worker_init  # public name, for loaders built elsewhere (e.g. with a DistributedSampler)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool, workers: int,
                device_type: str, sampler: Sampler | None = None, seed: int = 0) -> DataLoader:
    """A DataLoader whose order depends only on `seed` (and the sampler, when one is given)."""
    if sampler is not None and shuffle:
        raise ValueError("make_loader: pass shuffle=False with a sampler (the sampler decides the order)")
    if batch_size <= 0:
        raise ValueError(f"make_loader: batch_size must be positive, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, drop_last=drop_last,
                      num_workers=max(0, workers), pin_memory=device_type == "cuda",
                      persistent_workers=workers > 0, generator=generator,
                      worker_init_fn=_worker_init if workers > 0 else None)
