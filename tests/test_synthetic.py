"""The synthetic face generator: format, determinism, exact landmarks, learnable identities,
detectable faces, atomic output."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from datasets import synthetic as syn
from datasets.errors import DatasetError
from datasets.synthetic_render import Canvas
from datasets.synthetic_traits import sample_identity, sample_view


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _luma(img):
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
    a = syn.generate_synthetic_dataset(str(tmp_path / "a"), 3, 2, seed=11, workers=1)
    b = syn.generate_synthetic_dataset(str(tmp_path / "b"), 3, 2, seed=11, workers=2)
    c = syn.generate_synthetic_dataset(str(tmp_path / "c"), 3, 2, seed=12, workers=2)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 3 * 2 + 2 and fa == fb
    pngs = [k for k in fa if k.endswith(".png")]
    assert all(fa[k] != fc[k] for k in pngs)


def test_folder_layout_and_casia_like_framing(tmp_path):
    root = syn.generate_synthetic_dataset(str(tmp_path / "faces"), 4, 3, seed=2, workers=2)
    assert sorted(os.listdir(root)) == ["images", "landmarks.txt", "synthetic.json"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary folder left
    meta = json.load(open(os.path.join(root, "synthetic.json")))
    assert (meta["identities"], meta["images_per_id"], meta["seed"]) == (4, 3, 2)
    lines = open(os.path.join(root, "landmarks.txt")).read().splitlines()
    assert len(lines) == 12
    from PIL import Image
    for n, line in enumerate(lines):
        fields = line.split()
        assert len(fields) == 12
        label, k = divmod(n, 3)
        assert fields[0] == f"{label:07d}/{k:03d}.png" and int(fields[1]) == label
        im = Image.open(os.path.join(root, "images", fields[0]))
        assert im.size == (250, 250) and im.mode == "RGB"
        p = np.array(fields[2:], float).reshape(5, 2)
        le, re, nose, lm, rm = p
        assert le[0] < re[0] and lm[0] < rm[0]  # MTCNN order, left = smaller x
        assert 95 <= (le[1] + re[1]) / 2 <= 125 and 35 <= np.hypot(*(re - le)) <= 56
        assert (le[1] + re[1]) / 2 < nose[1] < (lm[1] + rm[1]) / 2
        assert 90 < nose[0] < 160


def test_canvas_maps_face_points_exactly_to_their_landmark_pixels():
    cv = Canvas(np.zeros((250, 250, 3), np.float32), (121.3, 108.7), 44.2, 0.07)
    for u, v in [(-0.5, 0.0), (0.5, 0.0), (0.03, 0.6), (-0.4, 1.1)]:
        x, y = cv.to_px(u, v)
        i, j = int(round(y)), int(round(x))
        # the grid holds the face coordinates of each pixel centre; step to the exact point
        du_dx, dv_dx = cv.u[i, j + 1] - cv.u[i, j], cv.v[i, j + 1] - cv.v[i, j]
        du_dy, dv_dy = cv.u[i + 1, j] - cv.u[i, j], cv.v[i + 1, j] - cv.v[i, j]
        uu = cv.u[i, j] + du_dx * (x - j) + du_dy * (y - i)
        vv = cv.v[i, j] + dv_dx * (x - j) + dv_dy * (y - i)
        assert abs(uu - u) < 1e-4 and abs(vv - v) < 1e-4


def test_eye_landmarks_are_the_pupils():
    offsets = []
    for label in range(12):
        for k in range(4):
            img, pts = syn.render_image(5, label, k)
            lum = _luma(img)
            for x, y in pts[:2] - 0.5:  # continuous coordinates -> pixel indices
                xi, yi = int(round(x)), int(round(y))
                win = lum[yi - 2:yi + 3, xi - 2:xi + 3]
                dy, dx = np.unravel_index(np.argmin(win), win.shape)
                offsets.append((xi - 2 + dx - x, yi - 2 + dy - y))
    offsets = np.array(offsets)
    assert np.hypot(*offsets.T).max() <= 1.5  # the darkest pixel is the pupil, within a pixel or so
    assert np.abs(offsets.mean(0)).max() < 0.3  # and there is no systematic shift


def test_mouth_landmarks_are_the_ends_of_the_lip_line():
    results = []
    for label in range(30):
        ident = sample_identity(syn.identity_rng(4, label))
        for k in range(3):
            view = sample_view(syn.image_rng(4, label, k))
            if view.mouth_open > 0 or ident.beard > 0 or ident.moustache > 0:
                continue
            img, pts = syn.render_image(4, label, k)
            lum = _luma(img)
            a, b = pts[3] - 0.5, pts[4] - 0.5
            d = (b - a) / np.linalg.norm(b - a)

            def at(p, lum=lum):
                return lum[int(round(p[1])), int(round(p[0]))]
            # just inside each corner is the dark line between the lips; just outside it, skin
            results += [at(a - 2.5 * d) - at(a + 1.5 * d), at(b + 2.5 * d) - at(b - 1.5 * d)]
    results = np.array(results)
    assert len(results) >= 40
    assert (results > 0).mean() >= 0.9 and np.median(results) > 10, results  # (dark skin: low contrast)


def test_identities_are_learnable():
    """A ridge classifier on aligned face crops, fitted on 5 photos per identity, names the other 3."""
    from models.alignment import alignment_grid

    n_id, n_img, n_train = 12, 8, 5
    imgs, lms, labels = [], [], []
    for label in range(n_id):
        for k in range(n_img):
            img, pts = syn.render_image(7, label, k)
            imgs.append(img)
            lms.append(pts / 125.0 - 1.0)
            labels.append(label)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    grid = alignment_grid(torch.tensor(np.stack(lms), dtype=torch.float32), (250, 250), (56, 48))
    crops = torch.nn.functional.grid_sample(x, grid, align_corners=True)
    f = crops.reshape(len(x), -1).double()
    f = (f - f.mean(1, keepdim=True)) / f.std(1, keepdim=True)
    y = torch.tensor(labels)
    train = torch.arange(len(y)) % n_img < n_train
    ftr, target = f[train], torch.nn.functional.one_hot(y[train], n_id).double()
    alpha = torch.linalg.solve(ftr @ ftr.T + 10.0 * torch.eye(len(ftr), dtype=torch.float64), target)
    pred = (f[~train] @ (ftr.T @ alpha)).argmax(1)
    acc = (pred == y[~train]).double().mean().item()
    assert acc >= 0.75, acc  # chance is 1/12


def test_dlib_finds_the_faces():
    dlib = pytest.importorskip("dlib")
    detector = dlib.get_frontal_face_detector()
    found = 0
    for label in range(20):
        for k in range(2):
            img, pts = syn.render_image(9, label, k)
            boxes = detector(img, 0)
            ok = any(b.left() < pts[:, 0].min() and pts[:, 0].max() < b.right() and
                     b.top() < pts[:, 1].min() and pts[:, 1].max() < b.bottom() for b in boxes)
            found += ok
    assert found >= 36, found  # 90% of 40, at the detector's native scale


def test_interrupted_generation_leaves_no_folder(tmp_path, monkeypatch):
    real = syn.render_image

    def failing(seed, label, k):
        if label == 2:
            raise KeyboardInterrupt
        return real(seed, label, k)

    monkeypatch.setattr(syn, "render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        syn.generate_synthetic_dataset(str(tmp_path / "faces"), 4, 2, seed=0, workers=1)
    assert os.listdir(tmp_path) == []


def test_existing_folders_are_never_overwritten(tmp_path):
    root = str(tmp_path / "faces")
    syn.generate_synthetic_dataset(root, 2, 1, seed=0, workers=1)
    with pytest.raises(FileExistsError, match="already exists"):
        syn.generate_synthetic_dataset(root, 2, 1, seed=0, workers=1)
    assert syn.ensure_synthetic_dataset(root, 2, 1, 0) == root  # same parameters: reused
    with pytest.raises(DatasetError, match="made with .*'seed': 0.*asks for .*'seed': 1"):
        syn.ensure_synthetic_dataset(root, 2, 1, 1)
    other = tmp_path / "mine"
    other.mkdir()
    with pytest.raises(DatasetError, match="not a synthetic face folder"):
        syn.ensure_synthetic_dataset(str(other), 2, 1, 0)
    with pytest.raises(ValueError, match="identities must be an integer >= 1"):
        syn.generate_synthetic_dataset(str(tmp_path / "x"), 0, 1)


def test_command_line(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert syn.main([out, "--identities", "2", "--images-per-id", "2", "--seed", "3", "--workers", "1"]) == 0
    assert "wrote 4 images of 2 identities" in capsys.readouterr().out
    assert len(open(os.path.join(out, "landmarks.txt")).read().splitlines()) == 4
    assert syn.main([out, "--identities", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
