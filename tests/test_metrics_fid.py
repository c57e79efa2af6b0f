"""metrics.fid: the Fréchet distance on hand-made feature sets, and FID with user-supplied weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import fid
from training.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    assert fid.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert fid.frechet_distance(a, a + shift) == pytest.approx(5.0, abs=1e-6)  # same covariance: |shift|^2
    # b = 3a: |mu - 3 mu|^2 + Tr(S) + 9 Tr(S) - 2 Tr(3 S)
    expected = 4 * (a.mean(0) ** 2).sum() + 4 * np.trace(np.cov(a, rowvar=False))
    assert fid.frechet_distance(a, 3 * a) == pytest.approx(expected, rel=1e-9)
    # against the textbook formula with a matrix square root (fine when N >> d)
    from scipy import linalg
    b = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4)) + 0.5
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)
    assert fid.frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="two images"):
        fid.frechet_distance(a[:1], a)


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
    assert fid.frechet_distance(fa, fb) == pytest.approx(0, abs=1e-3)
    assert fid.frechet_distance(fa, net(torch.zeros_like(x))) > 1e-3
