"""dlib's face descriptor network, run by PyTorch on batches of chips.

dlib's Python wheel (``dlib-bin``) is built without BLAS: its descriptor network takes about 0.1 s
per 150 px chip on one core of this project's CPU, 85% of an evaluation's time. The same network in
PyTorch, with the weights read from the same file (``dlib_face_recognition_resnet_model_v1.dat``
from ``face_recognition_models``), runs a batch of chips through oneDNN's convolutions instead. Its
descriptors equal dlib's to float32 rounding (tests/test_metrics_dlib_net.py checks them against
``compute_face_descriptor`` on real faces).

The network (dlib's ``dnn_face_recognition_ex.cpp``): the chip minus the mean colour (122.782,
117.001, 104.298), divided by 256; a 7x7 convolution of stride 2 and 32 filters, affine (the frozen
batch norm), ReLU and a 3x3 max pool of stride 2; 14 residual blocks, each two 3x3 convolutions
(affine after each, ReLU between) added to the block's input, then ReLU; the first block of each
of the 64, 128 and two 256 filter levels has a stride-2 first convolution and adds its input after
a 2x2 average pool of stride 2; global average pooling and a 128x256 matrix without bias.

dlib's addition of tensors of different shapes adds them in their common corner and keeps zeros
elsewhere (``add_prev``: the output has the larger size in every dimension). Its convolutions and
pools of stride 2 have no padding, so a block's two branches can differ by a row and a column (at 8
px: 3 against 4) and by their channels (32 against 64): both are kept as dlib computes them.

The file is dlib's own serialisation: layers from the input up, each a name (a length, then the
characters), its settings as integers (a byte count with the sign in its top bit, then the bytes,
least significant first), and its parameters as a tensor (version, then four sizes, then raw little-
endian float32s). Only what the forward pass needs is read; anything unexpected raises an error.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP = 150
LAYER_NAMES = ("input_rgb_image_sized", "con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_",
               "fc_2")


class DlibFileError(ValueError):
    pass


@dataclass
class Layer:
    kind: str
    ints: tuple = ()                 # the layer's integer settings, in file order
    params: np.ndarray | None = None  # its parameter tensor, flat float32


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def integer(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8 or self.pos + 1 + size > len(self.data):
            raise DlibFileError(f"bad integer at byte {self.pos}")
        v = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -v if head & 0x80 else v

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return float(mantissa) * 2.0 ** exponent

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFileError(f"tensor of version {version} at byte {self.pos} (expected 2)")
        n, k, nr, nc = (self.integer() for _ in range(4))
        count = n * k * nr * nc
        end = self.pos + 4 * count
        if end > len(self.data):
            raise DlibFileError("the file ends inside a tensor")
        out = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos = end
        return out


def read_layers(data: bytes) -> list[Layer]:
    """The layers of a dlib network file, input first, with what the forward pass needs."""
    pattern = re.compile(b"|".join(re.escape(bytes([1, len(n)]) + n.encode()) for n in LAYER_NAMES))
    r = _Reader(data)
    layers = []
    while True:
        m = pattern.search(data, r.pos)
        if m is None:
            break
        kind = m.group()[2:].decode()
        r.pos = m.end()
        if kind == "input_rgb_image_sized":
            mean = tuple(r.real() for _ in range(3))
            layers.append(Layer(kind, (r.integer(), r.integer()), np.array(mean, np.float32)))
        elif kind == "con_4":
            params = r.tensor()
            layers.append(Layer(kind, tuple(r.integer() for _ in range(7)), params))  # filters, nr, nc, strides, pads
        elif kind == "affine_":
            layers.append(Layer(kind, (), r.tensor()))
        elif kind in ("max_pool_2", "avg_pool_2"):
            layers.append(Layer(kind, tuple(r.integer() for _ in range(6))))  # nr, nc, strides, pads
        elif kind == "fc_2":
            outputs, inputs = r.integer(), r.integer()
            layers.append(Layer(kind, (outputs, inputs), r.tensor()))
        else:
            layers.append(Layer(kind))
    return layers


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's sum of two tensors of different sizes: added in the common corner, zeros elsewhere."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]
    out = a.new_zeros(shape)
    out[tuple(slice(0, s) for s in a.shape)] += a
    out[tuple(slice(0, s) for s in b.shape)] += b
    return out


class DlibResNet(nn.Module):
    """dlib's 128-d face descriptor network: chips (B, 3, 150, 150) float RGB in 0..255 -> (B, 128).

    Each affine layer (dlib's frozen batch norm, y = g x + b per channel) follows a convolution and is
    folded into it (weights times g, bias times g plus b): one pass over the activations fewer, the
    same function to float32 rounding."""

    def __init__(self, layers: list[Layer]):
        super().__init__()
        if not layers or layers[0].kind != "input_rgb_image_sized" or layers[0].ints != (CHIP, CHIP):
            raise DlibFileError("not dlib's face descriptor network: no 150 px RGB input layer first")
        self.register_buffer("mean", torch.from_numpy(layers[0].params).view(1, 3, 1, 1))
        self.convs = nn.ModuleList()
        self.plan = []  # the forward pass, step by step
        ops = ""  # one letter per layer, to check the order
        channels = 3
        for la in layers[1:]:
            ops += {"con_4": "c", "affine_": "a", "relu_": "r", "max_pool_2": "m", "avg_pool_2": "p",
                    "add_prev_": "+", "fc_2": "f"}[la.kind]
            if la.kind == "con_4":
                filters, nr, nc, sy, sx, py, px = la.ints
                w = filters * channels * nr * nc
                if la.params.size != w + filters:
                    raise DlibFileError(f"convolution {len(self.convs)}: {la.params.size} parameters, expected "
                                        f"{w + filters}")
                conv = nn.Conv2d(channels, filters, (nr, nc), (sy, sx), (py, px))
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(la.params[:w]).view_as(conv.weight))
                    conv.bias.copy_(torch.from_numpy(la.params[w:]))
                self.convs.append(conv)
                self.plan.append(("conv", len(self.convs) - 1))
                channels = filters
            elif la.kind == "affine_":
                if la.params.size != 2 * channels or not ops.endswith("ca"):
                    raise DlibFileError(f"affine layer of {la.params.size} parameters after {channels} channels, "
                                        "not after a convolution")
                g = torch.from_numpy(la.params[:channels])
                b = torch.from_numpy(la.params[channels:])
                conv = self.convs[-1]
                with torch.no_grad():
                    conv.weight.mul_(g.view(-1, 1, 1, 1))
                    conv.bias.mul_(g).add_(b)
            elif la.kind == "relu_":
                self.plan.append(("relu", None))
            elif la.kind in ("max_pool_2", "avg_pool_2"):
                self.plan.append((la.kind[:-2], la.ints))
            elif la.kind == "add_prev_":
                self.plan.append(("add", None))
            else:  # fc_2
                outputs, inputs = la.ints
                if inputs != channels or la.params.size != inputs * outputs:
                    raise DlibFileError(f"fc layer {inputs}x{outputs} after {channels} channels")
                self.register_buffer("fc", torch.from_numpy(la.params).view(inputs, outputs))
                self.plan.append(("fc", None))
                channels = outputs
        # the stem (convolution, affine, ReLU, max pool), residual blocks (two convolutions with
        # affine and ReLU between, an average pool of the shortcut in the first of a level, the sum,
        # ReLU), the global average pool and the fc layer
        if not re.fullmatch(r"carm(carca(p)?\+r)+pf", ops):
            raise DlibFileError(f"unexpected layer order {ops!r} for dlib's face descriptor network")
        if self.plan[-2][1][:2] != (0, 0):
            raise DlibFileError("the last pool does not pool everything")

    @staticmethod
    def _pool(x: torch.Tensor, ints: tuple, kind: str) -> torch.Tensor:
        nr, nc, sy, sx, py, px = ints
        if nr == 0 and nc == 0:
            return x.mean((2, 3), keepdim=True)
        if (py, px) != (0, 0):
            raise DlibFileError("padded pooling is not used by dlib's face descriptor network")
        return (F.max_pool2d if kind == "max_pool" else F.avg_pool2d)(x, (nr, nc), (sy, sx))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean) / 256.0
        block_in = None  # the input of the residual block being computed: its shortcut
        for kind, arg in self.plan:
            if kind == "conv":
                if block_in is None and arg > 0:
                    block_in = x
                x = self.convs[arg](x)
            elif kind == "relu":
                x = F.relu(x, inplace=True)
            elif kind == "max_pool":
                x = self._pool(x, arg, kind)
            elif kind == "avg_pool":
                if block_in is not None:  # the shortcut of a level's first block
                    block_in = self._pool(block_in, arg, kind)
                else:  # the global pool
                    x = self._pool(x, arg, kind)
            elif kind == "add":
                x = _add(x, block_in)
                block_in = None
            else:
                x = x.flatten(1) @ self.fc
        return x


def model_path() -> str:
    """face_recognition_models' copy of dlib's descriptor file (the one dlib's recogniser loads)."""
    from protect.face_detect import dlib_model_path
    return dlib_model_path(MODEL_FILE)


@functools.cache
def load(path: str | None = None) -> DlibResNet:
    """The network of dlib's descriptor file (default: ``model_path()``), in eval mode."""
    with open(path or model_path(), "rb") as f:
        data = f.read()
    return DlibResNet(read_layers(data)).eval().requires_grad_(False)
