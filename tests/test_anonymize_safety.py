"""anonymize.py keeps what the user made and shows what it did: input safety, metadata, previews,
limits, exit codes and streams (issue 12, parts 2 to 6), and the two-minute path on real photos."""
from __future__ import annotations

import errno
import io
import os
import signal
import struct
import time

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import anonymize
from protect.photo_io import load_photo
from protect.record import PNG_KEY, Record
from tests.anonymize_helpers import astronaut_head, make_face_video
from tests.file_helpers import tree_digest

pytestmark = pytest.mark.usefixtures("one_thread", "password")

SECRET = "SecretCam-4711"  # written into every metadata block of the test files
SECRETS = (SECRET.encode(), b"48.8577", b"Exif\x00\x00", b"EXIF", b"eXIf", b"http://ns.adobe.com/xap/1.0/",
           b"Photoshop 3.0", b"2021-05-01", b"2021:05:01")


def cli(*args, ckpt) -> int:
    return anonymize.main([*map(str, args), "--checkpoint", str(ckpt), "--quiet", "--password-env", "FIT_PW"])


def save(path, array, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return str(path)


# ---- part 3: nothing a user made is lost or changed ---------------------------------------------

def test_mirrored_output_never_lands_on_an_input(ckpt, tmp_path, monkeypatch, capsys):
    # the case: mkdir -p nest/a/a; a/x.png and a/a/x.png; anonymize a -o . --overwrite
    nest = tmp_path / "nest"
    save(nest / "a" / "x.png", astronaut_head())
    save(nest / "a" / "a" / "x.png", np.full((60, 80, 3), 40, np.uint8))
    before = tree_digest(nest)
    monkeypatch.chdir(nest)
    assert cli("a", "-o", ".", "--overwrite", ckpt=ckpt) == 2
    err = capsys.readouterr().err
    assert "./a/x.png: the output of a/a/x.png would replace this input file" in err
    assert tree_digest(nest) == before  # nothing written, nothing replaced


def test_previews_are_checked_too(ckpt, tmp_path, capsys):
    src = save(tmp_path / "in" / "x.png", astronaut_head())
    before = tree_digest(tmp_path / "in")
    # a single photo whose preview (same name, in the preview folder) would replace the input
    assert cli(src, "-o", tmp_path / "x.png", "--preview", tmp_path / "in", ckpt=ckpt) == 2
    assert f"the preview of {src} would replace this input file" in capsys.readouterr().err
    # previews inside the input folder
    assert cli(tmp_path / "in", "-o", tmp_path / "out", "--preview", tmp_path / "in" / "p", ckpt=ckpt) == 2
    assert f"the preview of {src} would be written inside the input folder" in capsys.readouterr().err
    # a preview folder equal to the output folder would replace the outputs
    assert cli(tmp_path / "in", "-o", tmp_path / "out", "--preview", tmp_path / "out", ckpt=ckpt) == 2
    assert "would replace the output of x.png" in capsys.readouterr().err
    assert tree_digest(tmp_path / "in") == before and sorted(os.listdir(tmp_path)) == ["in"]


def test_outputs_are_checked_before_any_work(ckpt, tmp_path, monkeypatch, capsys):
    src = save(tmp_path / "x.png", astronaut_head())
    (tmp_path / "a_file").write_text("x")
    from protect import protector
    monkeypatch.setattr(protector.FaceProtector, "process", lambda *a, **k: pytest.fail("work started"))
    assert cli(src, "-o", tmp_path / "x.gif", ckpt=ckpt) == 2
    err = capsys.readouterr().err
    assert "x.gif: photos cannot be written as .gif" in err and ".png" in err
    assert cli(src, "-o", tmp_path / "a_file" / "y.png", ckpt=ckpt) == 2
    err = capsys.readouterr().err
    assert "y.png: cannot write the output" in err and "a_file is a file" in err
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not str(path).endswith("readonly"))
    os.mkdir(tmp_path / "readonly")
    assert cli(src, "-o", tmp_path / "readonly" / "y.png", ckpt=ckpt) == 2
    assert "readonly is not writable" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["a_file", "readonly", "x.png"]


def test_a_failed_write_is_not_counted_and_names_the_output(ckpt, tmp_path, monkeypatch, capsys):
    src = save(tmp_path / "x.png", astronaut_head())
    from protect import run as protect_run

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(protect_run, "atomic_write_bytes", full_disk)
    assert cli(src, "-o", tmp_path / "y.png", ckpt=ckpt) == 1
    out, err = capsys.readouterr()
    assert "faces anonymized: 0" in out and "per file" not in out
    assert f"cannot write {tmp_path / 'y.png'} (No space left on device)" in err
    assert not (tmp_path / "y.png").exists()


# ---- part 4: metadata ------------------------------------------------------------------------------

def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = SECRET  # Make
    exif[0x0110] = "Model " + SECRET
    exif[0x0132] = "2021:05:01 10:00:00"  # DateTime
    exif[0x927C] = b"maker notes " + SECRET.encode()  # MakerNote (in the EXIF IFD)
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 27.72), 3: "E", 4: (2.0, 17.0, 42.0)})  # 48.8577 N, 2.2950 E
    exif[0x8825] = gps
    return exif.tobytes()


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="' + SECRET.encode() +
       b'" xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.462N"/></rdf:RDF></x:xmpmeta>')


def _with_iptc(jpeg: bytes) -> bytes:
    """Insert a Photoshop APP13 segment with an IPTC record (by-line = SECRET) after the SOI marker."""
    iptc = b"\x1c\x02\x50" + struct.pack(">H", len(SECRET)) + SECRET.encode()
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iptc)) + iptc
    body = b"Photoshop 3.0\x00" + resource
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def metadata_photos(folder) -> list[str]:
    """The same photos with a face and without one, as JPEG (EXIF + GPS + maker note + XMP + IPTC),
    PNG (eXIf chunk + XMP) and WebP (EXIF + XMP); the JPEG is stored turned, with orientation 6."""
    os.makedirs(folder, exist_ok=True)
    names = []
    for tag, img in (("face", astronaut_head()), ("none", np.full((200, 240, 3), 150, np.uint8))):
        exif = Image.Exif()
        exif.load(_exif())
        exif[0x0112] = 6
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(np.rot90(img, 1))).save(buf, "JPEG", exif=exif.tobytes(), xmp=XMP,
                                                                    quality=95)
        (folder / f"{tag}.jpg").write_bytes(_with_iptc(buf.getvalue()))
        from PIL import PngImagePlugin
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        Image.fromarray(img).save(folder / f"{tag}.png", exif=_exif(), pnginfo=info)
        Image.fromarray(img).save(folder / f"{tag}.webp", exif=_exif(), xmp=XMP, lossless=True)
        names += [f"{tag}.jpg", f"{tag}.png", f"{tag}.webp"]
    # upright, without a face: a comment, and a second picture after the end of the image (as MPF adds)
    buf = io.BytesIO()
    Image.fromarray(data.coffee()[::2, ::2]).save(buf, "JPEG", exif=_exif(), xmp=XMP, comment=SECRET, quality=90)
    (folder / "plain.jpg").write_bytes(_with_iptc(buf.getvalue()) + buf.getvalue())
    names.append("plain.jpg")
    for name in names:  # the inputs do carry what the outputs must not
        raw = (folder / name).read_bytes()
        assert SECRET.encode() in raw and b"exif" in raw.lower() and b"ns.adobe.com/xap" in raw, name
    return names


def assert_no_metadata(path):
    raw = open(path, "rb").read()
    for s in SECRETS:
        assert s not in raw, (path, s)
    im = Image.open(path)
    assert not im.getexif() and "exif" not in im.info and "xmp" not in im.info, path
    assert not [k for k in im.info if "xmp" in str(k).lower() or "iptc" in str(k).lower()], path


def test_no_metadata_in_any_written_photo(ckpt, tmp_path, capsys):
    names = metadata_photos(tmp_path / "in")
    assert cli(tmp_path / "in", "-o", tmp_path / "out", ckpt=ckpt) == 0
    out = capsys.readouterr().out
    for name in names:
        assert_no_metadata(tmp_path / "out" / name)
        assert f"  {name}: {1 if name.startswith('face') else 0}\n" in out, name
    # orientation was applied to the pixels before detection: the turned face was found, and is upright
    assert load_photo(str(tmp_path / "out" / "face.jpg")).native.shape == astronaut_head().shape
    assert Image.open(tmp_path / "out" / "face.jpg").size == (400, 300)
    # without a face the pixels are kept (lossless formats, and upright JPEGs: only their metadata
    # segments are dropped, the coded data is not decoded and encoded again), only the metadata goes
    for name in ("none.png", "none.webp", "plain.jpg"):
        assert np.array_equal(load_photo(str(tmp_path / "in" / name)).native,
                              load_photo(str(tmp_path / "out" / name)).native), name
    assert cli(tmp_path / "out", "-o", tmp_path / "back", "--recover", ckpt=ckpt) == 0
    for name in names:
        assert_no_metadata(tmp_path / "back" / name)
    capsys.readouterr()


def _tag_video(src: str, dst: str) -> str:
    """``src`` remuxed with a GPS location and creation times in the container and stream tags."""
    with av.open(src) as fin, av.open(dst, "w") as fout:
        fout.metadata.update({"location": "+48.8577+002.2950/", "creation_time": "2021-05-01T10:00:00.000000Z",
                              "title": SECRET})
        streams = {}
        for s in fin.streams:
            streams[s.index] = fout.add_stream_from_template(s)
            streams[s.index].metadata["creation_time"] = "2021-05-01T10:00:00.000000Z"
        for p in fin.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                fout.mux(p)
    return dst


def _video_tags(path) -> list[str]:
    with av.open(str(path)) as c:
        tags = [f"{k}={v}" for k, v in c.metadata.items()]
        return tags + [f"{k}={v}" for s in c.streams for k, v in s.metadata.items()]


def test_videos_lose_location_and_creation_time(ckpt, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    make_face_video(str(tmp_path / "face.mp4"), n=6)
    _tag_video(str(tmp_path / "face.mp4"), str(d / "face.mp4"))
    quiet = [np.full((120, 160, 3), 30 * i, np.uint8) for i in range(6)]
    from protect.video_io import write_video_with_tone
    write_video_with_tone(str(tmp_path / "none.mp4"), quiet, 12)
    _tag_video(str(tmp_path / "none.mp4"), str(d / "none.mp4"))
    for name in ("face.mp4", "none.mp4"):
        assert any(t.startswith("location") for t in _video_tags(d / name)), name
    assert cli(d, "-o", tmp_path / "out", "--fp32", "--preview", tmp_path / "prev", ckpt=ckpt) == 0
    out = capsys.readouterr().out
    assert "  face.mp4: 1 (" in out and "  none.mp4: 0" in out
    from protect.video_io import VideoReader
    with VideoReader(str(tmp_path / "out" / "face.mp4")) as a, VideoReader(str(tmp_path / "prev" / "face.mp4")) as b:
        for fa, fb in zip(a, b):  # every frame of the preview has the box (magenta: red and blue, no green)
            box = (fb.image[:, :, 0] > 200) & (fb.image[:, :, 2] > 200) & (fb.image[:, :, 1] < 80)
            assert box.sum() > 100 and not ((fa.image[:, :, 0] > 200) & (fa.image[:, :, 2] > 200)
                                            & (fa.image[:, :, 1] < 80)).any()
    assert sorted(os.listdir(tmp_path / "prev")) == ["face.mp4", "none.mp4"]
    for name in ("face.mp4", "none.mp4"):
        tags = _video_tags(tmp_path / "out" / name)
        assert not [t for t in tags if t.startswith(("location", "creation_time", "title"))], (name, tags)
        raw = (tmp_path / "out" / name).read_bytes()
        assert SECRET.encode() not in raw and b"48.8577" not in raw, name
    with av.open(str(d / "none.mp4")) as a, av.open(str(tmp_path / "out" / "none.mp4")) as b:  # packets kept
        assert [bytes(p) for p in a.demux(video=0) if p.size] == [bytes(p) for p in b.demux(video=0) if p.size]


# ---- part 2: what was covered ------------------------------------------------------------------------

def test_preview_boxes_every_transformed_face(ckpt, tmp_path, capsys):
    d = tmp_path / "in"
    save(d / "face.png", astronaut_head())
    save(d / "sub" / "empty.png", np.full((100, 120, 3), 200, np.uint8))
    assert cli(d, "-o", tmp_path / "out", "--preview", tmp_path / "prev", ckpt=ckpt) == 0
    out, err = capsys.readouterr()
    assert "faces anonymized per file:\n  face.png: 1\n  sub/empty.png: 0\n" in out
    assert "warning: no face found in 1 file(s)" in err and "  sub/empty.png" in err
    assert sorted(tree_digest(tmp_path / "prev")) == ["face.png", "sub/empty.png"]
    photo = load_photo(str(tmp_path / "out" / "face.png"))
    prev = load_photo(str(tmp_path / "prev" / "face.png")).native
    assert PNG_KEY not in Image.open(tmp_path / "prev" / "face.png").text  # a preview is no output to recover
    # the box is the crop's outline mapped back to the photo: every changed pixel is box-coloured and
    # lies on that outline, and the outline is drawn all round
    import cv2
    m = np.asarray(photo.record.faces[0]["transform"]).reshape(2, 3)
    size = 64  # the small checkpoint's crop
    square = np.array([[0, 0, 1], [size - 1, 0, 1], [size - 1, size - 1, 1], [0, size - 1, 1]], np.float64)
    outline = (square @ cv2.invertAffineTransform(m).T).astype(np.float32)
    ys, xs = np.nonzero((prev != photo.native).any(2))
    assert len(ys) > 2 * cv2.arcLength(outline, True) * 0.5  # a line at least 2 px thick, on most of it
    assert (prev[ys, xs] == (255, 0, 255)).all()
    dist = [abs(cv2.pointPolygonTest(outline, (float(x), float(y)), True)) for x, y in zip(xs, ys)]
    assert max(dist) <= 3.0
    assert np.array_equal(load_photo(str(tmp_path / "prev" / "sub" / "empty.png")).native,
                          load_photo(str(tmp_path / "out" / "sub" / "empty.png")).native)  # no face, no box


# ---- part 5: limits --------------------------------------------------------------------------------

def test_a_record_with_more_faces_than_fit_is_refused_quickly(ckpt, tmp_path, capsys):
    src = save(tmp_path / "x.png", astronaut_head())
    assert cli(src, "-o", tmp_path / "anon.png", ckpt=ckpt) == 0
    photo = load_photo(str(tmp_path / "anon.png"))
    rec = Record.from_json(photo.record.to_json())
    # a crafted record: 5000 faces on 400x300 px (at most 108 of 32 px fit)
    rec.faces = [dict(f, key=k) for k, f in enumerate(rec.faces * 5000)]
    (tmp_path / "big.json").write_text(rec.to_json())
    t = time.perf_counter()
    assert cli(tmp_path / "anon.png", "-o", tmp_path / "back.png", "--recover", "--record", tmp_path / "big.json",
               ckpt=ckpt) == 1
    assert time.perf_counter() - t < 10
    err = capsys.readouterr().err
    assert "lists 5000 faces, but at most 108 faces of 32 px fit a 400x300 image" in err


def test_a_video_record_with_too_many_faces_per_frame_is_refused(ckpt, tmp_path):
    from models.passwords import Password
    from protect.protector import FaceProtector
    from protect.record import RecordError
    from protect.video import VideoOptions, protect_video
    from protect.video_io import write_video_with_tone
    video = write_video_with_tone(str(tmp_path / "v.mp4"), [np.zeros((64, 96, 3), np.uint8)] * 4, 12, acodec=None)
    protector = FaceProtector(ckpt)
    rec = protector.record("video", "shared", protector.detector_info())
    track = {"key": 0, "first_frame": 0, "transforms": [[1.0, 0, 0, 0, 1.0, 0]] * 4, "detected": [0]}
    rec.tracks = [dict(track, key=k) for k in range(7)]  # 7 faces at once; 3 x 2 of 32 px fit 96 x 64
    with pytest.raises(RecordError, match="lists 7 faces, but at most 6"):
        protect_video(protector, video, str(tmp_path / "o.mp4"), Password.from_passphrase("x", 16), recover=True,
                      record=rec, options=VideoOptions(progress=False))
    assert not (tmp_path / "o.mp4").exists()


def _alarm(seconds):
    def fail(signum, frame):
        raise TimeoutError("the run blocked")
    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


def test_special_and_hidden_files(ckpt, tmp_path, capsys):
    d = tmp_path / "in"
    save(d / "face.png", astronaut_head())
    save(d / ".hidden.png", astronaut_head())
    save(d / ".cache" / "thumb.png", astronaut_head())
    os.mkfifo(d / "pipe.png")  # opening it for reading would block forever
    _alarm(120)
    try:
        assert cli(d, "-o", tmp_path / "out", ckpt=ckpt) == 0
        out, err = capsys.readouterr()
        assert cli(d / "pipe.png", "-o", tmp_path / "p.png", ckpt=ckpt) == 2
        err1 = capsys.readouterr().err
    finally:
        signal.alarm(0)
    assert "pipe.png: a FIFO (named pipe): skipped, never opened" in err
    assert ".hidden.png: hidden file: not processed, not copied to the output" in err
    assert ".cache/: hidden folder: not processed, not copied to the output" in err
    assert "skipped: 3" in out and "files: 1 (1 photos" in out
    assert sorted(tree_digest(tmp_path / "out")) == ["face.png"]
    assert "pipe.png: a FIFO" in err1


def test_bad_device_and_bad_checkpoint_are_one_line(ckpt, tmp_path, capsys):
    src = save(tmp_path / "x.png", astronaut_head())
    assert cli(src, "-o", tmp_path / "y.png", "--device", "foo", ckpt=ckpt) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown device 'foo'" in err
    if not torch.cuda.is_available():
        assert cli(src, "-o", tmp_path / "y.png", "--device", "cuda", ckpt=ckpt) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CUDA is not available" in err
    (tmp_path / "random.pth").write_bytes(os.urandom(4096))
    torch.save({"G": torch.nn.Linear(2, 2)}, str(tmp_path / "module.pth"))
    for bad, why in (("random.pth", "not a checkpoint"), ("x.png", "not a checkpoint"),
                     ("module.pth", "holds a Python object (torch.nn.modules.linear.Linear)")):
        assert cli(src, "-o", tmp_path / "y.png", ckpt=tmp_path / bad) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and bad in err, err
        assert "weights_only" not in err and "Re-running" not in err
    assert not (tmp_path / "y.png").exists()


def test_truncated_mp4(ckpt, tmp_path, capsys):
    """A cut mp4 whose index comes last cannot be read at all (the docs say so); one with the index
    first (faststart) is processed up to the break."""
    d = tmp_path / "in"
    d.mkdir()
    from protect.video_io import write_video_with_tone
    frames = [np.ascontiguousarray(np.pad(data.astronaut()[30:250, 110:330], ((50, 50), (130, 130), (0, 0))))] * 12
    for name, options in (("end.mp4", {}), ("first.mp4", {"movflags": "faststart"})):
        path = write_video_with_tone(str(tmp_path / name), frames, 12, container_options=options)
        raw = open(path, "rb").read()
        (d / name).write_bytes(raw[: len(raw) * 6 // 10])
    assert cli(d, "-o", tmp_path / "out", "--fp32", ckpt=ckpt) == 1
    out, err = capsys.readouterr()
    assert "end.mp4: cut short before its index" in err and "faststart" in err
    assert "first.mp4: video ends early" in err
    assert "  first.mp4: 1 (" in out
    assert sorted(tree_digest(tmp_path / "out")) == ["first.mp4", "first.mp4.record.json"]


# ---- part 6: exit codes and streams -------------------------------------------------------------------

def test_exit_codes(ckpt, tmp_path, monkeypatch, capsys):
    d = tmp_path / "in"
    save(d / "x.png", astronaut_head())
    assert cli(d, "-o", tmp_path / "ok", ckpt=ckpt) == 0
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert cli(d, "-o", tmp_path / "some", ckpt=ckpt) == 1
    assert cli(tmp_path / "missing", "-o", tmp_path / "none", ckpt=ckpt) == 2
    from protect import run as protect_run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(protect_run, "run_image", interrupted)
    assert cli(d, "-o", tmp_path / "int", ckpt=ckpt) == 130
    out, err = capsys.readouterr()
    assert "broken.png" not in out and "broken.png" in err and "interrupted" in err


# ---- the two-minute path ------------------------------------------------------------------------------

def test_two_minute_path_real_photos_there_and_back(ckpt, tmp_path, capsys):
    """Three real photos (scikit-image's astronaut, the astronaut mirrored and smaller, the
    cameraman) through anonymize.py and back with --recover: every pixel outside the faces that
    were transformed is the same as in the original, in the anonymized and in the recovered files."""
    import cv2
    d = tmp_path / "photos"
    astronaut = data.astronaut()
    small = cv2.resize(np.ascontiguousarray(astronaut[:, ::-1]), (384, 384), interpolation=cv2.INTER_AREA)
    originals = {"astronaut.png": astronaut, "holiday/mirrored.webp": small, "cameraman.tif": data.camera()}
    for name, img in originals.items():
        save(d / name, img, **({"lossless": True} if name.endswith(".webp") else {}))
    assert cli(d, "-o", tmp_path / "anon", "--preview", tmp_path / "prev", ckpt=ckpt) == 0
    out = capsys.readouterr().out
    assert "faces anonymized per file:" in out
    assert cli(tmp_path / "anon", "-o", tmp_path / "back", "--recover", ckpt=ckpt) == 0
    capsys.readouterr()
    from protect.frame import face_region
    from protect.protector import FaceProtector
    from protect.record import read_sidecar
    protector = FaceProtector(str(ckpt))
    faces = 0
    for name, img in originals.items():
        anon = load_photo(str(tmp_path / "anon" / name))
        record = anon.record or read_sidecar(str(tmp_path / "anon" / name))
        outside = np.ones(img.shape[:2], bool)
        for f in record.faces:
            ys, xs, w = face_region(img.shape[:2], np.asarray(f["transform"]).reshape(2, 3), protector.mask)
            outside[ys, xs] &= w == 0
        faces += len(record.faces)
        back = load_photo(str(tmp_path / "back" / name)).native
        assert np.array_equal(anon.native[outside], img[outside]), name
        assert np.array_equal(back[outside], img[outside]), name
        if record.faces:
            assert (anon.native != img).any() and (back != anon.native).any(), name
        assert os.path.exists(tmp_path / "prev" / name)
    assert faces >= 2  # the astronaut, full size and mirrored
