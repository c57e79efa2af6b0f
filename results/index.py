"""The run folder's ``index.html``: what a researcher opens first, linking the training page, the
validation page, the evaluations when there are any, the log and the configuration (not the
checkpoints). A view, rebuilt from what is on disk (idempotent), written atomically.

    python -m http.server -b 127.0.0.1 -d checkpoints/NAME     # then open http://127.0.0.1:8000/
"""
from __future__ import annotations

import json
import os

from dominate import document, tags

from utils.fileio import atomic_write_text

# (relative path, what it is), shown when it exists
PAGES = (
    ("web/index.html", "training page: loss curves by phase, and the training batches"),
    ("test_web/index.html", "validation page: held-out curves (recovery, password decoding, identity), and a "
                            "fixed batch of 8 validation identities"),
)
FILES = (
    ("log.txt", "the log"),
    ("config.yaml", "the resolved configuration"),
    ("eval.json", "the held-out evaluation at the end of training"),
    ("losses.jsonl", "training losses, one line per logged iteration"),
    ("validation.jsonl", "the validation curve, one line per measurement"),
    ("git_commit.txt", "the commit of the code"),
)


def evaluations(run_dir: str) -> list[str]:
    """Sub-folders holding an evaluate.py report (metrics.json and index.html), sorted."""
    found = []
    for name in sorted(os.listdir(run_dir)):
        sub = os.path.join(run_dir, name)
        if os.path.isfile(os.path.join(sub, "metrics.json")) and os.path.isfile(os.path.join(sub, "index.html")):
            found.append(name)
    return found


def write_run_index(run_dir: str, title: str | None = None) -> str:
    """Rebuild ``run_dir/index.html``; returns its path."""
    title = title or f"run {os.path.basename(os.path.abspath(run_dir))}"
    doc = document(title=title)
    with doc.head:
        tags.meta(charset="utf-8")
        tags.style("body { font-family: sans-serif; margin: 1em; max-width: 60em; } li { margin: 0.3em 0; }")
    with doc:
        tags.h2(title)
        with tags.ul():
            for rel, what in PAGES:
                if os.path.isfile(os.path.join(run_dir, rel)):
                    tags.li(tags.a(what, href=rel))
            for name in evaluations(run_dir):
                tags.li(tags.a(f"evaluation: {name}/ (evaluate.py's report)", href=f"{name}/index.html"))
        summary = _final_summary(run_dir)
        if summary:
            tags.p(summary)
        tags.h3("files")
        with tags.ul():
            for rel, what in FILES:
                if os.path.isfile(os.path.join(run_dir, rel)):
                    tags.li(tags.a(rel, href=rel), f": {what}")
    path = os.path.join(run_dir, "index.html")
    atomic_write_text(path, doc.render())
    return path


def _final_summary(run_dir: str) -> str | None:
    try:
        with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as f:
            r = json.load(f)
        return (f"At iteration {r['iterations']}, on {r['images']} held-out test images: recovery "
                f"{r['psnr_recovered']:.2f} dB PSNR with the right password, {r['psnr_wrong']:.2f} dB with a "
                f"wrong one, {r['psnr_anonymized']:.2f} dB for the anonymized face; Q's digit accuracy "
                f"{r['q_acc']:.3f} (chance {r['q_chance']:.4f}).")
    except (OSError, ValueError, KeyError, TypeError):
        return None
