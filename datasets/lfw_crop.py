"""LFW re-framed the way the authors framed faces in the wild: the face box, doubled.

The crop is the MTCNN box (lfw_detection.txt) widened to twice its width around its centre, and
made square with that width (the vertical margins set the height equal to it), clipped to the
image. Landmarks are re-expressed in the crop: normalised to it, which is the same as scaling them
as if the crop were 250x250 and normalising by 125. Edges are rounded to whole pixels (half up), and
clipping uses the full image (right and bottom at 250, exclusive, so the last row and column can be
kept). Images listed in lfw_landmark.txt without a box are skipped with a warning.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

from .annotations import read_boxes, read_landmarks
from .base import FaceDataset, from_table, require_layout
from .errors import DatasetError

FRAME = (250, 250)
LAYOUT = ("  data_root/lfw/                 the images (250x250)\n"
          "  data_root/lfw_landmark.txt     lines 'RELATIVE_PATH x1 y1 ... x5 y5'\n"
          "  data_root/lfw_detection.txt    lines 'RELATIVE_PATH left top right bottom' (face boxes)")


def crop_box(box, width: int = FRAME[0], height: int = FRAME[1]) -> tuple:
    """(left, top, right, bottom) face box -> integer crop box, twice as wide, square, clipped."""
    left, top, right, bottom = box
    half = right - left  # half the new side = the box width
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0

    def rnd(x):
        return int(math.floor(x + 0.5))

    return (max(rnd(cx - half), 0), max(rnd(cy - half), 0), min(rnd(cx + half), width), min(rnd(cy + half), height))


def lfw_crop(data_root: str, split: str, img_size: int) -> FaceDataset:
    require_layout(data_root, "LFW_CROP", ["lfw", "lfw_landmark.txt", "lfw_detection.txt"], LAYOUT)
    table = read_landmarks(os.path.join(data_root, "lfw_landmark.txt"), labelled=False)
    det_file = os.path.join(data_root, "lfw_detection.txt")
    boxes = read_boxes(det_file)
    keep = [i for i, p in enumerate(table.paths) if p in boxes]
    if not keep:
        raise DatasetError(f"{det_file}: none of the {len(table)} images of {table.source} has a box")
    if len(keep) < len(table):
        first = next(p for p in table.paths if p not in boxes)
        warnings.warn(f"LFW_CROP: {len(table) - len(keep)} images of {table.source} have no box in "
                      f"{det_file} and are skipped (first: {first})", stacklevel=2)
    table = table.subset(keep)
    crops = np.array([crop_box(boxes[p]) for p in table.paths], np.int64)
    bad = np.flatnonzero((crops[:, 2] <= crops[:, 0]) | (crops[:, 3] <= crops[:, 1]))
    if len(bad):
        raise DatasetError(f"{det_file}: the box of '{table.paths[bad[0]]}' lies outside the 250x250 image")
    return from_table("LFW_CROP", os.path.join(data_root, "lfw"), table, split, img_size, FRAME, crops)
