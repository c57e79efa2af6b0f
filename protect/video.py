"""Anonymize and recover the faces of a video (mp4, mov, mkv, webm through PyAV).

Two passes over the file. Pass 1 decodes every frame and detects faces (on every ``detect_every``-th
frame; the detector may work on a downscaled copy, see DlibDetector's ``max_side``), then links the
detections into tracks (protect/track.py: interpolated gaps, held ends, smoothed points).
Pass 2 decodes again, cuts the crops of every track in a batch of frames, runs them through G
together, blends them back and encodes the frame. protect/video_io.py keeps the frame count, timing,
rotation and audio (copied packet by packet). Two passes decode twice, which is cheap next to G, and
let every gap be bridged with the detection that follows it.

Recovery with the record (``OUTPUT.record.json``: every track's transform in every frame) re-cuts
exactly the same crops; the record must match the file (SHA-256 of its bytes). Lossy encoding
changes the pixels that recovery starts from, so recovery is close, not exact: pass ``crf=0``
(x264's lossless mode; frames are still stored as 4:2:0) for the closest recovery.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import torch

from protect.frame import cut_crops, draw_face_boxes, paste_faces
from protect.protector import ApproximateRecoveryWarning, FacePasswords, FaceProtector, as_face_passwords
from protect.record import Record, file_sha256, sidecar_path
from protect.track import TrackPath, build_tracks
from protect.video_io import VIDEO_EXTENSIONS, VideoError, VideoReader, VideoWriter
from utils.fileio import atomic_open, atomic_write_text

STAGES = ("decode", "detect", "track", "transform", "generate", "blend", "encode")


@dataclass
class VideoOptions:
    """detect_every: run the detector on every N-th frame (tracks interpolate the rest; 2 halves the
    detector's share of the time).
    max_gap_s: longest detection gap (seconds) bridged inside one track. hold_s: how long a track's
    first/last position is held before/after it. smooth_s: landmark smoothing window (seconds).
    batch_frames: frames whose faces go through G together. crf: encoder quality (0: lossless x264)."""

    detect_every: int = 2
    max_gap_s: float = 1.0
    hold_s: float = 0.25
    smooth_s: float = 0.1
    batch_frames: int = 8
    crf: int | None = None
    progress: bool = True


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



def _timed(batches, timings: dict):
    """Yield the reader's frame batches, adding the time spent decoding each to timings['decode']."""
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        timings["decode"] += time.perf_counter() - t
        if batch is None:
            return
        yield batch

def _frames_of(seconds: float, fps: Fraction) -> int:
    return max(0, round(seconds * float(fps)))


def find_tracks(protector: FaceProtector, src: str, opt: VideoOptions,
                timings: dict) -> tuple[list[TrackPath], int, int, bool]:
    """Pass 1: (tracks, frames decoded, faces too small, truncated)."""
    if opt.detect_every < 1:
        raise ValueError("detect_every must be at least 1")
    detections, too_small = {}, 0
    with VideoReader(src) as reader:
        info = reader.info
        batches = reader.batches(opt.batch_frames, progress="find faces" if opt.progress else False)
        for batch in _timed(batches, timings):
            t = time.perf_counter()
            for i, image in enumerate(batch.images):
                index = batch.start + i
                if index % opt.detect_every == 0:
                    found = protector.detector.detect_all(image)
                    detections[index] = found.faces
                    too_small += len(found.too_small)
            timings["detect"] += time.perf_counter() - t
        n_frames, truncated = reader.frames_decoded, reader.truncated
    t = time.perf_counter()
    hold = max(_frames_of(opt.hold_s, info.fps), opt.detect_every - 1)
    max_gap = max(_frames_of(opt.max_gap_s, info.fps), opt.detect_every)
    smooth = max(1, _frames_of(opt.smooth_s, info.fps)) | 1
    tracks = build_tracks(detections, n_frames, max_gap=max_gap, hold=hold, smooth=smooth)
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
        batches = reader.batches(opt.batch_frames, progress=label)
        for batch in _timed(batches, timings):
            t = time.perf_counter()
            jobs = [by_frame.get(batch.start + i, []) for i in range(len(batch.images))]
            crops = [cut_crops(im, [m for _, m in job], protector.size) for im, job in zip(batch.images, jobs)]
            keys = [k for job in jobs for k, _ in job]
            timings["transform"] += time.perf_counter() - t
            t = time.perf_counter()
            if keys:
                gen = protector.generate(torch.cat(crops), [passwords.for_key(k) for k in keys], inverse)
            timings["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            out, at = batch.images, 0
            if keys:
                out = batch.images.copy()
                for i, job in enumerate(jobs):
                    if job:
                        out[i] = paste_faces(batch.images[i], gen[at:at + len(job)], [m for _, m in job],
                                             protector.mask)
                        at += len(job)
            crops_done += len(keys)
            timings["blend"] += time.perf_counter() - t
            t = time.perf_counter()
            writer.write_batch(out, batch.pts)
            if boxes is not None:
                boxes.write_batch(np.stack([draw_face_boxes(im, [m for _, m in job], protector.size)
                                            for im, job in zip(out, jobs)]), batch.pts)
            timings["encode"] += time.perf_counter() - t
        frames = reader.frames_decoded
        t = time.perf_counter()
    timings["encode"] += time.perf_counter() - t  # flushing the encoder happens on close
    return frames, crops_done


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
