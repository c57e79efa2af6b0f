"""Loss curves of a run, read from its ``losses.jsonl`` and drawn to a PNG with matplotlib (Agg).

The training script appends one JSON object per logged iteration::

    {"epoch": int, "iter": int (global), "time": float, "losses": {name: float}}

It may be in the middle of appending while we read, so an unfinished last line (no newline yet) is
ignored; any other malformed line is an error that names the file and line. After a resume from an
earlier checkpoint the iteration count goes back; the records of the abandoned stretch are then
dropped from the view (they stay in the file), so each curve shows the run as it continued.
"""
from __future__ import annotations

import io
import json
import math
import os

from utils.fileio import atomic_write_bytes

# One figure cell per loss; this many cells in a row.
GRID_COLUMNS = 4


def read_losses(path: str) -> list[dict]:
    """Records of ``losses.jsonl`` in order, as the continuing run sees them (see module doc)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    unfinished = lines.pop()  # text after the last newline: empty, or a line still being written
    records: list[dict] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        rec = _parse(raw, path, number)
        # a resume re-logs iterations: the new records replace the abandoned ones from there on
        while records and records[-1]["iter"] >= rec["iter"]:
            records.pop()
        records.append(rec)
    if unfinished.strip():
        try:
            rec = _parse(unfinished, path, len(lines) + 1)
        except ValueError:
            rec = None  # still being written
        if rec is not None:
            while records and records[-1]["iter"] >= rec["iter"]:
                records.pop()
            records.append(rec)
    return records


def _parse(raw: bytes, path: str, number: int) -> dict:
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}, line {number}: not valid JSON ({e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("iter"), int) \
            or not isinstance(rec.get("losses"), dict):
        raise ValueError(f"{path}, line {number}: expected an object with an integer 'iter' and "
                         f"a 'losses' mapping")
    for name, value in rec["losses"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}, line {number}: loss '{name}' is not a number: {value!r}")
    return rec


def curves(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (iterations, values), names in order of first appearance; non-finite values -> NaN
    (drawn as gaps)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for name, value in rec["losses"].items():
            xs, ys = out.setdefault(name, ([], []))
            xs.append(rec["iter"])
            ys.append(float(value) if math.isfinite(value) else math.nan)
    return out


def render_loss_plot(jsonl_path: str, png_path: str, title: str | None = None) -> bool:
    """Draw one small plot per loss (x: global iteration) into ``png_path``, written atomically.

    Returns False, writing nothing, when the file does not exist yet or holds no record.
    """
    if not os.path.isfile(jsonl_path):
        return False
    data = curves(read_losses(jsonl_path))
    if not data:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    ncols = min(GRID_COLUMNS, len(data))
    nrows = math.ceil(len(data) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows + (0.4 if title else 0)), dpi=90,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (name, (xs, ys)) in zip(axes.flat, data.items()):
        ax.plot(xs, ys, linewidth=1.0, marker="." if len(xs) < 30 else None)
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(data):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(png_path, buf.getvalue())
    return True
