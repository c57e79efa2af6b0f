"""Five-point alignment: closed-form similarity, the 112x96 warp, BGR order."""
import math

import pytest
import torch

from models.alignment import (
    REFERENCE_96x112,
    alignment_grid,
    alignment_theta,
    fit_similarity,
    reference_points,
    warp_to_crop,
)


def similarity(scale, angle_deg, tx, ty):
    a = math.radians(angle_deg)
    return torch.tensor([[scale * math.cos(a), -scale * math.sin(a), tx],
                         [scale * math.sin(a), scale * math.cos(a), ty]], dtype=torch.float64)


def apply(A, pts):
    return pts @ A[:, :2].T + A[:, 2]


def test_fit_recovers_a_known_similarity_batched():
    src = REFERENCE_96x112[None].repeat(3, 1, 1)
    As = [similarity(1.3, 12, 70, 60), similarity(0.8, -25, 100, 90), similarity(2.0, 0, 5, -3)]
    dst = torch.stack([apply(A, REFERENCE_96x112) for A in As])
    fitted = fit_similarity(src, dst)
    for A, F in zip(As, fitted):
        assert torch.allclose(A, F, atol=1e-9)


def test_fit_never_reflects():
    src = REFERENCE_96x112[None]
    mirrored = src.clone()
    mirrored[..., 0] = -mirrored[..., 0]
    F = fit_similarity(src, mirrored)[0]
    assert torch.linalg.det(F[:, :2]) > 0


def blob_image(points_px, size, sigma=1.6):
    """A (1, 3, size, size) image with a Gaussian blob at each (x, y) pixel-centre position."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    img = torch.zeros(size, size, dtype=torch.float64)
    for x, y in points_px:
        img += torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return img[None, None].repeat(1, 3, 1, 1).float()


def centroid(img, x, y, r=7):
    x0, y0 = int(round(x)), int(round(y))
    win = img[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1].double().clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(y0 - r, y0 + r + 1, dtype=torch.float64),
                            torch.arange(x0 - r, x0 + r + 1, dtype=torch.float64), indexing="ij")
    return (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()


@pytest.mark.parametrize("scale,angle,tensor_size", [(1.25, 8.0, 128), (1.0, -15.0, 128), (1.6, 3.0, 250)])
def test_five_points_land_on_the_reference_within_half_a_pixel(scale, angle, tensor_size):
    # landmarks in a 250x250 source frame: the reference points under a known similarity
    A = similarity(scale, angle, 125 - 48 * scale, 120 - 70 * scale)
    lm_250 = apply(A, REFERENCE_96x112)
    landmarks = (lm_250 / 125 - 1).float()[None]  # the spec's normalisation
    # where those points are in the resized tensor (continuous coordinates; pixel centres at +0.5)
    px = (lm_250 * tensor_size / 250 - 0.5).tolist()
    image = blob_image(px, tensor_size)
    grid = alignment_grid(landmarks, (tensor_size, tensor_size), (112, 96))
    crop = warp_to_crop(image, grid)[0, 0]
    assert crop.shape == (112, 96)
    for (rx, ry) in REFERENCE_96x112.tolist():
        cx, cy = centroid(crop, rx, ry)
        assert abs(cx - rx) < 0.5 and abs(cy - ry) < 0.5, (rx, ry, float(cx), float(cy))


def test_smaller_crop_scales_the_reference():
    ref = reference_points(56, 48)
    assert torch.allclose(ref, REFERENCE_96x112 / 2)
    lm = (torch.tensor([[90.0, 110], [160, 110], [125, 140], [98, 175], [152, 175]]) / 125 - 1)[None]
    theta = alignment_theta(lm, (64, 64), (56, 48))
    assert theta.shape == (1, 2, 3) and torch.isfinite(theta).all()


def test_batched_on_the_data_device_and_bgr():
    lm = (torch.tensor([[90.0, 110], [160, 110], [125, 140], [98, 175], [152, 175]]) / 125 - 1)
    lm = torch.stack([lm, lm + 0.05])
    grid = alignment_grid(lm, (128, 128))
    assert grid.shape == (2, 112, 96, 2) and grid.device == lm.device
    red = torch.zeros(2, 3, 128, 128)
    red[:, 0] = 1.0
    crop = warp_to_crop(red, grid)
    assert crop[:, 2].mean() > 0.9 and crop[:, 0].abs().max() == 0  # RGB -> BGR


def test_bad_landmark_shape_is_an_error():
    with pytest.raises(ValueError, match="landmarks"):
        alignment_theta(torch.zeros(2, 4, 2), (128, 128))
