"""The identity split of the paper: train, test and validation hold disjoint people.

    min_test_id = max_label // 5 * 4
    test_end_id = (number_of_identities - min_test_id) // 2 + min_test_id
    train: label < min_test_id;  test: min_test_id <= label < test_end_id;  val: label >= test_end_id

number_of_identities is the count of distinct labels (as in the authors' code; with CASIA's
contiguous labels 0..10574 it equals max_label + 1). 'all' keeps every image.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("train", "test", "val", "all")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    return split


def split_bounds(labels: np.ndarray) -> tuple[int, int]:
    """(min_test_id, test_end_id) for these labels."""
    labels = np.asarray(labels)
    min_test_id = int(labels.max()) // 5 * 4
    test_end_id = (len(np.unique(labels)) - min_test_id) // 2 + min_test_id
    return min_test_id, test_end_id


def split_mask(labels: np.ndarray, split: str) -> np.ndarray:
    """Boolean mask of the images of `labels` that belong to `split`."""
    check_split(split)
    labels = np.asarray(labels)
    if split == "all":
        return np.ones(len(labels), bool)
    lo, hi = split_bounds(labels)
    if split == "train":
        return labels < lo
    if split == "test":
        return (labels >= lo) & (labels < hi)
    return labels >= hi


def describe_split(labels: np.ndarray) -> str:
    lo, hi = split_bounds(labels)
    return (f"{len(np.unique(labels))} identities, labels {int(np.min(labels))}..{int(np.max(labels))}: "
            f"train < {lo}, test {lo}..{hi - 1}, val >= {hi}")
