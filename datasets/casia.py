"""CASIA-WebFace: the training set of the paper (250x250 images, identity labels, five landmarks)."""
from __future__ import annotations

import os

from .annotations import read_landmarks
from .base import FaceDataset, from_table, require_layout

LAYOUT = ("  data_root/CASIA-WebFace/       the images, e.g. 0000045/001.jpg (250x250)\n"
          "  data_root/casia_landmark.txt   lines 'RELATIVE_PATH LABEL x1 y1 ... x5 y5', paths relative "
          "to CASIA-WebFace/")


def casia(data_root: str, split: str, img_size: int) -> FaceDataset:
    require_layout(data_root, "CASIA", ["CASIA-WebFace", "casia_landmark.txt"], LAYOUT)
    table = read_landmarks(os.path.join(data_root, "casia_landmark.txt"), labelled=True)
    return from_table("CASIA", os.path.join(data_root, "CASIA-WebFace"), table, split, img_size)
