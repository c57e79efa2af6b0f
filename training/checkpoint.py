"""Checkpoints: atomic saving, safe loading, architecture checks, and the generator for inference.

A training checkpoint is a dict (loadable with ``torch.load(weights_only=True)``):

    format            "face-identity-transformer/1"
    epoch, iter       epoch index and batches done in it; global_iter: batches done in the whole run
    state_dict_G, state_dict_D, state_dict_Q, state_dict_FR, optimizer_G, optimizer_D
    objective         image pools, A-Softmax counter, password generator state
    rng               torch's and cuda's global generator states (as tensors); numpy's and Python's global
                      generators are not saved: a training step draws nothing from them (the image pools
                      and the passwords have their own generators, saved under objective)
    inference_stats_G G's normalisation statistics for inference (models/networks.py), kept apart so
                      that state_dict_G keeps the published names
    config            the resolved config (a plain dict)
    mean_landmarks    (5, 2) mean normalised landmark positions of the training set: the frame the
                      generator was trained on, used to frame faces in the wild

The authors' published checkpoints hold epoch, iter, state_dict_G/D/Q/FR and optimizer_G/D; they load
too (the generator alone is enough for inference). ``load_checkpoint``, the one function every command
loads checkpoints with, refuses a file holding any value that is not finite (NaN or infinity) in its
weights, optimizer states or statistics: such a generator writes black or unchanged faces. This
module alone writes and reads that layout: ``training_state`` builds the dict of a run,
``restore_training_state`` puts it back.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import zipfile
from dataclasses import dataclass

import torch

from models.networks import fold_batchnorm, inference_stats, load_inference_stats, with_bf16_weights
from models.onednn import fuse_for_onednn
from utils.fileio import atomic_torch_save

FORMAT = "face-identity-transformer/1"
NETWORKS = ("G", "D", "Q", "FR")
OPTIMIZERS = ("optimizer_G", "optimizer_D")  # top-level keys (the authors' names), kept in the objective's state

# The framing of checkpoints that do not record their own (the authors' originals): mean five points of
# a 250x250 CASIA/LFW-style face image, normalised as x / 125 - 1. How it was obtained (details in
# docs/anonymize.md): CASIA's own landmark file is not available offline, so these are the means of
# 193 faces of SphereFace's published lfw_landmark.txt (MTCNN five points on LFW's 250x250 images,
# the detector and pipeline that made casia_landmark.txt; rows sampled at two places of the file),
# in pixels (104.4, 112.4), (144.8, 111.2), (125.8, 135.8), (107.9, 157.0), (143.5, 156.3); standard
# error about 0.3 px per coordinate. CASIA-WebFace was cut to LFW's 250x250 layout, and the authors
# test their CASIA-trained model on LFW images as they are, so both framings are taken as one.
# (A dlib HOG box doubled around its centre -- the LFW_CROP rule applied to dlib instead of MTCNN --
# frames faces about 1.5x tighter, because dlib's box is tighter than MTCNN's: on skimage's astronaut
# it puts the eyes 62 px apart in 250 px instead of 40, so it was not used.) Override with
# --mean-landmarks (anonymize.py) or FaceProtector(mean_landmarks=...) for another framing.
CASIA_MEAN_LANDMARKS = torch.tensor([[-0.165, -0.101], [0.158, -0.110], [0.006, 0.087],
                                     [-0.137, 0.256], [0.148, 0.251]])

# The paper's generator settings, for checkpoints that carry no config.
PAPER_G = dict(which_model_netG="resnet_9blocks", ngf=64, norm="batch", use_dropout=False,
               use_resize_conv=True, passwd_length=16, use_minus_one="half", img_size=128,
               init_type="normal", init_gain=0.02, passwd_inject="input")


class CheckpointError(RuntimeError):
    pass


def check_mean_landmarks(values, where: str, error: type[Exception] = ValueError):
    """``values`` as a (5, 2) float64 array of mean landmarks normalised to the frame (x / (W / 2) - 1):
    ten finite numbers in [-1, 1], not all at one point; else ``error`` naming ``where``."""
    import numpy as np

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.size != 10:
        raise error(f"{where}: mean landmarks must be 10 numbers, x1 y1 ... x5 y5 (got {a.size})")
    a = a.reshape(5, 2)
    if not np.isfinite(a).all():
        raise error(f"{where}: mean landmarks must be finite numbers (they hold NaN or infinity)")
    if np.abs(a).max() > 1.0:
        raise error(f"{where}: mean landmarks lie outside the frame (normalised x/(W/2)-1, each in [-1, 1]; "
                    f"got {np.abs(a).max():.3g})")
    if np.ptp(a, axis=0).max() < 1e-3:
        raise error(f"{where}: mean landmarks must be five distinct points (they coincide)")
    return a


def nonfinite_entries(obj, name: str = "") -> list[str]:
    """Where ``obj`` (a checkpoint: nested dicts, lists and tuples) holds a floating-point tensor or a
    number that is not finite (NaN or infinity), e.g. ``state_dict_G.model.1.weight``."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return [] if bool(torch.isfinite(obj).all()) else [name or "value"]
        return []
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [name or "value"]
    if isinstance(obj, dict):
        items = ((f"{name}.{k}" if name else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{name}[{i}]", v) for i, v in enumerate(obj))
    else:
        return []
    return [where for key, value in items for where in nonfinite_entries(value, key)]


def save_checkpoint(state: dict, path: str) -> None:
    """Write atomically: a crash or a full disk while saving leaves the previous file intact."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}" if not os.path.exists(path) else
                              f"{path}: not a checkpoint (not a regular file)")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a checkpoint (PyTorch files are zip archives, or pickles in the "
                              f"old format; this file is neither)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{path}: not a checkpoint, or a damaged one "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    except Exception as e:  # pickle.UnpicklingError for disallowed objects
        raise CheckpointError(f"{path}: {_refusal(e)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict of weights)")
    bad = nonfinite_entries(ckpt)
    if bad:
        raise CheckpointError(f"{path}: refused: values that are not finite (NaN or infinity) in {_short(bad, 3)}; "
                              f"the training run that saved it diverged, so its generator destroys faces or "
                              f"leaves them as they are -- use an earlier checkpoint")
    return ckpt


def _looks_like_torch_file(path: str) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle (protocol 2+, the legacy format)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _refusal(e: Exception) -> str:
    """Why weights_only loading refused a file, without torch's advice to load it unsafely."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"not loaded: it holds a Python object ({found.group(1)}), and a checkpoint may hold only "
                f"tensors and plain data (loading other objects could run code from the file)")
    return "not a checkpoint (its contents are not tensors and plain data)"


def load_state_strict(module: torch.nn.Module, state: dict, what: str, path: str = "") -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatching keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_short(shapes)}")
        where = f" in {path}" if path else ""
        raise CheckpointError(f"{what}{where} does not match this architecture: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _short(items: list, n: int = 6) -> str:
    shown = ", ".join(items[:n])
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return f"[{shown}{more}]"


# ---- training checkpoints ------------------------------------------------------------------------

@dataclass
class TrainingPosition:
    """Where a restored run continues: ``iter_in_epoch`` batches of ``epoch`` done, ``global_iter`` in all;
    ``mean_landmarks`` when the checkpoint records its framing (None: keep the training set's)."""
    epoch: int
    iter_in_epoch: int
    global_iter: int
    mean_landmarks: torch.Tensor | None = None


def check_training_checkpoint(ckpt: dict, path: str) -> None:
    """A checkpoint to resume from holds all four networks."""
    missing = [f"state_dict_{n}" for n in NETWORKS if f"state_dict_{n}" not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); "
                              "resume from a checkpoint_*.pth.tar that main_train.py saved")


def training_state(nets, objective, *, epoch: int, iter_in_epoch: int, global_iter: int, config: dict,
                   mean_landmarks: torch.Tensor) -> dict:
    """The checkpoint of a training run (the layout in this module's docstring)."""
    st = {"format": FORMAT, "epoch": epoch, "iter": iter_in_epoch, "global_iter": global_iter,
          "config": dict(config), "mean_landmarks": mean_landmarks,
          "objective": objective.state_dict(), "rng": _rng_state()}
    for n in NETWORKS:
        st["state_dict_" + n] = getattr(nets, n).state_dict()
    st["inference_stats_G"] = inference_stats(nets.G)
    for key in OPTIMIZERS:  # top-level, where the authors' checkpoints have them
        st[key] = st["objective"].pop(key)
    return st


def restore_training_state(ckpt: dict, nets, objective, path: str, log=print) -> TrainingPosition:
    """Load a checkpoint of ours (everything: the run continues exactly) or of the authors (networks and
    optimizers; the run starts the next epoch) into ``nets`` and ``objective``."""
    check_training_checkpoint(ckpt, path)
    for n in NETWORKS:
        key = "state_dict_" + n
        load_state_strict(getattr(nets, n), ckpt[key], key, path)
    if ckpt.get("inference_stats_G"):
        load_inference_stats(nets.G, ckpt["inference_stats_G"])
    if ckpt.get("format") == FORMAT:
        objective.load_state_dict(dict(ckpt["objective"], **{key: ckpt[key] for key in OPTIMIZERS}))
        _set_rng_state(ckpt["rng"])
        framing = None
        if "mean_landmarks" in ckpt:
            framing = torch.from_numpy(check_mean_landmarks(ckpt["mean_landmarks"], path, CheckpointError)).float()
        return TrainingPosition(int(ckpt["epoch"]), int(ckpt["iter"]), int(ckpt["global_iter"]), framing)
    for key, opt in zip(OPTIMIZERS, (objective.opt_G, objective.opt_D)):
        if key in ckpt:
            try:
                opt.load_state_dict(ckpt[key])
            except ValueError as e:
                log(f"note: {key} of {path} not loaded ({e}); the optimizer starts fresh")
    return TrainingPosition(int(ckpt.get("epoch", -1)) + 1, 0, 0)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.stack(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else torch.empty(0)}


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if torch.cuda.is_available() and rng["cuda"].numel():
        torch.cuda.set_rng_state_all(list(rng["cuda"].cpu()))


def fingerprint(state_dict: dict) -> str:
    """A SHA-256 over a state dict's names, shapes, dtypes and values: identifies the weights whatever
    file they were saved in."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def generator_config(ckpt: dict, overrides: dict | None = None, path: str = "checkpoint") -> dict:
    """The generator settings of a checkpoint: its own config (each value checked as a config key),
    or the paper's (authors' files)."""
    from utils.config import ConfigError, check_value

    cfg = dict(PAPER_G)
    if "config" in ckpt:
        try:
            cfg.update({k: check_value(k, v, f"{path}: config") for k, v in ckpt["config"].items() if k in PAPER_G})
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    else:
        first = ckpt["state_dict_G"].get("model.1.weight")
        if first is not None:  # infer the password length from G's input channels
            cfg["passwd_length"] = int(first.shape[1]) - 3
    cfg.update(overrides or {})
    return cfg


class InferenceModel:
    """The generator of a checkpoint, ready for inference (eval mode: per-image normalisation).

    With inference statistics (our checkpoints) G's BatchNorms are folded into its convolutions
    (``fold_batchnorm``: the same function); bf16 calls on the CPU run a copy of G with bf16 weights
    (``with_bf16_weights``), and CPU calls run G with oneDNN's fused convolutions where they apply
    (``fuse_for_onednn``), each made on the first call that needs it.

    Attributes: G, cfg (generator settings), img_size, passwd_length, mode (password encoding),
    mean_landmarks ((5, 2) normalised), fingerprint (of G's weights), original_format (bool),
    trained_on (the ``dataset`` of the checkpoint's saved config; None for the authors' files).
    """

    def __init__(self, path: str, device="cpu", overrides: dict | None = None,
                 mean_landmarks: torch.Tensor | None = None):
        from models import build_generator

        ckpt = load_checkpoint(path)
        if "state_dict_G" not in ckpt:
            raise CheckpointError(f"{path}: no generator in this file (expected key 'state_dict_G'); "
                                  f"keys: {_short(sorted(map(str, ckpt)))}")
        self.path = path
        self.original_format = ckpt.get("format") != FORMAT
        self.cfg = generator_config(ckpt, overrides, path)
        self.G = build_generator(self.cfg)
        load_state_strict(self.G, ckpt["state_dict_G"], "state_dict_G", path)
        if ckpt.get("inference_stats_G"):  # our checkpoints; the authors' fall back to twin normalisation
            load_inference_stats(self.G, ckpt["inference_stats_G"])
        self.G.to(device).eval().requires_grad_(False)
        fold_batchnorm(self.G)  # the same function, fewer passes over the images (where G has inference statistics)
        self._cpu, self._lock = {}, threading.Lock()  # amp -> the G that CPU calls run (_generator)
        self.device = torch.device(device)
        self.img_size = int(self.cfg["img_size"])
        self.passwd_length = int(self.cfg["passwd_length"])
        self.mode = self.cfg["use_minus_one"]
        if mean_landmarks is not None:
            self.mean_landmarks = torch.from_numpy(check_mean_landmarks(mean_landmarks, "mean_landmarks")).float()
        elif "mean_landmarks" in ckpt:
            lm = check_mean_landmarks(ckpt["mean_landmarks"], f"{path}: key 'mean_landmarks'", CheckpointError)
            self.mean_landmarks = torch.from_numpy(lm).float()
        else:
            self.mean_landmarks = CASIA_MEAN_LANDMARKS.clone()
        self.fingerprint = fingerprint(ckpt["state_dict_G"])
        saved = ckpt.get("config")
        self.trained_on = saved.get("dataset") if isinstance(saved, dict) else None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, pw_bits: torch.Tensor, amp: bool = False) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1]; pw_bits (B, L) bits. Returns G's output in float32."""
        from models.passwords import encode

        x = images.to(self.device, torch.float32)
        v = encode(pw_bits, self.mode).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            return self._generator(amp)(x, v).float()

    def _generator(self, amp: bool) -> torch.nn.Module:
        """G; on the CPU, G with oneDNN's fused convolutions where they apply (models/onednn.py), and
        for bf16 that of a copy of G with bf16 convolution weights (autocast's per-call weight casts
        were 6% of a paper-size G's time on an AMX CPU). Each is made on the first call that needs it."""
        if self.device.type != "cpu":
            return self.G
        with self._lock:
            if amp not in self._cpu:
                self._cpu[amp] = fuse_for_onednn(with_bf16_weights(self.G) if amp else self.G)
        return self._cpu[amp]
