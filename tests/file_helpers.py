"""File helpers shared by the tests that check what a tool writes and what it leaves untouched."""
from __future__ import annotations

import hashlib
import os


def tree_digest(folder: str) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, keyed by its path relative to ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out
