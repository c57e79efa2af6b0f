"""Curves of a run, read from its ``losses.jsonl`` (or ``validation.jsonl``) and drawn to a PNG with
matplotlib (Agg), a few named panels of several curves each (``LOSS_PANELS``, ``VALIDATION_PANELS``).

The training script appends one JSON object per logged iteration::

    {"epoch": int, "iter": int (global), "time": float, "losses": {name: float}}

and one per validation measurement, with ``"values"`` in place of ``"losses"``.

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

# Panels: (title, curve names). A curve no panel names goes to a last panel, "other".
# The losses of models/objective.py's D and G phases:
LOSS_PANELS = (
    ("D phase", ("D", "D_GAN_real", "D_GAN_fake", "D_FR_real", "D_FR_M", "D_FR_R", "D_FR_WR", "D_FR_fake")),
    ("G phase: total and adversarial", ("G", "G_GAN")),
    ("G phase: identity (FR and features)", ("G_FR", "G_FR_M", "G_FR_R", "G_FR_WR", "G_feat", "G_WR_feat",
                                            "G_feat_M_WR")),
    ("G phase: pixel (L1)", ("recon", "L1_M", "L1_WR")),
    ("G phase: password (Q)", ("dis", "dis_acc")),
)
# What training/validation.py measures on held-out validation batches:
VALIDATION_PANELS = (
    ("recovery PSNR to the original (dB)", ("psnr_recovered", "psnr_anonymized", "psnr_wrong")),
    ("recovered minus anonymized PSNR (dB)", ("psnr_gap",)),
    ("Q's password digit accuracy (chance 1/16)", ("q_acc",)),
    ("identity: FR cosine to the original", ("cos_recovered", "cos_anonymized", "cos_wrong")),
)
MAX_COLUMNS = 3   # panels in a row: the figure stays under 1280 px wide
PANEL_SIZE = (4.1, 2.9)  # inches, at DPI
DPI = 90


def read_losses(path: str, key: str = "losses") -> list[dict]:
    """Records of ``losses.jsonl`` in order, as the continuing run sees them (see module doc);
    ``key``: the records' mapping of values ("losses", or "values" for validation.jsonl)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    unfinished = lines.pop()  # text after the last newline: empty, or a line still being written
    records: list[dict] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        rec = _parse(raw, path, number, key)
        # a resume re-logs iterations: the new records replace the abandoned ones from there on
        while records and records[-1]["iter"] >= rec["iter"]:
            records.pop()
        records.append(rec)
    if unfinished.strip():
        try:
            rec = _parse(unfinished, path, len(lines) + 1, key)
        except ValueError:
            rec = None  # still being written
        if rec is not None:
            while records and records[-1]["iter"] >= rec["iter"]:
                records.pop()
            records.append(rec)
    return records


def _parse(raw: bytes, path: str, number: int, key: str = "losses") -> dict:
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}, line {number}: not valid JSON ({e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("iter"), int) \
            or not isinstance(rec.get(key), dict):
        raise ValueError(f"{path}, line {number}: expected an object with an integer 'iter' and "
                         f"a '{key}' mapping")
    for name, value in rec[key].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}, line {number}: '{name}' is not a number: {value!r}")
    return rec


def curves(records: list[dict], key: str = "losses") -> dict[str, tuple[list[int], list[float]]]:
    """name -> (iterations, values), names in order of first appearance; non-finite values -> NaN
    (drawn as gaps)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for name, value in rec[key].items():
            xs, ys = out.setdefault(name, ([], []))
            xs.append(rec["iter"])
            ys.append(float(value) if math.isfinite(value) else math.nan)
    return out


def group(names, panels=LOSS_PANELS) -> list[tuple[str, list[str]]]:
    """(panel title, the given names it holds) for every panel holding any, in the panels' order;
    names no panel lists come last, under "other"."""
    out = [(title, [n for n in members if n in names]) for title, members in panels]
    listed = {n for _, members in panels for n in members}
    out.append(("other", [n for n in names if n not in listed]))
    return [(title, members) for title, members in out if members]


def render_loss_plot(jsonl_path: str, png_path: str, title: str | None = None, panels=LOSS_PANELS,
                     key: str = "losses") -> bool:
    """Draw the curves of ``jsonl_path`` (x: global iteration), grouped into ``panels``, into
    ``png_path``, written atomically; at most MAX_COLUMNS panels in a row.

    Returns False, writing nothing, when the file does not exist yet or holds no record.
    """
    if not os.path.isfile(jsonl_path):
        return False
    data = curves(read_losses(jsonl_path, key), key)
    if not data:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    cells = group(list(data), panels)
    nrows = math.ceil(len(cells) / MAX_COLUMNS)
    ncols = math.ceil(len(cells) / nrows)
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + (0.4 if title else 0)), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (panel, names) in zip(axes.flat, cells):
        positive = True
        for name in names:
            xs, ys = data[name]
            ax.plot(xs, ys, linewidth=1.0, marker="." if len(xs) < 30 else None, label=name)
            positive = positive and all(y > 0 for y in ys if not math.isnan(y))
        spread = [y for n in names for y in data[n][1] if not math.isnan(y)]
        if positive and spread and max(spread) > 20 * min(spread):
            ax.set_yscale("log")  # curves of different sizes in one panel
        ax.set_title(panel, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncol=2 if len(names) > 4 else 1)
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(png_path, buf.getvalue())
    return True
