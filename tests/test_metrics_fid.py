"""metrics.fid: the Fréchet distance on hand-made feature sets, and FID with user-supplied weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import fid
from training.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


def scale(*sets: np.ndarray) -> float:
    """The scale of FID values for these features: the largest mean squared norm of a set's rows (the
    FID of a set against all-zero features is about this). Tolerances are relative to it, because
    float64 rounding of the features' squares is, and the features' size depends on the network and
    the machine (an untrained Inception's are ~1e10, and bf16 against fp32 changes them)."""
    return max(float((np.asarray(x, np.float64) ** 2).sum(1).mean()) for x in sets)


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    assert fid.frechet_distance(a, a) == pytest.approx(0, abs=1e-12 * scale(a))
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert fid.frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-9)  # same covariance: |shift|^2
    # b = 3a: |mu - 3 mu|^2 + Tr(S) + 9 Tr(S) - 2 Tr(3 S)
    expected = 4 * (a.mean(0) ** 2).sum() + 4 * np.trace(np.cov(a, rowvar=False))
    assert fid.frechet_distance(a, 3 * a) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="two images"):
        fid.frechet_distance(a[:1], a)


@pytest.mark.parametrize("size", [1e-6, 1.0, 1e11])
def test_frechet_distance_against_sqrtm(size):
    """The textbook formula with a direct float64 matrix square root, on a small well-conditioned case
    (N >> d, covariances of condition number below 100), at three scales: the relative error is the
    same at each."""
    from scipy import linalg

    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = rng.normal(size=(500, 5)) * [1.0, 2.0, 3.0, 4.0, 5.0] + 1.0
    b = rng.normal(size=(300, 5)) * [3.0, 1.0, 2.0, 2.0, 1.5] @ q - 0.5
    a, b = a * size, b * size
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert np.linalg.cond(sa) < 100 and np.linalg.cond(sb) < 100
    root = linalg.sqrtm(sa @ sb)
    assert np.abs(root.imag).max() <= 1e-9 * np.abs(root.real).max()
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * root.real)
    assert ref > 0.1 * scale(a, b)  # a distance well above rounding, so that rel= is a fair check
    assert fid.frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)
    assert fid.frechet_distance(b, a) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_frechet_distance_of_large_features(seed):
    """Features like an untrained Inception's (6 images, 2048-d, values ~1e10 on a large common
    offset; N < d, so the covariances are singular): identical sets give 0 and shifted sets the shift's
    squared norm, to within 1e-12 of the scale, and never a negative value. The former trace-difference
    form gave -2^21 and -2^24 on some of these seeds."""
    rng = np.random.default_rng(seed)
    a = (2.5e10 + 1e9 * rng.normal(size=(6, 2048))) * rng.uniform(0, 10, size=2048)
    shift = 1e8 * rng.normal(size=2048)
    s = scale(a, a + shift)
    same = fid.frechet_distance(a, a.copy())
    assert 0 <= same <= 1e-12 * s
    assert fid.frechet_distance(a, a + shift) == pytest.approx((shift**2).sum(), abs=1e-12 * s)
    b = a[::-1] * 1.01  # a different set of the same size and scale: a positive distance
    assert fid.frechet_distance(a, b) > 1e-6 * s


def test_frechet_distance_of_sets_of_different_sizes():
    """A set of N > d (its factor is the QR's R) against one of N < d (zero rows pad it), both ways."""
    from scipy import linalg

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(4, 6)) + 1
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # S_b has rank 3, so sqrtm(S_a S_b) is of a singular product; its trace is still the reference
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb) - 2 * np.trace(linalg.sqrtm(sa @ sb)).real
    assert fid.frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert fid.frechet_distance(b, a) == pytest.approx(ref, rel=1e-6)
    assert fid.frechet_distance(b, b) == pytest.approx(0, abs=1e-12 * scale(b))


def test_weights_that_are_not_inception_are_refused(tmp_path):
    path = str(tmp_path / "w.pth")
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="Inception"):
        fid.InceptionFeatures(path, "cpu")


@pytest.mark.slow
def test_fid_with_supplied_weights(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    path = str(tmp_path / "inception.pth")
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), path)
    net = fid.InceptionFeatures(path, "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 64, 64, generator=g) * 2 - 1
    fa, fb = net(x), net(x)
    assert fa.shape == (6, 2048) and np.array_equal(fa, fb)
    fz = net(torch.zeros_like(x))
    # relative to the features' scale: an untrained Inception's are ~1e10, and their size depends on
    # the CPU's kernels; the old absolute abs=1e-3 met float64 rounding of ~1e21 traces (-2^21 here)
    same = fid.frechet_distance(fa, fb)
    assert 0 <= same <= 1e-12 * scale(fa)
    assert fid.frechet_distance(fa, fz) > 1e-3 * scale(fa, fz)
