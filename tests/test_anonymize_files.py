"""anonymize.py on photos and folders: mirroring, records, recovery, and every kind of bad input."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import anonymize
from protect.photo_io import decode_photo, encode_photo, load_photo
from protect.record import PNG_KEY, Record
from tests.anonymize_helpers import astronaut_head, save_small_checkpoint, synthetic_face
from tests.file_helpers import tree_digest
from training.checkpoint import CASIA_MEAN_LANDMARKS

pytestmark = pytest.mark.usefixtures("one_thread", "password")


def cli(*args, ckpt) -> int:
    return anonymize.main([*map(str, args), "--checkpoint", ckpt, "--quiet"])


def save(path, array, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return str(path)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    head = astronaut_head()
    save(d / "a" / "astronaut.png", head)
    save(d / "a" / "b" / "astronaut.jpg", head, quality=95)
    save(d / "face.png", synthetic_face(1)[0])
    save(d / "empty.png", np.full((120, 160, 3), 200, np.uint8))
    (d / "notes.txt").write_text("not a photo")
    buf = io.BytesIO()
    Image.fromarray(head).save(buf, "JPEG")
    (d / "cut.jpg").write_bytes(buf.getvalue()[:3000])  # truncated download
    (d / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is no image")
    return d


def test_folder_is_mirrored_with_summary(photo_folder, tmp_path, ckpt, capsys):
    before = tree_digest(photo_folder)
    out = tmp_path / "out"
    assert cli(photo_folder, "-o", out, "--password-env", "FIT_PW", ckpt=ckpt) == 1  # two bad files
    captured = capsys.readouterr()
    text, err = captured.out, captured.err
    assert tree_digest(photo_folder) == before  # the input is never written
    files = sorted(tree_digest(out))
    assert files == sorted(["a/astronaut.png", "a/b/astronaut.jpg", "a/b/astronaut.jpg.record.json", "face.png",
                            "empty.png", "empty.png.record.json"])
    assert "files: 6 (6 photos, 0 videos)" in text
    assert "faces found: 3; faces anonymized: 3" in text
    assert "files without faces (written without metadata): 1\n  empty.png" in text
    per_file = text.split("faces anonymized per file:\n")[1].split("files without")[0].splitlines()
    assert sorted(per_file) == ["  a/astronaut.png: 1", "  a/b/astronaut.jpg: 1", "  empty.png: 0", "  face.png: 1"]
    # the summary on stdout, every failure, warning and skipped file on stderr
    assert "notes.txt: not an image or video file" in err and "notes.txt" not in text
    assert "cut.jpg: truncated or corrupt image" in err and "fake.png:" in err and "cut.jpg" not in text
    assert "written as JPEG: recovery from it degrades" in err
    assert "no face found in 1 file(s)" in err and "  empty.png" in err
    assert np.array_equal(load_photo(str(photo_folder / "empty.png")).native, load_photo(str(out / "empty.png")).native)
    rec = Image.open(out / "a" / "astronaut.png").text[PNG_KEY]
    assert "tall ship" not in rec and Record.from_json(rec).faces

    back = tmp_path / "back"
    assert cli(out, "-o", back, "--recover", "--password-env", "FIT_PW", ckpt=ckpt) == 0
    text = capsys.readouterr().out
    assert "faces recovered: 3" in text and "approximate" not in text
    assert sorted(tree_digest(back)) == ["a/astronaut.png", "a/b/astronaut.jpg", "empty.png", "face.png"]
    assert tree_digest(back)["empty.png"] == before["empty.png"]


def test_a_model_trained_on_synthetic_faces_is_said_once(ckpt, tmp_path, capsys):
    photos = tmp_path / "photos"
    for name in ("one.png", "two.png"):
        save(photos / name, astronaut_head())
    synthetic = save_small_checkpoint(str(tmp_path / "synthetic.pth"), dataset="synthetic")
    assert cli(photos, "-o", tmp_path / "out", "--password-env", "FIT_PW", ckpt=synthetic) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "synthetic" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "pretrained_models/README.md" in warned[0]
    assert cli(photos / "one.png", "-o", tmp_path / "casia.png", "--password-env", "FIT_PW", ckpt=ckpt) == 0
    assert "synthetic" not in capsys.readouterr().err  # the fixture's model: dataset CASIA


def test_png_output_is_lossless_outside_faces(ckpt, tmp_path, capsys):
    src = save(tmp_path / "in.png", astronaut_head())
    dst = tmp_path / "anon.png"
    assert cli(src, "-o", dst, "--password-env", "FIT_PW", ckpt=ckpt) == 0
    photo = load_photo(str(dst))
    assert photo.record is not None and len(photo.record.faces) == 1
    from protect.frame import face_region
    from protect.protector import FaceProtector
    protector = FaceProtector(str(ckpt))
    ys, xs, w = face_region(photo.native.shape[:2], np.asarray(photo.record.faces[0]["transform"]).reshape(2, 3),
                            protector.mask)
    outside = np.ones(photo.native.shape[:2], bool)
    outside[ys, xs] = w == 0
    assert np.array_equal(photo.native[outside], astronaut_head()[outside])
    assert (photo.native != astronaut_head()).any()
    # recovery through the CLI equals the API on the same file (the API runs G in float32)
    rec_path = tmp_path / "rec.png"
    assert cli(dst, "-o", rec_path, "--recover", "--password-env", "FIT_PW", "--fp32", ckpt=ckpt) == 0
    from models.passwords import Password
    api = protector.recover(photo.native, photo.record, Password.from_passphrase("tall ship and a star", 16))
    assert np.array_equal(load_photo(str(rec_path)).native, api)
    assert PNG_KEY not in Image.open(rec_path).text  # recovered files carry no record
    # a wrong password is not an error: another face
    wrong = tmp_path / "wrong.png"
    assert cli(dst, "-o", wrong, "--recover", "--password-env", "FIT_WRONG", ckpt=ckpt) == 0
    assert (load_photo(str(wrong)).native != api).any()
    capsys.readouterr()


def test_output_rules(ckpt, tmp_path, capsys):
    src = save(tmp_path / "in" / "x.png", astronaut_head())
    existing = save(tmp_path / "exists.png", np.zeros((8, 8, 3), np.uint8))
    assert cli(src, "-o", existing, "--password-env", "FIT_PW", ckpt=ckpt) == 2
    assert "exists; choose another output or pass --overwrite" in capsys.readouterr().err
    assert cli(src, "-o", src, "--password-env", "FIT_PW", "--overwrite", ckpt=ckpt) == 2
    assert "is the input itself" in capsys.readouterr().err
    assert cli(tmp_path / "in", "-o", tmp_path / "in" / "out", "--password-env", "FIT_PW", ckpt=ckpt) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert cli(src, "-o", existing, "--password-env", "FIT_PW", "--overwrite", ckpt=ckpt) == 0
    assert load_photo(existing).record is not None
    assert cli(src, "-o", tmp_path / "y.png", "--password-env", "UNSET_VARIABLE", ckpt=ckpt) == 2
    assert "UNSET_VARIABLE is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no way to put the password itself on the command line
        anonymize.build_parser().parse_args([src, "-o", "z.png", "--checkpoint", ckpt, "--password", "x"])
    pwfile = tmp_path / "pw.txt"
    pwfile.write_text("tall ship and a star\n")
    assert cli(src, "-o", tmp_path / "f.png", "--password-file", pwfile, ckpt=ckpt) == 0
    assert np.array_equal(load_photo(str(tmp_path / "f.png")).native, load_photo(existing).native)
    capsys.readouterr()


def test_record_mismatch_and_missing_record(ckpt, tmp_path, capsys):
    src = save(tmp_path / "in.png", astronaut_head())
    dst = tmp_path / "anon.png"
    assert cli(src, "-o", dst, "--password-env", "FIT_PW", ckpt=ckpt) == 0
    photo = load_photo(str(dst))
    edited = photo.native.copy()
    edited[5, 5] ^= 8
    data, _, _ = encode_photo(edited, ".png")
    from protect.photo_io import png_with_text
    (tmp_path / "edited.png").write_bytes(png_with_text(data, PNG_KEY, photo.record.to_json()))
    assert cli(tmp_path / "edited.png", "-o", tmp_path / "r1.png", "--recover", "--password-env", "FIT_PW",
               ckpt=ckpt) == 1
    assert "does not match this image" in capsys.readouterr().err
    other = save_small_checkpoint(str(tmp_path / "other.pth"), seed=7)
    assert cli(dst, "-o", tmp_path / "r2.png", "--recover", "--password-env", "FIT_PW", ckpt=other) == 1
    assert "another generator" in capsys.readouterr().err
    # no record: faces are detected again (here none: the anonymized face is no face to dlib)
    stripped = tmp_path / "stripped.png"
    Image.fromarray(photo.native).save(stripped)
    assert cli(stripped, "-o", tmp_path / "r3.png", "--recover", "--password-env", "FIT_PW", ckpt=ckpt) == 0
    out = capsys.readouterr().out
    assert "faces found: 0" in out or "approximate" in out


def test_pixel_formats_and_exif(ckpt, tmp_path, capsys):
    head = astronaut_head()
    gray16 = (head @ [0.299, 0.587, 0.114] * 257).astype(np.uint16)
    import cv2
    rgb16 = head.astype(np.uint16) * 257 + 1
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[:, :, ::-1])
    save(tmp_path / "gray16.png", gray16)
    save(tmp_path / "gray.png", head[:, :, 1])
    save(tmp_path / "rgba.png", np.dstack([head, np.full(head.shape[:2], 77, np.uint8)]))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(head, 1))).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    for name in ("rgb16.png", "gray16.png", "gray.png", "rgba.png", "rotated.jpg"):
        src = tmp_path / name
        dst = tmp_path / ("anon_" + name)
        assert cli(src, "-o", dst, "--password-env", "FIT_PW", ckpt=ckpt) == 0, name
        before, after = load_photo(str(src)), load_photo(str(dst))
        assert after.native.dtype == before.native.dtype and after.native.shape == before.native.shape, name
        changed = after.native != before.native
        assert changed.any(), name
        if name.endswith(".png"):  # lossless: the top-left corner is no face and stays bit-identical
            assert not changed[:40, :40].any(), name
    err = capsys.readouterr().err
    assert "16-bit colour image" in err and "EXIF orientation 6 applied" in err
    assert load_photo(str(tmp_path / "rotated.jpg")).native.shape == head.shape  # upright
    assert np.array_equal(load_photo(str(tmp_path / "anon_rgba.png")).native[:, :, 3], np.full(head.shape[:2], 77))


def test_refusals_and_small_faces(ckpt, tmp_path, capsys):
    big = tmp_path / "big"
    save(big / "large.png", np.zeros((2000, 2000, 3), np.uint8))
    frames = [Image.fromarray(np.full((32, 32, 3), i * 40, np.uint8)) for i in range(3)]
    frames[0].save(big / "anim.gif", save_all=True, append_images=frames[1:])
    small = np.ascontiguousarray(astronaut_head()[::2, ::2])  # face about 45 px
    save(big / "small.png", small)
    assert cli(big, "-o", tmp_path / "o", "--password-env", "FIT_PW", "--max-megapixels", "1", "--upsample", "1",
               "--min-face", "60", ckpt=ckpt) == 1
    err = capsys.readouterr().err
    assert "large.png: 2000x2000 is 4 megapixels, over the limit of 1" in err
    assert "anim.gif: has 3 frames (animated or multi-page)" in err
    assert "1 face(s) smaller than 60 px left as they are" in err
    assert np.array_equal(load_photo(str(big / "small.png")).native,
                          load_photo(str(tmp_path / "o" / "small.png")).native)


def test_encode_decode_round_trip():
    img = astronaut_head()
    for ext in (".png", ".tif", ".webp", ".bmp"):
        data, decoded, _ = encode_photo(img, ext)
        assert np.array_equal(decoded, img) and np.array_equal(decode_photo(data).native, img), ext
    data, decoded, notes = encode_photo(np.dstack([img, img[:, :, :1]]), ".jpg")
    assert decoded.shape == img.shape and any("transparency dropped" in n for n in notes)
    rec = Record("image", {"fingerprint": "f", "img_size": 64}, {"mean_landmarks": CASIA_MEAN_LANDMARKS.tolist()},
                 {"name": "given"}, "shared", "fp32")
    data, decoded, _ = encode_photo(img, ".png", record=rec)
    again = decode_photo(data)
    assert again.record is not None and again.record.output["sha256"] == rec.output["sha256"]
    assert json.loads(again.record.to_json())["output"]["width"] == img.shape[1]
