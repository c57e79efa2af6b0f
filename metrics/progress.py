"""The evaluation's key figures against training time, from several evaluations of one run.

    python -m metrics.progress EVAL_DIR [EVAL_DIR ...] --out progress.png [--recogniser small] [--losses FILE]

Each EVAL_DIR is a folder evaluate.py wrote. Its metrics.json gives the iteration (older ones name a
checkpoint that gives it); the run's losses.jsonl (beside the checkpoint, or --losses) gives the
training minutes at that iteration. Every number read is checked; a bad one is one line naming its file. Writes the plot
and prints the same figures as a Markdown table, with the targets of a useful model beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from training.checkpoint import CheckpointError, load_checkpoint
from utils.config import check_number
from utils.fileio import atomic_write_bytes, unwritable

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
# The range of each kind of figure in a metrics.json (rates, AUC and the like: [0, 1]).
FIGURE_RANGES = {"psnr": {}, "mean_distance": dict(low=0), "fid": dict(low=0), "ssim": dict(low=-1, high=1),
                 "ms_ssim": dict(low=-1, high=1)}
PSNR_TARGET = 28.0
PSNR_VIEWS = ("recovered", "recovered (M as JPEG q95)", "anonymized", "wrong recovery 1")


class ProgressError(ValueError):
    """A problem with an input, in one line that names the file."""


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except ValueError as e:
        raise ProgressError(f"{where}: not valid JSON ({e})") from None


def _number(value, where: str, **limits):
    return check_number(value, where, error=ProgressError, **limits)


def training_minutes(losses_path: str) -> dict[int, float]:
    """Iteration -> minutes of training so far, from a run's losses.jsonl. Each resumed segment
    counts its time from zero, so segments are added up."""
    out, offset, last = {}, 0.0, 0.0
    with open(losses_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{losses_path}, line {n}"
            row = _json(line, where)
            if not isinstance(row, dict) or "time" not in row or "iter" not in row:
                raise ProgressError(f"{where}: expected an object with 'iter' and 'time'")
            seconds = _number(row["time"], f"{where}: 'time'", low=0)
            iteration = _number(row["iter"], f"{where}: 'iter'", low=0, integer=True)
            if seconds < last:  # a resumed segment starts its clock again
                offset += last
            last = seconds
            out[iteration] = (offset + last) / 60
    return out


def _iteration(protocol: dict, where: str) -> int:
    """The training iteration of the evaluated checkpoint: recorded in metrics.json (evaluate.py
    writes it), else read from the checkpoint, which a run may have pruned since."""
    if protocol.get("iteration") is not None:
        return _number(protocol["iteration"], f"{where}: protocol.iteration", low=0, integer=True)
    ckpt = protocol["checkpoint"]
    if not os.path.isfile(ckpt):
        raise ProgressError(f"{where}: its checkpoint {ckpt} is gone (runs keep only their newest checkpoints), and "
                            "this metrics.json does not record the iteration: evaluate a checkpoint that exists")
    try:
        value = load_checkpoint(ckpt).get("global_iter", -1)
    except CheckpointError as e:
        raise ProgressError(f"{where}: its checkpoint: {e}") from None
    return _number(value, f"{ckpt}: global_iter", low=-1, integer=True)


def read_point(eval_dir: str, recogniser: str, losses: str | None = None) -> dict:
    where = os.path.join(eval_dir, "metrics.json")
    with open(where, encoding="utf-8") as f:
        data = _json(f.read(), where)
    try:
        protocol, figures = data["protocol"], data["figures"]
        checkpoint = protocol["checkpoint"]
        iteration = _iteration(protocol, where)
        images = _number(protocol["images"], f"{where}: protocol.images", low=0, integer=True)
        figs = {}
        for i, fig in enumerate(figures):
            key = (fig["section"], fig["metric"], fig["view"], fig["recogniser"])
            if fig["value"] is not None:  # None: not measurable (evaluate.py writes no NaN)
                limits = FIGURE_RANGES.get(fig["metric"], dict(low=0, high=1))
                _number(fig["value"], f"{where}: figures[{i}] ({fig['metric']}, {fig['view']})", **limits)
            figs[key] = fig["value"]
    except (KeyError, TypeError) as e:
        raise ProgressError(f"{where}: not an evaluation of evaluate.py (missing or malformed {e})") from None
    known = sorted({k[3] for k in figs if k[3] is not None})
    if recogniser not in known:
        raise ProgressError(f"--recogniser {recogniser}: {where} has no figures of it (it has: "
                            f"{', '.join(known) or 'none'})")
    losses = losses or os.path.join(os.path.dirname(checkpoint), "losses.jsonl")
    minutes = None
    if os.path.isfile(losses):
        logged = training_minutes(losses)
        before = [it for it in logged if it <= iteration]
        minutes = logged[max(before)] if before else None
    point = {"dir": eval_dir, "iteration": iteration, "minutes": minutes, "images": images}
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
    try:
        if os.path.lexists(args.out):
            raise ProgressError(f"{args.out} exists; choose another --out")
        why = unwritable(os.path.dirname(os.path.abspath(args.out)))
        if why:
            raise ProgressError(f"--out {args.out}: cannot write the plot there: {why}")
        if args.losses and not os.path.isfile(args.losses):
            raise ProgressError(f"--losses {args.losses}: no such file")
        points = [read_point(d, args.recogniser, args.losses) for d in args.eval_dirs]
        points.sort(key=lambda p: p["iteration"])
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    try:
        plot(points, args.out, args.recogniser)
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(table(points))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
