"""Loaders on small fake data roots made from a few synthetic faces: CASIA, LFW, LFW_CROP, FFHQ,
folder, synthetic; the identity split; normalised landmarks; the loader; every bad-input message."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DatasetError, build_dataset, crop_box, make_loader, split_bounds, split_mask
from datasets.synthetic import generate_synthetic_dataset
from utils.config import make_config
from utils.images import from_uint8

S = 64  # img_size of the tests


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """10 identities x 2 photos: (images folder, [(rel, label, (5, 2) points)])."""
    root = generate_synthetic_dataset(str(tmp_path_factory.mktemp("syn") / "faces"), 10, 2, seed=0, workers=2)
    entries = []
    for line in open(os.path.join(root, "landmarks.txt")).read().splitlines():
        f = line.split()
        entries.append((f[0], int(f[1]), np.array(f[2:], float).reshape(5, 2)))
    return os.path.join(root, "images"), entries


def _cfg(root, **kw):
    return make_config(data_root=str(root), img_size=S, **kw)


def _line(rel, pts, label=None):
    lab = "" if label is None else f" {label}"
    return f"{rel}{lab} " + " ".join(f"{v:.3f}" for v in np.asarray(pts).reshape(-1))


def _resized(path, box=None):
    im = Image.open(path).convert("RGB")
    if box is not None:
        im = im.crop(box)
    return from_uint8(np.array(im.resize((S, S), Image.BICUBIC)))


@pytest.fixture
def casia_root(tmp_path, faces):
    images, entries = faces
    shutil.copytree(images, tmp_path / "CASIA-WebFace")
    (tmp_path / "casia_landmark.txt").write_text("\n".join(_line(r, p, l) for r, l, p in entries) + "\n")
    return tmp_path


@pytest.fixture
def lfw_root(tmp_path, faces):
    images, entries = faces
    shutil.copytree(images, tmp_path / "lfw")
    (tmp_path / "lfw_landmark.txt").write_text("\n".join(_line(r, p) for r, _, p in entries) + "\n")
    return tmp_path


# ---- the identity split --------------------------------------------------------------------------

def test_split_of_casia_sized_labels():
    labels = np.arange(10575)
    assert split_bounds(labels) == (8456, 9515)  # 10574 // 5 * 4; (10575 - 8456) // 2 + 8456
    masks = {s: split_mask(labels, s) for s in ("train", "test", "val", "all")}
    assert masks["train"].sum() == 8456 and masks["test"].sum() == 1059 and masks["val"].sum() == 1060
    assert (masks["train"].astype(int) + masks["test"] + masks["val"] == 1).all() and masks["all"].all()


def test_split_of_small_label_sets():
    labels = np.repeat(np.arange(100), 3)
    assert split_bounds(labels) == (76, 88)
    assert set(labels[split_mask(labels, "test")]) == set(range(76, 88))
    assert set(labels[split_mask(labels, "val")]) == set(range(88, 100))
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        split_mask(labels, "valid")


# ---- CASIA ---------------------------------------------------------------------------------------

def test_casia_items_splits_and_landmarks(casia_root, faces):
    _, entries = faces
    by_path = {r: (l, p) for r, l, p in entries}
    cfg = _cfg(casia_root, dataset="CASIA")
    sets = {s: build_dataset(cfg, s) for s in ("train", "test", "val", "all")}
    # 10 identities 0..9: train < 4, test 4..6, val >= 7
    assert [len(sets[s]) for s in ("train", "test", "val", "all")] == [8, 6, 6, 20]
    assert [sets[s].num_classes for s in ("train", "test", "val")] == [4, 7, 10]
    item = sets["test"][3]
    assert set(item) == {"image", "label", "landmarks", "index", "path"}
    label, pts = by_path[item["path"]]
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert torch.equal(item["image"], _resized(casia_root / "CASIA-WebFace" / item["path"]))
    assert item["label"].dtype == torch.int64 and int(item["label"]) == label and 4 <= label <= 6
    assert int(item["index"]) == 3
    assert item["landmarks"].dtype == torch.float32
    assert torch.allclose(item["landmarks"], torch.tensor(pts / 125.0 - 1.0, dtype=torch.float32), atol=1e-6)
    want = np.mean([p for r, l, p in entries if l < 4], axis=0) / 125.0 - 1.0
    assert torch.allclose(sets["train"].mean_landmarks(), torch.tensor(want, dtype=torch.float32), atol=1e-5)


def test_loader_is_seeded_and_batches_dicts(casia_root):
    ds = build_dataset(_cfg(casia_root, dataset="CASIA"), "all")

    def order(seed, workers):
        loader = make_loader(ds, 4, shuffle=True, drop_last=True, workers=workers, device_type="cpu", seed=seed)
        return [b["index"].tolist() for b in loader]

    first = order(1, 0)
    assert len(first) == 5 and sorted(sum(first, [])) == list(range(20))
    assert order(1, 2) == first and order(2, 0) != first
    batch = next(iter(make_loader(ds, 3, False, True, 0, "cpu")))
    assert batch["image"].shape == (3, 3, S, S) and batch["landmarks"].shape == (3, 5, 2)
    assert batch["label"].dtype == torch.int64 and len(batch["path"]) == 3
    with pytest.raises(ValueError, match="shuffle=False with a sampler"):
        make_loader(ds, 2, True, False, 0, "cpu", sampler=torch.utils.data.SequentialSampler(ds))


# ---- LFW, LFW_CROP, FFHQ -------------------------------------------------------------------------

def test_lfw_is_test_only_without_labels(lfw_root):
    cfg = _cfg(lfw_root, dataset="LFW")
    ds = build_dataset(cfg, "test")
    assert len(ds) == 20 and ds.num_classes == 0 and int(ds[0]["label"]) == -1
    assert len(build_dataset(cfg, "val")) == len(build_dataset(cfg, "all")) == 20
    with pytest.raises(DatasetError, match="LFW has no identity labels .* cannot be a training set"):
        build_dataset(cfg, "train")


def test_crop_box_by_hand():
    # box 100..150 x 90..160: width 50, centre (125, 125) -> a square of side 100 around the centre
    assert crop_box((100, 90, 150, 160)) == (75, 75, 175, 175)
    # near the corner: (40 +- 60, 60 +- 60) clipped to the image
    assert crop_box((10, 20, 70, 100)) == (0, 0, 100, 120)
    assert crop_box((200, 200, 240, 230)) == (180, 175, 250, 250)
    assert crop_box((100.2, 90, 150.4, 160)) == (75, 75, 176, 175)  # 75.1 -> 75, 175.5 -> 176


def test_lfw_crop_reframes_image_and_landmarks(lfw_root, faces):
    _, entries = faces
    a, b, c = entries[0][0], entries[1][0], entries[2][0]
    pts = np.array([[110, 120], [140, 120], [125, 135], [112, 150], [138, 150]], float)
    (lfw_root / "lfw_landmark.txt").write_text(
        "\n".join([_line(a, pts), _line(b, pts), _line(c, pts)]) + "\n")
    (lfw_root / "lfw_detection.txt").write_text(f"{a} 100 90 150 160\n{b} 10 20 70 100\n")
    with pytest.warns(UserWarning, match="1 images of .* have no box .* skipped"):
        ds = build_dataset(_cfg(lfw_root, dataset="LFW_CROP"), "test")
    assert len(ds) == 2
    first, second = ds[0], ds[1]
    # crop (75, 75, 175, 175): (110, 120) -> 35/100 and 45/100 of the crop -> 87.5 and 112.5 of 250
    assert np.allclose(first["landmarks"][0].numpy(), [87.5 / 125 - 1, 112.5 / 125 - 1])
    assert np.allclose(first["landmarks"][:, 0].numpy(), (pts[:, 0] - 75) / 50 - 1, atol=1e-6)
    assert torch.equal(first["image"], _resized(lfw_root / "lfw" / a, (75, 75, 175, 175)))
    # clipped crop (0, 0, 100, 120) is not square: x and y scale separately
    assert np.allclose(second["landmarks"][0].numpy(), [110 / 50 - 1, 120 / 60 - 1], atol=1e-6)
    assert torch.equal(second["image"], _resized(lfw_root / "lfw" / b, (0, 0, 100, 120)))


def test_ffhq_thumbnails_have_no_landmarks(tmp_path, faces):
    images, entries = faces
    thumbs = tmp_path / "ffhq-dataset" / "thumbnails128x128"
    thumbs.mkdir(parents=True)
    names = []
    for n, (rel, _, _) in enumerate(entries[:5]):
        Image.open(os.path.join(images, rel)).resize((128, 128), Image.LANCZOS).save(thumbs / f"{69000 + n}.png")
        names.append(f"thumbnails128x128/{69000 + n}.png")
    (tmp_path / "ffhq-dataset" / "validation_paths.txt").write_text("\n".join(names) + "\n")
    cfg = _cfg(tmp_path, dataset="FFHQ")
    ds = build_dataset(cfg, "test")
    item = ds[4]
    assert len(ds) == 5 and item["path"] == names[4] and int(item["label"]) == -1
    assert item["image"].shape == (3, S, S) and torch.isnan(item["landmarks"]).all()
    assert torch.equal(item["image"], _resized(thumbs / "69004.png"))
    assert torch.isnan(ds.mean_landmarks()).all() and ds.mean_landmarks().shape == (5, 2)
    with pytest.raises(DatasetError, match="FFHQ has no identity labels"):
        build_dataset(cfg, "train")


# ---- folder and synthetic ------------------------------------------------------------------------

def _folder_root(tmp_path, faces, labelled):
    images, entries = faces
    out = tmp_path / "mine"
    lines = []
    for rel, label, pts in entries:
        (out / os.path.dirname(rel)).mkdir(parents=True, exist_ok=True)
        Image.open(os.path.join(images, rel)).resize((200, 160), Image.BICUBIC).save(out / rel)
        lines.append(_line(rel, pts * [200 / 250, 160 / 250], label if labelled else None))
    (tmp_path / "marks.txt").write_text("\n".join(lines) + "\n")
    return _cfg(tmp_path, dataset="folder", folder_images="mine", folder_landmarks="marks.txt")


def test_folder_with_labels_uses_each_images_own_size(tmp_path, faces):
    cfg = _folder_root(tmp_path, faces, labelled=True)
    ds = build_dataset(cfg, "train")
    _, entries = faces
    assert len(ds) == 8 and ds.num_classes == 4
    item = ds[1]
    pts = dict((r, p) for r, _, p in entries)[item["path"]]
    # written in 200x160 pixels, normalised by that frame: the same numbers as in the 250 frame
    assert torch.allclose(item["landmarks"], torch.tensor(pts / 125 - 1, dtype=torch.float32), atol=1e-4)
    want = np.mean([p for _, l, p in entries if l < 4], axis=0) / 125 - 1
    assert torch.allclose(ds.mean_landmarks(), torch.tensor(want, dtype=torch.float32), atol=1e-4)


def test_folder_without_labels_is_test_only(tmp_path, faces):
    cfg = _folder_root(tmp_path, faces, labelled=False)
    assert len(build_dataset(cfg, "test")) == 20
    with pytest.raises(DatasetError, match="no identity labels"):
        build_dataset(cfg, "train")
    marks = tmp_path / "marks.txt"
    lines = marks.read_text().splitlines()
    lines[3] = lines[3].replace(".png ", ".png 7 ", 1)
    marks.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"marks.txt:4: this line has a label column but line 1 does not"):
        build_dataset(cfg, "test")


def test_synthetic_is_generated_on_first_use(tmp_path, capsys):
    cfg = _cfg(tmp_path, dataset="synthetic", synthetic_identities=10, synthetic_images_per_id=2,
               synthetic_seed=3)
    train = build_dataset(cfg, "train")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Generating 10 x 2 synthetic faces (seed 3)" in out
    assert len(train) == 8 and train.num_classes == 4
    assert len(build_dataset(cfg, "val")) == 6 and capsys.readouterr().out == ""
    item = train[0]
    assert item["image"].shape == (3, S, S) and torch.isfinite(item["landmarks"]).all()
    with pytest.raises(DatasetError, match="delete that folder or set synthetic_dir"):
        build_dataset(_cfg(tmp_path, dataset="synthetic", synthetic_identities=11, synthetic_images_per_id=2,
                           synthetic_seed=3), "train")


# ---- bad input -----------------------------------------------------------------------------------

def test_missing_data_root_names_the_expected_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"data_root '.*nowhere' does not exist.*\n.*CASIA-WebFace"):
        build_dataset(_cfg(tmp_path / "nowhere", dataset="CASIA"), "train")
    (tmp_path / "CASIA-WebFace").mkdir()
    with pytest.raises(DatasetError, match=r"casia_landmark.txt' not found; the CASIA dataset expects"):
        build_dataset(_cfg(tmp_path, dataset="CASIA"), "train")
    with pytest.raises(DatasetError, match=r"ffhq-dataset/validation_paths.txt' not found"):
        build_dataset(_cfg(tmp_path, dataset="FFHQ"), "test")
    with pytest.raises(DatasetError, match=r"lfw_detection.txt' not found"):
        (tmp_path / "lfw").mkdir()
        (tmp_path / "lfw_landmark.txt").write_text("")
        build_dataset(_cfg(tmp_path, dataset="LFW_CROP"), "test")


@pytest.mark.parametrize("bad, message", [
    ("0000001/000.png 1 2 3", r"casia_landmark.txt:2: expected 'RELATIVE_PATH LABEL x1 y1 .*got 4 fields"),
    ("0000001/000.png 1 10 20 30 40 50 60 70 8O 90 100", r"casia_landmark.txt:2: coordinate '8O' is not a number"),
    ("0000001/000.png one 10 20 30 40 50 60 70 80 90 100", r"casia_landmark.txt:2: label 'one' is not an integer"),
    ("0000001/000.png -3 10 20 30 40 50 60 70 80 90 100", r"casia_landmark.txt:2: label -3 is negative"),
    ("0000001/000.png 1 10 20 30 40 50 60 70 nan 90 100", r"casia_landmark.txt:2: coordinate 'nan' is not a finite"),
])
def test_malformed_landmark_lines_name_file_and_line(casia_root, bad, message):
    path = casia_root / "casia_landmark.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], bad] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=message):
        build_dataset(_cfg(casia_root, dataset="CASIA"), "all")


def test_missing_and_corrupt_images_are_named(casia_root):
    cfg = _cfg(casia_root, dataset="CASIA")
    path = casia_root / "casia_landmark.txt"
    original = path.read_text()
    first = original.split()[0]
    os.remove(casia_root / "CASIA-WebFace" / first)
    with pytest.raises(DatasetError, match=rf"casia_landmark.txt:1: image '{first}' not found under .*CASIA-WebFace"):
        build_dataset(cfg, "all")
    path.write_text("\n".join(original.splitlines()[1:]) + "\n")
    ds = build_dataset(cfg, "all")
    victim = ds.paths[2]
    (casia_root / "CASIA-WebFace" / victim).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match=rf"cannot decode image .*{victim}"):
        ds[2]
    os.remove(casia_root / "CASIA-WebFace" / victim)
    with pytest.raises(DatasetError, match=rf"image not found: .*{victim}"):
        ds[2]
    Image.new("RGB", (64, 64)).save(casia_root / "CASIA-WebFace" / victim)
    with pytest.raises(DatasetError, match=r"is 64x64, but .*casia_landmark.txt gives landmarks in 250x250"):
        ds[2]


def test_unknown_dataset_and_empty_split(casia_root):
    cfg = _cfg(casia_root, dataset="CASIA")
    with pytest.raises(DatasetError, match="unknown dataset 'NOPE'; choose one of CASIA, LFW"):
        build_dataset(cfg, "test", name="NOPE")
    path = casia_root / "casia_landmark.txt"
    path.write_text("\n".join(l for l in path.read_text().splitlines() if int(l.split()[1]) >= 8) + "\n")
    with pytest.raises(DatasetError, match=r"split 'train' has no images \(2 identities, labels 8..9"):
        build_dataset(cfg, "train")


def test_bad_detection_file(lfw_root, faces):
    (lfw_root / "lfw_detection.txt").write_text(f"{faces[1][0][0]} 10 20 30\n")
    with pytest.raises(DatasetError, match=r"lfw_detection.txt:1: expected 'RELATIVE_PATH left top right bottom'"):
        build_dataset(_cfg(lfw_root, dataset="LFW_CROP"), "test")
    (lfw_root / "lfw_detection.txt").write_text(f"{faces[1][0][0]} 50 20 40 60\n")
    with pytest.raises(DatasetError, match=r"lfw_detection.txt:1: empty box"):
        build_dataset(_cfg(lfw_root, dataset="LFW_CROP"), "test")
