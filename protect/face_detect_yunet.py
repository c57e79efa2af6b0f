"""YuNet face detector (libfacedetection, BSD-3), with its own five landmarks.

The network and its weights are compiled into the ``yuface`` package's library (PyPI, BSD-3), so
nothing is downloaded at run time. YuNet was trained on WIDER FACE: crowds, turned and tilted heads,
faces from about 10 px. It returns, per face, a box, a score in [0, 1] and the five points of the
paper's MTCNN framing (eye centres, nose tip, mouth corners).

The network sees a face best at a few tens to a few hundred pixels, so the image goes through a
pyramid: small images enlarged (faces under about 20 px), the full resolution, then halves until
the longer side is at most ``pyramid_side`` (large faces, close-ups); a face found at several
levels is kept once.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from protect.face_detect import DetectedFace, FaceDetector, ordered_five, resized, suppress_overlaps

__all__ = ["YuNetDetector"]

# Enlarged levels are there for small faces only: larger ones are found at full size or below, and
# on enlarged photos YuNet sees faces in textures (flags, fabric, fur).
ENLARGED_MAX_FACE = 40.0


@functools.cache
def _yunet():
    # yuface brings its own OpenMP runtime, which reads the environment once, when it loads. Its
    # idle threads would spin and take the cores from PyTorch's runtime (the generator) and from
    # other processes: let them sleep instead, unless the user chose otherwise.
    saved = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from yuface import yuface  # the compiled module: rows of score, box, 5 points
    except ImportError as e:
        raise ImportError("the yunet face detector needs the yuface package (pip install yuface==2023.5.1; "
                          "wheels for Python up to 3.11 on x86-64 Linux and Windows); --detector hog or cnn "
                          "work without it") from e
    finally:
        if saved is None:
            del os.environ["OMP_WAIT_POLICY"]
    return yuface.detect


def _run(bgr: np.ndarray) -> np.ndarray:
    """Rows (score 0-100, x, y, w, h, x1, y1, ..., x5, y5, ...) of one contiguous BGR uint8 image."""
    out = np.asarray(_yunet()(bgr))
    if out.ndim != 2 or out.shape[1] < 15:
        raise RuntimeError(f"yuface returned an unexpected array of shape {out.shape}")
    return out


class YuNetDetector(FaceDetector):
    """threshold: lowest score kept (0-1). upsample: image doublings added to the pyramid for faces
    under about 20 px (4x the time each). enlarge_to: images whose longer side is under this are
    enlarged to reach it anyway (cheap on small images). max_side: the pyramid starts from a copy
    downscaled to this longer side (faster on big frames; faces under about 20 px at that scale
    are lost). pyramid_side: the coarsest level's longer side."""

    name = "yunet"

    def __init__(self, min_face: float = 32.0, threshold: float = 0.5, upsample: int = 0,
                 max_side: int | None = None, enlarge_to: int = 1920, pyramid_side: int = 640,
                 nms_iou: float = 0.4):
        super().__init__(min_face)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {max_side}")
        if pyramid_side < 64:
            raise ValueError(f"pyramid_side must be at least 64 pixels, got {pyramid_side}")
        self.threshold, self.upsample, self.max_side = float(threshold), int(upsample), max_side
        self.enlarge_to, self.pyramid_side, self.nms_iou = int(enlarge_to), int(pyramid_side), float(nms_iou)
        _yunet()  # a missing package fails at construction, not on the first frame

    def scales(self, h: int, w: int) -> list[float]:
        """Scale factors of the pyramid levels for an h x w image, largest first."""
        side = max(h, w)
        base = 1.0 if self.max_side is None or side <= self.max_side else self.max_side / side
        top = base
        if self.max_side is None:
            # Enlarged until the longer side reaches enlarge_to (at most 4x): YuNet misses faces
            # under about 20 px, and finds them once enlarged.
            top = min(max(top, self.enlarge_to / side), 4.0)
        top *= 2 ** self.upsample
        levels = []
        while top > base * 1.01:  # enlarged levels, for small faces only
            levels.append(top)
            top /= 2
        levels.append(base)
        while side * levels[-1] > self.pyramid_side:
            levels.append(levels[-1] / 2)
        return levels

    def _detect_raw(self, image: np.ndarray) -> list[DetectedFace]:
        h, w = image.shape[:2]
        faces = []
        for f in self.scales(h, w):
            level, sx, sy = resized(image, f)
            for row in _run(np.ascontiguousarray(level[:, :, ::-1])):
                score = float(row[0]) / 100.0
                x, y, bw, bh = (float(v) for v in row[1:5])
                if score < self.threshold or (f > 1 and min(bw / sx, bh / sy) > ENLARGED_MAX_FACE):
                    continue
                # box: pixel edges; points: pixel centres (at integers), hence the half pixels
                pts = (np.asarray(row[5:15], np.float64).reshape(5, 2) + 0.5) / (sx, sy) - 0.5
                faces.append(DetectedFace(box=(x / sx, y / sy, (x + bw) / sx, (y + bh) / sy),
                                          points=ordered_five(pts), score=score))
        return suppress_overlaps(faces, self.nms_iou)

