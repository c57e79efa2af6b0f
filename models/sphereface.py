"""The face recogniser FR: SphereFace-20a with an A-Softmax (AngleLinear) head and its loss.

Parameter names match the published ``sphere20a_20171020.pth`` (conv1_1 ... conv4_3 with PReLUs
relu*_*, fc5 the 512-d embedding, fc6 the AngleLinear weight of shape (512, classes)). ``width`` scales
every channel count and the crop size may shrink, so the smoke configuration can run the same network
narrower and smaller; at width 1.0 and 112x96 it is the published network.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# (stage, output channels, residual units) of sphere20a: every stage halves the resolution with a
# stride-2 conv, then adds residual units of two 3x3 convs with PReLUs.
_STAGES = ((1, 64, 1), (2, 128, 2), (3, 256, 4), (4, 512, 1))


class AngleLinear(nn.Module):
    """A-Softmax head (margin m): returns (|x| cos(theta), |x| phi(theta)) for every class.

    phi(theta) = (-1)^k cos(m theta) - 2k on [k pi / m, (k + 1) pi / m] is the monotonic extension of
    cos(m theta) used by SphereFace. Computed in float32 even under autocast: the polynomial in cos
    theta and the angle bins are sensitive to rounding.
    """

    def __init__(self, in_features: int, out_features: int, m: int = 4):
        super().__init__()
        if m not in (1, 2, 3, 4):
            raise ValueError(f"A-Softmax margin must be 1..4, got {m}")
        self.m = m
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.uniform_(self.weight, -1, 1)
        with torch.no_grad():
            self.weight.copy_(self.weight.renorm(2, 1, 1e-5).mul(1e5))

    def _cos_m(self, c: torch.Tensor) -> torch.Tensor:
        if self.m == 1:
            return c
        if self.m == 2:
            return 2 * c ** 2 - 1
        if self.m == 3:
            return 4 * c ** 3 - 3 * c
        return 8 * c ** 4 - 8 * c ** 2 + 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            w = self.weight.float()
            x_norm = x.norm(dim=1, keepdim=True)
            # x @ (w / |w|) as (x @ w) / |w|: the division runs over the (B, classes) product instead
            # of the (512, classes) weight, in the forward and the backward pass
            w_norm = w.norm(dim=0, keepdim=True).clamp_min(1e-12)
            cos = ((x @ w) / (x_norm.clamp_min(1e-12) * w_norm)).clamp(-1, 1)
            k = torch.floor(self.m * torch.acos(cos.detach()) / math.pi)
            sign = 1 - 2 * torch.remainder(k, 2)  # (-1)^k
            phi = sign * self._cos_m(cos) - 2 * k
            return cos * x_norm, phi * x_norm


class AngleLoss(nn.Module):
    """A-Softmax loss with the annealed lambda of SphereFace.

    Each call increments ``it`` (one counter shared by all calls) and uses
    lambda = max(lambda_min, lambda_max / (1 + 0.1 it)); the target logit is
    cos - cos / (1 + lambda) + phi / (1 + lambda); loss = mean(-(1 - p)^gamma log p).
    """

    def __init__(self, gamma: float = 0.0, lambda_min: float = 5.0, lambda_max: float = 1500.0):
        super().__init__()
        self.gamma, self.lambda_min, self.lambda_max = gamma, lambda_min, lambda_max
        self.it = 0

    def current_lambda(self) -> float:
        return max(self.lambda_min, self.lambda_max / (1 + 0.1 * self.it))

    def forward(self, logits: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        self.it += 1
        lamb = self.current_lambda()
        cos, phi = logits
        onehot = torch.zeros_like(cos).scatter_(1, target[:, None], 1.0)  # F.one_hot would sync on CUDA
        out = cos + onehot * (phi - cos) / (1 + lamb)
        logp = F.log_softmax(out, dim=1).gather(1, target[:, None]).squeeze(1)
        if self.gamma:
            logp = logp * (1 - logp.detach().exp()) ** self.gamma
        return -logp.mean()

    def state_dict(self, *args, **kwargs):
        return {"it": self.it}

    def load_state_dict(self, state, strict: bool = True):
        self.it = int(state["it"])


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter, same values) written as relu(x) - a relu(-x), which is exactly
    max(0, x) + a min(0, x) in any dtype. Its backward runs on vectorised elementwise kernels: in
    SphereFace's forward and backward pass at batch 60, bf16 on 2 CPU cores, 1.04 -> 0.94 s against
    the native PReLU kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2) if self.num_parameters > 1 else (1,)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        x = x.to(dtype)
        a = self.weight.to(dtype).view(shape)
        return F.relu(x) - a * F.relu(-x)


def _c(ch: int, width: float) -> int:
    return max(8, int(round(ch * width)))


class Sphere20a(nn.Module):
    """SphereFace-20a. ``forward`` returns (fc5 embedding, (cos, phi) logits)."""

    def __init__(self, num_classes: int = 10574, width: float = 1.0, crop: tuple[int, int] = (112, 96),
                 margin: int = 4):
        super().__init__()
        h, w = crop
        self.crop = (h, w)
        c_in = 3
        for stage, ch, units in _STAGES:
            ch = _c(ch, width)
            self.add_module(f"conv{stage}_1", nn.Conv2d(c_in, ch, 3, 2, 1))
            self.add_module(f"relu{stage}_1", PReLU(ch))
            for j in range(2, 2 + 2 * units):
                self.add_module(f"conv{stage}_{j}", nn.Conv2d(ch, ch, 3, 1, 1))
                self.add_module(f"relu{stage}_{j}", PReLU(ch))
            c_in = ch
        for _ in _STAGES:  # each stage: 3x3 conv, stride 2, padding 1 -> ceil(n / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
        self.fc5 = nn.Linear(c_in * h * w, 512)
        self.fc6 = AngleLinear(512, num_classes, margin)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for stage, _, units in _STAGES:
            x = getattr(self, f"relu{stage}_1")(getattr(self, f"conv{stage}_1")(x))
            for j in range(2, 2 + 2 * units, 2):
                y = getattr(self, f"relu{stage}_{j}")(getattr(self, f"conv{stage}_{j}")(x))
                x = x + getattr(self, f"relu{stage}_{j + 1}")(getattr(self, f"conv{stage}_{j + 1}")(y))
        return self.fc5(x.flatten(1))

    def forward(self, x: torch.Tensor):
        feat = self.embed(x)
        return feat, self.fc6(feat)
