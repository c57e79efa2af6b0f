"""Atomic file writes: a temporary file in the same folder, flushed and fsync'ed, then renamed.

A crash, a kill or a full disk during a write leaves the previous file untouched; the temporary file
is removed on failure.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open supports 'w' and 'wb'")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_save(path: str, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(fileobj)`` on a temporary file, then rename it to ``path``."""
    with atomic_open(path, "wb") as f:
        writer(f)


def atomic_torch_save(obj, path: str) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_save_image(image, path: str, **save_kwargs) -> None:
    """Save a PIL image atomically; the format follows the file extension."""
    fmt = save_kwargs.pop("format", None) or _format_of(path)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kwargs)
    atomic_write_bytes(path, buf.getvalue())


def _format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
            ".tif": "TIFF", ".tiff": "TIFF"}.get(ext, "PNG")
