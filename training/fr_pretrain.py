"""Pre-training of the face recogniser on the training identities, before the transformer's training.

The paper starts from a SphereFace already trained on CASIA-WebFace: from the first step, its
A-Softmax terms tell the generator which faces still look like their owner. Where that file does not
exist (this project's synthetic faces, or a run without the download), ``fr_pretrain_epochs`` trains
the configured SphereFace alone, with the same A-Softmax loss and aligned crops as the training step,
on the training split only, and the run then fine-tunes it exactly as it would the published one.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import datasets
from models.alignment import alignment_theta, warp_to_crop
from models.sphereface import AngleLoss
from training import distributed


def aligned_crops(images: torch.Tensor, landmarks: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """The FR input of a batch: each image warped onto SphereFace's reference points (BGR)."""
    theta = alignment_theta(landmarks.cpu(), tuple(images.shape[-2:]), crop).to(images.device)
    grid = F.affine_grid(theta, [images.shape[0], 3, *crop], align_corners=True)
    return warp_to_crop(images, grid)


def pretrain_face_recognizer(cfg, FR: torch.nn.Module, train_set, device: torch.device, log,
                             batch_size: int = 64) -> dict:
    """Train ``FR`` in place for ``cfg.fr_pretrain_epochs`` epochs of ``train_set``; returns the last
    epoch's loss and training accuracy. Every process trains the same network from the same seed and
    data order; with several processes, rank 0's weights are then broadcast so they agree exactly."""
    crop = (cfg.fr_crop_height, cfg.fr_crop_width)
    angle = AngleLoss(cfg.angle_gamma, cfg.angle_lambda_min, cfg.angle_lambda_max)
    opt = torch.optim.Adam(FR.parameters(), lr=cfg.fr_pretrain_lr)
    loader = datasets.make_loader(train_set, batch_size, shuffle=True, drop_last=True, workers=cfg.workers,
                                  device_type=device.type, seed=cfg.seed)
    steps = cfg.fr_pretrain_epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.fr_pretrain_lr, total_steps=max(1, steps),
                                                pct_start=0.15)
    FR.train()
    start, result = time.time(), {}
    for epoch in range(cfg.fr_pretrain_epochs):
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            _, (cos, phi) = FR(aligned_crops(images, batch["landmarks"], crop))
            loss = angle((cos, phi), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(label)
            correct += (cos.detach().argmax(1) == label).sum()
            seen += len(label)
        result = {"epoch": epoch + 1, "loss": (loss_sum / seen).item(), "train_accuracy": (correct / seen).item()}
        log(f"FR pre-training: epoch {epoch + 1}/{cfg.fr_pretrain_epochs}: A-Softmax loss {result['loss']:.3f}, "
            f"training accuracy {result['train_accuracy']:.3f} ({time.time() - start:.0f} s)")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for p in FR.state_dict().values():
            torch.distributed.broadcast(p, 0)
    distributed.barrier()
    return result
