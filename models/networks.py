"""Generator G, discriminator D and password classifier Q of the paper, plus norms, init and GAN loss.

Module layouts are chosen so that ``state_dict`` names and shapes equal the authors' published
checkpoints (listed in tests/data/original_state_dicts.txt): Sequential indices count the padding,
activation and pooling layers exactly as the original networks do.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init

# ---- normalisation ---------------------------------------------------------------------------

class BatchNorm2dNoStats(nn.BatchNorm2d):
    """BatchNorm with affine parameters and no running statistics in its state dict (the paper's
    ``norm: batch``): the state dict holds only ``weight`` and ``bias``, as in the published files.

    Training mode normalises with the statistics of the batch, as the paper trains. Eval mode must not
    depend on the rest of the batch, so it uses, in this order of preference:

    * inference statistics (``track_inference_stats``): a moving average of the training batches'
      statistics, kept in non-persistent buffers that checkpoints store beside the state dict (see
      :func:`inference_stats`). The generator's normalisation then sees at inference what it saw in
      training, and the password survives;
    * otherwise, fixed consecutive groups of ``eval_group`` samples (1: each image alone; the
      generators use pairs of an image and its complement-password twin, see PasswordGenerator).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=False)
        self.eval_group = 1
        self.track_inference_stats = False
        self.register_buffer("inference_mean", torch.zeros(num_features), persistent=False)
        self.register_buffer("inference_var", torch.ones(num_features), persistent=False)
        self.register_buffer("inference_count", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def has_inference_stats(self) -> bool:
        return bool(self.inference_count > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if not self.track_inference_stats:
                return super().forward(x)
            # the same normalisation as plain training BatchNorm, and the moving averages come free
            self.inference_count += 1
            return F.batch_norm(x, self.inference_mean, self.inference_var, self.weight, self.bias, True,
                                self.momentum, self.eps)
        if self.track_inference_stats and self.has_inference_stats:
            return F.batch_norm(x, self.inference_mean, self.inference_var, self.weight, self.bias, False, 0.0,
                                self.eps)
        if self.eval_group == 1:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        n, c, h, w = x.shape
        g = self.eval_group
        if n % g:
            raise ValueError(f"eval-mode BatchNorm normalises groups of {g} samples; got a batch of {n}")
        xf = x.float().reshape(n // g, g, c, h, w)
        var, mean = torch.var_mean(xf, dim=(1, 3, 4), keepdim=True, correction=0)
        scale = torch.rsqrt(var + self.eps) * self.weight.float().view(1, 1, c, 1, 1)
        shift = self.bias.float().view(1, 1, c, 1, 1) - mean * scale
        return (xf * scale + shift).reshape(n, c, h, w).to(x.dtype)


def inference_stats(net: nn.Module) -> dict:
    """The inference statistics of a network's BatchNorms, for a checkpoint ({} when none tracked)."""
    out = {}
    for name, m in net.named_modules():
        if isinstance(m, BatchNorm2dNoStats) and m.track_inference_stats and m.has_inference_stats:
            out[name + ".inference_mean"] = m.inference_mean.detach().clone()
            out[name + ".inference_var"] = m.inference_var.detach().clone()
            out[name + ".inference_count"] = m.inference_count.detach().clone()
    return out


def load_inference_stats(net: nn.Module, stats: dict) -> None:
    """Restore what :func:`inference_stats` saved; every tracked BatchNorm must be covered."""
    for name, m in net.named_modules():
        if isinstance(m, BatchNorm2dNoStats) and m.track_inference_stats:
            try:
                for key in ("inference_mean", "inference_var", "inference_count"):
                    getattr(m, key).copy_(stats[f"{name}.{key}"])
            except KeyError as e:
                raise KeyError(f"inference statistics: missing {e.args[0]}") from None


@torch.no_grad()
def fold_batchnorm(G: nn.Module) -> nn.Module:
    """Make an eval-mode generator with inference statistics cheaper to run, in place, for inference
    only: each BatchNorm's normalisation (inference mean and variance, then weight and bias) is folded
    into the convolution right before it, ``s * (W x + b - mean) + beta`` with ``s = weight / sqrt(var +
    eps)`` becoming one convolution with weights ``s W`` and bias ``s (b - mean) + beta``, and each
    resize-convolution's transposed kernel is computed once. The same function in exact arithmetic;
    the float results differ by rounding (float32: about 1e-6; under bf16 autocast by as much as
    any two bf16 kernels do, and no further from float32: tests/test_networks.py). In a U-Net level
    with the password injected at every level, the password's bias added between the convolution and
    its BatchNorm is scaled the same way. Generators without inference statistics (the authors'
    files, which normalise twins) are returned unchanged. A folded G cannot be trained again."""
    if G.training or not getattr(G, "has_inference_stats", False):
        return G
    for block in G.modules():
        if not isinstance(block, nn.Sequential):
            continue
        proj = getattr(_parent_of(G, block), "pw_proj", None)
        kids = list(block._modules.items())
        for (_, conv), (name, bn) in zip(kids, kids[1:]):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, BatchNorm2dNoStats)):
                continue
            s = bn.weight / torch.sqrt(bn.inference_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(s)
            conv.weight.mul_(s.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.inference_mean) * s + bn.bias, requires_grad=False)
            if proj is not None and isinstance(conv, UpsampleConv2d):
                proj.weight.mul_(s.view(-1, 1))
            block._modules[name] = nn.Identity()
    for m in G.modules():
        if isinstance(m, UpsampleConv2d):
            m.frozen_weight = m.transposed_weight()
    G.twin_norm = False  # no BatchNorm is left to normalise twins, and none needs to
    G.folded = True
    return G


@torch.no_grad()
def with_bf16_weights(G: nn.Module) -> nn.Module:
    """A copy of an eval-mode generator for bf16 autocast only, with its convolution weights stored in
    bf16 (biases, norms and the password's projections stay float32, as autocast has them). Autocast
    casts a float32 weight to bf16 on every call; this is the same cast done once. The results stay
    as close to float32 as autocast's (tests/test_networks.py); called without autocast, the copy
    fails on the mixed dtypes rather than computing in a precision nobody asked for."""
    if G.training:
        raise ValueError("with_bf16_weights is for inference: put the generator in eval mode first")
    G = copy.deepcopy(G)
    for m in G.modules():
        if isinstance(m, UpsampleConv2d):
            w = m.transposed_weight() if m.frozen_weight is None else m.frozen_weight
            m.frozen_weight = w.to(torch.bfloat16)
        elif isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.to(torch.bfloat16)
    return G


def _parent_of(root: nn.Module, child: nn.Module) -> nn.Module | None:
    for m in root.modules():
        if any(c is child for c in m.children()):
            return m
    return None


def norm_layer(kind: str):
    if kind == "batch":
        return BatchNorm2dNoStats
    if kind == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    raise ValueError(f"norm must be 'batch' or 'instance', got {kind!r}")


def conv_bias(kind: str) -> bool:
    """Convolutions followed by BatchNorm have no bias (BatchNorm's shift replaces it)."""
    return kind != "batch"


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Conv/Linear weights ~ N(0, gain) (or xavier/kaiming/orthogonal), biases 0; BatchNorm weights
    ~ N(1, gain), biases 0 -- the initialisation of the spec."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                init.orthogonal_(m.weight, gain=gain)
            else:
                raise ValueError(f"unknown init_type {init_type!r}")
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
            init.normal_(m.weight, 1.0, gain)
            init.zeros_(m.bias)
    return net


class ReflectionPad2d(nn.ReflectionPad2d):
    """Reflection padding that keeps the input's dtype under autocast. CPU autocast runs
    ``reflection_pad2d`` in float32, which doubles the memory traffic around every bf16 convolution
    of G; padding is exact in any dtype. No parameters: state-dict names are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.pad(x, self.padding, "reflect")


# Nearest x2 upsampling then a 3x3 convolution is a stride-2 transposed convolution with a 4x4 kernel:
# output row 2m + a reads input rows m - 1 + a and m + a, and the transposed kernel's row k holds the
# sum of the 3x3 kernel's rows (u = 0, 1, 2) that land on the same input row: k = 0 and 2 serve odd
# output rows, k = 1 and 3 even ones.
_UP_TAPS = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float32)


class UpsampleConv2d(nn.Conv2d):
    """Nearest x2 upsampling, reflection padding 1 and a 3x3 convolution (the resize-convolution of the
    paper's G), computed without building the upsampled image: a transposed convolution, stride 2, of
    the edge-replicated low-resolution input (replicating the input equals reflecting the upsampled
    image). Same function and parameters as the three layers it replaces, with 4 instead of 9
    multiply-adds per output value and input channel, and no 4x-sized intermediate tensors (forward and
    backward of G's 256 -> 128 layer at batch 12 on 2 CPU cores: 223 -> 148 ms in fp32, 109 -> 62 ms
    in bf16).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # set by fold_batchnorm: the kernel below, computed once (a buffer: it moves with .to())
        self.register_buffer("frozen_weight", None, persistent=False)

    def transposed_weight(self) -> torch.Tensor:
        taps = _UP_TAPS.to(self.weight.device, self.weight.dtype)
        return torch.einsum("ku,oiuv,lv->iokl", taps, self.weight, taps)  # (in, out, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.transposed_weight() if self.frozen_weight is None else self.frozen_weight
        with torch.autocast(x.device.type, enabled=False):
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv_transpose2d(x, w, self.bias, stride=2, padding=3)


class ShiftSumConv2d(nn.Conv2d):
    """A k x k convolution (stride 1, no padding) for few output channels, such as G's last layer
    (64 -> 3, 7x7), where oneDNN's kernels idle on the narrow output. It runs as a k x 1 convolution
    with k times the outputs, one per kernel column, and sums the k column results shifted by their
    offsets, in float32. Same function and parameters as ``nn.Conv2d`` (the bf16 result differs by
    about one more rounding step); forward and backward of G's last layer at batch 12 on 2 CPU cores:
    104 -> 73 ms in fp32, 54 -> 30 ms in bf16."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, c, kh, kw = self.weight.shape
        w = self.weight.permute(0, 3, 1, 2).reshape(o * kw, c, kh, 1)  # output (o, column)
        z = F.conv2d(x, w)
        n, _, h, w_in = z.shape
        width = w_in - kw + 1
        z = z.view(n, o, kw, h, w_in)
        y = z[:, :, 0, :, :width].float()
        for k in range(1, kw):
            y = y + z[:, :, k, :, k:k + width]
        if self.bias is not None:
            y = y + self.bias.float().view(1, -1, 1, 1)
        return y.to(z.dtype)


def with_password(x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
    """Concatenate the (B, L) password vector, tiled over every pixel, to the (B, 3, H, W) image."""
    if pw.dim() != 2 or pw.shape[0] != x.shape[0]:
        raise ValueError(f"password vector must be (B, L) with B={x.shape[0]}, got {tuple(pw.shape)}")
    tiled = pw.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, tiled], dim=1)


# ---- generators -------------------------------------------------------------------------------

class PasswordGenerator(nn.Module):
    """G(image, password vector). Subclasses build ``self.model`` on 3 + L input channels.

    Inference with ``norm: batch``. The password enters as constant channels, so after G's first
    convolution it is a per-image, per-channel constant: normalising each image with its own statistics
    would subtract it and make G ignore the password entirely. So in eval mode G normalises with the
    inference statistics it tracked during training (a moving average of the training batches'
    statistics, saved in checkpoints beside the published state-dict names). Networks without them
    (the authors' checkpoints) run each image beside a twin with the complementary password (whose
    vector is the negation in every encoding), and every BatchNorm normalises that pair alone: the
    password's contribution keeps its sign against a zero mean, as against the mean of a training batch
    of random passwords. Either way the result depends only on the image and its password, never on
    the rest of the batch. In training mode the batch is used as is.
    """

    folded = False  # set by fold_batchnorm

    def _finish(self, norm: str) -> None:
        self.twin_norm = norm == "batch"
        for m in self.modules():
            if isinstance(m, BatchNorm2dNoStats):
                m.eval_group = 2
                m.track_inference_stats = True

    def train(self, mode: bool = True):
        if mode and self.folded:
            raise RuntimeError("this generator's BatchNorms are folded into its convolutions for inference "
                               "(fold_batchnorm); load the checkpoint again to train it")
        return super().train(mode)

    @property
    def has_inference_stats(self) -> bool:
        norms = [m for m in self.modules() if isinstance(m, BatchNorm2dNoStats)]
        return bool(norms) and all(m.has_inference_stats for m in norms)

    def forward(self, x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        if self.training or not self.twin_norm or self.has_inference_stats:
            return self._run(x, pw)
        xx = x.repeat_interleave(2, dim=0)
        vv = torch.stack([pw, -pw], dim=1).flatten(0, 1)
        return self._run(xx, vv)[0::2]

    def _run(self, x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        return self.model(with_password(x, pw))


def _upsample(c_in: int, c_out: int, norm: str, resize_conv: bool) -> list[nn.Module]:
    """x2 upsampling: nearest resize + reflect-padded 3x3 conv (with bias), or a transposed conv."""
    if resize_conv:  # Upsample and pad are folded into the convolution (same indices, same parameters)
        return [nn.Identity(), nn.Identity(), UpsampleConv2d(c_in, c_out, 3, bias=True),
                norm_layer(norm)(c_out), nn.ReLU(True)]
    return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=conv_bias(norm)),
            norm_layer(norm)(c_out), nn.ReLU(True)]


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, use_dropout: bool):
        super().__init__()
        bias = conv_bias(norm)
        layers = [ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm)(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm)(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(PasswordGenerator):
    """The paper's G: c7s1-64, two stride-2 downsamplings, n residual blocks at 256, two upsamplings,
    c7s1-3 and tanh. Input: image (3 channels) + password tiled (L channels)."""

    def __init__(self, passwd_length: int, ngf: int = 64, n_blocks: int = 9, norm: str = "batch",
                 use_dropout: bool = False, use_resize_conv: bool = True):
        super().__init__()
        self.passwd_length = passwd_length
        bias = conv_bias(norm)
        nl = norm_layer(norm)
        layers = [ReflectionPad2d(3), nn.Conv2d(3 + passwd_length, ngf, 7, bias=bias), nl(ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [ReflectionPad2d(1), nn.Conv2d(c, c * 2, 3, stride=2, bias=bias), nl(c * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += _upsample(c, c // 2, norm, use_resize_conv)
        layers += [ReflectionPad2d(3), ShiftSumConv2d(ngf, 3, 7, bias=True), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self._finish(norm)

    def _run(self, x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        """``model(with_password(x, pw))`` without building the password channels. They are constant
        over the image and reflection padding keeps them constant, so their share of the first (valid,
        7x7) convolution is, at every pixel, the same per-image, per-channel sum: a bias
        ``sum_{c,u,v} W[o, 3 + c, u, v] pw[c]``. Same function and parameters (gradients reach the
        password weights through that sum); the convolution itself reads 3 channels instead of 3 + L
        (6.3x fewer multiply-adds in G's first layer at L = 16)."""
        if pw.dim() != 2 or pw.shape[0] != x.shape[0] or pw.shape[1] != self.passwd_length:
            raise ValueError(f"password vector must be (B, L) with B={x.shape[0]}, L={self.passwd_length}; "
                             f"got {tuple(pw.shape)}")
        pad, conv = self.model[0], self.model[1]
        w = conv.weight
        y = F.conv2d(pad(x), w[:, :3], conv.bias)
        dt = torch.promote_types(w.dtype, torch.float32)  # sums at least in float32, also for bf16 weights
        pw_bias = pw.to(dt) @ w[:, 3:].to(dt).sum(dim=(2, 3)).t()  # (B, out)
        y = y.add_(pw_bias.to(y.dtype)[:, :, None, None])  # in place: a full-size pass fewer
        return self.model[2:](y)


class UnetBlock(nn.Module):
    """One level of the pix2pix U-Net: down, the inner levels, up, and the skip concatenation.

    With ``passwd_length`` set, the password is tiled onto the input of this level's up-convolution
    as well (``passwd_inject: every_level``). Those channels are constant over the image, and nearest
    upsampling and reflection padding keep them constant, so their share of the convolution is a
    per-image, per-channel bias: ``pw_proj(pw)``, a linear map of the password vector, added to the
    convolution's output. Same function as the concatenation, without building the channels."""

    def __init__(self, outer: int, inner: int, norm: str, inner_block: nn.Module | None = None,
                 in_ch: int | None = None, outermost: bool = False, use_dropout: bool = False,
                 use_resize_conv: bool = True, passwd_length: int = 0):
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        nl = norm_layer(norm)
        in_ch = outer if in_ch is None else in_ch
        up_in = inner if inner_block is None else inner * 2
        down = nn.Conv2d(in_ch, inner, 4, stride=2, padding=1, bias=bias)

        def up(c_out, with_bias):
            if use_resize_conv:
                return [nn.Identity(), nn.Identity(), UpsampleConv2d(up_in, c_out, 3, bias=with_bias)]
            return [nn.ConvTranspose2d(up_in, c_out, 4, stride=2, padding=1, bias=with_bias)]

        if outermost:
            layers = [down, inner_block, nn.ReLU(True), *up(outer, True), nn.Tanh()]
        elif inner_block is None:  # innermost
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), *up(outer, bias), nl(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, nl(inner), inner_block, nn.ReLU(True), *up(outer, bias), nl(outer)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)
        self.pw_proj = nn.Linear(passwd_length, outer, bias=False) if passwd_length else None
        self._up = next(i for i, m in enumerate(layers) if isinstance(m, (UpsampleConv2d, nn.ConvTranspose2d)))

    def forward(self, x, pw: torch.Tensor | None = None):
        if self.pw_proj is None and pw is None:
            y = self.model(x)
        else:
            y = x
            for i, layer in enumerate(self.model):
                y = layer(y, pw) if isinstance(layer, UnetBlock) else layer(y)
                if i == self._up and self.pw_proj is not None:
                    y = y + self.pw_proj(pw.to(self.pw_proj.weight.dtype)).to(y.dtype)[:, :, None, None]
        return y if self.outermost else torch.cat([x, y], dim=1)


class UnetGenerator(PasswordGenerator):
    """``unet_128``: the pix2pix U-Net with 7 downsamplings (128x128 -> 1x1), password tiled on input;
    ``unet_64`` is the same with 6 (64x64 -> 1x1). ``passwd_inject='every_level'`` (a departure from
    the spec, off by default) tiles the password onto every decoder level's input too, so that each
    scale can change the face by the password directly instead of only through the bottleneck."""

    def __init__(self, passwd_length: int, ngf: int = 64, num_downs: int = 7, norm: str = "batch",
                 use_dropout: bool = False, use_resize_conv: bool = True, passwd_inject: str = "input"):
        super().__init__()
        if passwd_inject not in ("input", "every_level"):
            raise ValueError(f"unknown passwd_inject {passwd_inject!r}: 'input' or 'every_level'")
        self.passwd_length = passwd_length
        self.every_level = passwd_inject == "every_level"
        kw = dict(norm=norm, use_resize_conv=use_resize_conv, passwd_length=passwd_length if self.every_level else 0)
        block = UnetBlock(ngf * 8, ngf * 8, **kw)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, inner_block=block, use_dropout=use_dropout, **kw)
        block = UnetBlock(ngf * 4, ngf * 8, inner_block=block, **kw)
        block = UnetBlock(ngf * 2, ngf * 4, inner_block=block, **kw)
        block = UnetBlock(ngf, ngf * 2, inner_block=block, **kw)
        self.model = UnetBlock(3, ngf, inner_block=block, in_ch=3 + passwd_length, outermost=True, **kw)
        self._finish(norm)

    def _run(self, x: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        return self.model(with_password(x, pw), pw if self.every_level else None)


# ---- discriminator ----------------------------------------------------------------------------

def patchgan(in_ch: int, ndf: int, n_layers: int, norm: str) -> nn.Sequential:
    """PatchGAN (n_layers 3): C64 s2, C128 s2, C256 s2, C512 s1, C1 s1; 4x4 kernels, padding 1."""
    bias = conv_bias(norm)
    nl = norm_layer(norm)
    layers = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    nf = ndf
    for _ in range(1, n_layers):
        prev, nf = nf, min(nf * 2, 512)
        layers += [nn.Conv2d(prev, nf, 4, stride=2, padding=1, bias=bias), nl(nf), nn.LeakyReLU(0.2, True)]
    prev, nf = nf, min(nf * 2, 512)
    layers += [nn.Conv2d(prev, nf, 4, stride=1, padding=1, bias=bias), nl(nf), nn.LeakyReLU(0.2, True),
               nn.Conv2d(nf, 1, 4, stride=1, padding=1, bias=False)]
    return nn.Sequential(*layers)


class MultiscaleSeparatedDiscriminator(nn.Module):
    """Full-resolution PatchGAN heads per kind of generated image (M, R, WR) and one half-resolution
    PatchGAN (``FE``) shared by all three. ``D(x, name)`` -> [full-res map of head name, half-res map]."""

    HEADS = ("M", "R", "WR")

    def __init__(self, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        self.FE = patchgan(3, ndf, n_layers, norm)
        for name in self.HEADS:
            setattr(self, "layer1_" + name, patchgan(3, ndf, n_layers, norm))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor, name: str) -> list[torch.Tensor]:
        return [self.head(x, name), self.shared(x)]

    def head(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The full-resolution map of head ``name``."""
        if name not in self.HEADS:
            raise ValueError(f"discriminator head must be one of {self.HEADS}, got {name!r}")
        return getattr(self, "layer1_" + name)(x)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """The half-resolution map of the head all kinds share: computed once when one batch meets
        every head (the real images in the D phase)."""
        return self.FE(self.downsample(x))


# ---- password classifier ------------------------------------------------------------------------

class _QFrontEnd(nn.Module):
    def __init__(self, ndf: int, norm: str):
        super().__init__()
        bias = conv_bias(norm)
        nl = norm_layer(norm)
        self.model = nn.Sequential(
            nn.Conv2d(6, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1, bias=bias), nl(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1, bias=bias), nl(ndf * 4), nn.LeakyReLU(0.2, True))

    def forward(self, x):
        return self.model(x)


class _QHeads(nn.Module):
    def __init__(self, ndf: int, norm: str, n_digits: int):
        super().__init__()
        bias = conv_bias(norm)
        nl = norm_layer(norm)
        c = ndf * 8
        # The original pools 2x2 -> 1x1 with AvgPool2d(2) at 128x128; the adaptive pool is the same there
        # and also works at the smaller sizes of the smoke configuration.
        self.model = nn.Sequential(
            nn.Conv2d(ndf * 4, c, 4, stride=2, padding=1, bias=bias), nl(c), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, c, 4, stride=4, padding=0, bias=bias), nl(c), nn.LeakyReLU(0.2, True),
            nn.AdaptiveAvgPool2d(1))
        self.fc_list = nn.ModuleDict({f"fc_{i}": nn.Linear(c, 16) for i in range(n_digits)})

    def forward(self, x):
        h = self.model(x).flatten(1)
        return torch.stack([fc(h) for fc in self.fc_list.values()], dim=1)


class PasswordClassifier(nn.Module):
    """Q: from a (source, output) pair, predict the password's L/4 hexadecimal digits.

    Returns logits of shape (B, L/4, 16)."""

    def __init__(self, passwd_length: int, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        self.FE = _QFrontEnd(ndf, norm)
        self.classifiers = _QHeads(ndf, norm, passwd_length // 4)

    def forward(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.classifiers(self.FE(torch.cat([source, output], dim=1)))


# ---- GAN loss -----------------------------------------------------------------------------------

class GANLoss(nn.Module):
    """``lsgan``: mean squared error to 1 (real) / 0 (fake); ``vanilla``: BCE with logits. Summed over
    the maps a discriminator returns (full and half resolution)."""

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in ("lsgan", "vanilla"):
            raise ValueError(f"gan_mode must be lsgan or vanilla, got {mode!r}")
        self.mode = mode

    def forward(self, maps: list[torch.Tensor], real: bool) -> torch.Tensor:
        total = 0.0
        for m in maps:
            m = m.float()
            target = torch.full_like(m, 1.0 if real else 0.0)
            if self.mode == "lsgan":
                total = total + F.mse_loss(m, target)
            else:
                total = total + F.binary_cross_entropy_with_logits(m, target)
        return total
