"""What a trained model is judged on, measured on held-out identities.

* recovery: PSNR of G(G(I, p), ~p) to I, against wrong recoveries G(G(I, p), w);
* password decoding: accuracy of Q on the hexadecimal digits (chance is 1/16);
* identity: FR-embedding cosine similarity of anonymized / recovered faces to the original.

G runs in inference mode (each image normalised on its own), as users run it. Q is a training-time
auxiliary whose last layers see 2x2 (or 1x1) maps, where per-image statistics are degenerate, so it is
measured as it is trained: with the statistics of its batch (a partial last batch borrows images of
the previous batch for its statistics only). Every image of the split is counted.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.alignment import alignment_grid, warp_to_crop
from models.passwords import complement, digits, draw_step_passwords, encode
from models.views import NAMES, REAL, VIEW_IMAGES


@dataclass
class ViewPasswords:
    p: torch.Tensor
    p2: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor

    @classmethod
    def draw(cls, batch: int, length: int, generator: torch.Generator) -> ViewPasswords:
        s = draw_step_passwords(batch, length, generator)
        return cls(s.p, s.p2, s.w1, s.w2)

    def __repr__(self) -> str:
        return f"ViewPasswords(batch={self.p.shape[0]})"


@torch.no_grad()
def views(G, images: torch.Tensor, pw: ViewPasswords, mode: str) -> OrderedDict[str, torch.Tensor]:
    """The seven images of the paper's result pages (G in eval mode is the caller's business)."""
    dev = images.device
    v = lambda bits: encode(bits, mode).to(dev)  # noqa: E731
    M = G(images, v(pw.p))
    M2 = G(images, v(pw.p2))
    made = {"M": M, "M2": M2, "R": G(M, v(complement(pw.p))), "R2": G(M2, v(complement(pw.p2))),
            "WR1": G(M, v(pw.w1)), "WR2": G(M, v(pw.w2))}
    return OrderedDict([(REAL, images)] + [(NAMES[k], made[k]) for k in VIEW_IMAGES])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (data range 1 after mapping to [0, 1])."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate(nets, loader, cfg, device, max_batches: int = 0, seed: int = 1234, progress: bool = False) -> dict:
    """Recovery PSNR (right vs wrong password), Q digit accuracy, FR identity similarity;
    ``progress``: a progress bar (batches) on stderr."""
    G, Q, FR = nets.G, nets.Q, nets.FR
    modes = [m.training for m in (G, Q, FR)]
    G.eval(), Q.train(), FR.eval()
    gen = torch.Generator().manual_seed(seed)
    sums = {k: 0.0 for k in ("psnr_recovered", "psnr_wrong", "psnr_anonymized", "q_acc", "cos_anonymized",
                             "cos_recovered", "cos_wrong")}
    n = 0
    crop = (cfg["fr_crop_height"], cfg["fr_crop_width"])
    previous = None
    total = min(len(loader), max_batches) if max_batches else len(loader)
    bar = tqdm(total=total, desc="held-out evaluation", unit="batch", disable=not progress, dynamic_ncols=True)
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        I = batch["image"].to(device)
        B = I.shape[0]
        pw = ViewPasswords.draw(B, cfg["passwd_length"], gen)
        out = views(G, I, pw, cfg["use_minus_one"])
        M, R, WR = out[NAMES["M"]], out[NAMES["R"]], out[NAMES["WR1"]]
        sums["psnr_recovered"] += psnr(R, I).sum().item()
        sums["psnr_wrong"] += psnr(WR, I).sum().item()
        sums["psnr_anonymized"] += psnr(M, I).sum().item()
        pairs = ((I, M, pw.p), (M, R, complement(pw.p)), (M, WR, pw.w1))
        acc = []
        for k, (src, dst, bits) in enumerate(pairs):
            if B < 2 and previous is not None:  # batch statistics need company
                src, dst = torch.cat([src, previous[k][0]]), torch.cat([dst, previous[k][1]])
            acc.append((Q(src, dst)[:B].argmax(-1) == digits(bits).to(device)).float().mean(1))
        previous = [(s_, d_) for s_, d_, _ in pairs]
        sums["q_acc"] += torch.stack(acc).mean(0).sum().item()
        lm = batch["landmarks"].to(device)
        if torch.isfinite(lm).all():
            grid = alignment_grid(lm, tuple(I.shape[-2:]), crop)
            emb = [FR.embed(warp_to_crop(x, grid)) for x in (I, M, R, WR)]
            for key, e in zip(("cos_anonymized", "cos_recovered", "cos_wrong"), emb[1:]):
                sums[key] += F.cosine_similarity(emb[0], e, dim=1).sum().item()
        n += B
        bar.update(1)
    bar.close()
    for m, mode in zip((G, Q, FR), modes):
        m.train(mode)
    result = {k: v / max(n, 1) for k, v in sums.items()}
    result["images"] = n
    result["q_chance"] = 1 / 16
    return result


def format_evaluation(r: dict) -> str:
    return (f"held-out evaluation on {r['images']} images: recovery PSNR {r['psnr_recovered']:.2f} dB with the "
            f"right password vs {r['psnr_wrong']:.2f} dB with a wrong one (anonymized: {r['psnr_anonymized']:.2f} dB); "
            f"Q digit accuracy {r['q_acc']:.3f} (chance {r['q_chance']:.4f}); FR cosine to the original: "
            f"anonymized {r['cos_anonymized']:.3f}, recovered {r['cos_recovered']:.3f}, wrong {r['cos_wrong']:.3f}")
