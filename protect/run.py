"""Run the face protector on a path: one photo, one video, or a folder (its tree mirrored).

Rules: the input is never written to: before anything is written, every path the run will write
(outputs after mirroring and extension changes, their ``.record.json`` records, previews) is
checked, and the run is refused when one is or lies inside an input, is written twice, exists
(unless ``overwrite``) or has no writable folder. Every file is written atomically. Each file's
problem is reported (naming the file) and the run goes on with the next one; a file counts as done
only once it is written. Every photo is encoded again from its pixels, so no metadata of the input
reaches the output; files without faces keep their pixels (videos: their packets) and get a record
that says so (so recovery copies them back instead of guessing). Non-image files, hidden files and
special files (FIFOs, devices: never opened) in a folder are listed and not copied;
``*.record.json`` sidecars are records.
"""
from __future__ import annotations

import os
import stat
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from protect.frame import draw_face_boxes
from protect.photo_io import (
    DEFAULT_MAX_PIXELS,
    LOSSY_EXTENSIONS,
    WRITABLE_EXTENSIONS,
    PhotoError,
    decode_photo,
    encode_photo,
    jpeg_without_metadata,
    load_photo,
    output_extension,
)
from protect.protector import ApproximateRecoveryWarning, FaceProtector, native_info
from protect.record import SIDECAR_SUFFIX, Record, RecordError, read_sidecar, sidecar_path
from protect.video import VideoOptions, protect_video
from protect.video_io import VIDEO_EXTENSIONS, TruncatedVideoWarning, VideoError
from utils.fileio import atomic_write_bytes, atomic_write_text, is_image_path, unwritable, walk_files


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
    preview: str | None = None  # a folder: each output again, with a box around every processed face


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
    per_file: list = field(default_factory=list)  # (path, faces processed, face-frames) of every file written
    warnings: list = field(default_factory=list)  # (path, message)

    @property
    def files(self) -> int:
        return self.images + self.videos


def kind_of(path: str) -> str | None:
    if is_image_path(path):
        return "image"
    return "video" if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS else None


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _special(path: str) -> str | None:
    """Why ``path`` is not a regular file (a FIFO would block the run, a device never ends), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"{kind}: skipped, never opened"


def _output_extension(ext: str, kind: str, opts: RunOptions) -> str:
    if kind == "video":
        return ext
    if opts.lossless and not opts.recover and ext.lower() in LOSSY_EXTENSIONS:
        return ".png"
    return output_extension(ext)


def preview_path(out: str, dst: str, src_is_dir: bool, opts: RunOptions) -> str | None:
    """Where the preview of the output ``out`` goes: the same name, mirrored in ``opts.preview``."""
    if not opts.preview:
        return None
    rel = os.path.relpath(out, dst) if src_is_dir else os.path.basename(out)
    return os.path.join(opts.preview, rel)


def plan_outputs(src: str, dst: str, opts: RunOptions) -> tuple[list[tuple[str, str, str]], list]:
    """[(input file, output file, kind)] and the skipped files [(name, why)], after the safety checks:
    nothing is written before all of them pass (RunError names the file)."""
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
        jobs, skipped, seen, inputs = [], [], {}, set()
        def hidden(rel: str) -> None:
            skipped.append((rel, "hidden folder: not processed, not copied to the output"))

        for full, rel in walk_files(src, hidden):
            name = os.path.basename(full)
            inputs.add(os.path.realpath(full))
            if name.endswith(SIDECAR_SUFFIX):  # a record: read with its file
                continue
            if name.startswith("."):
                skipped.append((rel, "hidden file: not processed, not copied to the output"))
                continue
            why = _special(full)
            if why:
                skipped.append((rel, why))
                continue
            kind = kind_of(name)
            if kind is None:
                skipped.append((rel, "not an image or video file"))
                continue
            base, ext = os.path.splitext(rel)
            out = os.path.join(dst, base + _output_extension(ext, kind, opts))
            if out in seen:
                skipped.append((rel, f"its output {os.path.relpath(out, dst)} is already written for {seen[out]}"))
                continue
            seen[out] = rel
            jobs.append((full, out, kind))
    else:
        why = _special(src)
        if why:
            raise RunError(f"{src}: {why}")
        kind = kind_of(src) or "image"
        if os.path.isdir(dst):
            raise RunError(f"{dst} is a folder; give the output file name, e.g. "
                           f"{os.path.join(dst, os.path.basename(src))}")
        if os.path.exists(dst) and os.path.samefile(src, dst):
            raise RunError(f"the output {dst} is the input itself; anonymize.py never writes into its input")
        if kind == "video" and kind_of(dst) != "video":
            raise RunError(f"{dst}: a video must be written to {', '.join(sorted(VIDEO_EXTENSIONS))}")
        if kind == "image" and os.path.splitext(dst)[1].lower() not in WRITABLE_EXTENSIONS:
            raise RunError(f"{dst}: photos cannot be written as "
                           f"{os.path.splitext(dst)[1] or 'a file without an extension'}"
                           f"; use one of {', '.join(sorted(WRITABLE_EXTENSIONS))}")
        jobs, skipped, inputs = [(src, dst, kind)], [], {os.path.realpath(src)}
    _check_writes(src, dst, jobs, inputs, opts)
    return jobs, skipped


def _check_writes(src: str, dst: str, jobs: list, inputs: set, opts: RunOptions) -> None:
    """Every path the run will write (outputs, their records, previews), after every mapping: none may
    be or lie inside an input, none may be written twice, existing ones only with ``overwrite``, and
    each must have a folder that can be written. Nothing is written before this passes."""
    src_dir = os.path.isdir(src)
    if opts.preview and os.path.exists(opts.preview) and not os.path.isdir(opts.preview):
        raise RunError(f"--preview {opts.preview} is a file; give a folder")
    writes: dict[str, str] = {}
    folders: dict[str, str | None] = {}
    for path, out, _kind in jobs:
        name = os.path.relpath(path, src) if src_dir else path
        targets = [(out, "output")]
        if not opts.recover:
            targets.append((sidecar_path(out), "record"))
        prev = preview_path(out, dst, src_dir, opts)
        if prev:
            targets.append((prev, "preview"))
        for target, what in targets:
            real = os.path.realpath(target)
            if real in inputs or _inside(path, real):
                raise RunError(f"{target}: the {what} of {path} would replace this input file; choose an output "
                               f"that does not contain the input")
            if src_dir and _inside(real, src):
                raise RunError(f"{target}: the {what} of {path} would be written inside the input folder {src}; "
                               f"choose an output that does not contain the input")
            if real in writes:
                raise RunError(f"{target}: the {what} of {name} would replace {writes[real]}; choose other names")
            writes[real] = f"the {what} of {name}"
            if os.path.isdir(target):
                raise RunError(f"{target}: the {what} of {name} is an existing folder")
            if os.path.lexists(target) and not opts.overwrite:
                raise RunError(f"{target} exists; choose another output or pass --overwrite")
            folder = os.path.dirname(os.path.abspath(target))
            if folder not in folders:
                folders[folder] = unwritable(folder)
            if folders[folder]:
                raise RunError(f"{target}: cannot write the {what} of {name}: {folders[folder]}")


def _find_record(path: str, photo_record: Record | None, explicit: str | None) -> Record | None:
    if explicit:
        why = _special(explicit)
        if why:
            raise RecordError(f"{explicit}: {why}")
        with open(explicit, "rb") as f:
            return Record.from_json(f.read(), explicit)
    return photo_record or read_sidecar(path)


def _write(path: str, data: bytes | str) -> None:
    """Write atomically; a failure names the file that could not be written."""
    try:
        (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(path, data)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None


class OutputError(OSError):
    """An output that could not be written (full disk, lost permission): the message names it."""


def run_image(protector: FaceProtector, src: str, dst: str, passwords, opts: RunOptions, s: Summary, name: str,
              preview: str | None = None) -> None:
    photo = load_photo(src, opts.max_pixels)
    notes = [(name, n) for n in photo.notes]
    record = _find_record(src, photo.record, opts.record) if opts.recover else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximateRecoveryWarning)  # reported below instead
        outcome = protector.process(photo.native, passwords, record=record, recover=opts.recover)
    if outcome.too_small:
        notes.append((name, f"{outcome.too_small} face(s) smaller than {protector.detector.min_face:g} px left "
                            f"as they are (set --min-face lower to include them)"))
    if outcome.approximate:
        notes.append((name, "no record found: faces were detected again, so recovery is approximate"))
    ext = os.path.splitext(dst)[1].lower()
    # Nothing of the input file but its pixels and colour profile reaches the output (no EXIF, GPS,
    # XMP, IPTC or maker notes): every photo is encoded again from its pixels, except a JPEG without
    # faces, whose metadata segments are dropped from the unchanged coded data (no second JPEG loss).
    kept = _jpeg_kept(src, photo, opts) if not outcome.faces and ext in LOSSY_EXTENSIONS else None
    if kept is not None:
        data, decoded = kept
    else:
        data, decoded, enc_notes = encode_photo(outcome.image, ext, icc=photo.icc,
                                                record=outcome.record if outcome.faces else None)
        notes += [(name, n) for n in enc_notes]
    _write(dst, data)
    if not opts.recover and (ext != ".png" or not outcome.faces):  # PNG carries its record inside
        rec = outcome.record if outcome.faces else protector.record("image", passwords.scope, protector.detector_info())
        if not outcome.faces:  # a record with no face: recovery then copies the file back
            rec.output = native_info(decoded)
        _write(sidecar_path(dst), rec.to_json())
    if preview:
        _write(preview, encode_photo(draw_face_boxes(decoded, outcome.transforms, protector.size),
                                     os.path.splitext(preview)[1])[0])
    # counted only once everything is written: a failed write is no anonymized face
    s.warnings += notes
    s.faces_found += outcome.faces + outcome.too_small
    s.too_small += outcome.too_small
    s.faces_done += outcome.faces
    s.per_file.append((name, outcome.faces, 0))
    if outcome.faces == 0:
        s.no_faces.append(name)
    elif ext in LOSSY_EXTENSIONS and not opts.recover:
        s.warnings.append((name, "written as JPEG: recovery from it degrades (use a .png output or --lossless)"))


def _jpeg_kept(src: str, photo, opts: RunOptions):
    """(bytes, pixels) of the JPEG ``src`` without its metadata, when its coded data can be kept as it
    is (upright, a plain JPEG stream, decoding to exactly the pixels read); else None."""
    if photo.orientation != 1 or os.path.splitext(src)[1].lower() not in LOSSY_EXTENSIONS:
        return None
    with open(src, "rb") as f:
        data = jpeg_without_metadata(f.read())
    if data is None:
        return None
    try:
        decoded = decode_photo(data, src, opts.max_pixels).native
    except PhotoError:
        return None
    return (data, decoded) if np.array_equal(decoded, photo.native) else None


def run_video(protector: FaceProtector, src: str, dst: str, passwords, opts: RunOptions, s: Summary, name: str,
              preview: str | None = None) -> None:
    record = _find_record(src, None, opts.record) if opts.recover else None
    vopt = opts.video
    if opts.lossless:
        vopt = VideoOptions(**{**vopt.__dict__, "crf": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = protect_video(protector, src, dst, passwords, recover=opts.recover, record=record, options=vopt,
                                overwrite=opts.overwrite, preview=preview)
        except OSError as e:  # reading errors are VideoErrors; an OSError without a file name is a write
            if e.filename is not None or isinstance(e, (FileExistsError, FileNotFoundError)):
                raise
            raise OutputError(f"cannot write {dst} ({e.strerror or e})") from None
    for w in caught:
        if issubclass(w.category, TruncatedVideoWarning):
            s.warnings.append((name, str(w.message)))
    s.faces_found += out.tracks
    s.faces_done += out.tracks
    s.face_frames += out.face_frames
    s.too_small += out.too_small
    s.per_file.append((name, out.tracks, out.face_frames))
    if out.copied:
        s.no_faces.append(name)
    if out.approximate:
        s.warnings.append((name, "no record found: faces were detected again, so recovery is approximate"))
    if out.too_small:
        s.warnings.append((name, f"{out.too_small} detections smaller than {protector.detector.min_face:g} px left as "
                                 f"they are"))
    if not opts.recover and not out.copied and vopt.crf != 0:
        s.warnings.append((name, "lossy video: recovery will be close, not exact (--lossless for the closest)"))
    if opts.lossless and os.path.splitext(dst)[1].lower() == ".webm":
        s.warnings.append((name, "webm holds VP8/VP9, whose crf 0 is near-lossless, not lossless (write .mkv or .mp4)"))


def _message(e: Exception, path: str) -> str:
    """The failure of one file, naming the file that caused it (the input unless another is named)."""
    if isinstance(e, OSError) and not isinstance(e, OutputError) and e.strerror:
        where = e.filename if e.filename and os.fspath(e.filename) != path else None
        return f"{where}: {e.strerror}" if where else e.strerror
    msg = str(e)
    return msg[len(path) + 2:] if msg.startswith(path + ": ") else msg


def run(protector: FaceProtector, src: str, dst: str, passwords, opts: RunOptions,
        log: Callable[[str], None] = print, err: Callable[[str], None] | None = None) -> Summary:
    """Process every planned file. The summary goes to ``log`` (stdout), warnings and failures to
    ``err`` (stderr)."""
    jobs, skipped = plan_outputs(src, dst, opts)
    s = Summary(skipped=skipped)
    src_dir = os.path.isdir(src)
    bar = None
    if opts.progress and len(jobs) > 1:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="file", desc="files", dynamic_ncols=True, file=sys.stderr)
    for path, out, kind in jobs:
        name = os.path.relpath(path, src) if src_dir else path
        preview = preview_path(out, dst, src_dir, opts)
        try:
            if kind == "image":
                s.images += 1
                run_image(protector, path, out, passwords, opts, s, name, preview)
            else:
                s.videos += 1
                run_video(protector, path, out, passwords, opts, s, name, preview)
        except (PhotoError, VideoError, RecordError, FileExistsError, ValueError, OSError) as e:
            s.failed.append((name, _message(e, path)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    print_summary(s, opts.recover, log, err)
    return s


def print_summary(s: Summary, recover: bool, log: Callable[[str], None] = print,
                  err: Callable[[str], None] | None = None) -> None:
    err = err or (lambda line: print(line, file=sys.stderr))
    verb = "recovered" if recover else "anonymized"
    log(f"files: {s.files} ({s.images} photos, {s.videos} videos)")
    frames = f" ({s.face_frames} face-frames in videos)" if s.face_frames else ""
    small = f", {s.too_small} too small" if s.too_small else ""
    log(f"faces found: {s.faces_found}{small}; faces {verb}: {s.faces_done}{frames}")
    if s.per_file:
        log(f"faces {verb} per file:")
        for name, n, face_frames in s.per_file:
            log(f"  {name}: {n}" + (f" ({face_frames} face-frames)" if face_frames else ""))
    _listing(log, f"files without faces (written without metadata): {len(s.no_faces)}",
             [(n, "") for n in s.no_faces])
    if s.skipped or s.warnings or s.failed:
        log(f"skipped: {len(s.skipped)}, warnings: {len(s.warnings)}, failed: {len(s.failed)} (listed on stderr)")
    if s.no_faces and not recover:
        _listing(err, f"warning: no face found in {len(s.no_faces)} file(s); look at them: a face the detector "
                      f"missed is published as it is", [(n, "") for n in s.no_faces])
    _listing(err, f"skipped: {len(s.skipped)}", s.skipped)
    _listing(err, f"warnings: {len(s.warnings)}", s.warnings)
    _listing(err, f"failed: {len(s.failed)}", s.failed)


def _listing(log, title: str, items: list, limit: int = 20) -> None:
    if not items:
        return
    log(title)
    for name, why in items[:limit]:
        log(f"  {name}: {why}" if why else f"  {name}")
    if len(items) > limit:
        log(f"  ... and {len(items) - limit} more")
