"""A small run folder with result pages and a loss log, built with results/html.py, for the tests of
the result views (file checks in test_html.py, browser checks in test_browser.py)."""
from __future__ import annotations

import json
import os

import numpy as np

from results.html import TRAINING_COLUMNS, ResultsSite

PAGES = ((1, 100), (1, 200), (2, 300))  # (epoch, iteration) of the training pages
ROWS = 3
SIZE = 48


def demo_batch(seed: int, rows: int = ROWS) -> dict[str, np.ndarray]:
    """column title -> (rows, SIZE, SIZE, 3) uint8: a coloured disc on a gradient per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = {}
    for name in TRAINING_COLUMNS:
        batch = np.empty((rows, SIZE, SIZE, 3), np.uint8)
        for r in range(rows):
            base = rng.integers(0, 256, 3)
            img = (base[None, None] * 0.5 + np.stack([xx, yy, xx + yy], -1) * 1.3) % 256
            cy, cx = rng.integers(12, SIZE - 12, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 80] = rng.integers(0, 256, 3)
            batch[r] = img.astype(np.uint8)
        out[name] = batch
    return out


def write_losses(path: str, records: int = 40, partial_tail: bool = True) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for k in range(records):
            it = (k + 1) * 10
            rec = {"epoch": 1 + it // 200, "iter": it, "time": 0.5 * k,
                   "losses": {"G_GAN": 1.0 / (1 + 0.1 * k), "G_recon_L1": 0.5 * np.exp(-k / 10),
                              "D_FR": 2.0 + np.sin(k / 3)}}
            f.write(json.dumps(rec) + "\n")
        if partial_tail:
            f.write('{"epoch": 3, "iter": 999, "ti')  # a line still being written


def make_demo_run(run_dir: str) -> dict:
    """Write run_dir/{losses.jsonl, web/, test_web/}; returns the two sites and their pages."""
    os.makedirs(run_dir, exist_ok=True)
    losses = os.path.join(run_dir, "losses.jsonl")
    write_losses(losses)
    web = ResultsSite(os.path.join(run_dir, "web"), "training", losses_path=losses)
    test_web = ResultsSite(os.path.join(run_dir, "test_web"), "validation", losses_path=losses)
    pages = {"web": [], "test_web": []}
    for k, (epoch, it) in enumerate(PAGES):
        pages["web"].append(web.add_page(epoch, it, demo_batch(k)))
    pages["test_web"].append(test_web.add_page(
        2, 300, demo_batch(99), row_titles=[f"validation image {r}" for r in range(ROWS)]))
    return {"web": web, "test_web": test_web, "pages": pages, "losses": losses}
