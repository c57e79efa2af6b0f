"""How much a training step of the smoke run slows down beside other busy processes, by thread count
and OpenMP wait policy.

    python bench/oversubscription.py [--busy 0 1 2] [--threads 1 2] [--policies passive active]
                                     [--amp none] [--steps 3] [--warmup 1] [--busy-threads 2]

For every combination it starts ``busy`` processes that keep the cores busy as another training job
would (torch matrix products on ``--busy-threads`` threads each), then times the smoke config's step
(config/smoke.yaml's networks, batch 8 at 64x64, a random batch: no data loading) in a fresh
process started with OMP_NUM_THREADS=threads and OMP_WAIT_POLICY=policy, both set before torch is
imported. Prints one line per combination: the median step time and its ratio to the same
threads and policy alone. A child that takes longer than ``--child-timeout`` seconds is reported
as such. It runs for minutes and disturbs whatever else runs on the machine: a manual measurement,
not a test.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from utils.config import check_number  # noqa: E402  (no torch: the parent process never imports it)

BUSY_CODE = """
import torch, sys
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(768, 768)
while True:
    a = torch.tanh(a @ a)
"""


def child(args) -> None:
    """One measurement, in this process (its environment was set by the parent)."""
    sys.path.insert(0, HERE)
    import torch
    from train_step import make_batch

    from models import Networks
    from models.memory_format import format_networks
    from models.objective import Objective
    from utils.config import make_config

    cfg = make_config(os.path.join(ROOT, "config", "smoke.yaml"), amp=args.amp)
    classes = 80
    torch.manual_seed(0)
    nets = format_networks(Networks(cfg, classes), cfg.channels_last)
    obj = Objective(cfg, nets, torch.device("cpu"))
    data = make_batch(cfg.batch_size, cfg.img_size, classes)
    for _ in range(args.warmup):
        obj.step(data)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        obj.step(data)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times, "threads": torch.get_num_threads()}), flush=True)


def measure(args, threads: int, policy: str, busy: int) -> dict:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_CODE, str(args.busy_threads)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let them start spinning
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY=policy.upper())
        if policy == "unset":  # the OpenMP runtime's own default (GNU OpenMP: spin a while, then sleep)
            del env["OMP_WAIT_POLICY"]
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--amp", args.amp, "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.child_timeout)
        except subprocess.TimeoutExpired:
            return {"timeout": True}
        if out.returncode:
            return {"error": out.stderr.strip().splitlines()[-1:]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for p in procs:
            p.kill()
            p.wait()


def check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option in its range (ValueError naming the option), before any process starts."""
    for value in args.busy:
        check_number(value, "--busy", low=0, integer=True, error=ValueError)
    for value in args.threads:
        check_number(value, "--threads", low=1, integer=True, error=ValueError)
    check_number(args.busy_threads, "--busy-threads", low=1, integer=True, error=ValueError)
    check_number(args.steps, "--steps", low=1, integer=True, error=ValueError)  # the median of no steps
    check_number(args.warmup, "--warmup", low=0, integer=True, error=ValueError)
    check_number(args.child_timeout, "--child-timeout", low=0, low_open=True, error=ValueError)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside the step")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="OMP_NUM_THREADS of the step")
    ap.add_argument("--policies", nargs="+", default=["unset", "passive", "active"],
                    choices=["unset", "passive", "active"],
                    help="OMP_WAIT_POLICY values (unset: the runtime's default)")
    ap.add_argument("--busy-threads", type=int, default=2, help="threads of each busy process")
    ap.add_argument("--amp", default="none", choices=["none", "bf16"], help="the step's precision")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--child-timeout", type=float, default=180.0, help="seconds one measurement may take")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        check_numbers(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.child:
        child(args)
        return 0
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before; smoke step, amp {args.amp}, "
          f"median of {args.steps} steps after {args.warmup}; busy processes of {args.busy_threads} threads each",
          flush=True)
    alone: dict[tuple[int, str], float] = {}
    for busy, threads, policy in itertools.product(sorted(args.busy), args.threads, args.policies):
        r = measure(args, threads, policy, busy)
        if "times" not in r:
            print(f"busy {busy}  threads {threads}  {policy:7s}  {r}", flush=True)
            continue
        med = statistics.median(r["times"])
        if busy == 0:
            alone[(threads, policy)] = med
        ratio = f"  {med / alone[(threads, policy)]:.1f}x alone" if busy and (threads, policy) in alone else ""
        print(f"busy {busy}  threads {threads}  {policy:7s}  {med:6.2f} s/step (steps: "
              f"{', '.join(f'{t:.2f}' for t in r['times'])}){ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
