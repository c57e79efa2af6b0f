"""The face protector on single photos: framing, blending, recovery, records, passwords, checkpoints."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from skimage import data

from models.passwords import Password, int_from_bits
from protect.frame import crop_points, cut_crops, face_region, paste_faces
from protect.protector import ApproximateRecoveryWarning, FacePasswords, FaceProtector
from protect.record import Record, RecordError
from tests.anonymize_helpers import (
    astronaut_head,
    save_original_checkpoint,
    save_small_checkpoint,
    synthetic_face,
    two_face_scene,
)
from training.checkpoint import CASIA_MEAN_LANDMARKS, InferenceModel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def orig_ckpt(tmp_path_factory):
    return save_original_checkpoint(str(tmp_path_factory.mktemp("ck") / "orig.pth"))


@pytest.fixture(scope="module")
def model(ckpt):
    return InferenceModel(ckpt)


@pytest.fixture(scope="module")
def protector(model):
    return FaceProtector(model)


@pytest.fixture(scope="module")
def pw():
    return Password.from_passphrase("correct horse battery", 16)


@pytest.fixture(scope="module")
def astronaut_done(protector, pw):
    img = data.astronaut()
    out, rec = protector.anonymize(img, pw)
    return img, out, rec


def region_weights(shape, rec, mask):
    """Blend weight of every pixel (max over faces), from the record's transforms."""
    w = np.zeros(shape[:2], np.float32)
    for f in rec.faces:
        ys, xs, wt = face_region(shape[:2], np.asarray(f["transform"]).reshape(2, 3), mask)
        w[ys, xs] = np.maximum(w[ys, xs], wt)
    return w


@pytest.mark.parametrize("fmt", ["ours", "original"])
def test_generator_depends_on_password(fmt, model, orig_ckpt):
    """Guards the eval-mode normalisation (per-image statistics would erase the password): our
    checkpoints use G's inference statistics, the authors' the complement-password twins."""
    if fmt == "original":
        model = InferenceModel(orig_ckpt)
    size = model.img_size
    x = torch.rand(2, 3, size, size) * 2 - 1
    bits = torch.randint(0, 2, (2, 16))
    assert (model(x, bits) - model(x, 1 - bits)).abs().mean() > 0.02
    # still batch independent, up to float32 rounding (kernels differ with the batch size; uint8
    # output steps are 7.8e-3)
    assert (model(x[1:], bits[1:]) - model(x, bits)[1:]).abs().max() < 1e-4


def test_bf16_and_float32_calls_on_one_model(model):
    """bf16 calls on the CPU run a copy of G with bf16 weights, made once; float32 calls before and
    after are untouched by it, and bf16 results repeat bit for bit."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, model.img_size, model.img_size) * 2 - 1
    bits = torch.randint(0, 2, (4, model.passwd_length))
    a = model(x, bits, amp=False)
    b = model(x, bits, amp=True)
    assert torch.equal(model(x, bits, amp=False), a)
    assert torch.equal(model(x, bits, amp=True), b)
    assert 0 < (a - b).abs().mean().item() < 0.05
    assert all(p.dtype == torch.float32 for p in model.G.parameters())


def test_astronaut_found_and_only_face_region_changes(protector, astronaut_done):
    img, out, rec = astronaut_done
    assert len(rec.faces) == 1 and rec.detector["name"] == "dlib-hog"
    w = region_weights(img.shape, rec, protector.mask)
    changed = (out != img).any(2)
    assert changed[w >= 0.999].mean() > 0.9  # the face crop is replaced
    assert not changed[w == 0].any()  # everything else is bit-identical
    m = np.asarray(rec.faces[0]["transform"]).reshape(2, 3)  # the face centre lies inside the region
    centre = np.linalg.solve(m[:, :2], crop_points(protector.mean_landmarks, protector.size).mean(0) - m[:, 2])
    assert w[int(centre[1]), int(centre[0])] == 1.0


def test_face_blend_changes_less_than_crop_blend(model, pw):
    img = data.astronaut()
    face = FaceProtector(model, blend="face")
    out, rec = face.anonymize(img, pw)
    assert rec.framing["mask"] == "ellipse-v1"
    w = region_weights(img.shape, rec, face.mask)
    changed = (out != img).any(2)
    assert not changed[w == 0].any() and changed[w >= 0.999].mean() > 0.9
    assert 0 < (w > 0).sum() < 0.7 * (region_weights(img.shape, rec, FaceProtector(model).mask) > 0).sum()
    back = face.recover(out, rec, pw)  # the record's mask is used again
    assert not (back != out).any(2)[w == 0].any()


def test_recovery_equals_two_steps_on_the_crop(protector, pw):
    """With a crop aligned to the pixel grid, recovery from the photo = G(G(crop, p), ~p) pasted,
    up to 8-bit rounding of the anonymized photo; a wrong password gives another face."""
    face, _ = synthetic_face(5)
    s = protector.size
    canvas = np.full((200, 180, 3), 60, np.uint8)
    canvas[30:30 + s, 40:40 + s] = face[1::3, 1::3][:s, :s]
    points = crop_points(protector.mean_landmarks, s) + np.array([40.0, 30.0])  # transform = integer shift
    out, rec = protector.anonymize(canvas, pw, landmarks=[points])
    assert rec.detector == {"name": "given"}
    m = np.asarray(rec.faces[0]["transform"]).reshape(2, 3)
    assert np.allclose(m, [[1, 0, -40], [0, 1, -30]], atol=1e-9)
    anonymized = protector.generate(cut_crops(canvas, [m], s), [pw], inverse=False)
    direct = protector.generate(torch.from_numpy(anonymized).permute(0, 3, 1, 2) / 127.5 - 1, [pw], inverse=True)
    expected = paste_faces(canvas, direct, [m], protector.mask)
    inside = np.zeros(canvas.shape[:2], bool)
    inside[30:30 + s, 40:40 + s] = True
    back = protector.recover(out, rec, pw)
    err = np.abs(back.astype(int) - expected.astype(int))[inside]
    assert err.mean() < 1.0 and err.max() <= 6
    wrong = protector.recover(out, rec, Password.from_passphrase("not it", 16))
    assert np.abs(wrong.astype(int) - expected.astype(int))[inside].mean() > 8
    assert np.abs(out.astype(int) - canvas.astype(int))[inside].mean() > 8


def test_recovery_on_astronaut_is_closer_than_a_wrong_password(protector, pw, astronaut_done):
    img, out, rec = astronaut_done
    m = np.asarray(rec.faces[0]["transform"]).reshape(2, 3)
    anonymized = protector.generate(cut_crops(img, [m], protector.size), [pw], inverse=False)
    direct = protector.generate(torch.from_numpy(anonymized).permute(0, 3, 1, 2) / 127.5 - 1, [pw], inverse=True)
    expected = paste_faces(img, direct, [m], protector.mask)
    core = region_weights(img.shape, rec, protector.mask) >= 0.999
    right = np.abs(protector.recover(out, rec, pw).astype(int) - expected.astype(int))[core].mean()
    wrong = np.abs(protector.recover(out, rec, Password.from_passphrase("guess", 16)).astype(int)
                   - expected.astype(int))[core].mean()
    assert right < 0.6 * wrong


def test_record_round_trip_and_holds_no_password(protector, astronaut_done, pw):
    _, _, rec = astronaut_done
    text = rec.to_json()
    again = Record.from_json(text)
    assert again.faces == rec.faces and again.checkpoint == rec.checkpoint
    assert rec.checkpoint["fingerprint"] == protector.model.fingerprint and rec.checkpoint["img_size"] == protector.size
    bits = pw.bits()[0]
    code = int_from_bits(bits)
    forbidden = ["correct horse", str(code), f"{code:x}", f"{code:04X}", "".join(map(str, bits.tolist()))]
    assert not any(s in text for s in forbidden)
    assert set(json.loads(text)) == {"format", "version", "kdf", "kind", "output", "checkpoint", "framing",
                                     "detector", "passwords", "precision", "faces"}
    with pytest.raises(TypeError):
        pickle.dumps(FacePasswords.per_face("secret"))
    assert "secret" not in repr(FacePasswords.per_face("secret"))


def test_record_mismatch_is_an_error(protector, astronaut_done, pw, tmp_path):
    _, out, rec = astronaut_done
    edited = out.copy()
    edited[0, 0] ^= 1
    with pytest.raises(RecordError, match="does not match this image"):
        protector.recover(edited, rec, pw)
    other = FaceProtector(InferenceModel(save_small_checkpoint(str(tmp_path / "other.pth"), seed=1)))
    with pytest.raises(RecordError, match="another generator"):
        other.recover(out, rec, pw)
    with pytest.raises(RecordError, match="version"):
        Record.from_json(rec.to_json().replace('"version":2', '"version":99'))


def test_recovery_without_record_is_approximate(protector, pw, astronaut_done):
    img, out, rec = astronaut_done
    points = [f.points for f in protector.find_faces(img)[0]]  # a user's own detector, run on the output
    with pytest.warns(ApproximateRecoveryWarning):
        res = protector.process(out, pw, recover=True, landmarks=points)
    assert res.approximate and res.faces == 1 and res.record is None
    assert np.array_equal(res.image, protector.recover(out, rec, pw))  # same points: same crop here
    blank = np.full((64, 64, 3), 128, np.uint8)
    with pytest.warns(ApproximateRecoveryWarning):
        res = protector.process(blank, pw, recover=True)  # the detector finds nothing: nothing changes
    assert res.faces == 0 and np.array_equal(res.image, blank)


def test_per_face_passwords(protector):
    scene = two_face_scene()
    per = FacePasswords.per_face("family photo", 16)
    assert per.for_key(0) != per.for_key(1)
    out, rec = protector.anonymize(scene, per)
    assert rec.passwords == "per-face" and [f["key"] for f in rec.faces] == [0, 1]
    xs = [np.asarray(f["transform"]).reshape(2, 3) for f in rec.faces]
    assert np.linalg.solve(xs[0][:, :2], -xs[0][:, 2])[0] < np.linalg.solve(xs[1][:, :2], -xs[1][:, 2])[0]
    shared, _ = protector.anonymize(scene, per.for_key(0))
    w1 = region_weights(scene.shape, Record(**{**rec.__dict__, "faces": rec.faces[1:]}), protector.mask) >= 0.999
    assert (shared != out)[w1].any()  # face 1 got another code than face 0
    back = protector.recover(out, rec, FacePasswords.per_face("family photo", 16))
    wrong = protector.recover(out, rec, FacePasswords.per_face("other", 16))
    assert np.abs(back.astype(int) - wrong.astype(int)).mean() > 1
    with pytest.raises(ValueError, match="per-face"):
        protector.recover(out, rec, per.for_key(0))


def test_synthetic_faces_found_and_anonymized(protector, pw):
    for label in (0, 1, 2):
        face, pts = synthetic_face(label)
        res = protector.process(face, pw)
        assert res.faces == 1
        m = np.asarray(res.record.faces[0]["transform"]).reshape(2, 3)
        mapped = pts @ m[:, :2].T + m[:, 2]  # the true landmarks land near the generator's mean points
        assert np.abs(mapped - crop_points(protector.mean_landmarks, protector.size)).max() < 0.12 * protector.size


def test_gray_rgba_and_16_bit_keep_their_form(protector, pw):
    rgb = astronaut_head()
    gray = (rgb @ [0.299, 0.587, 0.114]).astype(np.uint8)
    rgba = np.dstack([rgb, (np.arange(rgb.shape[0] * rgb.shape[1]) % 251).reshape(rgb.shape[:2]).astype(np.uint8)])
    deep = rgb.astype(np.uint16) * 257 + 3
    for img in (gray, rgba, deep):
        out, rec = protector.anonymize(img, pw)
        assert out.shape == img.shape and out.dtype == img.dtype and len(rec.faces) == 1
        w = region_weights(img.shape, rec, protector.mask)
        diff = (out != img) if img.ndim == 2 else (out != img).any(2)
        assert not diff[w == 0].any() and diff[w >= 0.999].mean() > 0.8
        back = protector.recover(out, rec, pw)
        assert back.shape == img.shape
    out, _ = protector.anonymize(rgba, pw)
    assert np.array_equal(out[:, :, 3], rgba[:, :, 3])  # alpha untouched


@pytest.mark.parametrize("form", ["rgb8", "rgba16", "gray8"])
def test_paste_blends_by_the_formula_and_writes_only_the_face(form):
    """Each written pixel is round(orig + w * (warped crop - orig)), clipped, in face order (the second
    face overlaps the first); pixels of zero weight and alpha are never touched; inplace writes the
    same result into the given array."""
    import cv2

    from protect.frame import _shift, blend_mask, face_transform

    rng = np.random.default_rng(3)
    s = 64
    mask = blend_mask(s, CASIA_MEAN_LANDMARKS.numpy(), "face")
    target = crop_points(CASIA_MEAN_LANDMARKS.numpy(), s)
    ms = [face_transform(target * k + d, target) for k, d in ((1.3, (20.0, 15.0)), (1.1, (45.0, 30.0)))]
    crops = rng.uniform(-8, 263, (2, s, s, 3)).astype(np.float32)  # G's output may overshoot [0, 255]
    shape, dtype = {"rgb8": ((130, 150, 3), np.uint8), "rgba16": ((130, 150, 4), np.uint16),
                    "gray8": ((130, 150), np.uint8)}[form]
    native = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    expected = native.copy()
    view = expected if expected.ndim == 3 else expected[:, :, None]
    colour, scale, top = (1 if form == "gray8" else 3), (257.0 if dtype == np.uint16 else 1.0), np.iinfo(dtype).max
    for crop, m in zip(crops, ms):
        ys, xs, w = face_region(shape[:2], m, mask)
        patch = cv2.warpAffine(crop, _shift(m, xs.start, ys.start), (xs.stop - xs.start, ys.stop - ys.start),
                               flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        patch = np.clip(patch, 0, 255)
        if colour == 1:
            patch = (patch @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
        orig = view[ys, xs, :colour].astype(np.float32)
        blended = np.clip(np.rint(orig + w[:, :, None] * (patch * scale - orig)), 0, top).astype(dtype)
        view[ys, xs, :colour] = np.where(w[:, :, None] > 0, blended, view[ys, xs, :colour])
    out = paste_faces(native, crops, ms, mask)
    assert out.dtype == dtype and out.shape == shape
    assert np.array_equal(out, expected)
    assert (out != native).mean() > 0.05  # the faces were written
    if form == "rgba16":
        assert np.array_equal(out[:, :, 3], native[:, :, 3])
    same = native.copy()
    assert paste_faces(same, crops, ms, mask, inplace=True) is same and np.array_equal(same, expected)


def test_given_landmarks_and_bad_input(protector, pw):
    face, pts = synthetic_face(4)
    out, rec = protector.anonymize(face, pw, landmarks=[pts])
    assert rec.detector["name"] == "given" and len(rec.faces) == 1
    with pytest.raises(ValueError):
        protector.anonymize(face, pw, landmarks=[np.zeros((5, 2))])
    with pytest.raises(TypeError):
        protector.anonymize(face.astype(np.float32), pw)
    with pytest.raises(ValueError, match="bits"):
        protector.anonymize(face, Password.from_passphrase("x", 32))
    empty, rec0 = protector.anonymize(np.full((100, 100, 3), 200, np.uint8), pw)
    assert rec0.faces == [] and np.array_equal(empty, np.full((100, 100, 3), 200, np.uint8))


def test_original_checkpoint_uses_casia_framing(orig_ckpt, pw):
    model = InferenceModel(orig_ckpt)
    assert model.original_format and model.img_size == 128 and model.passwd_length == 16
    protector = FaceProtector(model)
    assert protector.framing_source == "casia-default"
    assert np.allclose(protector.mean_landmarks, CASIA_MEAN_LANDMARKS.numpy())
    face, pts = synthetic_face(2)
    out, rec = protector.anonymize(face, pw, landmarks=[pts])
    assert rec.framing["source"] == "casia-default" and rec.checkpoint["img_size"] == 128
    assert (out != face).any()
    user = FaceProtector(model, mean_landmarks=np.asarray(CASIA_MEAN_LANDMARKS) * 1.1)
    assert user.framing_source == "user"


def test_results_do_not_depend_on_the_batch(protector, pw):
    scene = two_face_scene()
    faces, _ = protector.find_faces(scene)
    ms = [protector.transform(f.points) for f in faces]
    crops = cut_crops(scene, ms, protector.size)
    together = protector.generate(crops, [pw, pw], inverse=False)
    alone = protector.generate(crops[1:], [pw], inverse=False)
    assert np.abs(together[1] - alone[0]).max() < 1e-3
