"""Procedural synthetic faces in the CASIA folder format, so that a first run works without data.

No face data set with identities can be downloaded here, so the project draws its own: every
identity has fixed traits (head shape, skin, eyes, brows, nose, mouth, hair, beard) and every photo
varies pose, expression, light, background, clothes, blur and noise (synthetic_traits.py; the
painter is synthetic_render.py). Output:

    ROOT/images/<label:07d>/<k:03d>.png      250x250 RGB
    ROOT/landmarks.txt                       RELATIVE_PATH LABEL x1 y1 ... x5 y5 (exact, pixels)
    ROOT/synthetic.json                      the parameters it was made with

Every image depends only on (seed, label, k), so the files are byte-identical for a seed whatever
the number of worker processes. The folder is built under a hidden temporary name beside ROOT and
renamed into place at the end: an interrupted run never leaves a ROOT that looks complete.
Landmarks are continuous pixel coordinates (the centre of pixel column i is x = i + 0.5), exact to
the drawing: eye centres are the pupils, the nose tip, the mouth corners where the lips meet.

    python -m datasets.synthetic OUT_DIR --identities 100 --images-per-id 20 --seed 0
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.fileio import atomic_write_text, unwritable

from .annotations import read_landmarks
from .base import FaceDataset, from_table
from .errors import DatasetError
from .synthetic_render import render
from .synthetic_traits import sample_identity, sample_view

VERSION = 1
META = "synthetic.json"


def identity_rng(seed: int, label: int) -> np.random.Generator:
    return np.random.default_rng([seed, label, 0])


def image_rng(seed: int, label: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, label, 1, k])


def render_image(seed: int, label: int, k: int):
    """Photo k of identity `label`: (250, 250, 3) uint8 and (5, 2) pixel landmarks."""
    ident = sample_identity(identity_rng(seed, label))
    rng = image_rng(seed, label, k)
    return render(ident, sample_view(rng), rng)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_identity(job) -> list:
    """Render and write every photo of one identity; returns its landmark lines."""
    images_dir, seed, label, count = job
    folder = os.path.join(images_dir, f"{label:07d}")
    os.makedirs(folder, exist_ok=True)
    lines = []
    for k in range(count):
        img, pts = render_image(seed, label, k)
        rel = f"{label:07d}/{k:03d}.png"
        with open(os.path.join(images_dir, rel), "wb") as f:
            f.write(_png(img))
        lines.append(f"{rel} {label} " + " ".join(f"{v:.3f}" for v in pts.reshape(-1)))
    return lines


def _check_args(identities, images_per_id, seed):
    for key, val, low in (("identities", identities, 1), ("images_per_id", images_per_id, 1), ("seed", seed, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < low:
            raise ValueError(f"synthetic faces: {key} must be an integer >= {low}, got {val!r}")
    if images_per_id > 1000:
        raise ValueError(f"synthetic faces: images_per_id must be at most 1000 (file names have 3 digits), "
                         f"got {images_per_id}")


def _meta(identities, images_per_id, seed) -> dict:
    return {"identities": int(identities), "images_per_id": int(images_per_id), "seed": int(seed)}


def generate_synthetic_dataset(root: str, identities: int, images_per_id: int, seed: int = 0,
                               workers: int | None = None, progress: bool = False) -> str:
    """Write a synthetic face folder at `root` (which must not exist yet) and return its path;
    ``progress``: a progress bar (identities written) on stderr."""
    _check_args(identities, images_per_id, seed)
    root = os.path.abspath(root)
    if os.path.lexists(root):
        raise FileExistsError(f"{root} already exists; synthetic faces are only written to a new folder")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
        images_dir = os.path.join(tmp, "images")
        os.makedirs(images_dir)
        jobs = [(images_dir, int(seed), label, int(images_per_id)) for label in range(identities)]
        workers = max(1, min(workers or os.cpu_count() or 1, identities))
        with tqdm(total=len(jobs), desc="synthetic faces", unit="identity", disable=not progress,
                  dynamic_ncols=True) as bar:
            if workers == 1:
                chunks = [_write_identity(job) for job in bar_over(jobs, bar)]
            else:
                # spawn, not fork: forking a process that already runs threads (torch, video decoding,
                # visdom's sender) can leave a worker waiting forever on a lock copied in its held state
                with mp.get_context("spawn").Pool(workers) as pool:
                    chunks = list(bar_over(pool.imap(_write_identity, jobs, chunksize=1), bar))
        atomic_write_text(os.path.join(tmp, "landmarks.txt"), "\n".join(l for c in chunks for l in c) + "\n")
        meta = dict(_meta(identities, images_per_id, seed), version=VERSION, size=250)
        atomic_write_text(os.path.join(tmp, META), json.dumps(meta, indent=1) + "\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isdir(root):
                raise
            # another process finished the same folder first: keep theirs if it is the same dataset
            shutil.rmtree(tmp, ignore_errors=True)
            check_synthetic_folder(root, identities, images_per_id, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def bar_over(items, bar):
    """``items``, advancing ``bar`` by one after each."""
    for item in items:
        yield item
        bar.update(1)


def check_synthetic_folder(root: str, identities: int, images_per_id: int, seed: int) -> None:
    """An existing folder must be a synthetic dataset made with the same parameters."""
    meta_path = os.path.join(root, META)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{root} exists but is not a synthetic face folder (no {META}); move it or set "
                           f"synthetic_dir to another folder") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{meta_path}: unreadable ({e}); delete {root} to generate it again") from None
    want = _meta(identities, images_per_id, seed)
    have = {k: meta.get(k) for k in want}
    if have != want:
        raise DatasetError(f"{root} holds synthetic faces made with {have}, but the config asks for {want}; "
                           f"delete that folder or set synthetic_dir to another folder")


def ensure_synthetic_dataset(root: str, identities: int, images_per_id: int, seed: int,
                             workers: int | None = None) -> str:
    """Generate the folder on first use (saying so in one line); check it on later uses."""
    if os.path.isdir(root):
        check_synthetic_folder(root, identities, images_per_id, seed)
        return root
    if os.path.lexists(root):
        raise DatasetError(f"{root} is a file, not a synthetic face folder; move it or set synthetic_dir to another "
                           "folder")
    why = unwritable(os.path.dirname(os.path.abspath(root)))
    if why:
        raise DatasetError(f"cannot generate the synthetic faces in {root} (data_root): {why}")
    print(f"Generating {identities} x {images_per_id} synthetic faces (seed {seed}) in {root}", flush=True)
    return generate_synthetic_dataset(root, identities, images_per_id, seed, workers, progress=True)


def synthetic(data_root: str, synthetic_dir: str, identities: int, images_per_id: int, seed: int,
              split: str, img_size: int) -> FaceDataset:
    root = ensure_synthetic_dataset(os.path.join(data_root, synthetic_dir), identities, images_per_id, seed)
    table = read_landmarks(os.path.join(root, "landmarks.txt"), labelled=True)
    return from_table("synthetic", os.path.join(root, "images"), table, split, img_size, frame=(250, 250))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to create (must not exist)")
    p.add_argument("--identities", type=int, default=100, help="people to draw (labels 0..N-1)")
    p.add_argument("--images-per-id", type=int, default=20, help="photos per person")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = p.parse_args(argv)
    start = time.time()
    try:
        root = generate_synthetic_dataset(args.out_dir, args.identities, args.images_per_id, args.seed, args.workers)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = args.identities * args.images_per_id
    print(f"wrote {n} images of {args.identities} identities to {root} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
