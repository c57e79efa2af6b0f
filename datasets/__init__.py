"""Face datasets of the project and the synthetic face generator.

build_dataset(cfg, split) gives the dataset named by the config (cfg.dataset for 'train' and
'all', cfg.test_dataset or else cfg.dataset for 'test' and 'val'); make_loader wraps it. Datasets
without identity labels (LFW, LFW_CROP, FFHQ, an unlabelled folder) are test-only: 'train' is an
error and every other split gives all their images.
"""
from __future__ import annotations

from .base import FaceDataset, load_rgb
from .casia import casia
from .errors import DatasetError
from .ffhq import ffhq
from .folder import folder
from .lfw import lfw
from .lfw_crop import crop_box, lfw_crop
from .loader import make_loader
from .splits import SPLITS, split_bounds, split_mask

DATASETS = ("CASIA", "LFW", "LFW_CROP", "FFHQ", "folder", "synthetic")


def build_dataset(cfg, split: str, name: str | None = None) -> FaceDataset:
    """The dataset `name` (default: from the config, see above) restricted to `split`."""
    if name is None:
        name = cfg.dataset if split in ("train", "all") else (cfg.test_dataset or cfg.dataset)
    root, size = cfg.data_root, cfg.img_size
    if name == "CASIA":
        return casia(root, split, size)
    if name == "LFW":
        return lfw(root, split, size)
    if name == "LFW_CROP":
        return lfw_crop(root, split, size)
    if name == "FFHQ":
        return ffhq(root, split, size)
    if name == "folder":
        return folder(root, cfg.folder_images, cfg.folder_landmarks, split, size)
    if name == "synthetic":
        from .synthetic import synthetic  # imported here so that `python -m datasets.synthetic` runs cleanly

        return synthetic(root, cfg.synthetic_dir, cfg.synthetic_identities, cfg.synthetic_images_per_id,
                         cfg.synthetic_seed, split, size)
    raise DatasetError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")



def __getattr__(attr):
    if attr in ("generate_synthetic_dataset", "ensure_synthetic_dataset"):
        from . import synthetic as module

        return getattr(module, attr)
    raise AttributeError(f"module 'datasets' has no attribute '{attr}'")


__all__ = ["DATASETS", "SPLITS", "DatasetError", "FaceDataset", "build_dataset", "crop_box",
           "ensure_synthetic_dataset", "generate_synthetic_dataset", "load_rgb", "make_loader", "split_bounds",
           "split_mask"]
