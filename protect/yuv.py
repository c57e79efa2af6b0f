"""Video frames kept as the codec gives them (8-bit 4:2:0 YUV) through pass 2 of the video path.

Most videos are 4:2:0: a full-size luma plane and two half-size chroma planes. Converting every
frame to RGB after decoding and back before encoding cost a 720p frame of the video bench about 8 ms
of CPU time (swscale, profiled one thread: 2.0 ms to RGB, 1.2 + 4.9 ms back; about 4% of the frame)
and rounded every pixel twice, faces or not. A ``YuvImage`` keeps the decoded planes instead; only
the regions of the faces are converted:

* ``rgb_region``: the RGB values (float32, unrounded, clipped to [0, 255]) of a rectangle, for
  cutting a face's crop. Each chroma sample covers its 2x2 luma block (as swscale's own conversion
  has it): the inverse of the block mean that ``paste_faces`` writes, so a face pasted and cut again
  keeps its colours. (Bilinear chroma was tried: recovery through the video bench's 16 frames was
  0.6 to 1.1 dB further from the exact recovery than with this.)
* ``paste_faces``: the generated crops blended in, as protect/frame.py's ``paste_faces`` does in RGB,
  but in YUV: YUV is an affine function of RGB, so blending the converted crop equals converting the
  blend. Luma takes ``Y + w (Y_crop - Y)`` per pixel; each chroma sample takes the 2x2 block mean of
  what the RGB blend gives its four pixels, ``C (1 - mean w) + mean (w C_crop)`` (exact where the
  four pixels share the sample, as upsampled chroma does). Pixels and chroma samples whose weight
  is zero keep their bytes, so everything outside the faces reaches the encoder exactly as decoded.

The colour matrix is the video's own (``colorspace``: BT.601, BT.709, BT.2020, FCC, SMPTE 240M;
limited or full range), with swscale's choice for unspecified matrices (BT.601), so colours are
those the RGB path gives, within rounding. Other formats (10-bit, 4:2:2, 4:4:4, RGB) and colour
systems stay on the RGB path (protect/video_io.py decides).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from protect.frame import BlendMask, face_region, warp_back

__all__ = ["YuvImage", "yuv_matrices", "YUV_COLORSPACES"]

# FFmpeg's colorspace numbers (AVColorSpace) -> (Kr, Kb). 2 (unspecified) gets BT.601, as in swscale.
YUV_COLORSPACES = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 4: (0.30, 0.11), 5: (0.299, 0.114),
                   6: (0.299, 0.114), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}


@functools.lru_cache(maxsize=32)
def yuv_matrices(colorspace: int, full_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """(to_yuv, to_rgb): 3x4 float32 affine maps (``cv2.transform``) between RGB in [0, 255] and 8-bit
    Y, Cb, Cr for an FFmpeg colorspace number (YUV_COLORSPACES) and range (full: 0-255; limited: Y
    16-235, chroma 16-240)."""
    if colorspace not in YUV_COLORSPACES:
        raise ValueError(f"no YUV matrix for colorspace {colorspace}")
    kr, kb = YUV_COLORSPACES[colorspace]
    kg = 1.0 - kr - kb
    ys, cs = (1.0, 1.0) if full_range else (219.0 / 255.0, 224.0 / 255.0)
    m = np.array([[kr, kg, kb],
                  [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                  [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]], np.float64)
    m *= np.array([[ys], [cs], [cs]])
    offset = np.array([0.0 if full_range else 16.0, 128.0, 128.0])
    inv = np.linalg.inv(m)
    to_yuv = np.hstack([m, offset[:, None]]).astype(np.float32)
    to_rgb = np.hstack([inv, -(inv @ offset)[:, None]]).astype(np.float32)
    to_yuv.setflags(write=False)
    to_rgb.setflags(write=False)
    return to_yuv, to_rgb


class YuvImage:
    """An upright 8-bit 4:2:0 frame: ``buffer`` is FFmpeg's packed yuv420p layout, shape (3H/2, W):
    the H x W luma plane, then the (H/2) x (W/2) Cb and Cr planes, one after the other. ``shape`` is
    (H, W, 3), as of the RGB image it stands for."""

    def __init__(self, buffer: np.ndarray, height: int, width: int, colorspace: int, full_range: bool):
        if height % 2 or width % 2:
            raise ValueError(f"4:2:0 frames need an even width and height, got {width}x{height}")
        if buffer.dtype != np.uint8 or buffer.size != height * width * 3 // 2 or not buffer.flags.c_contiguous:
            raise ValueError(f"a {width}x{height} yuv420p frame needs {height * width * 3 // 2} contiguous bytes")
        self.buffer = buffer.reshape(height * 3 // 2, width)
        self.height, self.width = height, width
        self.colorspace, self.full_range = colorspace, full_range
        self.to_yuv, self.to_rgb_matrix = yuv_matrices(colorspace, full_range)
        flat = self.buffer.reshape(-1)
        n, q = height * width, height * width // 4
        self.y = flat[:n].reshape(height, width)
        self.u = flat[n:n + q].reshape(height // 2, width // 2)
        self.v = flat[n + q:].reshape(height // 2, width // 2)

    @classmethod
    def from_planes(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray, colorspace: int,
                    full_range: bool) -> YuvImage:
        h, w = y.shape
        if u.shape != (h // 2, w // 2) or v.shape != u.shape:
            raise ValueError(f"chroma planes of a {w}x{h} frame must be {w // 2}x{h // 2}, got {u.shape} and {v.shape}")
        buf = np.concatenate([np.ascontiguousarray(p, np.uint8).reshape(-1) for p in (y, u, v)])
        return cls(buf, h, w, colorspace, full_range)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def rgb_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """RGB of rows y0..y1-1 and columns x0..x1-1: (h, w, 3) float32 in [0, 255]."""
        cy0, cy1, cx0, cx1 = y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2
        chroma = np.dstack([self.u[cy0:cy1, cx0:cx1], self.v[cy0:cy1, cx0:cx1]])
        chroma = cv2.resize(chroma, (2 * (cx1 - cx0), 2 * (cy1 - cy0)), interpolation=cv2.INTER_NEAREST)
        yuv = cv2.merge([np.ascontiguousarray(self.y[y0:y1, x0:x1]),  # (OpenCV: 5x numpy's strided copies)
                         np.ascontiguousarray(chroma[y0 - 2 * cy0:y1 - 2 * cy0, x0 - 2 * cx0:x1 - 2 * cx0])])
        rgb = cv2.transform(yuv.reshape(y1 - y0, x1 - x0, 3).astype(np.float32), self.to_rgb_matrix)
        return np.clip(rgb, 0.0, 255.0, out=rgb)

    def to_rgb(self) -> np.ndarray:
        """The whole frame as HxWx3 uint8 RGB (previews, tests)."""
        return np.rint(self.rgb_region(0, self.height, 0, self.width)).astype(np.uint8)

    def paste_faces(self, crops: np.ndarray, transforms, mask: BlendMask) -> None:
        """Blend generated crops ((N, S, S, 3) float RGB in [0, 255]) in place, as
        protect/frame.py's ``paste_faces`` (same regions, weights and face order)."""
        for crop, m in zip(crops, transforms):
            ys, xs, weights = face_region((self.height, self.width), m, mask)
            if weights.size == 0 or not (weights > 0).any():
                continue
            # the region widened to whole chroma blocks, the weights zero where it was widened
            y0, x0 = ys.start - ys.start % 2, xs.start - xs.start % 2
            y1, x1 = ys.stop + ys.stop % 2, xs.stop + xs.stop % 2
            w = np.zeros((y1 - y0, x1 - x0), np.float32)
            w[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = weights
            patch = warp_back(crop, m, x0, y0, x1 - x0, y1 - y0)
            py, pu, pv = cv2.split(cv2.transform(patch, self.to_yuv))
            luma = self.y[y0:y1, x0:x1]
            old = luma.astype(np.float32)
            new = old + w * (py - old)
            np.copyto(luma, np.clip(np.rint(new, out=new), 0, 255, out=new), casting="unsafe")
            half = ((x1 - x0) // 2, (y1 - y0) // 2)
            keep = 1.0 - cv2.resize(w, half, interpolation=cv2.INTER_AREA)  # 1 - the 2x2 block means
            for plane, pc in ((self.u, pu), (self.v, pv)):
                region = plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2]
                new = region.astype(np.float32) * keep + cv2.resize(w * pc, half, interpolation=cv2.INTER_AREA)
                np.copyto(region, np.clip(np.rint(new, out=new), 0, 255, out=new), casting="unsafe")
