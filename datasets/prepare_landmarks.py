"""Build a landmark file (CASIA/LFW format) for any folder of face images; used by prepare_data.py.

Output lines: ``RELATIVE_PATH [LABEL] x1 y1 ... x5 y5`` (five points in MTCNN order, pixels of the
stored image as PIL reads it), LABEL only with ``labels_from_subfolders``: the rank of the image's
top-level subfolder name in sorted order (CASIA's numbered identity folders sort like its labels).

Choices:
* One face per image: the LARGEST box. Face datasets are crops around their subject, which is then
  both the largest and the most central face; the largest is also right for an off-centre crop,
  and a background face is smaller. Faces below ``min_face`` px count as "no face" (reason given).
* Small images: if nothing is found at the detector's upsample 0 (faces from ~80 px), the image is
  tried once more at upsample 1 (faces from ~40 px), so thumbnails work without slowing big folders.
* Resuming: results are appended line by line to ``OUTPUT.partial`` and failures to
  ``NOFACE.partial``; a rerun skips every image recorded in either, then both are turned into the
  final files by atomic renames. Ctrl-C (or a kill) leaves exactly that resumable state.
* Skipped with a note, never failing the run: non-image files, names holding whitespace (the format
  is space-separated), images outside subfolders when labels come from subfolders. Names starting
  with a dot (files or folders) are ignored. Unreadable images go to the no-face list with the error.
* EXIF rotation is not applied: landmarks refer to the stored pixels, which is what the loaders read.
  Images carrying an EXIF rotation are counted in the summary, since their faces may lie sideways.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from protect.face_detect import DlibDetector, FaceDetector
from utils.fileio import atomic_write_text, is_image_path, unwritable, walk_files

_SYNC_EVERY = 100  # fsync the partial files every this many images


class PrepareError(RuntimeError):
    """A problem that stops the run before any image is processed; the message says what to do."""


@dataclass
class PrepareReport:
    output: str
    noface_list: str
    total_images: int = 0
    written: int = 0  # lines in the finished output
    resumed: int = 0  # images done by an earlier, interrupted run
    no_face: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run and earlier
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): not processed at all
    exif_rotated: int = 0
    interrupted: bool = False


def noface_path(output: str) -> str:
    return os.path.splitext(output)[0] + "_noface.txt"


def format_line(rel: str, label: int | None, points: np.ndarray) -> str:
    coords = " ".join(f"{v:.2f}".rstrip("0").rstrip(".") for v in np.asarray(points, np.float64).reshape(-1))
    return f"{rel} {coords}" if label is None else f"{rel} {label} {coords}"


def scan_folder(folder: str, labels_from_subfolders: bool, exclude: set[str] = frozenset()):
    """Sorted relative image paths, their labels (or None), and the skipped files with reasons."""
    images, skipped = [], []
    for full, rel in walk_files(folder):
        if os.path.basename(full).startswith(".") or os.path.abspath(full) in exclude:
            continue
        rel = rel.replace(os.sep, "/")
        if not is_image_path(rel):
            skipped.append((rel, "not an image file"))
        elif any(ch.isspace() for ch in rel):
            skipped.append((rel, "name contains whitespace (the landmark format is space-separated); rename it"))
        elif labels_from_subfolders and "/" not in rel:
            skipped.append((rel, "not inside a subfolder, so it has no label"))
        else:
            images.append(rel)
    images.sort()
    labels = None
    if labels_from_subfolders:
        top = sorted({rel.split("/", 1)[0] for rel in images})
        rank = {name: i for i, name in enumerate(top)}
        labels = {rel: rank[rel.split("/", 1)[0]] for rel in images}
    return images, labels, skipped


def _read_partial(path: str, n_fields: tuple[int, ...]) -> dict[str, str]:
    """Lines of a partial file keyed by image path. An unfinished last line (the process died while
    writing it) is cut off so appending can go on."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        os.truncate(path, keep)
        data = data[:keep]
    done: dict[str, str] = {}
    for no, raw in enumerate(data.decode("utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        fields = raw.split(" ")
        if n_fields and len(fields) not in n_fields:
            raise PrepareError(f"{path} line {no}: expected {' or '.join(map(str, n_fields))} fields, got "
                               f"{len(fields)}; it was written with other options (e.g. --labels-from-subfolders). "
                               f"Rerun with the same options, or delete it to start over")
        done.setdefault(fields[0], raw)
    return done


def _load_rgb(path: str) -> tuple[np.ndarray, int]:
    """(HxWx3 uint8 RGB of the stored pixels, EXIF orientation or 1). Raises on unreadable files."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(rgb), int(orientation or 1)


def _detect(detector: FaceDetector, retry: FaceDetector | None, image: np.ndarray):
    found = detector.detect_all(image)
    if not found.faces and retry is not None and max(image.shape[:2]) <= 1024:
        found = retry.detect_all(image)
    return found


def make_detector(model: str = "hog", min_face: float = 32.0) -> tuple[FaceDetector, FaceDetector]:
    """The detector prepare uses, and the upsampled one it retries small images with."""
    return (DlibDetector(model, upsample=0, min_face=min_face, max_side=1024),
            DlibDetector(model, upsample=1, min_face=min_face, max_side=1024))


def prepare_landmarks(folder: str, output: str, *, labels_from_subfolders: bool = False,
                      detector: FaceDetector | None = None, retry_detector: FaceDetector | None = None,
                      overwrite: bool = False, progress: bool = True,
                      log: Callable[[str], None] = print) -> PrepareReport:
    """Write ``output`` (and its ``_noface.txt`` list) for the images under ``folder``; resumes
    from ``output.partial`` if an earlier run was interrupted. See the module docstring."""
    folder, output = os.path.abspath(folder), os.path.abspath(output)
    if not os.path.isdir(folder):
        raise PrepareError(f"image folder not found: {folder}")
    if os.path.exists(output) and not overwrite:
        raise PrepareError(f"{output} already exists; pass --overwrite to replace it")
    why = unwritable(os.path.dirname(output))
    if why:
        raise PrepareError(f"cannot write {output}: {why}")
    if detector is None:
        detector, retry_detector = make_detector()
    noface = noface_path(output)
    part, noface_part = output + ".partial", noface + ".partial"
    report = PrepareReport(output=output, noface_list=noface)

    images, labels, skipped = scan_folder(folder, labels_from_subfolders,
                                          exclude={output, noface, part, noface_part})
    report.total_images, report.skipped = len(images), skipped
    done, failed = _resume(folder, images, labels, part, noface_part, report, log)
    todo = [rel for rel in images if rel not in done and rel not in failed]
    new_done, new_failed = _detect_all(folder, todo, labels, detector, retry_detector, part, noface_part, report,
                                       progress)
    all_done = {**done, **new_done}
    all_failed = {**failed, **new_failed}
    report.no_face = [(rel, all_failed[rel].split(" ", 1)[1]) for rel in images
                      if rel in all_failed and rel not in all_done]
    if report.interrupted:
        log(f"\ninterrupted: {len(all_done) + len(all_failed)} of {len(images)} images done, kept in {part}; "
            f"run the same command again to resume")
        return report
    _finish(report, [all_done[rel] for rel in images if rel in all_done], part, noface_part, log)
    return report


def _resume(folder: str, images: list[str], labels: dict | None, part: str, noface_part: str,
            report: PrepareReport, log: Callable[[str], None]) -> tuple[dict[str, str], dict[str, str]]:
    """The lines (done) and failures of an interrupted run, keyed by image; refuses them when the
    labels changed since. Sets ``report.resumed``."""
    present = set(images)
    done = _read_partial(part, (11,) if labels is None else (12,))
    failed = _read_partial(noface_part, ())
    for rel, line in done.items():
        if labels is not None and rel in labels and line.split(" ")[1] != str(labels[rel]):
            raise PrepareError(f"{part}: {rel} has label {line.split(' ')[1]} but its folder now gets "
                               f"{labels[rel]} (subfolders changed since the interrupted run); delete "
                               f"{part} and {noface_part} to start over")
    gone = [rel for rel in list(done) + list(failed) if rel not in present]
    if gone:
        log(f"note: {len(gone)} images recorded by the interrupted run are no longer in {folder}; dropped")
    report.resumed = sum(rel in present for rel in set(done) | set(failed))
    if report.resumed:
        log(f"resuming: {report.resumed} of {len(images)} images already done ({part})")
    return done, failed


def _landmarks_of(path: str, rel: str, label: int | None, detector: FaceDetector,
                  retry: FaceDetector | None) -> tuple[str | None, str, int]:
    """(the landmark line or None, why there is none, EXIF orientation) of one image."""
    try:
        image, orientation = _load_rgb(path)
    except Exception as e:  # noqa: BLE001 -- any decoder error means "unreadable", and the run goes on
        return None, f"unreadable image: {type(e).__name__}: {e}".replace("\n", " "), 1
    found = _detect(detector, retry, image)
    if found.faces:
        return format_line(rel, label, found.faces[0].points), "", orientation
    if found.too_small:
        return None, (f"only faces smaller than {detector.min_face:g} px "
                      f"(largest {found.too_small[0].size:.0f} px)"), orientation
    return None, "no face found" + (f" (EXIF orientation {orientation}: stored rotated)"
                                    if orientation != 1 else ""), orientation


def _detect_all(folder: str, todo: list[str], labels: dict | None, detector: FaceDetector,
                retry: FaceDetector | None, part: str, noface_part: str, report: PrepareReport,
                progress: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Detect the faces of ``todo``, appending each result to the partial files as it comes (so an
    interruption loses nothing). Returns this run's lines and failures; sets ``report.exif_rotated``
    and, on Ctrl-C, ``report.interrupted``."""
    exif_rotated = 0
    new_done, new_failed = {}, {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="img", desc="landmarks", dynamic_ncols=True, file=sys.stderr)
    try:
        with open(part, "a", encoding="utf-8") as fdone, open(noface_part, "a", encoding="utf-8") as ffail:
            for i, rel in enumerate(todo):
                line, reason, orientation = _landmarks_of(os.path.join(folder, rel), rel,
                                                          labels[rel] if labels else None, detector, retry)
                exif_rotated += orientation != 1
                if line is not None:
                    fdone.write(line + "\n")
                    fdone.flush()
                    new_done[rel] = line
                else:
                    ffail.write(f"{rel} {reason}\n")
                    ffail.flush()
                    new_failed[rel] = f"{rel} {reason}"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(faces=len(new_done), no_face=len(new_failed), refresh=False)
                if (i + 1) % _SYNC_EVERY == 0:
                    os.fsync(fdone.fileno())
                    os.fsync(ffail.fileno())
            os.fsync(fdone.fileno())
            os.fsync(ffail.fileno())
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    report.exif_rotated = exif_rotated
    return new_done, new_failed


def _finish(report: PrepareReport, lines: list[str], part: str, noface_part: str,
            log: Callable[[str], None]) -> None:
    """Write the final output and no-face list atomically, remove the partial files, summarize."""
    atomic_write_text(report.noface_list, "".join(f"{rel} {why}\n" for rel, why in report.no_face))
    atomic_write_text(report.output, "".join(line + "\n" for line in lines))
    for p in (part, noface_part):
        os.remove(p)
    report.written = len(lines)
    _summarize(report, log)
    if not lines:
        log(f"warning: no image had a usable face, so {report.output} is empty")


def _list(log: Callable[[str], None], header: str, items: list, shown: int = 10) -> None:
    """A header, then the first ``shown`` (path, reason) pairs and how many more there are."""
    log(header)
    for rel, why in items[:shown]:
        log(f"  {rel}: {why}")
    if len(items) > shown:
        log(f"  ... and {len(items) - shown} more")


def _summarize(r: PrepareReport, log: Callable[[str], None]) -> None:
    log(f"wrote {r.output}: {r.written} of {r.total_images} images with landmarks"
        + (f" ({r.resumed} done by the earlier run)" if r.resumed else ""))
    if r.no_face:
        _list(log, f"no landmarks for {len(r.no_face)} images (list: {r.noface_list}):", r.no_face)
    if r.skipped:
        _list(log, f"skipped {len(r.skipped)} files:", r.skipped)
    if r.exif_rotated:
        log(f"note: {r.exif_rotated} images carry an EXIF rotation; landmarks refer to their stored pixels")
