"""Time one full training step (D phase + G phase) at the paper's network sizes.

    python bench/train_step.py [--batch 12] [--size 128] [--steps 3] [--devices cpu,cuda] [--modes fp32,bf16]
                               [--config config/demo.yaml] [--compile] [--record]

Prints, per device and precision: seconds per step, images per second, the FLOPs of one step (counted
with torch.utils.flop_counter on the first step), and the FLOP/s achieved. First it prints the CPU's
bf16-relevant extensions and the fp32 and bf16 GFLOP/s of the step's dominant layer alone: their ratio
is the most bf16 can gain on the whole step on that machine. Inputs are random tensors:
this measures compute, not data loading. The SphereFace head has the paper's 10574 classes.

With --config, the batch and size default to the config's. --record keeps each CPU figure (median s
per step) where the trainer looks for it (training/progress.py's StepTimes): a run of the same
config on this machine then says so in its log when its steps are much slower than this figure.
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
from models.memory_format import format_networks  # noqa: E402
from models.objective import Objective  # noqa: E402
from training.progress import StepTimes, cpu_model, step_key  # noqa: E402
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


def bench(device: torch.device, amp: str, batch: int, size: int, steps: int, warmup: int, config: str | None = None,
          compile_nets: bool = False, **overrides) -> dict:
    cfg = make_config(config, amp=amp, img_size=size, batch_size=batch, **overrides)
    classes = cfg.fr_num_classes or 256  # a config that sizes FR from its data: any plausible count
    torch.manual_seed(0)
    nets = format_networks(Networks(cfg, classes).to(device), cfg.channels_last)
    obj = Objective(cfg, nets, device)
    data = make_batch(batch, size, classes)
    with FlopCounterMode(display=False) as counter:
        obj.step(data)
    flops = counter.get_total_flops()
    if compile_nets:  # each network's forward compiled (the objective calls them by attribute)
        for name in ("G", "D", "Q", "FR"):
            setattr(nets, name, torch.compile(getattr(nets, name)))
        t0 = time.perf_counter()
        obj.step(data)
        sync(device)
        print(f"{device} {amp}: torch.compile's first step (compilation included): "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    for _ in range(warmup):
        obj.step(data)
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logs = obj.step(data).losses
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


def cpu_description() -> str:
    """The CPU's model and the instruction-set extensions that decide bf16 speed (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown CPU"
    model = cpu_model()
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    ext = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; {' '.join(ext) or 'no AVX-512'}; AMX {'present' if 'amx_bf16' in flags else 'absent'}"


def conv_peak(device: torch.device, reps: int = 10) -> dict:
    """GFLOP/s of the step's dominant layer alone (a 256 -> 256 3x3 convolution of G's residual blocks,
    batch 12 at 32x32, channels-last, forward), in fp32 and in bf16. Their ratio bounds what bf16 can
    gain on the whole step on this machine."""
    x = torch.randn(12, 256, 34, 34, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * 12 * 32 * 32 * 256 * 256 * 9
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        xx, ww = x.to(dtype), w.to(dtype)
        with torch.no_grad():
            for _ in range(2):
                torch.nn.functional.conv2d(xx, ww)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.nn.functional.conv2d(xx, ww)
            sync(device)
        out[dtype] = flops * reps / (time.perf_counter() - t0) / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, help="default 12, or the config's batch_size")
    ap.add_argument("--size", type=int, help="default 128, or the config's img_size")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when absent")
    ap.add_argument("--modes", default="fp32,bf16")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--config", help="take the network sizes (and the other settings) from this YAML; "
                                     "--batch and --size still apply")
    ap.add_argument("--compile", action="store_true", help="also time the step with torch.compile'd networks")
    ap.add_argument("--record", action="store_true", help="keep the CPU figures for the trainer's slow-step note")
    args = ap.parse_args()
    base = make_config(args.config) if args.config else None
    args.batch = args.batch or (base.batch_size if base else 12)
    args.size = args.size or (base.img_size if base else 128)
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, "
          f"channels_last {not args.no_channels_last}")
    for dev in devices:
        device = torch.device(dev)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        if device.type == "cpu":
            print(f"cpu: {cpu_description()}")
        peak = conv_peak(device)
        print(f"{dev}: dominant convolution alone: fp32 {peak[torch.float32]:.0f} GFLOP/s, bf16 "
              f"{peak[torch.bfloat16]:.0f} GFLOP/s ({peak[torch.bfloat16] / peak[torch.float32]:.2f}x)", flush=True)
        results = {}
        for mode in args.modes.split(","):
            amp = "bf16" if mode == "bf16" else "none"
            for compiled in (False, True) if args.compile else (False,):
                r = bench(device, amp, args.batch, args.size, args.steps, args.warmup, config=args.config,
                          compile_nets=compiled, channels_last=not args.no_channels_last)
                label = mode + (" compiled" if compiled else "")
                results[label] = r
                print(f"{dev} ({name}) {label:5s}: {r['sec']:.3f} s/step (median {r['median']:.3f}), "
                      f"{r['img_s']:.2f} img/s, {r['gflop']:.0f} GFLOP/step, {r['gflops']:.0f} GFLOP/s", flush=True)
                if args.record and device.type == "cpu" and not compiled:
                    cfg = make_config(args.config, amp=amp, img_size=args.size, batch_size=args.batch,
                                      channels_last=not args.no_channels_last)
                    times = StepTimes()
                    times.record(step_key(cfg, device, torch.get_num_threads(), mode, args.batch), r["median"])
                    print(f"recorded {r['median']:.3f} s/step for the trainer in {times.path}")
            if args.compile:
                print(f"{dev} {mode}: torch.compile speed-up: "
                      f"{results[mode + ' compiled']['img_s'] / results[mode]['img_s']:.2f}x")
        if "fp32" in results and "bf16" in results:
            print(f"{dev}: bf16 speed-up over fp32: {results['bf16']['img_s'] / results['fp32']['img_s']:.2f}x")


if __name__ == "__main__":
    main()
