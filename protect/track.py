"""Face tracks through a video: one identity per person, and no unprotected frame inside a track.

``build_tracks`` links the detections of successive frames into tracks and turns each track into a
path: five points for every frame from shortly before its first detection to shortly after its last.

* Linking: a detection joins the track whose last box, moved by the track's recent velocity, it
  overlaps most (IoU >= 0.2, or centres closer than half a face), if that track was last seen at most
  ``max_gap`` frames ago; otherwise it starts a new track. Greedy, best pairs first.
* Gaps: between two detections of a track (at most ``max_gap`` frames apart) the five points are
  interpolated linearly, so no frame between two detections shows the face unprotected.
* Ends: the first and last positions are held for ``hold`` frames before and after (a face is
  usually visible a little before the detector finds it and after it loses it).
* Jitter: detected points are smoothed with a centred moving average over ``smooth`` frames, so the
  generated face does not shake with the landmark noise.

Each track keeps one key (its id, in order of first appearance): with one password per face its
code derives from that key, so each person keeps one consistent anonymized face through the track.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protect.face_detect import DetectedFace


@dataclass
class TrackPath:
    key: int
    first_frame: int
    points: np.ndarray  # (F, 5, 2) float64: frames first_frame .. first_frame + F - 1
    detected: list = field(default_factory=list)  # frame indices with a detection

    @property
    def last_frame(self) -> int:
        return self.first_frame + len(self.points) - 1

    def at(self, frame: int) -> np.ndarray | None:
        i = frame - self.first_frame
        return self.points[i] if 0 <= i < len(self.points) else None


@dataclass
class _Track:
    key: int
    frames: list = field(default_factory=list)
    points: list = field(default_factory=list)
    boxes: list = field(default_factory=list)

    def predicted_box(self, frame: int) -> np.ndarray:
        box = np.asarray(self.boxes[-1], np.float64)
        if len(self.frames) >= 2:
            dt = self.frames[-1] - self.frames[-2]
            v = (box - np.asarray(self.boxes[-2], np.float64)) / max(dt, 1)
            box = box + v * (frame - self.frames[-1])
        return box


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_score(track_box: np.ndarray, box: np.ndarray) -> float | None:
    iou = _iou(track_box, box)
    size = 0.5 * ((track_box[2] - track_box[0]) + (box[2] - box[0]))
    dist = np.hypot(*(((track_box[:2] + track_box[2:]) - (box[:2] + box[2:])) / 2))
    if iou >= 0.2 or dist <= 0.5 * size:
        return iou - dist / max(size, 1e-6) * 1e-3  # IoU first, distance breaks ties
    return None


class Tracker:
    """``build_tracks`` one detection frame at a time, so that a detector can look for the live
    tracks' faces where they are expected (``expected``) before the frame is added. Frames must be
    added in increasing order; ``paths`` gives the same tracks as ``build_tracks`` on the same
    detections."""

    def __init__(self, *, max_gap: int, hold: int, smooth: int = 1):
        self.max_gap, self.hold, self.smooth = max_gap, hold, smooth
        self._live: list[_Track] = []
        self._done: list[_Track] = []
        self._next_key = 0
        self._last_frame: int | None = None

    def _retire(self, frame: int) -> None:
        for t in [t for t in self._live if frame - t.frames[-1] > self.max_gap]:
            self._live.remove(t)
            self._done.append(t)

    def expected(self, frame: int) -> list[tuple[int, np.ndarray]]:
        """(key, predicted box) of every track that a detection at ``frame`` could still join."""
        return [(t.key, t.predicted_box(frame)) for t in self._live if frame - t.frames[-1] <= self.max_gap]

    def add(self, frame: int, faces: list[DetectedFace]) -> None:
        if self._last_frame is not None and frame <= self._last_frame:
            raise ValueError(f"frames must be added in increasing order ({frame} after {self._last_frame})")
        self._last_frame = frame
        self._retire(frame)
        live = self._live
        pairs = []
        for ti, t in enumerate(live):
            pred = t.predicted_box(frame)
            for fi, f in enumerate(faces):
                s = match_score(pred, np.asarray(f.box, np.float64))
                if s is not None:
                    pairs.append((s, ti, fi))
        used_t, used_f = set(), set()
        for _, ti, fi in sorted(pairs, reverse=True):
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            _add(live[ti], frame, faces[fi])
        for fi, f in enumerate(faces):
            if fi not in used_f:
                t = _Track(self._next_key)
                self._next_key += 1
                _add(t, frame, f)
                live.append(t)

    def detections(self) -> dict[int, list[tuple[int, tuple, np.ndarray]]]:
        """Frame index -> (key, box, five points) of every detection added so far."""
        out: dict[int, list] = {}
        for t in self._done + self._live:
            for frame, box, pts in zip(t.frames, t.boxes, t.points):
                out.setdefault(frame, []).append((t.key, box, pts))
        return out

    def paths(self, n_frames: int) -> list[TrackPath]:
        tracks = sorted(self._done + self._live, key=lambda t: t.key)
        return [_path(t, n_frames, self.hold, self.smooth) for t in tracks]


def build_tracks(detections: dict[int, list[DetectedFace]], n_frames: int, *, max_gap: int, hold: int,
                 smooth: int = 1) -> list[TrackPath]:
    """Tracks from per-frame detections (frame index -> faces; frames without an entry were not
    searched). See the module docstring."""
    tracker = Tracker(max_gap=max_gap, hold=hold, smooth=smooth)
    for frame in sorted(detections):
        tracker.add(frame, detections[frame])
    return tracker.paths(n_frames)


def _add(t: _Track, frame: int, f: DetectedFace) -> None:
    t.frames.append(frame)
    t.points.append(np.asarray(f.points, np.float64).reshape(5, 2))
    t.boxes.append(tuple(float(v) for v in f.box))


def _path(t: _Track, n_frames: int, hold: int, smooth: int) -> TrackPath:
    frames = np.asarray(t.frames)
    pts = np.stack(t.points)
    if smooth > 1 and len(frames) > 2:
        pts = _smooth(frames, pts, smooth)
    first = max(0, int(frames[0]) - hold)
    last = min(n_frames - 1, int(frames[-1]) + hold)
    span = np.arange(first, last + 1)
    flat = pts.reshape(len(frames), -1)
    path = np.stack([np.interp(span, frames, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return TrackPath(t.key, first, path.reshape(-1, 5, 2), [int(f) for f in frames])


def _smooth(frames: np.ndarray, pts: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over detections within ``window`` frames of each other."""
    half = window // 2
    out = np.empty_like(pts)
    for i, f in enumerate(frames):
        near = np.abs(frames - f) <= half
        out[i] = pts[near].mean(axis=0)
    return out
