"""Multi-process training on the CPU (gloo): gradients are averaged, so every process keeps the same
weights after a step, as torchrun training on several GPUs or nodes requires."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models import Networks
from models.objective import Objective
from training import distributed
from utils.config import make_config

CFG = dict(img_size=64, ngf=4, ndf=4, fr_width=0.125, fr_crop_height=32, fr_crop_width=32, fr_num_classes=5,
           batch_size=4, channels_last=False, amp="none", pool_size=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, sync: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init("cpu")
    assert (info.rank, info.world_size) == (rank, world)
    cfg = make_config(**CFG)
    torch.manual_seed(0)  # same initial weights everywhere
    nets = Networks(cfg)
    obj = Objective(cfg, nets, "cpu", seed=rank, grad_sync=distributed.average_gradients if sync else None)
    g = torch.Generator().manual_seed(100 + rank)  # each process its own images
    lm = torch.tensor([[-0.3, -0.15], [0.3, -0.15], [0.0, 0.1], [-0.22, 0.35], [0.22, 0.35]])
    batch = {"image": torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, "label": torch.randint(0, 5, (2,), generator=g),
             "landmarks": lm.expand(2, 5, 2).clone()}
    obj.step(batch)
    flat = torch.cat([p.detach().flatten() for p in nets.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save({"same": torch.equal(gathered[0], gathered[1])}, out)
    distributed.cleanup()


def run(tmp_path, sync: bool) -> bool:
    out = str(tmp_path / f"result_{sync}.pt")
    try:
        mp.spawn(_worker, args=(2, _free_port(), out, sync), nprocs=2, join=True)
    except mp.ProcessExitedException:
        # gloo's loopback rendezvous now and then aborts a process on a busy machine (inside gloo's
        # threads); a second, fresh group shows whether the code is at fault
        mp.spawn(_worker, args=(2, _free_port(), out, sync), nprocs=2, join=True)
    return torch.load(out, weights_only=True)["same"]


@pytest.mark.slow  # two torchrun-style processes train a few steps over gloo
def test_two_processes_keep_identical_weights(tmp_path):
    assert run(tmp_path, sync=True)
    assert not run(tmp_path, sync=False)  # without the all-reduce they drift apart


def test_average_gradients_is_a_no_op_without_a_process_group():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_gradients([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))
