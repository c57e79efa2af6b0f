"""LFW as distributed (250x250 images, five landmarks, no identity labels: a test-only dataset)."""
from __future__ import annotations

import os

from .annotations import read_landmarks
from .base import FaceDataset, from_table, require_layout

LAYOUT = ("  data_root/lfw/                the images, e.g. Aaron_Eckhart/Aaron_Eckhart_0001.jpg (250x250)\n"
          "  data_root/lfw_landmark.txt    lines 'RELATIVE_PATH x1 y1 ... x5 y5', paths relative to lfw/")


def lfw(data_root: str, split: str, img_size: int) -> FaceDataset:
    require_layout(data_root, "LFW", ["lfw", "lfw_landmark.txt"], LAYOUT)
    table = read_landmarks(os.path.join(data_root, "lfw_landmark.txt"), labelled=False)
    return from_table("LFW", os.path.join(data_root, "lfw"), table, split, img_size)
