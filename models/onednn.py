"""The paper's generator for inference on the CPU with oneDNN's fused convolutions.

G's time on a CPU is not all in its convolutions: each ReLU, each residual addition and each
password bias is one more pass over a full-size activation, and plain ``F.conv2d`` reorders its
weights on every call. oneDNN, which runs PyTorch's CPU convolutions, can apply the ReLU and the
residual addition as it writes a convolution's output, and take its weights once in its own
layout. ``fuse_for_onednn`` builds that version of a BatchNorm-folded ``ResnetGenerator``:

* every convolution followed by a ReLU (G's first layer, both downsamplings, the first convolution
  of every residual block) computes conv + bias + ReLU in one pass;
* the second convolution of each residual block adds the block's input as it writes its output;
* both resize-convolutions (already transposed convolutions, models/networks.py) do the same with
  their ReLU, and the last convolution (64 -> 3) with G's tanh;
* the first layer runs one image at a time, with that image's password bias folded into the
  convolution's bias (the password's channels are constant, see ``ResnetGenerator._run``), so the
  bias and the ReLU cost no pass of their own;
* weights are reordered once, on the first call, into oneDNN's layout.

The same function, rounded differently: in float32 within 2e-5 of the unfused G (the paper-size
G, random weights, outputs in [-1, 1]); under bf16 autocast the ReLU, the residual sum and the tanh
act on the float32 accumulator before the one rounding to bf16 instead of after it, and the result
stays as close to float32 as the unfused G's (mean difference 0.0095 against 0.0094;
tests/test_onednn.py). On a 2-core Intel Xeon with AMX (bf16, batch 4, one thread, 15 calls of
each taken in turn) the paper-size G took 25.5 instead of 30.7 ms a face at best (median 29.2
instead of 33.6); the video bench (bench/anonymize.py, 3 faces, 720p, three rounds) ran at 1.09x
to 1.10x the frames per second of the unfused G.

These are PyTorch's internal oneDNN operators (``torch.ops.mkldnn``), the ones ``torch.compile``
uses for CPU inference. Since they are internal, ``fuse_for_onednn`` checks them on the model
itself: the fused G must reproduce the unfused one on a small test image, or the unfused G is
returned. Inference only, on the CPU: no autograd; calls with gradients enabled, other dtypes or
another device go to the unfused G, and so does every call after one that the operators fail (with
a warning).
"""
from __future__ import annotations

import threading
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks import ReflectionPad2d, ResnetBlock, ResnetGenerator, ShiftSumConv2d, UpsampleConv2d

__all__ = ["fuse_for_onednn", "FusedResnetGenerator", "onednn_available"]

CHECK_SIZE = 32  # the test image's side: G's smallest activation is then 8 x 8
_CHECK_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.02}  # mean |fused - unfused| on [-1, 1]


def onednn_available() -> bool:
    """PyTorch was built with oneDNN and has the fused convolution operators used here."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    return all(hasattr(ops, name) for name in ("_convolution_pointwise", "_convolution_transpose_pointwise",
                                               "_reorder_convolution_weight",
                                               "_reorder_convolution_transpose_weight"))


def _replicate_pad(x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):  # as UpsampleConv2d pads: exact in any dtype
        return F.pad(x, (1, 1, 1, 1), mode="replicate")


class _Packed:
    """A weight in oneDNN's layout, made on the first call (from that call's input shape, with batch
    1: the layout does not depend on the batch, and the results are the same bits as the plain
    weight's)."""

    def __init__(self, weight: torch.Tensor, stride: int, padding: int, transposed: bool):
        self.weight, self.stride, self.padding, self.transposed = weight, stride, padding, transposed
        self.packed, self._lock = None, threading.Lock()

    def reset(self) -> None:
        self.packed = None

    def get(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            with self._lock:
                if self.packed is None:
                    shape = [1, *x.shape[1:]]
                    s, p = [self.stride] * 2, [self.padding] * 2
                    if self.transposed:
                        self.packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(
                            self.weight, p, [0, 0], s, [1, 1], 1, shape)
                    else:
                        w = self.weight.contiguous(memory_format=torch.channels_last)
                        self.packed = torch.ops.mkldnn._reorder_convolution_weight(w, p, s, [1, 1], 1, shape)
        return self.packed


class _Conv(nn.Module):
    """An unpadded convolution (stride 1 or 2) with its bias, then ``unary`` ("relu", "tanh" or
    "none") or the addition of ``other`` (a residual), in one pass."""

    def __init__(self, conv: nn.Conv2d, unary: str):
        super().__init__()
        self.stride, self.unary = int(conv.stride[0]), unary
        w = conv.weight.detach()
        self.bias = None if conv.bias is None else conv.bias.detach().to(w.dtype)
        self.weight = _Packed(w, self.stride, 0, transposed=False)

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        w, s = self.weight.get(x), [self.stride] * 2
        if other is not None:
            return torch.ops.mkldnn._convolution_pointwise.binary(x, other, w, self.bias, [0, 0], s, [1, 1], 1,
                                                                  "add", None, None, [], None)
        return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, [0, 0], s, [1, 1], 1, self.unary, [], "")


class _Residual(nn.Module):
    """A ResnetBlock: x + conv(pad(relu(conv(pad(x))))), the addition done by the second convolution."""

    def __init__(self, block: ResnetBlock):
        super().__init__()
        convs = [m for m in block.conv_block if isinstance(m, nn.Conv2d)]
        self.pad_first, self.pad_second = (m for m in block.conv_block if isinstance(m, ReflectionPad2d))
        self.first, self.second = _Conv(convs[0], "relu"), _Conv(convs[1], "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(self.pad_first(x))
        return self.second(self.pad_second(h), other=x)


class _UpsampleReLU(nn.Module):
    """UpsampleConv2d (its transposed kernel, see models/networks.py) and the ReLU after it."""

    def __init__(self, up: UpsampleConv2d):
        super().__init__()
        w = (up.transposed_weight() if up.frozen_weight is None else up.frozen_weight).detach()
        self.bias = up.bias.detach().to(w.dtype)
        self.weight = _Packed(w, 2, 3, transposed=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _replicate_pad(x)
        return torch.ops.mkldnn._convolution_transpose_pointwise(x, self.weight.get(x), self.bias, [3, 3], [0, 0],
                                                                 [2, 2], [1, 1], 1, "relu", [], "")


def _is_plain_conv(m: nn.Module, kind: type = nn.Conv2d) -> bool:
    return (type(m) is kind and m.groups == 1 and tuple(m.dilation) == (1, 1) and m.padding_mode == "zeros"
            and tuple(m.padding) == (0, 0) and m.stride[0] == m.stride[1])


def _fused_layers(layers: list[nn.Module]) -> list[nn.Module]:
    """G's layers after its first convolution and ReLU, with each pattern above replaced by its fused
    module (folded BatchNorms are Identity; anything else is kept as it is)."""
    out, i = [], 0
    kept = [m for m in layers if not isinstance(m, nn.Identity)]
    while i < len(kept):
        m = kept[i]
        after = type(kept[i + 1]) if i + 1 < len(kept) else None
        if isinstance(m, ResnetBlock) and not any(isinstance(k, nn.BatchNorm2d) for k in m.modules()):
            out.append(_Residual(m))
        elif isinstance(m, UpsampleConv2d) and after is nn.ReLU:
            out.append(_UpsampleReLU(m))
            i += 1
        elif _is_plain_conv(m) and after is nn.ReLU:
            out.append(_Conv(m, "relu"))
            i += 1
        elif _is_plain_conv(m, ShiftSumConv2d) and after is nn.Tanh:  # G's last layer: oneDNN's own kernel
            out.append(_Conv(m, "tanh"))                                # is faster fused with the tanh
            i += 1
        else:
            out.append(m)
        i += 1
    return out


class FusedResnetGenerator(nn.Module):
    """A folded ResnetGenerator's function with fused oneDNN convolutions (see the module docstring).
    ``eager`` is the generator it was made from, which it shares its weights with and calls where the
    fused path does not apply."""

    def __init__(self, G: ResnetGenerator):
        super().__init__()
        self.eager = G
        self.passwd_length = G.passwd_length
        conv = G.model[1]
        w = conv.weight.detach()
        self.dtype = w.dtype
        self.first = _Packed(w[:, :3].contiguous(), 1, 0, transposed=False)
        acc = torch.promote_types(w.dtype, torch.float32)
        self.first_bias = (torch.zeros(w.shape[0], dtype=acc) if conv.bias is None else conv.bias.detach().to(acc))
        self.password_weight = w[:, 3:].to(acc).sum(dim=(2, 3)).t()  # (L, out): see ResnetGenerator._run
        self.failed = False  # set when a call fails: later calls go to ``eager``
        self.layers = nn.ModuleList(_fused_layers(_after_first_conv(G)[1:]))  # [0]: its ReLU, fused above

    def unpack(self) -> None:
        """Forget the packed weights (packed again, for the next call's input shape, by that call)."""
        for m in self.modules():
            for packed in vars(m).values():
                if isinstance(packed, _Packed):
                    packed.reset()

    def _applies(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or torch.is_grad_enabled():
            return False
        if torch.is_autocast_enabled("cpu"):
            return self.dtype == torch.get_autocast_dtype("cpu")
        return self.dtype == torch.float32

    def forward(self, x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        if self.failed or not self._applies(x):
            return self.eager(x, pw)
        if pw.dim() != 2 or pw.shape[0] != x.shape[0] or pw.shape[1] != self.passwd_length:
            raise ValueError(f"password vector must be (B, L) with B={x.shape[0]}, L={self.passwd_length}; "
                             f"got {tuple(pw.shape)}")
        try:
            return self._fused(x, pw)
        except RuntimeError as e:  # an input the test image did not show (a size, a CPU limit)
            self.failed = True
            warnings.warn(f"oneDNN's fused convolutions failed ({str(e).splitlines()[0]}); the generator runs "
                          f"unfused from now on, with the same results", RuntimeWarning, stacklevel=2)
            return self.eager(x, pw)

    def _fused(self, x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        x = self.eager.model[0](x.to(self.dtype).contiguous(memory_format=torch.channels_last))
        bias = (self.first_bias + pw.to(self.first_bias.dtype) @ self.password_weight).to(self.dtype)
        w = self.first.get(x)
        y = torch.cat([torch.ops.mkldnn._convolution_pointwise(x[i:i + 1], w, bias[i], [0, 0], [1, 1], [1, 1], 1,
                                                               "relu", [], "") for i in range(x.shape[0])])
        for layer in self.layers:
            y = layer(y)
        return y


def _after_first_conv(G: ResnetGenerator) -> list[nn.Module]:
    """G's layers after its first convolution, folded BatchNorms (Identity) left out."""
    return [m for m in list(G.model)[2:] if not isinstance(m, nn.Identity)]


def _first_layer_relu(G: ResnetGenerator) -> bool:
    rest = _after_first_conv(G)
    return isinstance(G.model[0], ReflectionPad2d) and _is_plain_conv(G.model[1]) and bool(rest) \
        and type(rest[0]) is nn.ReLU


@torch.no_grad()
def fuse_for_onednn(G: nn.Module) -> nn.Module:
    """``G`` with fused oneDNN convolutions for CPU inference (a FusedResnetGenerator sharing G's
    weights), or ``G`` itself where that does not apply: another architecture, a G whose BatchNorms
    are not folded (the authors' checkpoints normalise twins), a G on another device, a PyTorch without
    the operators, or operators that fail or disagree with G on a small test image."""
    if not (isinstance(G, ResnetGenerator) and getattr(G, "folded", False) and not G.training
            and onednn_available() and _first_layer_relu(G)):
        return G
    w = G.model[1].weight
    if w.device.type != "cpu" or w.dtype not in _CHECK_TOLERANCE:
        return G
    fused = FusedResnetGenerator(G)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, CHECK_SIZE, CHECK_SIZE, generator=gen) * 2 - 1
    pw = torch.randint(0, 2, (2, G.passwd_length), generator=gen).float() * 2 - 1
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=w.dtype == torch.bfloat16):
            want, got = G(x, pw).float(), fused._fused(x, pw).float()
    except RuntimeError:  # an operator this PyTorch or this CPU does not run
        return G
    if got.shape != want.shape or not bool((got - want).abs().mean() <= _CHECK_TOLERANCE[w.dtype]):
        return G
    fused.unpack()  # the first real call packs the weights for its own image size
    return fused.eval().requires_grad_(False)
