"""Run the face protector on a path: one photo, one video, or a folder (its tree mirrored).

Rules: the input is never written to (an output inside the input folder, or equal to the input file,
is refused); an existing output is refused unless ``overwrite``; every file is written atomically.
Each file's problem is reported and the run goes on with the next one. Files without faces are
copied unchanged, with a record that says so (so recovery copies them back instead of guessing).
Non-image files in a folder are listed and not copied; ``*.record.json`` sidecars are records.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable

from utils.fileio import atomic_write_bytes, atomic_write_text
from utils.protect import ApproximateRecoveryWarning, FaceProtector, native_info
from utils.protect_io import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, LOSSY_EXTENSIONS, PhotoError, decode_photo,
                              encode_photo, load_photo, output_extension)
from utils.protect_record import SIDECAR_SUFFIX, Record, RecordError, read_sidecar, sidecar_path
from utils.protect_video import VideoOptions, protect_video
from utils.video import VIDEO_EXTENSIONS, TruncatedVideoWarning, VideoError


class RunError(ValueError):
    """A problem that stops the run before any file is written."""


@dataclass
class RunOptions:
    recover: bool = False
    overwrite: bool = False
    lossless: bool = False  # photos written as PNG, videos with lossless x264 (crf 0)
    max_pixels: int = DEFAULT_MAX_PIXELS
    record: str | None = None  # recovery of one file: its record, when not beside/inside it
    video: VideoOptions = field(default_factory=VideoOptions)
    progress: bool = True


@dataclass
class Summary:
    images: int = 0
    videos: int = 0
    faces_found: int = 0
    faces_done: int = 0
    too_small: int = 0
    face_frames: int = 0
    no_faces: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, why): not processed
    failed: list = field(default_factory=list)  # (path, message)
    warnings: list = field(default_factory=list)  # (path, message)

    @property
    def files(self) -> int:
        return self.images + self.videos


def kind_of(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def plan_outputs(src: str, dst: str, opts: RunOptions) -> tuple[list[tuple[str, str, str]], list]:
    """[(input file, output file, kind)] and the skipped files, after the safety checks."""
    if not os.path.exists(src):
        raise RunError(f"input not found: {src}")
    if os.path.isdir(src):
        if opts.record:
            raise RunError("--record names the record of one file; a folder's files find theirs beside or inside them")
        if _inside(dst, src):
            raise RunError(f"the output {dst} is inside the input folder {src}; choose a folder outside it")
        if os.path.exists(dst) and not opts.overwrite:
            raise RunError(f"{dst} exists; choose another output or pass --overwrite")
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise RunError(f"{dst} is a file, but the input is a folder")
        jobs, skipped, seen = [], [], {}
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, src)
                if name.startswith(".") or name.endswith(SIDECAR_SUFFIX):
                    continue
                kind = kind_of(name)
                if kind is None:
                    skipped.append((rel, "not an image or video file"))
                    continue
                base, ext = os.path.splitext(rel)
                out_ext = ".png" if opts.lossless and kind == "image" and not opts.recover and \
                    ext.lower() in LOSSY_EXTENSIONS else (output_extension(ext) if kind == "image" else ext)
                out = os.path.join(dst, base + out_ext)
                if out in seen:
                    skipped.append((rel, f"its output {os.path.relpath(out, dst)} is already written for {seen[out]}"))
                    continue
                seen[out] = rel
                jobs.append((full, out, kind))
        return jobs, skipped
    kind = kind_of(src) or "image"
    if os.path.isdir(dst):
        raise RunError(f"{dst} is a folder; give the output file name, e.g. {os.path.join(dst, os.path.basename(src))}")
    if os.path.exists(dst):
        if os.path.samefile(src, dst):
            raise RunError(f"the output {dst} is the input itself; anonymize.py never writes into its input")
        if not opts.overwrite:
            raise RunError(f"{dst} exists; choose another output or pass --overwrite")
    if not opts.recover and os.path.exists(sidecar_path(dst)) and not opts.overwrite:
        raise RunError(f"{sidecar_path(dst)} exists; choose another output or pass --overwrite")
    if kind == "video" and kind_of(dst) != "video":
        raise RunError(f"{dst}: a video must be written to {', '.join(sorted(VIDEO_EXTENSIONS))}")
    if kind == "image" and kind_of(dst) != "image":
        raise RunError(f"{dst}: a photo must be written to .png, .jpg, .webp, .tif, .bmp or .ppm")
    return [(src, dst, kind)], []


def _find_record(path: str, photo_record: Record | None, explicit: str | None) -> Record | None:
    if explicit:
        with open(explicit, "rb") as f:
            return Record.from_json(f.read(), explicit)
    return photo_record or read_sidecar(path)


def run_image(fp: FaceProtector, src: str, dst: str, passwords, opts: RunOptions, s: Summary, name: str) -> None:
    photo = load_photo(src, opts.max_pixels)
    s.warnings += [(name, n) for n in photo.notes]
    record = _find_record(src, photo.record, opts.record) if opts.recover else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximateRecoveryWarning)  # reported below instead
        outcome = fp.process(photo.native, passwords, record=record, recover=opts.recover)
    s.faces_found += outcome.faces + outcome.too_small
    s.too_small += outcome.too_small
    if outcome.too_small:
        s.warnings.append((name, f"{outcome.too_small} face(s) smaller than {fp.detector.min_face:g} px left "
                                 f"as they are (set --min-face lower to include them)"))
    if outcome.approximate:
        s.warnings.append((name, "no record found: faces were detected again, so recovery is approximate"))
    ext = os.path.splitext(dst)[1].lower()
    if outcome.faces == 0:
        s.no_faces.append(name)
        if ext == os.path.splitext(src)[1].lower():
            with open(src, "rb") as f:
                data = f.read()
        else:
            data = encode_photo(photo.native, ext, icc=photo.icc)[0]
        atomic_write_bytes(dst, data)
        if not opts.recover:  # a record with no face: recovery then copies the file back
            rec = fp.record("image", passwords.scope, fp.detector_info())
            rec.output = native_info(decode_photo(data, dst, opts.max_pixels).native)
            atomic_write_text(sidecar_path(dst), rec.to_json())
        return
    s.faces_done += outcome.faces
    data, _, notes = encode_photo(outcome.image, ext, icc=photo.icc, record=outcome.record)
    s.warnings += [(name, n) for n in notes]
    atomic_write_bytes(dst, data)
    if outcome.record is not None and ext != ".png":
        atomic_write_text(sidecar_path(dst), outcome.record.to_json())
    if outcome.record is not None and ext in LOSSY_EXTENSIONS:
        s.warnings.append((name, "written as JPEG: recovery from it degrades (use a .png output or --lossless)"))


def run_video(fp: FaceProtector, src: str, dst: str, passwords, opts: RunOptions, s: Summary, name: str) -> None:
    record = _find_record(src, None, opts.record) if opts.recover else None
    vopt = opts.video
    if opts.lossless:
        vopt = VideoOptions(**{**vopt.__dict__, "crf": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = protect_video(fp, src, dst, passwords, recover=opts.recover, record=record, options=vopt,
                            overwrite=opts.overwrite)
    for w in caught:
        if issubclass(w.category, TruncatedVideoWarning):
            s.warnings.append((name, str(w.message)))
    s.faces_found += out.tracks
    s.faces_done += out.tracks
    s.face_frames += out.face_frames
    s.too_small += out.too_small
    if out.copied:
        s.no_faces.append(name)
    if out.approximate:
        s.warnings.append((name, "no record found: faces were detected again, so recovery is approximate"))
    if out.too_small:
        s.warnings.append((name, f"{out.too_small} detections smaller than {fp.detector.min_face:g} px left as "
                                 f"they are"))
    if not opts.recover and not out.copied and vopt.crf != 0:
        s.warnings.append((name, "lossy video: recovery will be close, not exact (--lossless for the closest)"))
    if opts.lossless and os.path.splitext(dst)[1].lower() == ".webm":
        s.warnings.append((name, "webm holds VP8/VP9, whose crf 0 is near-lossless, not lossless (write .mkv or .mp4)"))


def run(fp: FaceProtector, src: str, dst: str, passwords, opts: RunOptions,
        log: Callable[[str], None] = print) -> Summary:
    jobs, skipped = plan_outputs(src, dst, opts)
    s = Summary(skipped=skipped)
    bar = None
    if opts.progress and len(jobs) > 1:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="file", desc="files", dynamic_ncols=True, file=sys.stderr)
    for path, out, kind in jobs:
        name = os.path.relpath(path, src) if os.path.isdir(src) else path
        try:
            if kind == "image":
                s.images += 1
                run_image(fp, path, out, passwords, opts, s, name)
            else:
                s.videos += 1
                run_video(fp, path, out, passwords, opts, s, name)
        except (PhotoError, VideoError, RecordError, FileExistsError, ValueError, OSError) as e:
            msg = str(e)
            s.failed.append((name, msg[len(path) + 2:] if msg.startswith(path + ": ") else msg))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    print_summary(s, opts.recover, log)
    return s


def print_summary(s: Summary, recover: bool, log: Callable[[str], None] = print) -> None:
    verb = "recovered" if recover else "anonymized"
    log(f"files: {s.files} ({s.images} photos, {s.videos} videos)")
    frames = f" ({s.face_frames} face-frames in videos)" if s.face_frames else ""
    small = f", {s.too_small} too small" if s.too_small else ""
    log(f"faces found: {s.faces_found}{small}; faces {verb}: {s.faces_done}{frames}")
    _listing(log, f"files without faces (copied unchanged): {len(s.no_faces)}", [(n, "") for n in s.no_faces])
    _listing(log, f"skipped: {len(s.skipped)}", s.skipped)
    _listing(log, f"warnings: {len(s.warnings)}", s.warnings)
    _listing(log, f"failed: {len(s.failed)}", s.failed)


def _listing(log, title: str, items: list, limit: int = 20) -> None:
    if not items:
        return
    log(title)
    for name, why in items[:limit]:
        log(f"  {name}: {why}" if why else f"  {name}")
    if len(items) > limit:
        log(f"  ... and {len(items) - limit} more")
