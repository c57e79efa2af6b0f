"""Conversions between network tensors (RGB, [-1, 1], NCHW) and 8-bit images (RGB, HWC uint8).

The project normalises every channel with mean 0.5 and std 0.5, as the paper does; this module is the
one place that knows it.
"""
from __future__ import annotations

import numpy as np
import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) tensor in [-1, 1] -> (B, H, W, 3) or (H, W, 3) uint8, rounded."""
    x = x.detach().float().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8).cpu()
    return x.movedim(-3, -1).contiguous().numpy()


def from_uint8(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 -> float tensor (3, H, W) or (B, 3, H, W) in [-1, 1]."""
    t = torch.as_tensor(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 image data, got {t.dtype}")
    return t.movedim(-1, -3).float().div(127.5).sub(1.0)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> [-1, 1]."""
    return x01 * 2.0 - 1.0


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] floats."""
    return (x + 1.0) * 0.5
