"""Device choice and multi-GPU / multi-node training with torchrun.

One process per GPU. Each process runs the whole step on its share of the batch (12 images per GPU in
the paper, so BatchNorm statistics are per GPU as with the original DataParallel), then gradients are
averaged across processes before every optimizer step. A plain all-reduce is used rather than
DistributedDataParallel because each step calls G five times and FR, D and Q several times before one
backward per phase, which DDP's reducer does not expect.

    torchrun --nproc_per_node 4 main_train.py config/main.yaml                 # one machine
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 main_train.py ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` (this process's GPU) or ``cuda:N``."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device '{pref}' asked for, but CUDA is not available; use --device cpu")
        index = int(pref.split(":")[1]) if ":" in pref else local_rank
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"device '{pref}': only {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if pref != "cpu":
        raise RuntimeError(f"unknown device '{pref}' (use auto, cpu, cuda or cuda:N)")
    return torch.device("cpu")


def fast_bf16(device) -> bool:
    """Whether bf16 autocast is the fast path here: CUDA, or a CPU with AMX or AVX-512 BF16. Without
    them (an AVX2-only CPU) bf16 convolutions are emulated and run many times slower than fp32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return True
    if dev.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def use_bf16(amp: str, device) -> bool:
    """The config's ``amp`` on ``device``: ``bf16`` always, ``none`` never, ``auto`` where it is fast."""
    if amp not in ("none", "bf16", "auto"):
        raise ValueError(f"amp must be none, bf16 or auto, got {amp!r}")
    return amp == "bf16" or (amp == "auto" and fast_bf16(device))


def init(pref: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(pref))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(pref, local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def average_gradients(params: list) -> None:
    """All-reduce (mean) the gradients of ``params`` across processes, in a few flat buffers."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    world = dist.get_world_size()
    for bucket in _buckets(grads, 25 * 2 ** 20):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in bucket:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n


def _buckets(tensors: list, max_bytes: int):
    bucket, size = [], 0
    for t in tensors:
        if bucket and (size + t.numel() * t.element_size() > max_bytes or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def any_process(flag: bool, device) -> bool:
    """Whether ``flag`` holds in any process: one all-reduce of one number (the flag itself when there
    is one process). For decisions every process must take together, such as stopping."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group together: a process tearing down while a peer still talks to it can
    abort in gloo's threads."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
