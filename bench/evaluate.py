"""Speed of evaluate.py's measuring, per stage: the code before it was made fast (metrics/reference.py)
against the fast path (metrics/evaluation.py), in one run, on the same images and seed.

    python bench/evaluate.py --checkpoint CKPT [--dataset synthetic] [--data_root DIR] [--max-images 32]
                             [--paths reference,fast,fast-warm] [--repeat 1] [--threads N] [--no-dlib]
                             [--batch-size 16]

Paths: ``reference``; ``fast``, with an empty cache (what a first evaluation of the data costs; it
fills the cache); ``fast-warm``, the fast path again with the cache that ``fast`` filled (what every
later evaluation of the same data costs: the originals' and baselines' measurements are reused).

The password attack is left out (it has its own budget). Each path is a full evaluation (report
included) into a temporary folder; the paths alternate when --repeat > 1, so that a change of the
machine's load falls on both. Prints the CPU's extensions, the threads and the load average, then
seconds per image per stage for each path and their ratio, and checks that both paths gave the same
figures (the ones the reference computes; the fast path adds YuNet and sharpness).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PATHS = ("reference", "fast", "fast-warm")
# stages of the fast path that the reference does not have: the figures it adds
NEW_STAGES = ("detection yunet", "sharpness")
GROUPS = {"dlib recogniser (chips + descriptor)": (("recogniser dlib",), ("dlib chips", "dlib descriptor"))}


def cpu_line() -> str:
    flags, model = set(), platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    ext = [e for e in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if e in flags]
    return f"{model}, {os.cpu_count()} cores, extensions: {' '.join(ext) or 'none of avx2/avx512/amx'}"


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"
    except OSError:
        return "load average unknown"


def evaluate_once(args, path: str, out: str, cache: str) -> dict:
    from metrics.evaluation import Options, run

    t0 = time.perf_counter()
    folder = run(Options(checkpoint=args.checkpoint, dataset=args.dataset, out=out, data_root=args.data_root,
                         max_images=args.max_images, batch_size=args.batch_size, device="cpu", seed=args.seed,
                         recogniser=args.recogniser, no_dlib=args.no_dlib, attack_images=0, progress=False,
                         reference=path == "reference", threads=args.threads, cache=cache), log=lambda *_: None)
    wall = time.perf_counter() - t0
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
        data = json.load(f)
    return {"wall": wall, "stages": data["protocol"]["stage_seconds"], "images": data["protocol"]["images"],
            "threads": data["protocol"]["threads"], "cache": data["protocol"].get("cache"),
            "figures": {(g["section"], g["metric"], g["view"], g["recogniser"]): g["value"] for g in data["figures"]}}


def compare(figs: dict, path: str) -> str:
    ref, fast = figs["reference"], figs[path]
    missing = [k for k in ref if k not in fast]
    diffs = [abs(ref[k] - fast[k]) for k in ref if k in fast and ref[k] is not None and fast[k] is not None]
    nulls = [k for k in ref if k in fast and (ref[k] is None) != (fast[k] is None)]
    differ = sum(d > 2e-6 for d in diffs)
    return (f"figures of {path}: {len(ref)} of the reference, {len(missing)} missing, {differ + len(nulls)} "
            f"differ by more than 2e-6 (largest difference {max(diffs, default=0):.2g}); {path} adds "
            f"{len(set(fast) - set(ref))}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data_root", default=None)
    ap.add_argument("--recogniser", default=None, help="small-recogniser file (default: the evaluation's)")
    ap.add_argument("--max-images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paths", default=",".join(PATHS), help="reference, fast or both, in this order")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (default: the evaluation's choice: OMP_NUM_THREADS, else the idle cores)")
    ap.add_argument("--no-dlib", action="store_true")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in PATHS for p in paths):
        ap.error(f"--paths: choose from {', '.join(PATHS)}")
    if "fast-warm" in paths and ("fast" not in paths or paths.index("fast") > paths.index("fast-warm")):
        ap.error("--paths: fast-warm reuses the cache that fast fills: name fast before it")

    import torch

    print(cpu_line())
    print(f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, --threads "
          f"{args.threads or 'unset'}; {load()} at the start")
    runs = {p: [] for p in paths}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for p in paths:
                res = evaluate_once(args, p, os.path.join(tmp, f"{p}_{r}"), os.path.join(tmp, f"cache_{r}.pt"))
                runs[p].append(res)
                print(f"  {p} run {r + 1}: {res['wall']:.1f} s for {res['images']} images on {res['threads']} "
                      f"thread(s); {load()}", flush=True)
    images = runs[paths[0]][0]["images"]

    for p in paths:  # what metrics.json cannot hold: the time of writing itself
        for run in runs[p]:
            run["stages"]["writing the report"] = max(0.0, run["wall"] - sum(run["stages"].values()))

    def per_image(p: str, names) -> float | None:
        total = [sum(run["stages"].get(n, 0.0) for n in names) for run in runs[p]]
        present = any(n in run["stages"] for run in runs[p] for n in names)
        return sum(total) / len(total) / images if present else None

    stages = []
    for p in paths:
        for run in runs[p]:
            stages += [s for s in run["stages"] if s not in stages]
    rows = [(s, (s,), (s,)) for s in stages]
    rows += [(name, ref, fast) for name, (ref, fast) in GROUPS.items()]
    measured = [s for s in stages if s not in ("setup", "attack", "summary and report", "writing the report")]
    rows.append(("measuring (all but setup and report)", measured, measured))
    rows.append(("measuring, figures of both paths only", [s for s in measured if s not in NEW_STAGES],
                 [s for s in measured if s not in NEW_STAGES]))
    rows.append(("whole evaluation (wall)", stages, stages))
    print(f"\nseconds per image ({images} images, batch {args.batch_size}, mean of {args.repeat} run(s))")
    others = [p for p in paths if p != "reference"] if "reference" in paths else []
    head = f"{'stage':<42}" + "".join(f"{p:>11}" for p in paths) + "".join(f"{'x ' + p:>13}" for p in others)
    print(head)
    for name, ref_names, fast_names in rows:
        vals = {p: per_image(p, ref_names if p == "reference" else fast_names) for p in paths}
        cells = "".join(f"{vals[p]:11.4f}" if vals[p] is not None else f"{'-':>11}" for p in paths)
        ratios = "".join(f"{vals['reference'] / vals[p]:12.1f}x" if vals["reference"] and vals[p] else f"{'':>13}"
                         for p in others)
        print(f"{name:<42}{cells}{ratios}")
    for p in paths:
        wall = sum(r["wall"] for r in runs[p]) / len(runs[p])
        c = runs[p][0]["cache"]
        kept = f"; cache: {c['reused']} reused, {c['measured']} measured" if c else ""
        print(f"{p}: {wall:.1f} s wall per evaluation of {images} images ({wall / images:.3f} s per image){kept}")
    for p in others:
        print(compare({q: runs[q][0]["figures"] for q in paths}, p))
    print(f"{load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
