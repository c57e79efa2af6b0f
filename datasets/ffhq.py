"""FFHQ validation thumbnails (128x128, no labels, no landmarks: a test-only dataset)."""
from __future__ import annotations

import os

from .annotations import read_paths
from .base import FaceDataset, from_table, require_layout

LAYOUT = ("  data_root/ffhq-dataset/validation_paths.txt   one image path per line, relative to ffhq-dataset/\n"
          "  data_root/ffhq-dataset/...                    the thumbnails it lists (128x128)")


def ffhq(data_root: str, split: str, img_size: int) -> FaceDataset:
    require_layout(data_root, "FFHQ", ["ffhq-dataset/validation_paths.txt"], LAYOUT)
    table = read_paths(os.path.join(data_root, "ffhq-dataset", "validation_paths.txt"))
    return from_table("FFHQ", os.path.join(data_root, "ffhq-dataset"), table, split, img_size, frame=None)
