"""Five-point face alignment for the face recogniser, batched and in torch on the data's device.

A similarity transform (rotation, uniform scale, translation) maps SphereFace's five reference points
of the 96x112 crop onto the image's five landmarks. It is solved in closed form (least squares, no
reflection) for the whole batch at once, turned into the ``theta`` of ``affine_grid`` for a
(B, 3, 112, 96) grid with ``align_corners=True``, and every image of a step is warped with the grid of
the real image (generated faces stay where the input face was). The crop's channels are then reversed
to BGR, the order SphereFace was trained on.

Coordinates. Landmarks arrive normalised as the spec writes them: x / (W / 2) - 1 in the source frame
(s / 125 - 1 for CASIA's 250x250 images), independent of the size the image was resized to. The
similarity is fitted in pixel units, where it is a similarity (the crop is not square, so a similarity
in normalised units would squeeze the face), and the pixel-centre conventions of the source frame, the
resized tensor and ``align_corners=True`` are all accounted for, so that the five points land on the
reference points (tested to 0.5 px). The original fitted the transform in normalised units and mixed
conventions, which misplaces points by a pixel or two and stretches the crop by up to 17%.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# SphereFace's reference points (x, y) in the 96x112 (width x height) crop, in pixels.
REFERENCE_96x112 = torch.tensor([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                                 [33.5493, 92.3655], [62.7299, 92.2041]], dtype=torch.float64)


def reference_points(height: int = 112, width: int = 96) -> torch.Tensor:
    """Reference points for a crop of another size (the smoke config shrinks it), in its pixels."""
    return REFERENCE_96x112 * torch.tensor([width / 96.0, height / 112.0], dtype=torch.float64)


def fit_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity mapping ``src`` points onto ``dst`` points, batched.

    src, dst: (B, N, 2). Returns (B, 2, 3) matrices [[a, -b, tx], [b, a, ty]] with dst ~ A @ [x, y, 1].
    """
    src_mean, dst_mean = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    denom = (s ** 2).sum((1, 2)).clamp_min(1e-12)
    a = (s * d).sum((1, 2)) / denom
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / denom
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = dst_mean.squeeze(1) - (rot @ src_mean.transpose(1, 2)).squeeze(2)
    return torch.cat([rot, t[:, :, None]], dim=2)


def _pixel_to_align_corners(size: int, dtype, device) -> torch.Tensor:
    """1-D affine (scale, shift) from pixel-centre coordinates to align_corners=True units."""
    return torch.tensor([2.0 / (size - 1), -1.0], dtype=dtype, device=device)


def alignment_theta(landmarks: torch.Tensor, image_size: tuple[int, int],
                    crop: tuple[int, int] = (112, 96)) -> torch.Tensor:
    """``theta`` (B, 2, 3) for ``affine_grid(theta, (B, C, crop_h, crop_w), align_corners=True)``.

    landmarks: (B, 5, 2) normalised to the source frame (x / (W/2) - 1). image_size: (H, W) of the
    tensor that will be sampled (the source frame resized to it). crop: (height, width) of the crop.
    """
    if landmarks.dim() != 3 or landmarks.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (B, 5, 2), got {tuple(landmarks.shape)}")
    dev = landmarks.device
    lm = landmarks.to(torch.float64)
    h, w = image_size
    ch, cw = crop
    size = torch.tensor([w, h], dtype=torch.float64, device=dev)
    # normalised landmark -> pixel-centre coordinates of the resized tensor
    dst = (lm + 1) * size / 2 - 0.5
    src = reference_points(ch, cw).to(dev).expand(lm.shape[0], -1, -1)
    pix = fit_similarity(src, dst)  # crop pixel -> tensor pixel
    # compose: crop align-corners units -> crop pixels -> tensor pixels -> tensor align-corners units
    crop_to_pix = torch.tensor([[(cw - 1) / 2, 0, (cw - 1) / 2], [0, (ch - 1) / 2, (ch - 1) / 2], [0, 0, 1]],
                               dtype=torch.float64, device=dev)
    pix_to_norm = torch.tensor([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]],
                               dtype=torch.float64, device=dev)
    pix3 = torch.cat([pix, torch.tensor([0, 0, 1], dtype=torch.float64, device=dev).expand(lm.shape[0], 1, 3)], 1)
    theta = pix_to_norm @ pix3 @ crop_to_pix
    return theta[:, :2].to(torch.float32)


def alignment_grid(landmarks: torch.Tensor, image_size: tuple[int, int],
                   crop: tuple[int, int] = (112, 96)) -> torch.Tensor:
    theta = alignment_theta(landmarks, image_size, crop)
    return F.affine_grid(theta, [theta.shape[0], 3, crop[0], crop[1]], align_corners=True)


def warp_to_crop(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Warp (B, 3, H, W) RGB images with an alignment grid and reverse channels to BGR for FR."""
    crop = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
    return crop.flip(1)
