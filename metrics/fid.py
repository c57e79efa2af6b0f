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


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, d).

    With S_a = A^T A and S_b = B^T B (A, B the centred features over sqrt(N - 1)), the non-zero
    eigenvalues of S_a S_b are the squared singular values of A B^T, so Tr((S_a S_b)^(1/2)) is the sum
    of those singular values: exact, and stable when N is smaller than d (where sqrtm of a singular
    product is not)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two images per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    A = (a - mu_a) / np.sqrt(len(a) - 1)
    B = (b - mu_b) / np.sqrt(len(b) - 1)
    cross = np.linalg.svd(A @ B.T, compute_uv=False).sum()
    return float(((mu_a - mu_b) ** 2).sum() + (A * A).sum() + (B * B).sum() - 2 * cross)
