"""The multi-task objective of the paper: one training step = a D phase, then a G phase.

Generated images (from G, kept with their graph for the G phase):
    M = G(I, p), M2 = G(I, p2), R = G(M, inv), WR1 = G(M, w1), WR2 = G(M, w2)

D phase (D and FR; generated images detached), one Adam step:
    FR:  lambda_FR * 0.5 * (CE_A(I) + (l_M CE_A(M) - CE_A(R) + l_WR CE_A(WR1)) / (1 + l_M + l_WR))
    GAN: lambda_GAN * 0.5 * (fake + real), heads M on pool(M, M2), R on pool(R), WR on pool(WR1, WR2)
         against fake and I through every head against real, each a weighted mean over the heads.
G phase (G and Q), one Adam step:
    GAN on M, R, WR1 against real; L_aux (Q's digit cross-entropies); FR with the signs flipped
    (M and WR1 must not be recognised, R must; with ``fr_anon_target: password_identity``, a departure
    off by default, M and WR1 are instead pulled toward the training identity their password names);
    feature losses on the fc5 embeddings; L1 pixel terms. With ``lambda_mode_seeking`` (a departure, 0
    by default) a mode-seeking term asks M, M2 and WR1, WR2 to differ as their passwords do.

CE_A is the A-Softmax loss with one call counter shared by all calls, in the order M, R, WR1, real
(D phase) then M, R, WR1 (G phase). The loop decides when to log: losses come back as detached
tensors and nothing here waits on the device.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.distributed import use_bf16

from . import Networks
from .alignment import alignment_theta, warp_to_crop
from .image_pool import ImagePool
from .memory_format import format_images
from .networks import GANLoss
from .passwords import StepPasswords, digits, draw_step_passwords, encode
from .sphereface import AngleLoss

HEADS = ("M", "R", "WR")


def set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def feature_loss(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """``cos``: mean(max(0, cos(a, b))) -- cosine embedding loss with target -1 (push apart);
    ``l2``: minus the mean squared error."""
    a, b = a.float(), b.float()
    if mode == "cos":
        return F.cosine_similarity(a, b, dim=1, eps=1e-8).clamp_min(0).mean()
    if mode == "l2":
        return -F.mse_loss(a, b)
    raise ValueError(f"feature_loss must be cos or l2, got {mode!r}")


def mode_seeking(a: torch.Tensor, b: torch.Tensor, za: torch.Tensor, zb: torch.Tensor,
                 eps: float = 1e-5) -> torch.Tensor:
    """The mode-seeking term of Mao et al. (CVPR 2019), per image: 1 / (eps + mean|a - b| / mean|za - zb|)
    for two outputs a, b of one input under two password vectors za, zb, averaged over the batch.
    Small when the outputs differ as much as their passwords; it grows without bound as G ignores the
    password, and its pull fades as they part (it never asks for more than a bounded difference)."""
    d_img = (a.float() - b.float()).abs().flatten(1).mean(1)
    d_pw = (za.float() - zb.float()).abs().flatten(1).mean(1)
    return (1.0 / (eps + d_img / d_pw)).mean()


def password_identity(bits: torch.Tensor, label: torch.Tensor, classes: int) -> torch.Tensor:
    """The training identity a password names (``fr_anon_target: password_identity``): the code modulo
    the number of FR classes, moved to the next class where it would be the face's own ``label``.
    (B, L) bits -> (B,) class indices on ``label``'s device."""
    if classes < 2:
        raise ValueError(f"a password identity needs at least 2 FR classes, got {classes}")
    L = bits.shape[1]
    weights = torch.tensor([pow(2, L - 1 - i, classes) for i in range(L)], dtype=torch.int64, device=bits.device)
    t = (bits.to(torch.int64) * weights).sum(1).remainder(classes).to(label.device, non_blocking=True)
    return torch.where(t == label, (t + 1).remainder(classes), t)


def digit_loss(logits: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Q's loss on one pair: the cross-entropy of every hexadecimal digit, summed over the digits."""
    target = digits(bits)
    return F.cross_entropy(logits.float().reshape(-1, 16), target.reshape(-1)) * target.shape[1]


def digit_accuracy(logits: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == digits(bits)).float().mean()


@dataclass(frozen=True)
class StepResult:
    """What one step returns: ``losses``, detached loss tensors by name (the loop decides when to read
    them); ``images``, the five generated batches M, M2, R, WR1, WR2, detached, as the step made them
    (G in training mode), for the result pages."""
    losses: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]


class Objective:
    """Losses, image pools and the two Adam optimizers of a training run.

    ``step(batch, passwords=None)`` runs one D phase and one G phase and returns a :class:`StepResult`:
    the detached loss tensors and the generated images. ``passwords`` fixes p, p2, inv, w1, w2 (a
    :class:`StepPasswords`); otherwise they are drawn from this objective's own generator (its state is
    part of :meth:`state_dict`).
    ``grad_sync`` (optional) is called on each list of parameters after backward, before the optimizer
    step: the training script passes an all-reduce there for multi-GPU / multi-node runs.
    """

    def __init__(self, cfg, nets: Networks, device: torch.device, seed: int = 0,
                 grad_sync: Callable[[list], None] | None = None):
        self.cfg = cfg
        self.nets = nets
        self.device = torch.device(device)
        self.amp = use_bf16(cfg["amp"], self.device)
        self.channels_last = bool(cfg["channels_last"])
        self.grad_sync = grad_sync
        self.gan = GANLoss(cfg["gan_mode"])
        self.angle = AngleLoss(cfg["angle_gamma"], cfg["angle_lambda_min"], cfg["angle_lambda_max"])
        self.pools = {h: ImagePool(cfg["pool_size"], seed=seed * 3 + i) for i, h in enumerate(HEADS)}
        self.pw_gen = torch.Generator().manual_seed(seed)
        lrs = _learning_rates(cfg)
        betas = (cfg["beta1"], cfg["beta2"])
        # the fused kernel does Adam's update in one pass over each tensor: same rule, about 5x less
        # time than the per-tensor loop on CPU (~55M parameters per step at the paper's sizes)
        fused = self.device.type in ("cpu", "cuda")
        self.fr_trainable = lrs["FR"] > 0
        set_requires_grad(nets.FR.parameters(), self.fr_trainable)
        self.g_params = list(nets.G.parameters()) + list(nets.Q.parameters())
        self.d_params = list(nets.D.parameters()) + (list(nets.FR.parameters()) if self.fr_trainable else [])
        self.opt_G = torch.optim.Adam([{"params": nets.G.parameters(), "lr": lrs["G"]},
                                       {"params": nets.Q.parameters(), "lr": lrs["Q"]}],
                                      betas=betas, weight_decay=cfg["weight_decay"], fused=fused)
        d_groups = [{"params": nets.D.parameters(), "lr": lrs["D"]}]
        if self.fr_trainable:
            d_groups.append({"params": nets.FR.parameters(), "lr": lrs["FR"]})
        self.opt_D = torch.optim.Adam(d_groups, betas=betas, weight_decay=cfg["weight_decay"], fused=fused)
        self.crop = (cfg["fr_crop_height"], cfg["fr_crop_width"])
        # feature_fr frozen: the feature losses compare embeddings of a fixed copy of FR as it is now
        # (published or pre-trained), not of the FR that the D phase keeps fine-tuning
        self.feature_fr = None
        if cfg["feature_fr"] == "frozen":
            self.feature_fr = copy.deepcopy(nets.FR)
            set_requires_grad(self.feature_fr.parameters(), False)

    # ---- helpers ---------------------------------------------------------------------------------
    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return format_images(x, self.channels_last)

    def pw_vector(self, bits: torch.Tensor) -> torch.Tensor:
        return encode(bits, self.cfg["use_minus_one"]).to(self.device, non_blocking=True)

    def draw_passwords(self, batch: int) -> StepPasswords:
        return draw_step_passwords(batch, self.cfg["passwd_length"], self.pw_gen,
                                   near_wrong=self.cfg["near_wrong_passwords"])

    def generate(self, real: torch.Tensor, pw: StepPasswords) -> dict[str, torch.Tensor]:
        """The five generated batches of a step (with graph)."""
        G, v = self.nets.G, self.pw_vector
        M = G(real, v(pw.p))
        out = {"M": M, "M2": G(real, v(pw.p2)), "R": G(M, v(pw.inv)),
               "WR1": G(M, v(pw.w1)), "WR2": G(M, v(pw.w2))}
        return {k: self._fmt(x) for k, x in out.items()}

    def _fr(self, images: list[torch.Tensor], grid: torch.Tensor):
        """FR on the aligned crops of several batches in one call (FR has no batch statistics, so this
        equals separate calls). Returns per-batch (fc5 features, (cos, phi))."""
        n = len(images)
        feat, (cos, phi) = self.nets.FR(self._crops(images, grid))
        return list(zip(feat.chunk(n), zip(cos.chunk(n), phi.chunk(n))))

    def _crops(self, images: list[torch.Tensor], grid: torch.Tensor) -> torch.Tensor:
        """The aligned FR crops of several batches, concatenated, all warped with the real batch's grid."""
        return self._fmt(warp_to_crop(torch.cat(images), grid.repeat(len(images), 1, 1, 1)))

    def _embed_frozen(self, images: list[torch.Tensor], grid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """fc5 embeddings of the frozen copy (feature_fr: frozen), one per batch; gradients reach the
        images only."""
        return self.feature_fr.embed(self._crops(images, grid)).chunk(len(images))

    def _gan_mean(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        w = {"M": self.cfg["lambda_GAN_M"], "R": self.cfg["lambda_GAN_recon"], "WR": self.cfg["lambda_GAN_WR"]}
        return sum(w[h] * terms[h] for h in HEADS) / sum(w.values())

    def _prepare(self, batch: dict):
        real = self._fmt(batch["image"].to(self.device, non_blocking=True))
        label = batch["label"].to(self.device, non_blocking=True)
        # theta is solved on the host from the loader's landmarks, then sent: no device round trip
        theta = alignment_theta(batch["landmarks"].cpu(), tuple(real.shape[-2:]), self.crop)
        grid = F.affine_grid(theta.to(self.device, non_blocking=True), [real.shape[0], 3, *self.crop],
                             align_corners=True)
        return real, label, grid

    # ---- the step --------------------------------------------------------------------------------
    def step(self, batch: dict, passwords: StepPasswords | None = None) -> StepResult:
        nets = self.nets
        nets.train()
        real, label, grid = self._prepare(batch)
        B = real.shape[0]
        pw = passwords if passwords is not None else self.draw_passwords(B)
        pw = pw.to(self.device)

        set_requires_grad(self.g_params, True)
        set_requires_grad(self.d_params, False)
        with self.autocast():
            fake = self.generate(real, pw)
        images = {k: v.detach() for k, v in fake.items()}
        logs = self.d_phase(real, label, grid, fake)
        logs.update(self.g_phase(real, label, grid, fake, pw))
        return StepResult(logs, images)

    def d_phase(self, real, label, grid, fake) -> dict[str, torch.Tensor]:
        cfg, D = self.cfg, self.nets.D
        set_requires_grad(self.d_params, True)
        self.opt_D.zero_grad(set_to_none=True)
        det = {k: v.detach() for k, v in fake.items()}
        with self.autocast():
            fr_ctx = contextlib.nullcontext() if self.fr_trainable else torch.no_grad()
            with fr_ctx:
                fr = self._fr([det["M"], det["R"], det["WR1"], real], grid)
            ce_M, ce_R, ce_WR, ce_I = (self.angle(logits, label) for _, logits in fr)
            lm, lwr = cfg["lambda_FR_M"], cfg["lambda_FR_WR"]
            fr_fake = (lm * ce_M - ce_R + lwr * ce_WR) / (1 + lm + lwr)
            loss_fr = cfg["lambda_FR"] * 0.5 * (ce_I + fr_fake)

            B = real.shape[0]
            fakes = {"M": self.pools["M"].query(torch.cat([det["M"], det["M2"]]), B),
                     "R": self.pools["R"].query(det["R"], B),
                     "WR": self.pools["WR"].query(torch.cat([det["WR1"], det["WR2"]]), B)}
            gan_fake = {h: self.gan(D(self._fmt(fakes[h]), h), False) for h in HEADS}
            shared_real = D.shared(real)  # the same map for every head: computed once, its gradients summed
            gan_real = {h: self.gan([D.head(real, h), shared_real], True) for h in HEADS}
            loss_gan = cfg["lambda_GAN"] * 0.5 * (self._gan_mean(gan_fake) + self._gan_mean(gan_real))
            loss_D = loss_fr + loss_gan
        loss_D.backward()
        if self.grad_sync:
            self.grad_sync(self.d_params)
        self.opt_D.step()
        set_requires_grad(self.d_params, False)
        return {"D": loss_D.detach(), "D_FR_real": ce_I.detach(), "D_FR_M": ce_M.detach(),
                "D_FR_R": ce_R.detach(), "D_FR_WR": ce_WR.detach(), "D_FR_fake": fr_fake.detach(),
                "D_GAN_real": self._gan_mean(gan_real).detach(), "D_GAN_fake": self._gan_mean(gan_fake).detach()}

    def g_phase(self, real, label, grid, fake, pw: StepPasswords) -> dict[str, torch.Tensor]:
        cfg, D, Q = self.cfg, self.nets.D, self.nets.Q
        M, M2, R, WR1, WR2 = (fake[k] for k in ("M", "M2", "R", "WR1", "WR2"))
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            gan = {h: self.gan(D(x, h), True) for h, x in (("M", M), ("R", R), ("WR", WR1))}
            loss_gan = cfg["lambda_GAN"] * self._gan_mean(gan)

            q = {"M": Q(real, M), "R": Q(M, R), "WR": Q(M, WR1)}
            q_bits = {"M": pw.p, "R": pw.inv, "WR": pw.w1}
            loss_dis = sum(digit_loss(q[k], q_bits[k]) for k in q)

            if self.feature_fr is None:
                (f_M, l_M), (f_R, l_R), (f_WR1, l_WR1), (f_M2, _), (f_WR2, _) = self._fr([M, R, WR1, M2, WR2], grid)
            else:
                (_, l_M), (_, l_R), (_, l_WR1) = self._fr([M, R, WR1], grid)
                f_M, f_WR1, f_M2, f_WR2 = self._embed_frozen([M, WR1, M2, WR2], grid)
            lm, lwr = cfg["lambda_FR_M"], cfg["lambda_FR_WR"]
            if cfg["fr_anon_target"] == "away":  # the paper: M and WR1 away from the true identity
                ce_M, ce_R, ce_WR = self.angle(l_M, label), self.angle(l_R, label), self.angle(l_WR1, label)
                loss_fr = (-lm * ce_M + ce_R - lwr * ce_WR) / (lm + 1 + lwr)
            else:  # toward the training identity each one's password names (never the true one)
                classes = l_M[0].shape[1]
                ce_M = self.angle(l_M, password_identity(pw.p, label, classes))
                ce_R = self.angle(l_R, label)
                ce_WR = self.angle(l_WR1, password_identity(pw.w1, label, classes))
                loss_fr = (lm * ce_M + ce_R + lwr * ce_WR) / (lm + 1 + lwr)

            mode = cfg["feature_loss"]
            feat_M = feature_loss(f_M, f_M2, mode)
            feat_WR = feature_loss(f_WR1, f_WR2, mode)
            feat_M_WR = feature_loss(f_M, f_WR1, mode)
            loss_feat = (cfg["lambda_Feat"] * feat_M + cfg["lambda_WR_Feat"] * feat_WR
                         + cfg["lambda_false_recon_diff"] * feat_M_WR)

            realf = real.float()
            l1_M = (M.float() - realf).abs().mean()
            l1_WR = (WR1.float() - realf).abs().mean()
            l1_R = (R.float() - realf).abs().mean()
            loss_pix = cfg["lambda_L1"] * l1_M + cfg["lambda_rand_recon_L1"] * l1_WR + cfg["lambda_G_recon"] * l1_R

            loss_G = loss_gan + cfg["lambda_dis"] * loss_dis + cfg["lambda_FR"] * loss_fr + loss_feat + loss_pix
            extra = {}
            if cfg["lambda_mode_seeking"]:  # a departure, off by default: two passwords, two different outputs
                v = self.pw_vector
                ms = mode_seeking(M, M2, v(pw.p), v(pw.p2)) + mode_seeking(WR1, WR2, v(pw.w1), v(pw.w2))
                loss_G = loss_G + cfg["lambda_mode_seeking"] * ms
                extra["G_mode_seeking"] = ms.detach()
        loss_G.backward()
        if self.grad_sync:
            self.grad_sync(self.g_params)
        self.opt_G.step()
        with torch.no_grad():
            acc = torch.stack([digit_accuracy(q[k], q_bits[k]) for k in q]).mean()
        return {"G": loss_G.detach(), "G_GAN": self._gan_mean(gan).detach(), "dis": loss_dis.detach(),
                "dis_acc": acc, "G_FR": loss_fr.detach(), "G_FR_M": ce_M.detach(), "G_FR_R": ce_R.detach(),
                "G_FR_WR": ce_WR.detach(), "G_feat": feat_M.detach(), "G_WR_feat": feat_WR.detach(),
                "G_feat_M_WR": feat_M_WR.detach(), "L1_M": l1_M.detach(), "L1_WR": l1_WR.detach(),
                "recon": l1_R.detach(), **extra}

    # ---- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        st = {"optimizer_G": self.opt_G.state_dict(), "optimizer_D": self.opt_D.state_dict(),
              "pools": {h: p.state_dict() for h, p in self.pools.items()},
              "angle_it": self.angle.it, "password_rng": self.pw_gen.get_state()}
        if self.feature_fr is not None:
            st["feature_FR"] = self.feature_fr.state_dict()
        return st

    def load_state_dict(self, state: dict) -> None:
        self.opt_G.load_state_dict(state["optimizer_G"])
        self.opt_D.load_state_dict(state["optimizer_D"])
        for h, p in self.pools.items():
            p.load_state_dict(state["pools"][h], self.device)
        self.angle.it = int(state["angle_it"])
        self.pw_gen.set_state(state["password_rng"])
        if self.feature_fr is not None:
            if "feature_FR" not in state:
                raise KeyError("feature_FR (the frozen FR of feature_fr: frozen): the checkpoint was saved by a run "
                               "with feature_fr: trained")
            self.feature_fr.load_state_dict(state["feature_FR"])


def _learning_rates(cfg) -> dict:
    lr = cfg["lr"]
    pick = lambda key, default: default if cfg[key] is None else cfg[key]  # noqa: E731
    return {"G": pick("G_lr", lr), "Q": pick("Q_lr", lr), "D": pick("D_lr", lr), "FR": pick("FR_lr", lr / 10)}
