"""Shared material of the anonymize tests: small checkpoints, faces, a short video with sound."""
from __future__ import annotations

import numpy as np
import torch
from skimage import data

from datasets.synthetic import render_image
from models import build_generator
from protect.video_io import write_video_with_tone
from utils.config import make_config


def synthetic_face(label: int = 3, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 250x250 synthetic face and its five points in pixel-index coordinates."""
    img, pts = render_image(0, label, k)
    return img, np.asarray(pts, np.float64) - 0.5  # the generator draws continuous coordinates


def synthetic_mean_landmarks(n: int = 8) -> torch.Tensor:
    pts = np.mean([render_image(0, i, 0)[1] for i in range(n)], axis=0)
    return torch.tensor(pts / 125.0 - 1.0, dtype=torch.float32)


def with_inference_stats(g: torch.nn.Module, size: int) -> dict:
    """G's inference statistics, as training leaves them (models/networks.py), here from one
    training-mode pass over a batch of 16 random images with random passwords (momentum 1, so the
    averages are that batch's statistics rather than mostly their initial values)."""
    from models.networks import BatchNorm2dNoStats, inference_stats
    norms = [m for m in g.modules() if isinstance(m, BatchNorm2dNoStats)]
    for m in norms:
        m.momentum = 1.0
    g.train()
    with torch.no_grad():
        g(torch.rand(16, 3, size, size) * 2 - 1, torch.randint(0, 2, (16, 16)).float() - 0.5)
    g.eval()
    for m in norms:
        m.momentum = 0.1
    return inference_stats(g)


def save_small_checkpoint(path: str, seed: int = 0, img_size: int = 64, **config) -> str:
    """Our format: a small generator (ngf 8) with inference statistics and the mean landmarks of
    synthetic faces, as main_train.py saves it; ``config``: other keys of its saved config."""
    torch.manual_seed(seed)
    cfg = make_config(img_size=img_size, ngf=8, **config)
    g = build_generator(cfg)
    stats = with_inference_stats(g, img_size)
    torch.save({"format": "face-identity-transformer/1", "state_dict_G": g.state_dict(), "config": dict(cfg),
                "inference_stats_G": stats, "mean_landmarks": synthetic_mean_landmarks()}, path)
    return path


def save_original_checkpoint(path: str) -> str:
    """The authors' format: only the paper's generator (ngf 64, 16-bit passwords), random init."""
    torch.manual_seed(1)
    g = build_generator(make_config())
    torch.save({"state_dict_G": g.state_dict()}, path)
    return path


def astronaut_head() -> np.ndarray:
    """The top of skimage's astronaut: her face, without the badge lower down that dlib's HOG
    detector takes for a face with a low score."""
    return np.ascontiguousarray(data.astronaut()[:300, 40:440])


def two_face_scene() -> np.ndarray:
    """The astronaut's head beside a synthetic face: two faces, left and right."""
    face, _ = synthetic_face(3)
    scene = np.full((320, 700, 3), 120, np.uint8)
    scene[10:310, :400] = astronaut_head()
    scene[40:290, 430:680] = face
    return scene


def make_face_video(path: str, n: int = 24, fps: int = 12, size=(480, 320), audio: bool = True,
                    moving: bool = True, rotated: bool = False) -> str:
    """A short H.264 video of the astronaut's face drifting right, with a 440 Hz AAC track.
    ``rotated``: stored as a phone stores portrait video (pixels turned, display matrix of 90 deg)."""
    w, h = size
    face = data.astronaut()[30:250, 110:330]

    def frame(i):
        img = np.full((h, w, 3), 90, np.uint8)
        x, y = 10 + (3 * i if moving else 0), (h - 220) // 2
        img[y:y + 220, x:x + 220] = face
        # rotated: stored turned clockwise; the display matrix turns it back
        return np.ascontiguousarray(np.rot90(img, -1)) if rotated else img

    return write_video_with_tone(path, (frame(i) for i in range(n)), fps, acodec="aac" if audio else None,
                                 rotation=90 if rotated else None)
