"""History pool of generated images for the discriminator (as in CycleGAN), one per kind of image.

Every offered image passes through the pool: while it is not full the image is stored and returned;
once full, with probability 1/2 a random stored image is returned in its place (and the new one is
stored), otherwise the new image is returned. When more images are offered than ``batch_size`` (M with
M2, WR1 with WR2: 2B images), a random ``batch_size`` of the results are returned, in their order.
A pool of size 0 returns exactly the images offered.

The pool owns its random generator so that a checkpoint restores it exactly.
"""
from __future__ import annotations

import random

import torch


class ImagePool:
    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        if self.size == 0:
            return images
        images = images.detach()
        out = []
        for img in images:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() < 0.5:
                j = self.rng.randrange(self.size)
                out.append(self.images[j])
                self.images[j] = img.clone()
            else:
                out.append(img)
        if batch_size is not None and batch_size < len(out):
            keep = sorted(self.rng.sample(range(len(out)), batch_size))
            out = [out[i] for i in keep]
        return torch.stack(out)

    def state_dict(self) -> dict:
        stacked = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stacked, "rng": _rng_state_to_tensor(self.rng)}

    def load_state_dict(self, state: dict, device=None) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"image pool size differs: checkpoint {int(state['size'])}, config {self.size}")
        imgs = state["images"]
        self.images = [im.to(device) if device is not None else im for im in imgs] if imgs.numel() else []
        self.rng.setstate(_rng_state_from_tensor(state["rng"]))


# random.Random's state is a tuple of Python ints; stored as a tensor so that checkpoints load with
# torch.load(weights_only=True).
def _rng_state_to_tensor(rng: random.Random) -> torch.Tensor:
    version, internal, _ = rng.getstate()  # the third item only serves random.gauss, never used here
    return torch.tensor([version, *internal], dtype=torch.int64)


def _rng_state_from_tensor(t: torch.Tensor):
    vals = t.tolist()
    return vals[0], tuple(vals[1:]), None
