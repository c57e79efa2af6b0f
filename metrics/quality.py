"""Image quality of a result against the original: PSNR, SSIM, MS-SSIM; and the JPEG round trip.

Images are (B, 3, H, W) tensors in [-1, 1]; every figure is per image (a result never depends on
its batch). PSNR is training.heldout.psnr (capped at 100 dB for identical images). SSIM follows Wang
et al. 2004: an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1 (after
mapping to [0, 1]), computed per colour channel on the valid part of the image and averaged.
MS-SSIM follows Wang et al. 2003 (5 scales, weights 0.0448 0.2856 0.3001 0.2363 0.1333, 2x2
average pooling between scales), except that small images use only the first scales whose side is
still at least the window (weights renormalised): 64 px images use 3 scales, 128 px images 4.
Contrast-structure terms are clamped at 0 before the power so that a negative correlation gives 0,
not NaN.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from training.heldout import psnr
from utils.images import from_uint8, to_uint8

__all__ = ["psnr", "ssim", "ms_ssim", "ssim_and_ms_ssim", "ms_ssim_scales", "jpeg_round_trip", "laplacian_variance",
           "WINDOW", "MS_SSIM_WEIGHTS"]

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _window(device, dtype) -> torch.Tensor:
    """The 1-D Gaussian; the 2-D window is its outer product, applied as two 1-D passes."""
    x = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-x ** 2 / (2 * SIGMA ** 2))
    return (g / g.sum()).to(device, dtype)


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
        raise ValueError(f"quality: expected two (B, 3, H, W) tensors of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if min(a.shape[-2:]) < WINDOW:
        raise ValueError(f"quality: images of {tuple(a.shape[-2:])} px are smaller than the {WINDOW} px window")


def _conv_blur(*ts: torch.Tensor) -> list[torch.Tensor]:
    """The Gaussian window over the valid part of each (N, 3, H, W): two depthwise 1-D convolutions."""
    g = _window(ts[0].device, ts[0].dtype)
    gh, gv = g.view(1, 1, 1, -1).expand(3, 1, 1, WINDOW), g.view(1, 1, -1, 1).expand(3, 1, WINDOW, 1)
    return [F.conv2d(F.conv2d(t, gh, groups=3), gv, groups=3) for t in ts]


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """(n, n - WINDOW + 1) matrix whose column j holds the window on rows j..j + WINDOW - 1."""
    m = torch.zeros(n, n - WINDOW + 1, dtype=g.dtype, device=g.device)
    for k in range(WINDOW):
        m.diagonal(-k).fill_(g[k].item())
    return m


def _matmul_blur(*ts: torch.Tensor) -> list[torch.Tensor]:
    """``_conv_blur`` as two matrix products with banded matrices, all tensors at once (the same sums
    in another order: equal to float64 rounding), which BLAS computes several times faster than
    float64 convolutions."""
    t = torch.cat(ts)
    g = _window(t.device, t.dtype)
    h, w = t.shape[-2:]
    return list((_band(h, g).T @ (t @ _band(w, g))).chunk(len(ts)))


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, blur=_conv_blur) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term of [0, 1] images."""
    c1, c2 = K1 ** 2, K2 ** 2
    mx, my, bxx, byy, bxy = blur(x, y, x * x, y * y, x * y)
    sxx, syy, sxy = bxx - mx * mx, byy - my * my, bxy - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def _unit(t: torch.Tensor) -> torch.Tensor:
    return (t.double() + 1) / 2


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (B,) of images in [-1, 1]; 1 for identical images."""
    _check(a, b)
    return _ssim_terms(_unit(a), _unit(b))[0].float()


def ms_ssim_scales(size: int) -> int:
    """Scales used for images whose smaller side is ``size`` (each halves it)."""
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and size // 2 ** n >= WINDOW:
        n += 1
    return n


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image MS-SSIM (B,) of images in [-1, 1]; 1 for identical images."""
    return ssim_and_ms_ssim(a, b, fast=False)[1]


def ssim_and_ms_ssim(a: torch.Tensor, b: torch.Tensor, fast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM and MS-SSIM (B,) of images in [-1, 1], the same figures as ``ssim`` and
    ``ms_ssim``: MS-SSIM's first scale is SSIM's own computation, done once for both. ``fast``: the
    window applied by matrix products (``_matmul_blur``), else by convolutions."""
    _check(a, b)
    x, y = _unit(a), _unit(b)
    n = ms_ssim_scales(min(x.shape[-2:]))
    w = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=torch.float64, device=x.device)
    w = w / w.sum()
    out = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    first = None
    for k in range(n):
        s, cs = _ssim_terms(x, y, _matmul_blur if fast else _conv_blur)
        if k == 0:
            first = s
        term = s if k == n - 1 else cs
        out = out * term.clamp_min(0) ** w[k]
        if k < n - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return first.float(), out.float()


def jpeg_round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image saved as JPEG at ``quality`` (PIL, 4:2:0 chroma subsampling, PIL's default) and
    read back, as a shared photo would be."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    out = []
    for arr in to_uint8(images):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(np.asarray(im.convert("RGB")))
    return from_uint8(np.stack(out)).to(images.device)


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def laplacian_variance(images: np.ndarray, boxes) -> np.ndarray:
    """Sharpness: per image, the variance of the 4-neighbour Laplacian (0 1 0 / 1 -4 1 / 0 1 0) of
    the luma (BT.601 weights, 0-255) over the pixels of its box (left, top, right, bottom in pixels,
    rounded, and kept one pixel inside the image so that every pixel has its four neighbours).
    ``images``: uint8 (B, H, W, 3). Blurring lowers it; a plain copy keeps it."""
    x = torch.from_numpy(np.ascontiguousarray(images)).double()
    if x.dim() != 4 or x.shape[-1] != 3 or len(boxes) != x.shape[0]:
        raise ValueError(f"laplacian_variance: expected (B, H, W, 3) images and B boxes, got {tuple(x.shape)} "
                         f"and {len(boxes)} boxes")
    y = x @ torch.tensor(LUMA, dtype=torch.float64)
    h, w = y.shape[-2:]
    lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4 * y[:, 1:-1, 1:-1]
    out = np.empty(len(boxes))
    for k, (l, t, r, b) in enumerate(boxes):
        l, t, r, b = max(1, round(l)), max(1, round(t)), min(w - 1, round(r)), min(h - 1, round(b))
        if r <= l or b <= t:
            raise ValueError(f"laplacian_variance: the box {boxes[k]} holds no pixel of the {w}x{h} image")
        out[k] = lap[k, t - 1:b - 1, l - 1:r - 1].var(unbiased=False).item()
    return out
