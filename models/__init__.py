"""Networks of the face identity transformer and the factory that builds them from a config."""
from __future__ import annotations

import torch.nn as nn

from .networks import (
    GANLoss,
    MultiscaleSeparatedDiscriminator,
    PasswordClassifier,
    ResnetGenerator,
    UnetGenerator,
    init_weights,
)
from .sphereface import AngleLoss, Sphere20a


def build_generator(cfg) -> nn.Module:
    kind = cfg["which_model_netG"]
    common = dict(passwd_length=cfg["passwd_length"], ngf=cfg["ngf"], norm=cfg["norm"],
                  use_dropout=cfg["use_dropout"], use_resize_conv=cfg["use_resize_conv"])
    if kind in ("resnet_9blocks", "resnet_6blocks"):
        net = ResnetGenerator(n_blocks=int(kind.split("_")[1][0]), **common)
    elif kind in ("unet_128", "unet_64"):  # 7 or 6 downsamplings: the image shrinks to 1x1 at the bottom
        net = UnetGenerator(num_downs=7 if kind == "unet_128" else 6, passwd_inject=cfg["passwd_inject"], **common)
    else:
        raise ValueError(f"unknown which_model_netG {kind!r}")
    return init_weights(net, cfg["init_type"], cfg["init_gain"])


def build_discriminator(cfg) -> nn.Module:
    if cfg["which_model_netD"] != "multiscale_separated":
        raise ValueError(f"unknown which_model_netD {cfg['which_model_netD']!r}")
    net = MultiscaleSeparatedDiscriminator(cfg["ndf"], cfg["n_layers_D"], cfg["norm"])
    return init_weights(net, cfg["init_type"], cfg["init_gain"])


def build_password_classifier(cfg) -> nn.Module:
    net = PasswordClassifier(cfg["passwd_length"], cfg["ndf"], cfg["norm"])
    return init_weights(net, cfg["init_type"], cfg["init_gain"])


def build_face_recognizer(cfg, num_classes: int | None = None) -> nn.Module:
    """SphereFace-20a; its own initialisation (it is normally loaded from the pretrained file)."""
    return Sphere20a(num_classes or cfg["fr_num_classes"], cfg["fr_width"],
                     (cfg["fr_crop_height"], cfg["fr_crop_width"]), cfg["angle_margin"])


class Networks(nn.Module):
    """G, D, Q and FR together; each keeps the state-dict names of the published checkpoints."""

    def __init__(self, cfg, num_classes: int | None = None):
        super().__init__()
        self.G = build_generator(cfg)
        self.D = build_discriminator(cfg)
        self.Q = build_password_classifier(cfg)
        self.FR = build_face_recognizer(cfg, num_classes)


__all__ = ["Networks", "build_generator", "build_discriminator", "build_password_classifier",
           "build_face_recognizer", "GANLoss", "AngleLoss"]
