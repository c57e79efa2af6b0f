"""The dataset class shared by every face dataset: listed images, identity labels, five landmarks.

An item is the project's dict: `image` (3, S, S) float32 in [-1, 1] after a bicubic resize to
img_size, `label` int64 (-1 when unknown), `landmarks` (5, 2) float32 normalised to the source frame
(x / (W / 2) - 1, y / (H / 2) - 1; NaN when unknown), `index` int64 and `path` (relative to the
dataset's image folder). When a crop box is given (LFW_CROP) the crop is the source frame.
Decoding and resizing happen in the loader's worker processes.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.images import from_uint8

from .annotations import LandmarkTable
from .errors import DatasetError
from .splits import check_split, describe_split, split_mask


def load_rgb(path: str) -> Image.Image:
    """Decode an image file as RGB, or raise DatasetError naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot decode image {path}: {e}") from None


def require_layout(data_root: str, name: str, needed: list, layout: str) -> None:
    """Fail early, naming the missing folder or file and the layout the dataset expects."""
    if not os.path.isdir(data_root):
        raise DatasetError(f"data_root '{data_root}' does not exist or is not a folder; "
                           f"the {name} dataset expects:\n{layout}")
    for rel in needed:
        if not os.path.exists(os.path.join(data_root, rel)):
            raise DatasetError(f"{name}: '{os.path.join(data_root, rel)}' not found; the {name} dataset "
                               f"expects this layout:\n{layout}")


def normalise(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Pixel points (N, 5, 2) -> [-1, 1] of each box (N, 4: left, top, right, bottom)."""
    origin = boxes[:, None, :2]
    half = (boxes[:, None, 2:] - boxes[:, None, :2]) / 2.0
    return (points - origin) / half - 1.0


class FaceDataset(torch.utils.data.Dataset):
    """Images listed in an annotation file.

    frame: (W, H) of every source image, which the landmark file's pixel coordinates refer to (a
    decoded image of another size is an error), or None when sizes vary and each file's own size is
    the frame. boxes: optional (N, 4) integer crop boxes (left, top, right, bottom) in that frame.
    """

    def __init__(self, name: str, image_dir: str, paths: list, labels: np.ndarray | None,
                 points: np.ndarray, img_size: int, frame: tuple | None = (250, 250),
                 boxes: np.ndarray | None = None, source: str = ""):
        self.name, self.image_dir, self.source = name, image_dir, source
        self.paths = list(paths)
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.points = np.asarray(points, np.float64)
        self.img_size = int(img_size)
        self.frame = None if frame is None else (int(frame[0]), int(frame[1]))
        self.boxes = None if boxes is None else np.asarray(boxes, np.int64)
        if self.boxes is not None and self.frame is None:
            raise ValueError("crop boxes need a fixed source frame")
        self._norm = None
        if self.frame is not None:
            ref = self.boxes if self.boxes is not None else np.tile([0, 0, *self.frame], (len(self.paths), 1))
            self._norm = normalise(self.points, ref.astype(np.float64)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """max label + 1 over this split's images, 0 without labels."""
        return 0 if self.labels is None or not len(self.labels) else int(self.labels.max()) + 1

    def __getitem__(self, index: int) -> dict:
        rel = self.paths[index]
        full = os.path.join(self.image_dir, rel)
        img = load_rgb(full)
        if self.frame is not None and img.size != self.frame:
            raise DatasetError(f"{full}: image is {img.size[0]}x{img.size[1]}, but {self.source or self.name} "
                               f"gives landmarks in {self.frame[0]}x{self.frame[1]} pixel coordinates "
                               f"(the 'folder' dataset accepts images of any size)")
        if self.boxes is not None:
            img = img.crop(tuple(int(v) for v in self.boxes[index]))
        if self._norm is not None:
            lm = self._norm[index]
        else:
            lm = normalise(self.points[index:index + 1], np.array([[0, 0, *img.size]], np.float64))[0]
        if img.size != (self.img_size, self.img_size):
            img = img.resize((self.img_size, self.img_size), Image.BICUBIC)
        label = -1 if self.labels is None else int(self.labels[index])
        return {"image": from_uint8(np.array(img)), "label": torch.tensor(label, dtype=torch.int64),
                "landmarks": torch.as_tensor(lm, dtype=torch.float32).clone(),
                "index": torch.tensor(index, dtype=torch.int64), "path": rel}

    def normalised_landmarks(self) -> np.ndarray:
        """(N, 5, 2) normalised landmarks of every item, without decoding any image (for a frame that
        varies, only the files' headers are read, once)."""
        if self._norm is None:
            sizes = np.zeros((len(self), 4), np.float64)
            known = np.isfinite(self.points).all(axis=(1, 2))
            for i in np.flatnonzero(known):
                full = os.path.join(self.image_dir, self.paths[i])
                try:
                    with Image.open(full) as im:
                        sizes[i, 2:] = im.size
                except (OSError, UnidentifiedImageError) as e:
                    raise DatasetError(f"cannot read the size of image {full}: {e}") from None
            sizes[~known, 2:] = 1.0
            self._norm = normalise(self.points, sizes).astype(np.float32)
        return self._norm

    def mean_landmarks(self) -> torch.Tensor:
        """(5, 2) mean normalised landmarks over the items that have them (all NaN when none has)."""
        pts = self.normalised_landmarks()
        ok = np.isfinite(pts).all(axis=(1, 2))
        if not ok.any():
            return torch.full((5, 2), float("nan"))
        return torch.from_numpy(pts[ok].astype(np.float64).mean(0).astype(np.float32))

    def __repr__(self) -> str:
        ids = "no labels" if self.labels is None else f"{len(np.unique(self.labels))} identities"
        return f"{self.name}: {len(self)} images, {ids}, from {self.image_dir}"


def from_table(name: str, image_dir: str, table: LandmarkTable, split: str, img_size: int,
               frame: tuple | None = (250, 250), boxes: np.ndarray | None = None) -> FaceDataset:
    """Apply the identity split (labelled tables) or the test-only rule (unlabelled ones).

    Unlabelled datasets cannot train (the face recogniser's loss needs identities): split 'train'
    is an error, every other split gives all images.
    """
    check_split(split)
    if not os.path.isdir(image_dir):
        raise DatasetError(f"{name}: image folder '{image_dir}' not found (listed by {table.source})")
    if table.labels is None:
        if split == "train":
            raise DatasetError(f"{name} has no identity labels ({table.source}), so it cannot be a "
                               f"training set; use it as test_dataset (splits test, val or all)")
        keep = np.ones(len(table), bool)
    else:
        keep = split_mask(table.labels, split)
        if not keep.any():
            raise DatasetError(f"{name}: split '{split}' has no images ({describe_split(table.labels)})")
    idx = np.flatnonzero(keep)
    first = os.path.join(image_dir, table.paths[idx[0]])
    if not os.path.isfile(first):
        raise DatasetError(f"{table.source}:{table.lines[idx[0]]}: image '{table.paths[idx[0]]}' not "
                           f"found under {image_dir} (paths are relative to that folder)")
    return FaceDataset(name, image_dir, [table.paths[i] for i in idx],
                       None if table.labels is None else table.labels[idx], table.points[idx], img_size,
                       frame, None if boxes is None else boxes[idx], table.source)
