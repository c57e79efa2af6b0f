"""metrics.quality and metrics.baselines on hand-made images: the figures mean what they say."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from metrics import baselines as bl
from metrics import quality
from utils.images import from_uint8, to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 8, size // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_identical_images_give_ssim_one_and_capped_psnr():
    x = smooth_image()
    assert quality.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert quality.ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert quality.psnr(x, x).item() == pytest.approx(100.0)  # the cap of training.heldout.psnr


def test_ssim_agrees_with_scikit_image():
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a, b = smooth_image(0), smooth_image(0) + 0.1 * noise
    b = b.clamp(-1, 1)
    ref = structural_similarity(((a[0] + 1) / 2).permute(1, 2, 0).double().numpy(),
                                ((b[0] + 1) / 2).permute(1, 2, 0).double().numpy(), channel_axis=2,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert quality.ssim(a, b).item() == pytest.approx(ref, abs=1e-5)


def test_more_noise_lowers_every_figure_and_each_image_is_alone():
    x = smooth_image(2).repeat(3, 1, 1, 1)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    y = (x + noise * torch.tensor([0.02, 0.1, 0.4]).view(3, 1, 1, 1)).clamp(-1, 1)
    for f in (quality.psnr, quality.ssim, quality.ms_ssim):
        v = f(y, x)
        assert v[0] > v[1] > v[2], f.__name__
        assert f(y[1:2], x[1:2]).item() == pytest.approx(v[1].item(), rel=1e-6)  # batch-independent
    assert quality.ssim(x, y).tolist() == pytest.approx(quality.ssim(y, x).tolist(), abs=1e-6)


def test_ms_ssim_scales_follow_the_image_size():
    assert [quality.ms_ssim_scales(s) for s in (16, 64, 128, 256, 512)] == [1, 3, 4, 5, 5]
    with pytest.raises(ValueError, match="smaller than"):
        quality.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_ssim_and_ms_ssim_together_are_the_figures_of_each_alone():
    x = smooth_image(4).repeat(5, 1, 1, 1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    y = (x + noise * torch.linspace(0.01, 0.5, 5).view(5, 1, 1, 1)).clamp(-1, 1)
    s, ms = quality.ssim_and_ms_ssim(y, x)
    assert torch.equal(s, quality.ssim(y, x)) and torch.equal(ms, quality.ms_ssim(y, x))
    s128, ms128 = quality.ssim_and_ms_ssim(y[:2].repeat(1, 1, 2, 2), x[:2].repeat(1, 1, 2, 2))
    assert torch.equal(ms128, quality.ms_ssim(y[:2].repeat(1, 1, 2, 2), x[:2].repeat(1, 1, 2, 2)))
    assert torch.equal(s128, quality.ssim(y[:2].repeat(1, 1, 2, 2), x[:2].repeat(1, 1, 2, 2)))


def test_sharpness_is_one_for_a_copy_and_falls_with_blur():
    x, lm = face_batch(3)
    box = bl.face_box(lm[0], (64, 64))
    boxes = [box] * 3
    u8 = to_uint8(x)
    sharp = quality.laplacian_variance(u8, boxes)
    assert (sharp > 0).all()
    assert np.array_equal(quality.laplacian_variance(u8.copy(), boxes), sharp)  # a copy: ratio 1
    blurred = quality.laplacian_variance(to_uint8(bl.gaussian_blur(x, 2.0)), boxes)
    assert (blurred / sharp < 0.3).all()
    grey = quality.laplacian_variance(to_uint8(bl.BASELINES[4](x, lm)), boxes)
    assert (grey == 0).all()  # the mask covers the whole face box: flat
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert (quality.laplacian_variance(to_uint8(noisy), boxes) > 2 * sharp).all()  # noise is no detail lost
    # only the box counts: a change outside it changes nothing
    outside = u8.copy()
    outside[:, :2] = 0
    assert np.array_equal(quality.laplacian_variance(outside, boxes), sharp)
    with pytest.raises(ValueError, match="no pixel"):
        quality.laplacian_variance(u8[:1], [(70, 70, 80, 80)])


def test_jpeg_round_trip_loses_more_at_lower_quality():
    x = from_uint8(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    hi, lo = quality.jpeg_round_trip(x, 95), quality.jpeg_round_trip(x, 75)
    assert hi.shape == x.shape and hi.dtype == torch.float32
    assert (quality.psnr(hi, x) > quality.psnr(lo, x)).all()
    assert (quality.psnr(lo, x) < 60).all()


# ---- baselines ----------------------------------------------------------------------------------

def test_gaussian_blur_keeps_constants_and_has_the_asked_width():
    flat = torch.full((1, 3, 40, 40), 0.3)
    assert torch.allclose(bl.gaussian_blur(flat, 3.0), flat, atol=1e-6)
    for sigma in (1.0, 2.0, 4.0):
        imp = torch.zeros(1, 1, 81, 81)
        imp[0, 0, 40, 40] = 1
        out = bl.gaussian_blur(imp, sigma)[0, 0].double()
        assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
        xs = torch.arange(81, dtype=torch.float64) - 40
        var_x = (out.sum(0) * xs ** 2).sum().item()
        assert var_x == pytest.approx(sigma ** 2, rel=0.02)


def test_pixelation_makes_blocks_of_their_mean():
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bl.pixelate(x, 1), x)
    y = bl.pixelate(x, 8)
    assert torch.allclose(y[..., :8, :8], x[..., :8, :8].mean((-2, -1), keepdim=True).expand(1, 3, 8, 8))
    # the partial block at the corner averages only what it holds
    assert torch.allclose(y[..., 16:, 16:], x[..., 16:, 16:].mean((-2, -1), keepdim=True).expand(1, 3, 4, 4))
    assert len(torch.unique(y[0, 0])) <= 9


def face_batch(n=2, size=64):
    x = torch.stack([smooth_image(s, size)[0] for s in range(n)])
    lm = torch.tensor([[-0.3, -0.2], [0.3, -0.2], [0.0, 0.1], [-0.25, 0.35], [0.25, 0.35]]).expand(n, 5, 2)
    return x, lm.clone()


def test_baselines_change_the_face_region_only_and_stronger_is_stronger():
    x, lm = face_batch()
    l, t, r, b = bl.region(lm[0], (64, 64))
    assert 0 <= l < r <= 64 and 0 <= t < b <= 64 and (r - l) > 30
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[t:b, l:r] = True
    by_name = {base.name: base(x, lm) for base in bl.BASELINES}
    for name, y in by_name.items():
        assert torch.equal(y[..., ~inside], x[..., ~inside]), name
        assert not torch.equal(y[..., inside], x[..., inside]), name
    assert torch.all(by_name["solid mask"][..., inside] == 128 / 127.5 - 1)
    psnr = {k: quality.psnr(v, x).mean().item() for k, v in by_name.items()}
    assert psnr["blur sigma=side/32"] > psnr["blur sigma=side/16"]
    assert psnr["pixelation block=side/16"] > psnr["pixelation block=side/8"]
    blocks = by_name["pixelation block=side/8"][0, 0, t:b, l:r]
    assert torch.all(blocks[:8, :8] == blocks[0, 0])  # blocks of side/8 = 8 px from the region's corner


def test_baseline_strength_is_a_fraction_of_the_image_side():
    small, big = bl.BASELINES[0], bl.BASELINES[3]
    assert small.pixels(64) == 2 and small.pixels(128) == 4
    assert big.pixels(64) == 8 and "8 px" in big.describe(64)
    x, lm = face_batch(1, 128)
    assert to_uint8(bl.BASELINES[4](x, lm)).shape == (1, 128, 128, 3)
