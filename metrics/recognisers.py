"""Face recognisers that judge privacy and recovery, and their verification thresholds.

* ``DlibRecogniser``: dlib's 128-d face descriptor (``dlib_face_recognition_resnet_model_v1.dat``
  from face_recognition_models), which training never saw. Euclidean distance; dlib's published
  threshold is 0.6. Faces are framed by dlib's own 68-point predictor inside the box that dlib's
  detector would draw around the original's five landmarks (the generator keeps the face where it
  was, so one box serves every view of a face), then cut to dlib's 150 px chip (padding 0.25).
* ``SphereFaceRecogniser``: the checkpoint's own SphereFace, on the aligned crop training used:
  the network that training attacks, so only a white-box view. Cosine distance.
* ``SmallRecogniser``: a small CNN trained here on the synthetic TRAINING identities (never the
  test ones), independent of the SphereFace used in training (another architecture, loss and
  training run), for synthetic faces, on which dlib's descriptor (trained on photos) is weak.
  Cosine distance of its 128-d embedding of the aligned 56x48 crop.

Recognisers without a published threshold use the one that maximises the balanced verification
accuracy on pairs of test originals (``calibrate``): the recogniser at its best on real faces, the
strongest judge of privacy.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.alignment import alignment_grid, warp_to_crop
from protect.face_detect import dlib_model_path, predictor68
from training.checkpoint import CheckpointError, load_checkpoint, load_state_strict
from utils.fileio import atomic_torch_save
from utils.images import to_uint8

from .baselines import face_box

DLIB_THRESHOLD = 0.6
SMALL_CROP = (56, 48)
SMALL_FORMAT = "face-identity-transformer/small-recogniser/1"


class Recogniser:
    """embed(images (B, 3, H, W) in [-1, 1], landmarks (B, 5, 2) of the original) -> (B, d) array;
    distance(a, b) row by row; ``threshold``: distances below it are "the same person"."""

    name = "recogniser"
    metric = "euclidean"
    description = ""
    threshold: float | None = None
    threshold_source = ""

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return pairwise(a, b, self.metric, rows=True)


def pairwise(a: np.ndarray, b: np.ndarray, metric: str, rows: bool = False) -> np.ndarray:
    """Distances between the rows of a and b: row by row (rows=True) or every pair (N, M)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return 1 - (a * b).sum(-1) if rows else 1 - a @ b.T
    if rows:
        return np.linalg.norm(a - b, axis=-1)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


# ---- dlib ---------------------------------------------------------------------------------------

_DLIB_NET = None


def _dlib_net():
    global _DLIB_NET
    if _DLIB_NET is None:
        import dlib
        _DLIB_NET = dlib.face_recognition_model_v1(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
    return _DLIB_NET


class DlibRecogniser(Recogniser):
    """backend "torch": dlib's network run by PyTorch on batches of chips (metrics/dlib_net.py, the
    same descriptors to float32 rounding, about 10x faster on a CPU); "dlib": dlib's own
    ``compute_face_descriptor``."""

    name = "dlib"
    metric = "euclidean"
    description = ("dlib's 128-d face descriptor (dlib_face_recognition_resnet_model_v1.dat), 150 px chip "
                   "framed by dlib's 68-point predictor; Euclidean distance")
    BATCH = 16  # chips per forward pass of the PyTorch network (larger batches were slower on a 2-core CPU)

    def __init__(self, threshold: float = DLIB_THRESHOLD, source: str = "dlib's published threshold",
                 backend: str = "torch", device="cpu"):
        if backend not in ("torch", "dlib"):
            raise ValueError(f"dlib recogniser backend must be 'torch' or 'dlib', got {backend!r}")
        self.threshold, self.threshold_source = threshold, source
        self.backend, self.device = backend, torch.device(device)
        predictor68()  # a missing model fails now, not on the first image
        if backend == "dlib":
            _dlib_net()
        else:
            from . import dlib_net
            net = dlib_net.load()  # shared by every recogniser on the CPU
            self.net = net if self.device.type == "cpu" else copy.deepcopy(net).to(self.device)

    def chips(self, images: torch.Tensor, landmarks: torch.Tensor) -> list[np.ndarray]:
        size = tuple(images.shape[-2:])
        return self.chips_of(to_uint8(images), [face_box(lm, size) for lm in landmarks])

    @staticmethod
    def chips_of(images: np.ndarray, boxes) -> list[np.ndarray]:
        """dlib's 150 px chips of uint8 (B, H, W, 3) images, each framed inside its face box."""
        import dlib
        out = []
        for img, (l, t, r, b) in zip(images, boxes):
            img = np.ascontiguousarray(img)
            rect = dlib.rectangle(round(l), round(t), round(r) - 1, round(b) - 1)
            out.append(dlib.get_face_chip(img, predictor68()(img, rect), size=150, padding=0.25))
        return out

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N, 128) float64 descriptors of 150 px uint8 chips."""
        if not chips:
            return np.zeros((0, 128))
        if self.backend == "dlib":
            return np.array([np.array(d) for d in _dlib_net().compute_face_descriptor(chips)], np.float64)
        out = []
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            for i in range(0, len(chips), self.BATCH):
                x = torch.from_numpy(np.stack(chips[i:i + self.BATCH])).to(self.device)
                out.append(self.net(x.permute(0, 3, 1, 2).float()).double().cpu().numpy())
        return np.concatenate(out)

    def embed(self, images, landmarks):
        return self.describe(self.chips(images, landmarks))


# ---- SphereFace (white box) --------------------------------------------------------------------

class SphereFaceRecogniser(Recogniser):
    name = "sphereface"
    metric = "cosine"

    def __init__(self, FR: nn.Module, crop: tuple[int, int], device):
        self.FR, self.crop, self.device = FR.to(device).eval().requires_grad_(False), tuple(crop), device
        self.description = (f"the checkpoint's SphereFace-20a (the recogniser training attacks: white-box view), "
                            f"fc5 embedding of the aligned {crop[0]}x{crop[1]} crop; cosine distance")

    @classmethod
    def from_checkpoint(cls, ckpt: dict, cfg, device) -> SphereFaceRecogniser:
        from models import build_face_recognizer

        state = ckpt.get("state_dict_FR")
        if not state:
            raise CheckpointError("the checkpoint holds no state_dict_FR")
        FR = build_face_recognizer(cfg, int(state["fc6.weight"].shape[1]))
        load_state_strict(FR, state, "state_dict_FR")
        return cls(FR, (cfg["fr_crop_height"], cfg["fr_crop_width"]), device)

    @torch.no_grad()
    def embed(self, images, landmarks):
        x = images.to(self.device, torch.float32)
        grid = alignment_grid(landmarks.to(self.device), tuple(x.shape[-2:]), self.crop)
        return self.FR.embed(warp_to_crop(x, grid)).double().cpu().numpy()


# ---- the small recogniser of the synthetic training identities ----------------------------------

class SmallNet(nn.Module):
    """Six 3x3 convolutions (BatchNorm, ReLU; three of stride 2), global average pooling, a 128-d
    embedding, and a cosine classifier (CosFace: scale 16, margin 0.2) used only in training."""

    def __init__(self, classes: int, dim: int = 128):
        super().__init__()
        chans = [(3, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2)]
        layers = []
        for c_in, c_out, s in chans:
            layers += [nn.Conv2d(c_in, c_out, 3, s, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Linear(256, dim)
        self.classes = nn.Parameter(torch.randn(classes, dim) * 0.01)

    def embed(self, x):
        return self.embedding(self.features(x).mean((2, 3)))

    def logits(self, x, labels=None, scale: float = 16.0, margin: float = 0.2):
        cos = F.normalize(self.embed(x)) @ F.normalize(self.classes).T
        if labels is not None:
            cos = cos - margin * F.one_hot(labels, cos.shape[1])
        return scale * cos


def _crops(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    grid = alignment_grid(landmarks, tuple(images.shape[-2:]), SMALL_CROP)
    return warp_to_crop(images, grid.to(images.device))


class SmallRecogniser(Recogniser):
    name = "small"
    metric = "cosine"

    def __init__(self, net: SmallNet, meta: dict, device):
        self.net, self.meta, self.device = net.to(device).eval().requires_grad_(False), meta, device
        self.description = (f"a small CNN trained here on the {meta['identities']} synthetic training identities "
                            f"({meta['images']} images, {meta['epochs']} epochs, seed {meta['seed']}); 128-d "
                            f"embedding of the aligned {SMALL_CROP[0]}x{SMALL_CROP[1]} crop; cosine distance")

    @torch.no_grad()
    def embed(self, images, landmarks):
        x = images.to(self.device, torch.float32)
        return self.net.embed(_crops(x, landmarks.to(self.device))).double().cpu().numpy()

    @functools.cached_property
    def digest(self) -> str:
        """A digest of the weights: what the evaluation's cache keeps this recogniser's embeddings under."""
        from .cache import weights_digest
        return weights_digest(self.net)

    def save(self, path: str) -> None:
        atomic_torch_save({"format": SMALL_FORMAT, "state_dict": self.net.state_dict(), "meta": self.meta}, path)

    @classmethod
    def load(cls, path: str, device, expect: dict | None = None) -> SmallRecogniser:
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != SMALL_FORMAT:
            raise CheckpointError(f"{path}: not a small-recogniser file (format {ckpt.get('format')!r})")
        meta = ckpt["meta"]
        for key, value in (expect or {}).items():
            if meta.get(key) != value:
                raise CheckpointError(f"{path}: recogniser trained with {key} {meta.get(key)!r}, this evaluation "
                                      f"needs {value!r}; give another --recogniser path")
        net = SmallNet(int(ckpt["state_dict"]["classes"].shape[0]))
        load_state_strict(net, ckpt["state_dict"], "small recogniser", path)
        return cls(net, meta, device)


def train_small_recogniser(train_set, meta: dict, epochs: int = 12, batch: int = 64, seed: int = 0,
                           device="cpu", progress=None) -> SmallRecogniser:
    """Train SmallNet on ``train_set`` (labelled faces with landmarks); deterministic for a seed.
    Augmentation: the landmarks shifted by up to 2% of the image and scaled by up to 5%, mirror
    images, brightness and contrast changes of up to 10%."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    items = [train_set[i] for i in range(len(train_set))]
    X = torch.stack([it["image"] for it in items])
    LM = torch.stack([it["landmarks"] for it in items])
    labels_raw = torch.stack([it["label"] for it in items])
    classes, Y = torch.unique(labels_raw, return_inverse=True)
    net = SmallNet(len(classes)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    steps = epochs * math.ceil(len(X) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    t0 = time.time()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=g)
        for start in range(0, len(X), batch):
            idx = order[start:start + batch]
            n = len(idx)
            lm = LM[idx] * (1 + 0.05 * (2 * torch.rand(n, 1, 1, generator=g) - 1)) \
                + 0.04 * (torch.rand(n, 1, 2, generator=g) - 0.5)
            x = _crops(X[idx], lm)
            flip = torch.rand(n, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = x * (1 + 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)) \
                + 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
            loss = F.cross_entropy(net.logits(x.to(device), Y[idx].to(device)), Y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(loss.item())
    meta = dict(meta, images=len(X), identities=len(classes), epochs=epochs, seed=seed,
                train_seconds=round(time.time() - t0, 1), final_loss=round(loss.item(), 4))
    return SmallRecogniser(net.cpu(), meta, device)


# ---- thresholds and verification ----------------------------------------------------------------

@dataclass
class Verification:
    """Same-identity vs different-identity pairs of originals at one threshold."""
    threshold: float
    true_match: float       # share of same-identity pairs below the threshold
    true_non_match: float   # share of different-identity pairs at or above it
    auc: float
    same_pairs: int
    different_pairs: int

    @property
    def balanced_accuracy(self) -> float:
        return (self.true_match + self.true_non_match) / 2


def original_pairs(dist: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances of all pairs i < j of a square matrix: (same-identity ones, different ones)."""
    iu = np.triu_indices(len(labels), 1)
    same = (labels[:, None] == labels[None])[iu]
    d = dist[iu]
    return d[same], d[~same]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive pair is closer than a random negative one (ties: half)."""
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[:len(pos)].sum()
    u = r_pos - len(pos) * (len(pos) + 1) / 2
    return float(1 - u / (len(pos) * len(neg)))


def verification(same: np.ndarray, different: np.ndarray, threshold: float) -> Verification:
    return Verification(float(threshold), float((same < threshold).mean()) if len(same) else float("nan"),
                        float((different >= threshold).mean()) if len(different) else float("nan"),
                        auc(same, different), len(same), len(different))


def calibrate(same: np.ndarray, different: np.ndarray) -> float:
    """The threshold of best balanced accuracy (midway between neighbouring distances)."""
    if not len(same) or not len(different):
        raise ValueError("calibrating a threshold needs pairs of the same and of different identities "
                         "among the test originals")
    values = np.unique(np.concatenate([same, different]))
    cands = np.concatenate([[values[0] - 1e-9], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-9]])
    s, d = np.sort(same), np.sort(different)
    tm = np.searchsorted(s, cands, side="left") / len(s)
    tn = 1 - np.searchsorted(d, cands, side="left") / len(d)
    return float(cands[np.argmax(tm + tn)])
