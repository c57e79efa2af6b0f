"""Files: atomic writes, and the listing of a folder's files.

An atomic write goes to a temporary file in the same folder, flushed and fsync'ed, then renamed: a
crash, a kill or a full disk during a write leaves the previous file untouched; the temporary file
is removed on failure.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
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


def unwritable(folder: str) -> str | None:
    """Why files cannot be created in ``folder`` (made if missing), or None when they can: the check
    every command makes of its outputs before any work."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable (read-only or no permission)"
    return None


# ---- listing ------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})


def is_image_path(path: str) -> bool:
    """Whether ``path`` has an image extension (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def walk_files(folder: str, on_hidden_folder: Callable[[str], None] | None = None) -> Iterator[tuple[str, str]]:
    """(full path, path relative to ``folder``) of every file under ``folder``, in a fixed order: each
    folder's files sorted by name, then its subfolders' in sorted order. Folders whose name starts
    with a dot are not entered: ``on_hidden_folder`` gets each one's relative path (ending with
    ``os.sep``) before the files of its parent. Files starting with a dot are yielded, for the caller
    to skip or report."""
    for root, dirs, files in os.walk(folder):
        if on_hidden_folder is not None:
            for d in sorted(d for d in dirs if d.startswith(".")):
                on_hidden_folder(os.path.relpath(os.path.join(root, d), folder) + os.sep)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            full = os.path.join(root, name)
            yield full, os.path.relpath(full, folder)


def end_with_newline(path: str) -> None:
    """A process killed mid-line leaves a partial last line in an appended log; finish it so that the
    lines appended next stay parseable."""
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
