"""What users pick instead of a face transformer: Gaussian blur, pixelation, a solid mask, applied
to the face region only.

The face region is a square around the five landmarks (``face_box``, the box dlib's detector
would draw: its centre the mean of the points, its side 1.1 x (eye distance + eye-to-mouth
distance)), enlarged ``REGION_SCALE`` times so that it covers forehead and chin, and clipped to the
image. Strengths are fractions of the image side, so that a 64 px and a 128 px version of a photo
get the same treatment (the pixel values at 64 px are in brackets):

* blur: Gaussian of sigma side/32 (2 px) and side/16 (4 px), kernel radius ceil(3 sigma),
  reflected borders, computed on the whole image and pasted into the region;
* pixelation: blocks of side/16 (4 px) and side/8 (8 px), from the region's top-left corner, each
  block the mean of its pixels inside the region;
* mask: the region filled with mid-grey (128).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REGION_SCALE = 1.3


@dataclass(frozen=True)
class Baseline:
    name: str        # shown in tables, e.g. "blur sigma=side/32"
    kind: str        # blur, pixelate or mask
    fraction: float  # sigma or block as a fraction of the image side (0 for the mask)

    def pixels(self, side: int) -> float:
        return self.fraction * side

    def describe(self, side: int) -> str:
        if self.kind == "blur":
            return (f"Gaussian blur of the face region, sigma = side/{round(1 / self.fraction)} "
                    f"({self.pixels(side):g} px)")
        if self.kind == "pixelate":
            return (f"pixelation of the face region, blocks of side/{round(1 / self.fraction)} "
                    f"({self.pixels(side):g} px)")
        return "the face region filled with mid-grey"

    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        side = images.shape[-1]
        out = images.clone()
        for i in range(images.shape[0]):
            l, t, r, b = region(landmarks[i], images.shape[-2:])
            if self.kind == "blur":
                out[i, :, t:b, l:r] = gaussian_blur(images[i:i + 1], self.pixels(side))[0, :, t:b, l:r]
            elif self.kind == "pixelate":
                out[i, :, t:b, l:r] = pixelate(images[i:i + 1, :, t:b, l:r], max(1, round(self.pixels(side))))[0]
            else:
                out[i, :, t:b, l:r] = 128 / 127.5 - 1
        return out


BASELINES = (Baseline("blur sigma=side/32", "blur", 1 / 32), Baseline("blur sigma=side/16", "blur", 1 / 16),
             Baseline("pixelation block=side/16", "pixelate", 1 / 16),
             Baseline("pixelation block=side/8", "pixelate", 1 / 8), Baseline("solid mask", "mask", 0.0))


def face_box(landmarks: torch.Tensor, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in pixels of an image of ``size`` (H, W), from (5, 2) landmarks
    normalised to the image (x / (W/2) - 1)."""
    h, w = size
    p = (landmarks.double().cpu() + 1) * torch.tensor([w / 2, h / 2], dtype=torch.float64)
    if not torch.isfinite(p).all():
        raise ValueError("face_box: the landmarks are unknown (NaN)")
    eye = (p[1] - p[0]).norm()
    eye_mouth = ((p[0] + p[1]) / 2 - (p[3] + p[4]) / 2).norm()
    half = 0.55 * float(eye + eye_mouth)
    cx, cy = (float(v) for v in p.mean(0))
    return cx - half, cy - half, cx + half, cy + half


def region(landmarks: torch.Tensor, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The baselines' integer pixel region (left, top, right, bottom; right/bottom exclusive)."""
    h, w = size
    l, t, r, b = face_box(landmarks, size)
    cx, cy, half = (l + r) / 2, (t + b) / 2, (r - l) / 2 * REGION_SCALE
    box = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    l, t, r, b = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    if r <= l or b <= t:
        raise ValueError(f"the face region {box} lies outside the {w}x{h} image")
    return l, t, r, b


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflected borders; sigma in pixels."""
    if sigma <= 0:
        return images.clone()
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(images.dtype).to(images.device)
    c = images.shape[1]
    pad = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    y = images
    for dim in (-1, -2):
        # reflect as far as the image allows, then replicate (for kernels wider than the image)
        p = (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad)
        y = F.pad(y, p, mode="reflect")
        rest = radius - pad
        if rest:
            y = F.pad(y, (rest, rest, 0, 0) if dim == -1 else (0, 0, rest, rest), mode="replicate")
        kern = k.view(1, 1, 1, -1) if dim == -1 else k.view(1, 1, -1, 1)
        y = F.conv2d(y, kern.expand(c, 1, *kern.shape[2:]), groups=c)
    return y


def pixelate(images: torch.Tensor, block: int) -> torch.Tensor:
    """Blocks of ``block`` x ``block`` pixels from the top-left corner, each the mean of its pixels
    (partial blocks at the right and bottom edges average what they hold)."""
    if block < 1:
        raise ValueError(f"pixelation block must be at least 1 pixel, got {block}")
    h, w = images.shape[-2:]
    means = F.avg_pool2d(images, block, stride=block, ceil_mode=True, padding=0, count_include_pad=False)
    return means.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :h, :w]
