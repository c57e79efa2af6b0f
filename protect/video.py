"""Anonymize and recover the faces of a video (mp4, mov, mkv, webm through PyAV).

Two passes over the file. Pass 1 decodes every frame and detects faces (on every ``detect_every``-th
frame; the detector may work on a downscaled copy, see DlibDetector's ``max_side``), then links the
detections into tracks (protect/track.py: interpolated gaps, held ends, smoothed points).
Pass 2 decodes again, cuts the crops of every track in a batch of frames, runs them through G
together, blends them back and encodes the frame; an 8-bit 4:2:0 video (most videos) stays in YUV
through pass 2, only the faces converted (protect/yuv.py). protect/video_io.py keeps the frame
count, timing, rotation and audio (copied packet by packet). Two passes decode twice, which is cheap
next to G, and let every gap be bridged with the detection that follows it.

Recovery with the record (``OUTPUT.record.json``: every track's transform in every frame) re-cuts
exactly the same crops; the record must match the file (SHA-256 of its bytes). Lossy encoding
changes the pixels that recovery starts from, so recovery is close, not exact: pass ``crf=0``
(x264's lossless mode; frames are still stored as 4:2:0) for the closest recovery.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import torch

from protect.face_detect import box_iou, suppress_overlaps
from protect.frame import cut_crops, draw_face_boxes, paste_faces
from protect.pipeline import Ordered, one_thread, prefetch, worker_pool
from protect.protector import ApproximateRecoveryWarning, FacePasswords, FaceProtector, as_face_passwords
from protect.record import Record, file_sha256, sidecar_path
from protect.track import Tracker, TrackPath, match_score
from protect.video_io import VIDEO_EXTENSIONS, VideoError, VideoReader, VideoWriter
from protect.yuv import YuvImage
from utils.fileio import atomic_open, atomic_write_text

STAGES = ("decode", "detect", "track", "transform", "generate", "blend", "encode")
# Pass 1: whole-frame searches run on SEARCH_WORKERS threads, the decoder up to SEARCH_AHEAD searches
# ahead of the tracking (a search costs about three times the refining of the frames between two);
# the crops of one frame's tracked faces are looked at on REFINE_WORKERS threads, side by side.
SEARCH_WORKERS = 2
SEARCH_AHEAD = 3
REFINE_WORKERS = 2


@dataclass
class VideoOptions:
    """detect_every: run the detector on every N-th frame (tracks interpolate the rest; 2 halves the
    detector's share of the time).
    search_every: with a detector that finds a face again on a crop (YuNet: ``can_refine``), look
    for faces over the whole frame only on every N-th frame (rounded up to a multiple of
    detect_every); on the detection frames in between, each live track's face is found again on a
    crop around where the track expects it, and a face that a search finds is looked for the same
    way in the detection frames since the previous search. Other detectors search every detection
    frame.
    max_gap_s: longest detection gap (seconds) bridged inside one track. hold_s: how long a track's
    first/last position is held before/after it. smooth_s: landmark smoothing window (seconds).
    batch_frames: frames whose faces go through G together. crf: encoder quality (0: lossless x264).
    threads: decode, detect or generate, and encode on separate threads (protect/pipeline.py); the
    output is the same either way."""

    detect_every: int = 2
    search_every: int = 8
    max_gap_s: float = 1.0
    hold_s: float = 0.25
    smooth_s: float = 0.1
    batch_frames: int = 8
    crf: int | None = None
    progress: bool = True
    threads: bool = True


@dataclass
class VideoOutcome:
    frames: int
    tracks: int
    face_frames: int  # crops processed (faces x frames)
    too_small: int = 0  # detections below the detector's min_face
    approximate: bool = False
    truncated: bool = False
    copied: bool = False  # no face: the packets were copied, without the tags (remux_clean)
    record: Record | None = None
    timings: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


def _frames_of(seconds: float, fps: Fraction) -> int:
    return max(0, round(seconds * float(fps)))


def _progress(label, total):
    if not label:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="frame", dynamic_ncols=True)


def _decoded(reader: VideoReader, wanted, busy: list, yuv: bool = False):
    """The reader's frames (pixels only where ``wanted``; YuvImage with ``yuv``), the decoding time
    added to ``busy[0]``."""
    frames = reader.frames(wanted, yuv)
    while True:
        t = time.perf_counter()
        fr = next(frames, None)
        busy[0] += time.perf_counter() - t
        if fr is None:
            return
        yield fr


def _inside_others(faces: list) -> list:
    """A face whose box lies more than half inside a better-scoring face's box, and is more than half
    as tall as it, is a part of that face: crops from two boxes may each find a part of one face,
    which overlap too little for the IoU test. (A small face inside a large one's box is kept.)"""
    kept = []
    for f in sorted(faces, key=lambda f: -f.score):
        l, t, r, b = f.box
        area = max(r - l, 0.0) * max(b - t, 0.0)
        inside = False
        for k in kept:
            iw = min(r, k.box[2]) - max(l, k.box[0])
            ih = min(b, k.box[3]) - max(t, k.box[1])
            if iw > 0 and ih > 0 and iw * ih > 0.5 * area and b - t > 0.5 * (k.box[3] - k.box[1]):
                inside = True
                break
        if not inside:
            kept.append(f)
    return kept


class _TimedPool:
    """An executor's ``map`` that adds up the seconds its calls took (thread-seconds, as the other
    stages are counted)."""

    def __init__(self, pool):
        self.pool, self.spent = pool, []

    def map(self, fn, items):
        def timed(item):
            t = time.perf_counter()
            try:
                return fn(item)
            finally:
                self.spent.append(time.perf_counter() - t)
        return self.pool.map(timed, items)

    def take(self) -> float:
        spent, self.spent = self.spent, []
        return sum(spent)


class _Finder:
    """Pass 1 with a detector that refines on crops: whole-frame searches on every ``search_every``-th
    frame, crops around the expected faces on the detection frames in between (VideoOptions)."""

    def __init__(self, detector, tracker: Tracker, timings: dict, pool=None):
        self.detector, self.tracker, self.timings = detector, tracker, timings
        self.pool = _TimedPool(pool) if pool is not None else None
        self.too_small = 0

    def _refine(self, image, boxes) -> list:
        if not boxes:
            return []
        if self.pool is None:
            t = time.perf_counter()
            faces = self.detector.refine(image, boxes)
            self.timings["detect"] += time.perf_counter() - t
            return faces
        faces = self.detector.refine(image, boxes, pool=self.pool)
        self.timings["detect"] += self.pool.take()
        return faces

    def interval(self, pending: list, proposals: list) -> None:
        """The detection frames since the last search, the last of them searched (``proposals``).

        A proposal that no track expects is a face the search found first: it is followed
        backwards from the searched frame through the frames of the interval, each step on a crop
        around where it was last found (so a face that walks in is found where it was, not where
        the search saw it), to the first frame of the interval. Then every frame, in order: the tracks' faces
        on crops around where each track expects it, with the faces followed backwards."""
        det, tracker = self.detector, self.tracker
        last_index = pending[-1][0]
        expected = [box for _, box in tracker.expected(last_index)]
        new = [p.box for p in proposals
               if not any(match_score(e, np.asarray(p.box, np.float64)) is not None for e in expected)]
        earlier: dict[int, list] = {}
        for index, image in reversed(pending):
            if not new:
                break
            found = self._refine(image, new)
            earlier[index] = found
            # each proposal moves to where it was found here; one not found here (a face that a
            # crop misses now and then, or one not in the picture yet) is looked for further back
            # where it was last seen
            new = [next((f.box for f in found if box_iou(f.box, box) > 0.2), box) for box in new]
        for index, image in pending:
            faces = self._refine(image, [box for _, box in tracker.expected(index)]) + earlier.get(index, [])
            faces = _inside_others(suppress_overlaps(faces, det.nms_iou))
            big = [f for f in faces if f.size >= det.min_face]
            self.too_small += len(faces) - len(big)
            tracker.add(index, big)


def follow_faces(detector, frames, fps: Fraction, opt: VideoOptions, timings: dict,
                 total: int | None = None) -> tuple[Tracker, int, int]:
    """Pass 1 on ``frames`` (Frames in order; only the detection frames need their pixels):
    detection and tracking (VideoOptions), returning (the tracker, frames seen, faces too small)."""
    if opt.detect_every < 1:
        raise ValueError("detect_every must be at least 1")
    det = detector
    every = opt.detect_every
    crops = bool(getattr(det, "can_refine", False))
    search_every = max(every, -(-max(opt.search_every, 1) // every) * every) if crops else every
    hold = max(_frames_of(opt.hold_s, fps), every - 1)
    max_gap = max(_frames_of(opt.max_gap_s, fps), every)
    smooth = max(1, _frames_of(opt.smooth_s, fps)) | 1
    tracker = Tracker(max_gap=max_gap, hold=hold, smooth=smooth)
    seen, too_small = 0, 0
    with contextlib.ExitStack() as stack:
        bar = _progress("find faces" if opt.progress else False, total)
        if bar is not None:
            stack.callback(bar.close)
        # Searches run on workers of their own, started as soon as the decoder has the frame (the
        # decoder runs up to SEARCH_AHEAD searches ahead); the main thread tracks, each frame's crops
        # refined on the refining workers.
        pool = stack.enter_context(worker_pool(SEARCH_WORKERS)) if opt.threads and crops else None
        finder = _Finder(det, tracker, timings, stack.enter_context(worker_pool(REFINE_WORKERS)) if pool else None)
        search_time, search_lock = [0.0], threading.Lock()

        def search(image):
            t = time.perf_counter()
            try:
                return det.search(image)
            finally:  # searches run on several workers at once
                with search_lock:
                    search_time[0] += time.perf_counter() - t

        def items():
            # A detection frame that is not searched is held back (with the frames after it) until the
            # next detection frame comes. If none comes, it is the video's last: the frames since the
            # last search need its search, which then starts on a worker as soon as the decoder
            # reaches the end, not when the main thread does.
            held = []
            for fr in frames:
                detecting = pool is not None and fr.image is not None and fr.index % every == 0
                if held and detecting:
                    yield from held
                    held = []
                job = pool.submit(search, fr.image) if detecting and fr.index % search_every == 0 else None
                if held or (detecting and job is None):
                    held.append((fr, job))
                else:
                    yield fr, job
            if held:
                held[0] = (held[0][0], pool.submit(search, held[0][0].image))
                yield from held

        source = items()
        if opt.threads:
            source = stack.enter_context(contextlib.closing(prefetch(source, depth=SEARCH_AHEAD * search_every)))
        pending, last_job = [], None
        with one_thread() if opt.threads else contextlib.nullcontext():
            for fr, job in source:
                seen += 1
                if bar is not None:
                    bar.update(1)
                if fr.image is None or fr.index % every:
                    continue
                if not crops:
                    t = time.perf_counter()
                    found = det.detect_all(fr.image)
                    timings["detect"] += time.perf_counter() - t
                    tracker.add(fr.index, found.faces)
                    too_small += len(found.too_small)
                    continue
                pending.append((fr.index, fr.image))
                last_job = job
                if fr.index % search_every == 0:
                    finder.interval(pending, job.result() if job is not None else search(fr.image))
                    pending = []
            if pending:  # the frames after the last search: search the last of them (started by items())
                finder.interval(pending, last_job.result() if last_job is not None else search(pending[-1][1]))
    timings["detect"] += search_time[0]
    return tracker, seen, too_small + finder.too_small


def find_tracks(protector: FaceProtector, src: str, opt: VideoOptions,
                timings: dict) -> tuple[list[TrackPath], int, int, bool]:
    """Pass 1: (tracks, frames decoded, faces too small, truncated)."""
    if opt.detect_every < 1:
        raise ValueError("detect_every must be at least 1")
    every = opt.detect_every
    with VideoReader(src) as reader:
        busy = [0.0]
        frames = _decoded(reader, lambda i: i % every == 0, busy)
        tracker, _, too_small = follow_faces(protector.detector, frames, reader.info.fps, opt, timings,
                                             reader.info.frame_count)
        timings["decode"] += busy[0]
        n_frames, truncated = reader.frames_decoded, reader.truncated
    t = time.perf_counter()
    tracks = tracker.paths(n_frames)
    timings["track"] += time.perf_counter() - t
    return tracks, n_frames, too_small, truncated


@dataclass(frozen=True)
class VideoFiles:
    """The files of pass 2: read ``src``, write ``dst`` and, with ``preview``, the frames with a box
    around every processed face (no audio)."""

    src: str
    dst: str
    preview: str | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class FacePlan:
    """What pass 2 does to the faces: tracks are (key, first_frame, transforms (F, 2, 3)), each face
    run through G with its key's password, or its complement when ``inverse`` (recovery)."""

    tracks: list[tuple[int, int, np.ndarray]]
    passwords: FacePasswords
    inverse: bool = False


def _batches(reader: VideoReader, size: int, busy: list, yuv: bool):
    """Lists of ``size`` frames (the last may be shorter): frames are not copied into one array."""
    buf = []
    for fr in _decoded(reader, None, busy, yuv):
        buf.append(fr)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def _faces_of_batch(protector: FaceProtector, frames: list, jobs: list, passwords: FacePasswords,
                    inverse: bool) -> tuple[list, dict]:
    """Cut, generate and paste back the faces of a batch of frames, in place. Each frame's result
    depends on that frame alone (G in eval mode is batch independent, models/networks.py)."""
    spent = dict.fromkeys(("transform", "generate", "blend"), 0.0)
    t = time.perf_counter()
    crops = [cut_crops(fr.image, [m for _, m in job], protector.size) for fr, job in zip(frames, jobs)]
    keys = [k for job in jobs for k, _ in job]
    spent["transform"] += time.perf_counter() - t
    if keys:
        t = time.perf_counter()
        gen = protector.generate(torch.cat(crops), [passwords.for_key(k) for k in keys], inverse)
        spent["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        at = 0
        for fr, job in zip(frames, jobs):
            if job:
                crops, transforms = gen[at:at + len(job)], [m for _, m in job]
                if isinstance(fr.image, YuvImage):
                    fr.image.paste_faces(crops, transforms, protector.mask)
                else:
                    paste_faces(fr.image, crops, transforms, protector.mask, inplace=True)
                at += len(job)
        spent["blend"] += time.perf_counter() - t
    return frames, spent


def _workers(protector: FaceProtector) -> int:
    """Generator workers: one per core on the CPU (each computes on one thread), one on a GPU."""
    if protector.model.device.type != "cpu":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def render(protector: FaceProtector, files: VideoFiles, plan: FacePlan, opt: VideoOptions,
           timings: dict) -> tuple[int, int]:
    """Pass 2. Returns (frames, crops)."""
    src, dst, preview, overwrite = files.src, files.dst, files.preview, files.overwrite
    passwords, inverse = plan.passwords, plan.inverse
    by_frame: dict[int, list[tuple[int, np.ndarray]]] = {}
    for key, first, transforms in plan.tracks:
        for i, m in enumerate(transforms):
            by_frame.setdefault(first + i, []).append((key, m))
    crops_done = 0
    label = ("recover" if inverse else "anonymize") if opt.progress else False
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(VideoReader(src))
        writer = stack.enter_context(VideoWriter(dst, reader.info, overwrite=overwrite, crf=opt.crf))
        boxes = stack.enter_context(VideoWriter(preview, reader.info, overwrite=overwrite, copy_audio=False)) \
            if preview else None
        bar = _progress(label, reader.info.frame_count)
        if bar is not None:
            stack.callback(bar.close)
        busy = [0.0]
        # 8-bit 4:2:0 in and out (most videos): frames stay in YUV, only the faces are converted
        # (protect/yuv.py); otherwise RGB
        yuv = writer.takes_yuv(reader.yuv420)
        batches = _batches(reader, opt.batch_frames, busy, yuv)
        pool = None
        if opt.threads:
            batches = stack.enter_context(contextlib.closing(prefetch(batches, depth=2)))
            pool = stack.enter_context(Ordered(_workers(protector)))

        def write(done) -> None:
            nonlocal crops_done
            frames, spent = done
            for k, v in spent.items():
                timings[k] += v
            t = time.perf_counter()
            for fr in frames:
                writer.write(fr.image, fr.pts)
                if boxes is not None:
                    job = by_frame.get(fr.index, [])
                    rgb = fr.image.to_rgb() if isinstance(fr.image, YuvImage) else fr.image
                    boxes.write(draw_face_boxes(rgb, [m for _, m in job], protector.size), fr.pts)
                crops_done += len(by_frame.get(fr.index, []))
            timings["encode"] += time.perf_counter() - t
            if bar is not None:
                bar.update(len(frames))

        for frames in batches:
            jobs = [by_frame.get(fr.index, []) for fr in frames]
            if pool is None:
                write(_faces_of_batch(protector, frames, jobs, passwords, inverse))
            else:
                for done in pool.submit(_faces_of_batch, protector, frames, jobs, passwords, inverse):
                    write(done)
        if pool is not None:
            for done in pool.drain():
                write(done)
        frames_decoded = reader.frames_decoded
        timings["decode"] += busy[0]
        t = time.perf_counter()
    timings["encode"] += time.perf_counter() - t  # flushing the encoder happens on close
    return frames_decoded, crops_done


def remux_clean(src: str, dst: str, overwrite: bool) -> None:
    """Copy a video's video and audio packets into a new file (nothing re-encoded), leaving out every
    container and stream tag (creation time, GPS location, device) and subtitle/data streams. The
    display matrix is part of the stream parameters and is kept."""
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists; choose another name or allow overwriting")
    fmt = VIDEO_EXTENSIONS.get(os.path.splitext(dst)[1].lower())
    if fmt is None:
        raise VideoError(f"{dst}: unsupported output type; use one of {', '.join(sorted(VIDEO_EXTENSIONS))}")
    try:
        with av.open(src) as fin, atomic_open(dst, "wb") as f, av.open(f, "w", format=fmt) as fout:
            streams = {s.index: fout.add_stream_from_template(s) for s in fin.streams if s.type in ("video", "audio")}
            for s in fin.streams:
                if s.index in streams and "language" in s.metadata:  # players pick audio tracks by it
                    streams[s.index].metadata["language"] = s.metadata["language"]
            for packet in fin.demux(*[s for s in fin.streams if s.index in streams]):
                if packet.dts is None:  # the demuxer's flush packets
                    continue
                packet.stream = streams[packet.stream.index]
                fout.mux(packet)
    except av.FFmpegError as e:
        raise VideoError(f"{src}: could not copy it into {dst} ({e.strerror or e})") from None


def protect_video(protector: FaceProtector, src: str, dst: str, password, *, recover: bool = False,
                  record: Record | None = None, options: VideoOptions | None = None,
                  overwrite: bool = False, preview: str | None = None) -> VideoOutcome:
    """Anonymize ``src`` into ``dst`` (and its sidecar record), or recover it (with its record, or
    approximately without one). A video without faces is copied packet by packet, without its tags
    (``remux_clean``). ``preview``: also write the output with a box around every processed face."""
    opt = options or VideoOptions()
    src, dst = os.fspath(src), os.fspath(dst)
    passwords = as_face_passwords(password, protector.passwd_length)
    side = sidecar_path(dst)
    if not recover and os.path.exists(side) and not overwrite:
        raise FileExistsError(f"{side} exists; choose another name or allow overwriting")
    timings = dict.fromkeys(STAGES, 0.0)
    too_small, truncated, approximate = 0, False, False
    if recover and record is not None:
        with VideoReader(src) as r:
            width, height = r.info.width, r.info.height
        protector = protector.for_recovery(record, "video", digest=file_sha256(src), scope=passwords.scope, width=width,
                             height=height, src=src)
        passwords = passwords.derived_by(record.kdf)
        plan = [(t["key"], t["first_frame"], np.asarray(t["transforms"], np.float64).reshape(-1, 2, 3))
                for t in record.tracks]
        n_tracks, n_frames = len(plan), int(record.output.get("frames", 0))
    else:
        paths, n_frames, too_small, truncated = find_tracks(protector, src, opt, timings)
        t = time.perf_counter()
        plan = [(p.key, p.first_frame, np.stack([protector.transform(q) for q in p.points])) for p in paths]
        timings["transform"] += time.perf_counter() - t
        n_tracks = len(paths)
        if recover:
            warnings.warn(f"{src}: no record: faces were detected again, so recovery is approximate",
                          ApproximateRecoveryWarning, stacklevel=2)
            approximate = True
    if plan:
        frames, crops = render(protector, VideoFiles(src, dst, preview, overwrite),
                               FacePlan(plan, passwords, recover), opt, timings)
    else:  # no face: the packets are copied without the tags (its record, with no track, says so)
        remux_clean(src, dst, overwrite)
        if preview:
            remux_clean(dst, preview, overwrite)
        frames, crops = n_frames, 0
    rec = None
    if not recover:
        with VideoReader(dst) as r:
            info = r.info
        rec = protector.record("video", passwords.scope, protector.detector_info() | {"detect_every": opt.detect_every})
        rec.tracks = [{"key": key, "first_frame": first, "transforms": [[float(v) for v in m.reshape(-1)] for m in tf],
                       "detected": p.detected} for (key, first, tf), p in zip(plan, paths)]
        rec.output = {"width": info.width, "height": info.height, "frames": frames, "fps": str(info.fps),
                      "sha256": file_sha256(dst)}
        atomic_write_text(side, rec.to_json())
    return VideoOutcome(frames, n_tracks, crops, too_small, approximate, truncated, copied=not plan, record=rec,
                        timings=timings)
