"""Time one full training step (D phase + G phase) at the paper's network sizes.

    python bench/train_step.py [--batch 12] [--size 128] [--steps 3] [--devices cpu,cuda] [--modes fp32,bf16]

Prints, per device and precision: seconds per step, images per second, the FLOPs of one step (counted
with torch.utils.flop_counter on the first step), and the FLOP/s achieved. Inputs are random tensors:
this measures compute, not data loading. The SphereFace head has the paper's 10574 classes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from models import Networks  # noqa: E402
from models.objective import Objective  # noqa: E402
from utils.config import make_config  # noqa: E402


def make_batch(batch: int, size: int, classes: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    # a plausible face layout in the normalised frame (eyes, nose, mouth corners)
    lm = torch.tensor([[-0.28, -0.12], [0.28, -0.12], [0.0, 0.12], [-0.22, 0.36], [0.22, 0.36]])
    return {"image": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
            "label": torch.randint(0, classes, (batch,), generator=g),
            "landmarks": lm.expand(batch, 5, 2).clone()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device: torch.device, amp: str, batch: int, size: int, steps: int, warmup: int, **overrides) -> dict:
    cfg = make_config(amp=amp, img_size=size, batch_size=batch, **overrides)
    torch.manual_seed(0)
    nets = Networks(cfg).to(device)
    if cfg.channels_last:
        nets = nets.to(memory_format=torch.channels_last)
    obj = Objective(cfg, nets, device)
    data = make_batch(batch, size, cfg.fr_num_classes)
    with FlopCounterMode(display=False) as counter:
        obj.step(data)
    flops = counter.get_total_flops()
    for _ in range(warmup):
        obj.step(data)
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logs = obj.step(data)
        sync(device)
        times.append(time.perf_counter() - t0)
    assert torch.isfinite(logs["G"]).item() and torch.isfinite(logs["D"]).item()
    if device.type == "cuda":  # a step should never wait for the GPU: count host synchronisations
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            obj.step(data)
            torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
        print(f"{device} {amp}: host synchronisations in one step: {len(syncs)}" +
              "".join(f"\n    {m}" for m in syncs[:5]), flush=True)
    sec = min(times)
    return {"sec": sec, "median": sorted(times)[len(times) // 2], "img_s": batch / sec, "gflop": flops / 1e9,
            "gflops": flops / sec / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when absent")
    ap.add_argument("--modes", default="fp32,bf16")
    ap.add_argument("--no-channels-last", action="store_true")
    args = ap.parse_args()
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, "
          f"channels_last {not args.no_channels_last}")
    for dev in devices:
        device = torch.device(dev)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        results = {}
        for mode in args.modes.split(","):
            amp = "bf16" if mode == "bf16" else "none"
            r = bench(device, amp, args.batch, args.size, args.steps, args.warmup,
                      channels_last=not args.no_channels_last)
            results[mode] = r
            print(f"{dev} ({name}) {mode:5s}: {r['sec']:.3f} s/step (median {r['median']:.3f}), "
                  f"{r['img_s']:.2f} img/s, {r['gflop']:.0f} GFLOP/step, {r['gflops']:.0f} GFLOP/s", flush=True)
        if "fp32" in results and "bf16" in results:
            print(f"{dev}: bf16 speed-up over fp32: {results['bf16']['img_s'] / results['fp32']['img_s']:.2f}x")


if __name__ == "__main__":
    main()
