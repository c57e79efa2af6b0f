"""Readers of the text files that describe face datasets, with errors that point at file:line.

Formats (whitespace separated, one image per line, blank lines ignored):
  landmarks, labelled:   RELATIVE_PATH LABEL x1 y1 x2 y2 x3 y3 x4 y4 x5 y5   (casia_landmark.txt)
  landmarks, unlabelled: RELATIVE_PATH x1 y1 ... x5 y5                        (lfw_landmark.txt)
  detections:            RELATIVE_PATH left top right bottom                  (lfw_detection.txt)
  path list:             RELATIVE_PATH                                        (validation_paths.txt)
Coordinates are pixels of the image named on the line; points in MTCNN order.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError

LABELLED = "RELATIVE_PATH LABEL x1 y1 x2 y2 x3 y3 x4 y4 x5 y5"
UNLABELLED = "RELATIVE_PATH x1 y1 x2 y2 x3 y3 x4 y4 x5 y5"


@dataclass
class LandmarkTable:
    """Parsed landmark file: paths, labels (None when the file has no label column), (N, 5, 2) points
    in pixels, and the line number of every entry (for later messages)."""
    source: str
    paths: list
    labels: np.ndarray | None
    points: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> LandmarkTable:
        idx = np.asarray(idx, np.int64)
        return LandmarkTable(self.source, [self.paths[i] for i in idx],
                             None if self.labels is None else self.labels[idx], self.points[idx], self.lines[idx])


def _lines(path: str):
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text file ({e})") from None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields:
            yield number, fields


def _numbers(path: str, number: int, fields: list, what: str) -> list:
    out = []
    for tok in fields:
        try:
            val = float(tok)
        except ValueError:
            raise DatasetError(f"{path}:{number}: {what} '{tok}' is not a number") from None
        if not math.isfinite(val):
            raise DatasetError(f"{path}:{number}: {what} '{tok}' is not a finite number")
        out.append(val)
    return out


def _label(path: str, number: int, tok: str) -> int:
    try:
        label = int(tok)
    except ValueError:
        raise DatasetError(f"{path}:{number}: label '{tok}' is not an integer "
                           f"(expected {LABELLED})") from None
    if label < 0:
        raise DatasetError(f"{path}:{number}: label {label} is negative (identity labels start at 0)")
    return label


def read_landmarks(path: str, labelled: bool | None) -> LandmarkTable:
    """Read a landmark file. labelled=True/False demands that format; None accepts either, as long as
    every line of the file uses the same one."""
    paths, labels, points, lines = [], [], [], []
    for number, fields in _lines(path):
        n = len(fields)
        has_label = {12: True, 11: False}.get(n)
        if has_label is None or (labelled is not None and has_label != labelled):
            want = {True: f"'{LABELLED}'", False: f"'{UNLABELLED}'"}.get(
                labelled, f"'{LABELLED}' or '{UNLABELLED}'")
            hint = " (paths may not contain spaces)" if n > 12 else ""
            raise DatasetError(f"{path}:{number}: expected {want}, got {n} fields{hint}")
        if labelled is None and paths and has_label != (labels[0] is not None):
            raise DatasetError(f"{path}:{number}: this line {'has' if has_label else 'lacks'} a label column "
                               f"but line {lines[0]} {'does not' if has_label else 'does'}; use one format")
        labels.append(_label(path, number, fields[1]) if has_label else None)
        points.append(_numbers(path, number, fields[-10:], "coordinate"))
        paths.append(fields[0])
        lines.append(number)
    if not paths:
        raise DatasetError(f"{path}: no entries (expected lines '{LABELLED if labelled else UNLABELLED}')")
    has = labels[0] is not None
    return LandmarkTable(path, paths, np.asarray(labels, np.int64) if has else None,
                         np.asarray(points, np.float64).reshape(-1, 5, 2), np.asarray(lines, np.int64))


def read_boxes(path: str) -> dict:
    """RELATIVE_PATH -> (left, top, right, bottom) floats; a box must have positive width and height."""
    boxes = {}
    for number, fields in _lines(path):
        if len(fields) != 5:
            raise DatasetError(f"{path}:{number}: expected 'RELATIVE_PATH left top right bottom', "
                               f"got {len(fields)} fields")
        left, top, right, bottom = _numbers(path, number, fields[1:], "box coordinate")
        if right <= left or bottom <= top:
            raise DatasetError(f"{path}:{number}: empty box (left {left}, top {top}, right {right}, "
                               f"bottom {bottom}); right must exceed left and bottom must exceed top")
        boxes[fields[0]] = (left, top, right, bottom)
    return boxes


def read_paths(path: str) -> LandmarkTable:
    """A list of image paths: a table without labels whose landmarks are all unknown (NaN)."""
    paths, lines = [], []
    for number, fields in _lines(path):
        if len(fields) != 1:
            raise DatasetError(f"{path}:{number}: expected one relative image path per line, got "
                               f"{len(fields)} fields (paths may not contain spaces)")
        paths.append(fields[0])
        lines.append(number)
    if not paths:
        raise DatasetError(f"{path}: no image paths listed")
    return LandmarkTable(path, paths, None, np.full((len(paths), 5, 2), np.nan), np.asarray(lines, np.int64))
