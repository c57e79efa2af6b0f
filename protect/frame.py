"""Framing faces for the generator: five points -> crop, and the generator's output -> the photo.

Coordinates. Image and crop points are pixel-index coordinates (the centre of pixel column j is
x = j), the convention of dlib's landmarks and of ``cv2.warpAffine``. A checkpoint's mean landmarks
are normalised to its training frame (x_n = x / (S / 2) - 1), so in an S x S crop they sit at
``(x_n + 1) * S / 2 - 0.5`` -- the same conversion ``models/alignment.py`` makes.

* ``face_transform``: the least-squares similarity (rotation, uniform scale, shift; no reflection)
  taking a face's five points onto the mean points of the crop. It is a 2x3 matrix mapping image
  pixels to crop pixels; the record stores exactly this matrix, so recovery re-cuts the same crop.
* ``cut_crops``: the crop of each face. When the crop shrinks the face (large faces in big photos),
  the region is first low-passed with a Gaussian of sigma = (d - 1) / 2 for a shrink factor d (the
  rule of skimage's rescale), so the 128 px crop is not aliased; bilinear sampling; outside the photo
  the image is mirrored (the generator was trained on full frames, never on black borders).
* ``blend_mask``: where the generated crop replaces the photo. "crop" (the default): the whole crop,
  feathered outside it over 1/16 of its side. The photo then holds the generated crop itself, so
  recovery re-cuts what G produced, up to resampling and 8-bit rounding; this is what G was trained
  to invert (its normalisation statistics span the whole crop, so any pixel of it shapes the
  recovery). "face": an ellipse over the face (forehead to chin, cheek to cheek) placed from the
  mean landmarks, feathered over +-15% of its radius: fewer pixels change, but the crop that
  recovery sees mixes the photo's own surroundings with G's output, so recovery is only as good as
  G's reconstruction of those surroundings. Outside the warped mask's support the photo's pixels are
  never written, so they stay bit-identical.
* ``paste_faces``: warps each generated crop back (bicubic) and blends it with its warped mask into
  the image in its native form (8 or 16 bits, gray or colour, alpha untouched).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from models.alignment import fit_similarity

# The "face" blend region, in units of the mean face: the ellipse's half-width in inter-ocular
# distances, its half-height and its centre's drop below the eyes in eye-to-mouth distances. With
# CASIA/LFW framing (eyes 40 px apart, mouth 45 px below them in the 250 frame) it spans about
# 92 x 130 px: cheek to cheek and hairline to chin. Feathered over +-15% of its radius.
MASK_HALF_WIDTH = 1.15
MASK_HALF_HEIGHT = 1.45
MASK_CENTRE_DROP = 0.45
MASK_FEATHER = 0.15
BLENDS = {"face": "ellipse-v1", "crop": "crop-v1"}


@dataclass(frozen=True)
class BlendMask:
    """Blend weights in the crop frame. ``weights`` covers crop pixels -pad .. size - 1 + pad, so a
    mask may reach beyond the crop (there the generated crop's edge pixels are repeated)."""

    name: str
    weights: np.ndarray
    pad: int

    @property
    def core(self) -> np.ndarray:
        """The weights over the crop itself (size x size)."""
        p = self.pad
        return self.weights[p:self.weights.shape[0] - p, p:self.weights.shape[1] - p]


def crop_points(mean_landmarks, size: int) -> np.ndarray:
    """(5, 2) normalised mean landmarks -> their pixel-index positions in a size x size crop."""
    lm = np.asarray(mean_landmarks, dtype=np.float64).reshape(5, 2)
    return (lm + 1.0) * size / 2.0 - 0.5


def face_transform(points, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (float64) mapping a face's five image points onto ``target`` crop points."""
    p = np.asarray(points, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(p).all():
        raise ValueError("face landmarks must be five finite (x, y) points")
    a = fit_similarity(torch.from_numpy(p)[None], torch.from_numpy(np.asarray(target, np.float64))[None])
    m = a[0].numpy()
    if abs(np.linalg.det(m[:, :2])) < 1e-12:
        raise ValueError("face landmarks are degenerate (all five points coincide)")
    return m


def check_transform(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64).reshape(2, 3)
    if not np.isfinite(m).all() or abs(np.linalg.det(m[:, :2])) < 1e-12:
        raise ValueError("a face transform must be a finite, invertible 2x3 matrix")
    return m


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def _scale(m: np.ndarray) -> float:
    """Crop pixels per image pixel."""
    return math.sqrt(abs(np.linalg.det(m[:, :2])))


def _shift(m: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``m`` for a sub-image whose top-left pixel is (x0, y0) of the full image."""
    out = m.copy()
    out[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return out


def _image_box(m: np.ndarray, u0: float, v0: float, u1: float, v1: float, margin: float,
               width: int, height: int) -> tuple[int, int, int, int]:
    """Integer bounds (x0, y0, x1, y1) of the image region that the crop rectangle covers, clipped."""
    corners = np.array([[u0, v0, 1], [u1, v0, 1], [u0, v1, 1], [u1, v1, 1]], np.float64)
    pts = corners @ invert(m).T
    x0 = max(0, math.floor(pts[:, 0].min() - margin))
    y0 = max(0, math.floor(pts[:, 1].min() - margin))
    x1 = min(width, math.ceil(pts[:, 0].max() + margin) + 1)
    y1 = min(height, math.ceil(pts[:, 1].max() + margin) + 1)
    return x0, y0, x1, y1


def cut_crop(rgb, m: np.ndarray, size: int) -> np.ndarray:
    """One face crop: (size, size, 3) float32 in [0, 255] from an HxWx3 uint8 RGB image (or a video
    frame kept in YUV, protect/yuv.py: anything with ``shape`` and ``rgb_region``)."""
    h, w = rgb.shape[:2]
    shrink = 1.0 / _scale(m)
    sigma = (shrink - 1.0) / 2.0 if shrink > 1.0 else 0.0
    margin = 3.0 * sigma + 2.0
    x0, y0, x1, y1 = _image_box(m, 0, 0, size - 1, size - 1, margin, w, h)
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the photo: sample from the nearest edge
        x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        x1, y1 = x0 + 1, y0 + 1
    roi = rgb[y0:y1, x0:x1].astype(np.float32) if isinstance(rgb, np.ndarray) else rgb.rgb_region(y0, y1, x0, x1)
    if sigma >= 0.3:
        roi = cv2.GaussianBlur(roi, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return cv2.warpAffine(roi, _shift(m, x0, y0), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def cut_crops(rgb, transforms, size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [-1, 1] for the network (utils/images.py's scaling)."""
    if not len(transforms):
        return torch.zeros(0, 3, size, size)
    crops = np.stack([cut_crop(rgb, m, size) for m in transforms])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).div(127.5).sub(1.0)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


@functools.lru_cache(maxsize=16)
def _mask(size: int, key: tuple, kind: str) -> BlendMask:
    if kind == "crop":  # the whole crop, feathered outside it over size/16 crop pixels
        pad = max(2, round(size / 16))
        yy, xx = np.mgrid[-pad:size + pad, -pad:size + pad].astype(np.float64)
        out = np.maximum(np.maximum(-xx, xx - (size - 1)), np.maximum(-yy, yy - (size - 1)))
        weights = _smoothstep(1.0 - np.maximum(out, 0.0) / pad)
    elif kind == "face":
        q = crop_points(np.array(key).reshape(5, 2), size)
        eyes, mouth = (q[0] + q[1]) / 2, (q[3] + q[4]) / 2
        iod = float(np.linalg.norm(q[1] - q[0]))
        em = float(np.linalg.norm(mouth - eyes))
        if iod <= 0 or em <= 0:
            raise ValueError("mean landmarks are degenerate: the eyes or eyes and mouth coincide")
        centre = eyes + MASK_CENTRE_DROP * (mouth - eyes)
        ax, ay = MASK_HALF_WIDTH * iod, MASK_HALF_HEIGHT * em
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        r = np.sqrt(((xx - centre[0]) / ax) ** 2 + ((yy - centre[1]) / ay) ** 2)
        weights = _smoothstep((1.0 + MASK_FEATHER - r) / (2 * MASK_FEATHER))
        edge = np.minimum(np.minimum(xx, yy), np.minimum(size - 1 - xx, size - 1 - yy))
        weights *= np.clip((edge - 2.0) / 4.0, 0.0, 1.0)  # never a hard edge at the crop border
        pad = 0
    else:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {kind!r}")
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return BlendMask(BLENDS[kind], weights, pad)


def blend_mask(size: int, mean_landmarks, kind: str = "face") -> BlendMask:
    """The blend weights of ``kind`` ("face": a feathered ellipse over the face; "crop": the whole
    crop, feathered outside it) for a size x size crop framed by ``mean_landmarks`` (cached)."""
    key = tuple(round(float(v), 6) for v in np.asarray(mean_landmarks, np.float64).reshape(-1))
    return _mask(int(size), key, kind)


def blend_kind(name: str) -> str:
    """The blend kind of a record's mask name."""
    for kind, n in BLENDS.items():
        if n == name:
            return kind
    raise ValueError(f"unknown blend mask {name!r} (known: {', '.join(BLENDS.values())})")


def face_region(shape: tuple[int, int], m: np.ndarray, mask: BlendMask) -> tuple[slice, slice, np.ndarray]:
    """The image region a face's blend touches and its blend weights there (zero outside the face)."""
    h, w = shape
    p = mask.pad
    ys, xs = np.nonzero(mask.weights)
    x0, y0, x1, y1 = _image_box(m, xs.min() - p - 1, ys.min() - p - 1, xs.max() - p + 1, ys.max() - p + 1, 2.0, w, h)
    if x1 <= x0 or y1 <= y0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), np.float32)
    a = _shift(m, x0, y0)
    a[:, 2] += p  # image -> padded mask coordinates
    weights = cv2.warpAffine(mask.weights, a, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return slice(y0, y1), slice(x0, x1), weights


def warp_back(crop: np.ndarray, m: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """A generated crop ((S, S, 3) float in [0, 255]) warped back onto the image region whose top-left
    pixel is (x0, y0), width x height: bicubic, float32, clipped to [0, 255]."""
    patch = cv2.warpAffine(np.ascontiguousarray(crop, np.float32), _shift(m, x0, y0), (width, height),
                           flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(patch, 0.0, 255.0, out=patch)


def paste_faces(native: np.ndarray, crops: np.ndarray, transforms, mask: BlendMask, *,
                inplace: bool = False) -> np.ndarray:
    """Blend generated crops ((N, S, S, 3) float in [0, 255], RGB) back into a copy of ``native``
    (into ``native`` itself with ``inplace``: a video frame that is written once, not copied).

    ``native`` is the photo as stored: (H, W) or (H, W, C) with C = 1 gray, 2 gray + alpha, 3 RGB or
    4 RGBA; uint8 or uint16. Colour is converted to gray (ITU-R 601 weights) for gray photos, values
    are scaled to the photo's bit depth, alpha is never changed, and only pixels with a positive
    blend weight are written (in face order, so a later face overlaps an earlier one)."""
    out = native if inplace else native.copy()
    view = out if out.ndim == 3 else out[:, :, None]
    colour = 3 if view.shape[2] >= 3 else 1
    scale = 257.0 if out.dtype == np.uint16 else 1.0
    top = float(np.iinfo(out.dtype).max)
    for crop, m in zip(crops, transforms):
        ys, xs, weights = face_region(out.shape[:2], m, mask)
        if weights.size == 0 or not (weights > 0).any():
            continue
        patch = warp_back(crop, m, xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        if colour == 1:
            patch = (patch @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
        if scale != 1.0:
            patch *= scale
        region = view[ys, xs, :colour]  # a view: written in place below
        orig = region.astype(np.float32)
        wgt = weights[:, :, None]
        # orig + wgt * (patch - orig), rounded and clipped, in the patch's own memory
        patch -= orig
        patch *= wgt
        patch += orig
        np.rint(patch, out=patch)
        np.clip(patch, 0, top, out=patch)
        np.copyto(region, patch, casting="unsafe", where=wgt > 0)
    return out


def work_rgb(native: np.ndarray) -> np.ndarray:
    """The 8-bit RGB view that detection and the generator see, from a photo in native form."""
    a = native if native.ndim == 3 else native[:, :, None]
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise TypeError(f"images must be uint8 or uint16, got {a.dtype}")
    c = a.shape[2]
    if c in (1, 2):
        return np.ascontiguousarray(np.repeat(a[:, :, :1], 3, axis=2))
    if c in (3, 4):
        return np.ascontiguousarray(a[:, :, :3])
    raise ValueError(f"images must have 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels, got {c}")


def draw_face_boxes(native: np.ndarray, transforms, size: int, colour=(255, 0, 255)) -> np.ndarray:
    """An 8-bit RGB copy of ``native`` with the outline of every face's crop (the square the
    generator replaced, turned and scaled as the face was) drawn on it: a preview of what was covered."""
    rgb = work_rgb(native).copy()
    h, w = rgb.shape[:2]
    thick = max(2, round(min(h, w) / 300))
    square = np.array([[0, 0, 1], [size - 1, 0, 1], [size - 1, size - 1, 1], [0, size - 1, 1]], np.float64)
    for m in transforms:
        corners = square @ invert(np.asarray(m, np.float64).reshape(2, 3)).T
        cv2.polylines(rgb, [np.round(corners).astype(np.int32)], True, colour, thick, cv2.LINE_8)
    return rgb
