"""A labelled set of real face photos, rebuilt from photos that Python packages ship (nothing stored).

The sources and their hand-checked face boxes are in bench/real_faces.json: skimage's astronaut
(public domain), matplotlib's Grace Hopper (public domain) and skimage's cameraman (CC0: a face
turned away and looking down into a camera), plus skimage's 100 LFW face crops. The harder cases
are made from them by known geometry, so every label follows from the source box:

    original   the three photos
    small      each photo downscaled so its face is 40, 28, 20, 16 and 12 px
    tilted     rotated about the face centre by +-20, +-40, +-60 degrees (label: same box)
    mirrored   flipped left-right (the cameraman then faces the other way)
    dark       under-exposed (gamma 1.8, 35% brightness) with sensor-like noise
    cut        the face's left 35% outside the photo (label: the visible part)
    blurred    out of focus (Gaussian blur of 4% of the face width)
    jpeg       face at 48 px, JPEG quality 15
    group      1280x720 collages: 3 large faces (also the speed frame), 6 mixed, 12 small (12-48 px)
    lfw        4 sheets of 25 LFW crops each (tight crops, 25 px upscaled to 32 px)
    none       photos without a face (cup of coffee, cat, rocket, ...) and the LFW background crops

``build()`` returns the list of items; ``match()`` counts found faces and false positives.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from protect.face_detect import box_iou

LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "real_faces.json")


@dataclass
class Item:
    name: str
    category: str
    image: np.ndarray                      # HxWx3 uint8 RGB
    boxes: list = field(default_factory=list)  # (left, top, right, bottom) per face


def labels() -> dict:
    with open(LABELS, encoding="utf-8") as f:
        return json.load(f)


def load_photo(loader: str) -> np.ndarray:
    """An RGB uint8 photo from a 'module.function' or 'matplotlib:sample_data/FILE' loader."""
    if loader.startswith("matplotlib:"):
        import matplotlib
        from PIL import Image
        path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", loader.split(":", 1)[1])
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    module, func = loader.rsplit(".", 1)
    img = getattr(__import__(module, fromlist=[func]), func)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3])


def photos() -> dict[str, tuple[np.ndarray, tuple]]:
    return {k: (load_photo(v["loader"]), tuple(v["box"])) for k, v in labels()["photos"].items()}


# ---- transforms: each returns (image, box) -----------------------------------------------------

def scaled(img, box, face_px: float):
    f = face_px / (box[2] - box[0])
    h, w = img.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    fx, fy = size[0] / w, size[1] / h
    return out, (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)


def rotated(img, box, degrees: float):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = cv2.getRotationMatrix2D((cx, cy), degrees, 1.0)
    # Grey corners: mirrored corners would make symmetric, face-like patterns no photo has.
    out = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(110, 110, 110))
    return out, box  # rotation about the face centre: the face keeps its centre and size


def mirrored(img, box):
    w = img.shape[1]
    return np.ascontiguousarray(img[:, ::-1]), (w - box[2], box[1], w - box[0], box[3])


def darkened(img, box, seed: int = 0):
    x = 255.0 * (img / 255.0) ** 1.8 * 0.35
    x += np.random.default_rng(seed).normal(0, 3, img.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), box


def blurred(img, box, fraction: float = 0.04):
    """Out of focus: a Gaussian blur of ``fraction`` of the face width."""
    sigma = fraction * (box[2] - box[0])
    return cv2.GaussianBlur(img, (0, 0), sigma), box


def jpeg(img, box, quality: int = 15):
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]), box


def cut(img, box, fraction: float = 0.35):
    x0 = int(round(box[0] + fraction * (box[2] - box[0])))
    return np.ascontiguousarray(img[:, x0:]), (0, box[1], box[2] - x0, box[3])


def collage(tiles, size=(1280, 720), grid=(3, 1), seed: int = 0):
    """Paste (image, box) tiles into a grid on a noisy grey canvas, each face centred in its cell."""
    w, h = size
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.normal(0, 25, (h // 16, w // 16)), (w, h), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(110 + noise, 0, 255).astype(np.uint8)[..., None].repeat(3, -1)
    cw, ch = w // grid[0], h // grid[1]
    boxes = []
    for i, (img, box) in enumerate(tiles):
        gx, gy = i % grid[0], i // grid[0]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        # window of the tile image around the face, at most one cell, inside the image
        left = int(round(min(max(cx - cw / 2, 0), max(img.shape[1] - cw, 0))))
        top = int(round(min(max(cy - ch / 2, 0), max(img.shape[0] - ch, 0))))
        part = img[top:top + ch, left:left + cw]
        ox = gx * cw + (cw - part.shape[1]) // 2
        oy = gy * ch + (ch - part.shape[0]) // 2
        canvas[oy:oy + part.shape[0], ox:ox + part.shape[1]] = part
        boxes.append((box[0] - left + ox, box[1] - top + oy, box[2] - left + ox, box[3] - top + oy))
    return canvas, boxes


def lfw_sheets(faces: np.ndarray, per_sheet: int = 25, face_px: int = 32, cell=(80, 64), seed: int = 0):
    """Sheets of LFW crops (5 per row), each upscaled to ``face_px`` and centred in its cell."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(0, len(faces), per_sheet):
        chunk = faces[s:s + per_sheet]
        rows = -(-len(chunk) // 5)
        sheet = np.clip(rng.normal(120, 6, (rows * cell[1], 5 * cell[0])), 0, 255)
        boxes = []
        for i, f in enumerate(chunk):
            big = cv2.resize((f * 255).astype(np.float32), (face_px, face_px), interpolation=cv2.INTER_CUBIC)
            x0 = (i % 5) * cell[0] + (cell[0] - face_px) // 2
            y0 = (i // 5) * cell[1] + (cell[1] - face_px) // 2
            sheet[y0:y0 + face_px, x0:x0 + face_px] = big
            boxes.append((x0, y0, x0 + face_px, y0 + face_px))
        img = np.clip(np.round(sheet), 0, 255).astype(np.uint8)[..., None].repeat(3, -1)
        out.append((img, boxes))
    return out


def group_three(ph=None):
    """The 1280x720 frame with three large faces (also the speed benchmark's frame)."""
    ph = ph or photos()
    return collage([scaled(*ph["astronaut"], 120), scaled(*ph["grace_hopper"], 140),
                    scaled(*ph["cameraman"], 100)], grid=(3, 1), seed=1)


def build(with_lfw: bool = True, with_negatives: bool = True) -> list[Item]:
    ph = photos()
    items = []
    for name, (img, box) in ph.items():
        items.append(Item(f"original/{name}", "original", img, [box]))
        for px in (40, 28, 20, 16, 12):
            im, b = scaled(img, box, px)
            items.append(Item(f"small/{name}@{px}px", "small", im, [b]))
        for deg in (-60, -40, -20, 20, 40, 60):
            im, b = rotated(img, box, deg)
            items.append(Item(f"tilted/{name}@{deg}deg", "tilted", im, [b]))
        im, b = mirrored(img, box)
        items.append(Item(f"mirrored/{name}", "mirrored", im, [b]))
        im, b = darkened(img, box, seed=len(items))
        items.append(Item(f"dark/{name}", "dark", im, [b]))
        im, b = cut(img, box)
        items.append(Item(f"cut/{name}", "cut", im, [b]))
        im, b = blurred(img, box)
        items.append(Item(f"blurred/{name}", "blurred", im, [b]))
        im, b = jpeg(*scaled(img, box, 48), quality=15)
        items.append(Item(f"jpeg/{name}@48px", "jpeg", im, [b]))
    a, g, c = ph["astronaut"], ph["grace_hopper"], ph["cameraman"]
    im, bs = group_three(ph)
    items.append(Item("group/three-720p", "group", im, bs))
    six = [scaled(*mirrored(*a), 60), scaled(*rotated(*g, 25), 48), scaled(*c, 56),
           scaled(*darkened(*a, seed=7), 40), scaled(*mirrored(*g), 64), scaled(*mirrored(*c), 36)]
    im, bs = collage(six, grid=(3, 2), seed=2)
    items.append(Item("group/six-mixed", "group", im, bs))
    small = [scaled(*t, px) for t, px in zip([a, g, c, mirrored(*a), mirrored(*g), mirrored(*c)] * 2,
                                             (48, 40, 36, 32, 28, 24, 22, 20, 18, 16, 14, 12))]
    im, bs = collage(small, grid=(4, 3), seed=3)
    items.append(Item("group/twelve-small", "group", im, bs))
    if with_lfw:
        from skimage import data
        lfw = data.lfw_subset()
        for i, (im, bs) in enumerate(lfw_sheets(lfw[:100])):
            items.append(Item(f"lfw/sheet{i}", "lfw", im, bs))
        if with_negatives:
            for i, (im, _) in enumerate(lfw_sheets(lfw[100:])):
                items.append(Item(f"none/lfw-background{i}", "none", im, []))
    if with_negatives:
        for loader in labels()["negatives"]:
            items.append(Item(f"none/{loader.rsplit('.', 1)[1]}", "none", load_photo(loader), []))
    return items


def match(labels_, found, min_iou: float = 0.3) -> tuple[int, int]:
    """(faces found, false positives): greedy one-to-one matching, best overlap first. The IoU
    threshold is lenient because detectors draw faces differently (dlib: tight; CenterFace: brow
    to chin and more)."""
    pairs = sorted(((box_iou(l, d), i, j) for i, l in enumerate(labels_) for j, d in enumerate(found)), reverse=True)
    used_l, used_d = set(), set()
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i not in used_l and j not in used_d:
            used_l.add(i)
            used_d.add(j)
    return len(used_l), len(found) - len(used_d)
