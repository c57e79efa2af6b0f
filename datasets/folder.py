"""A user's own faces: an image folder plus a landmark file in CASIA format, labels optional.

Each line is 'RELATIVE_PATH LABEL x1 y1 ... x5 y5' or, without identities, 'RELATIVE_PATH x1 y1 ...
x5 y5' (one format per file). Coordinates are pixels of each image, which may have any size. With
labels the identity split applies; without, the dataset is test-only like LFW.
"""
from __future__ import annotations

import os

from .annotations import read_landmarks
from .base import FaceDataset, from_table, require_layout


def layout(images: str, landmarks: str) -> str:
    return (f"  data_root/{images}/      the images (any size)\n"
            f"  data_root/{landmarks}    lines 'RELATIVE_PATH [LABEL] x1 y1 ... x5 y5', paths relative "
            f"to {images}/\n  (the folder_images and folder_landmarks config keys name these two)")


def folder(data_root: str, images: str, landmarks: str, split: str, img_size: int) -> FaceDataset:
    require_layout(data_root, "folder", [images, landmarks], layout(images, landmarks))
    table = read_landmarks(os.path.join(data_root, landmarks), labelled=None)
    return from_table("folder", os.path.join(data_root, images), table, split, img_size, frame=None)
