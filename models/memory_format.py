"""The memory format of a run (config key ``channels_last``), applied in one place for networks and data.

channels_last makes convolutions faster (oneDNN on CPUs, NHWC kernels on GPUs) with the same results.
The trainer and the benchmark put the networks into it once, with :func:`format_networks`; the
objective passes every image batch a network sees through :func:`format_images`.
"""
from __future__ import annotations

import torch
from torch import nn


def format_networks(nets: nn.Module, channels_last: bool) -> nn.Module:
    """``nets`` in the configured memory format (in place, as ``Module.to``; returned for chaining)."""
    return nets.to(memory_format=torch.channels_last) if channels_last else nets


def format_images(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch of images in the configured memory format (the same tensor when already there)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
