"""Fréchet Inception distance between the originals and a view, with Inception weights the user
supplies (nothing is downloaded).

The network is torchvision's Inception-v3 layout (``torchvision.models.inception_v3``, without the
auxiliary head); the file is its state dict (``.pth``, loaded with weights_only=True; auxiliary-head
keys are ignored). Features are the 2048-d average-pooled activations of images resized to 299 px
(bilinear) and normalised with ImageNet's mean and standard deviation, as torchvision's weights
expect. This is not the TensorFlow FID network, so values are comparable only between runs with the
same weights; with a few hundred images FID is also biased upwards (the sample size is reported).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.checkpoint import CheckpointError, load_checkpoint

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class InceptionFeatures:
    def __init__(self, weights_path: str, device):
        from torchvision.models import inception_v3

        state = load_checkpoint(weights_path)
        state = state.get("state_dict", state)
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{weights_path}: not torchvision Inception-v3 weights ({str(e)[:300]})") from None
        net.fc = nn.Identity()
        self.net, self.device = net.to(device).eval().requires_grad_(False), device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) in [-1, 1] -> (B, 2048) float64."""
        x = (images.to(self.device, torch.float32) + 1) / 2
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
        return self.net((x - mean) / std).double().cpu().numpy()


def _factor(x: np.ndarray) -> np.ndarray:
    """A matrix F with F^T F equal to the covariance of the rows of x, with at most d rows: the centred
    rows over sqrt(N - 1), or, when N > d, the R of their QR decomposition (R^T R = A^T A)."""
    f = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    return np.linalg.qr(f, mode="r") if len(f) > f.shape[1] else f


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, d).

    Computed so that its rounding error is small relative to the features' scale, and so that it is
    never negative, with no clamping:

    - both sets are divided by one common scale s (their largest absolute value) and the result is
      multiplied by s^2, so that squares of large features neither overflow nor lose range;
    - the trace term is not formed as a difference of traces (for identical sets of an untrained
      Inception those traces are ~1e21 and cancel to float64 rounding, which can be negative). With
      S_a = A^T A and S_b = B^T B (A, B factors of the covariances, padded with zero rows to the same
      number k of rows), Tr((S_a S_b)^(1/2)) is the sum of the singular values of B A^T (their
      squares are the non-zero eigenvalues of S_a S_b), and the trace term equals
      min over orthogonal U of ||A - U^T B||_F^2, attained at the orthogonal Procrustes solution
      U = W V^T of B A^T = W diag(sigma) V^T. The trace term is that sum of squares, computed directly.

    A factor is the centred features over sqrt(N - 1), or their QR's R when N > d, so the matrices are
    at most min(N, d) wide and no matrix square root of a singular product is taken."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two images per set")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"FID needs two (N, d) feature sets of the same d, got {a.shape} and {b.shape}")
    s = max(np.abs(a).max(), np.abs(b).max())
    if not np.isfinite(s):
        return float("nan")
    if s == 0:
        return 0.0
    a, b = a / s, b / s
    mean_term = ((a.mean(0) - b.mean(0)) ** 2).sum()
    fa, fb = _factor(a), _factor(b)
    k = max(len(fa), len(fb))
    fa = np.pad(fa, ((0, k - len(fa)), (0, 0)))
    fb = np.pad(fb, ((0, k - len(fb)), (0, 0)))
    w, _, vt = np.linalg.svd(fb @ fa.T)
    trace_term = ((fa - (w @ vt).T @ fb) ** 2).sum()
    return float((mean_term + trace_term) * s * s)
