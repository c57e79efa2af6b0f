"""The evaluation's key figures against training time, from several evaluations of one run.

    python -m metrics.progress EVAL_DIR [EVAL_DIR ...] --out progress.png [--recogniser small] [--losses FILE]

Each EVAL_DIR is a folder evaluate.py wrote. The checkpoint it names gives the iteration; the run's
losses.jsonl (beside the checkpoint, or --losses) gives the training minutes at that iteration. Writes the plot
and prints the same figures as a Markdown table, with the targets of a useful model beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from training.checkpoint import load_checkpoint
from utils.fileio import atomic_write_bytes

# (label, section, metric, view, target, "min" or "max"): the figures a protecting model must reach
TARGETS = (
    ("anonymized not matched", "identity", "deid_rate", "anonymized", 0.90, "min"),
    ("anonymized (JPEG 95) not matched", "identity", "deid_rate", "anonymized (JPEG q95)", 0.90, "min"),
    ("recovered matched", "identity", "match_rate", "recovered", 0.95, "min"),
    ("recovered from JPEG 95 matched", "identity", "match_rate", "recovered (M as JPEG q95)", 0.95, "min"),
    ("wrong recovery matched", "identity", "match_rate", "wrong recovery 1", 0.10, "max"),
    ("wrong recovery from JPEG 95 matched", "identity", "match_rate", "wrong recovery 1 (M as JPEG q95)", 0.10, "max"),
    ("two wrong recoveries: different people", "diversity", "different_rate",
     "wrong recovery 1 vs wrong recovery 2", 0.80, "min"),
)
PSNR_TARGET = 28.0
PSNR_VIEWS = ("recovered", "recovered (M as JPEG q95)", "anonymized", "wrong recovery 1")


def training_minutes(losses_path: str) -> dict[int, float]:
    """Iteration -> minutes of training so far, from a run's losses.jsonl. Each resumed segment
    counts its time from zero, so segments are added up."""
    out, offset, last = {}, 0.0, 0.0
    with open(losses_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if row["time"] < last:  # a resumed segment starts its clock again
                offset += last
            last = row["time"]
            out[int(row["iter"])] = (offset + last) / 60
    return out


def read_point(eval_dir: str, recogniser: str, losses: str | None = None) -> dict:
    with open(os.path.join(eval_dir, "metrics.json"), encoding="utf-8") as f:
        data = json.load(f)
    ckpt = data["protocol"]["checkpoint"]
    iteration = int(load_checkpoint(ckpt).get("global_iter", -1))
    losses = losses or os.path.join(os.path.dirname(ckpt), "losses.jsonl")
    minutes = None
    if os.path.isfile(losses):
        logged = training_minutes(losses)
        before = [it for it in logged if it <= iteration]
        minutes = logged[max(before)] if before else None
    figs = {(f["section"], f["metric"], f["view"], f["recogniser"]): f["value"] for f in data["figures"]}
    point = {"dir": eval_dir, "iteration": iteration, "minutes": minutes,
             "images": data["protocol"]["images"]}
    for label, section, metric, view, _, _ in TARGETS:
        point[label] = figs.get((section, metric, view, recogniser))
    for view in PSNR_VIEWS:
        point[f"PSNR {view}"] = figs.get(("quality", "psnr", view, None))
    return point


def table(points: list[dict]) -> str:
    cols = ["iteration", "training minutes", "images"] + [f"PSNR {v}" for v in PSNR_VIEWS] + [t[0] for t in TARGETS]
    target = ["target", "", ""] + [f">= {PSNR_TARGET:g}" if v.startswith("recovered") else "" for v in PSNR_VIEWS] + [
        f"{'>=' if kind == 'min' else '<='} {goal:.0%}" for _, _, _, _, goal, kind in TARGETS]

    def cell(p, c):
        v = p.get(c) if c != "training minutes" else p["minutes"]
        if v is None:
            return "-"
        if c.startswith("PSNR"):
            return f"{v:.2f}"
        if c in ("iteration", "images"):
            return str(v)
        if c == "training minutes":
            return f"{v:.0f}"
        return f"{v:.1%}"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), "| " + " | ".join(target) + " |"]
    lines += ["| " + " | ".join(cell(p, c) for c in cols) + " |" for p in points]
    return "\n".join(lines)


def plot(points: list[dict], out: str, recogniser: str) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_minutes = all(p["minutes"] is not None for p in points)
    x = [p["minutes"] if use_minutes else p["iteration"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for view in PSNR_VIEWS:
        a.plot(x, [p[f"PSNR {view}"] for p in points], marker="o", label=view)
    a.axhline(PSNR_TARGET, color="grey", ls="--", lw=1, label=f"target for recovery ({PSNR_TARGET:g} dB)")
    a.set_ylabel("PSNR against the original (dB)")
    for label, *_rest in TARGETS:
        b.plot(x, [None if p[label] is None else 100 * p[label] for p in points], marker="o", label=label)
    b.set_ylabel(f"% of test images ({recogniser} recogniser)")
    b.set_ylim(-2, 102)
    for ax in (a, b):
        ax.set_xlabel("training minutes" if use_minutes else "iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dirs", nargs="+", help="folders written by evaluate.py, any order")
    ap.add_argument("--out", required=True, help="the plot to write (PNG); an existing file is not replaced")
    ap.add_argument("--recogniser", default="small", help="whose match rates to plot (default: small)")
    ap.add_argument("--losses", help="the run's losses.jsonl, when the checkpoints were copied elsewhere")
    args = ap.parse_args(argv)
    if os.path.exists(args.out):
        print(f"error: {args.out} exists; choose another --out", file=sys.stderr)
        return 2
    try:
        points = [read_point(d, args.recogniser, args.losses) for d in args.eval_dirs]
        points.sort(key=lambda p: p["iteration"])
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plot(points, args.out, args.recogniser)
    print(table(points))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
