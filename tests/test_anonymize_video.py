"""Videos: tracking, bridged gaps, frame count, timing and audio kept, recovery with the record."""
from __future__ import annotations

import os

import av
import numpy as np
import pytest

import anonymize
from models.passwords import Password
from protect.face_detect import DetectedFace, DlibDetector, FaceDetector
from protect.protector import FacePasswords, FaceProtector
from protect.record import RecordError, read_sidecar
from protect.track import build_tracks
from protect.video import VideoOptions, protect_video
from protect.video_io import VideoReader
from tests.anonymize_helpers import make_face_video

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = VideoOptions(progress=False, detect_every=1)


def face_at(x: float, y: float = 50.0, size: float = 40.0) -> DetectedFace:
    pts = np.array([[x + 12, y + 14], [x + 28, y + 14], [x + 20, y + 22], [x + 14, y + 30], [x + 26, y + 30]],
                   np.float32)
    return DetectedFace((x, y, x + size, y + size), pts, 1.0)


def test_tracks_bridge_gaps_and_hold_ends():
    dets = {f: [face_at(2.0 * f)] for f in range(30) if not 10 <= f < 15}  # missed in frames 10..14
    dets.update({f: [] for f in range(10, 15)})
    (t,) = build_tracks(dets, 40, max_gap=8, hold=3)
    assert t.key == 0 and t.first_frame == 0 and t.last_frame == 32  # 29 + hold 3
    assert np.allclose(t.at(12), face_at(24.0).points)  # interpolated through the gap
    assert np.allclose(t.at(32), t.at(29)) and t.at(33) is None
    assert t.detected == [f for f in range(30) if not 10 <= f < 15]


def test_tracks_split_people_and_long_gaps():
    dets = {f: [face_at(0.0 + f), face_at(200.0 - f)] for f in range(10)}
    dets.update({f: [face_at(10.0)] for f in range(30, 35)})  # back after a long gap: a new track
    tracks = build_tracks(dets, 40, max_gap=5, hold=2)
    assert [t.key for t in tracks] == [0, 1, 2]
    assert tracks[0].at(5)[0, 0] < 50 < tracks[1].at(5)[0, 0]  # each person stays on their track
    assert tracks[2].first_frame == 28 and tracks[0].last_frame == 11


def test_tracks_smooth_landmark_jitter():
    rng = np.random.default_rng(0)
    dets = {}
    for f in range(40):
        d = face_at(100.0)
        d.points = d.points + rng.normal(0, 2, d.points.shape).astype(np.float32)
        dets[f] = [d]
    raw = build_tracks(dets, 40, max_gap=2, hold=0, smooth=1)[0]
    smooth = build_tracks(dets, 40, max_gap=2, hold=0, smooth=5)[0]
    assert smooth.points.std(0).mean() < 0.6 * raw.points.std(0).mean()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_face_video(str(tmp_path_factory.mktemp("v") / "in.mp4"))


def audio_packets(path):
    with av.open(path) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]


def frames_of(path):
    with VideoReader(path) as r:
        return np.stack([f.image for f in r]), r.info


class Blinking(FaceDetector):
    """dlib, except that it misses every face in some frames (counted by calls)."""

    name = "blinking"

    def __init__(self, missed):
        super().__init__(32)
        self.inner, self.missed, self.calls = DlibDetector(), set(missed), 0

    def _detect_raw(self, image):
        self.calls += 1
        return [] if self.calls - 1 in self.missed else self.inner._detect_raw(image)


def test_video_keeps_frames_timing_audio_and_recovers(ckpt, video, tmp_path):
    protector = FaceProtector(ckpt, Blinking(missed={6, 7, 8, 9}))
    pw = FacePasswords.per_face("holiday video", 16)
    out = str(tmp_path / "anon.mp4")
    res = protect_video(protector, video, out, pw, options=QUIET)
    src, info = frames_of(video)
    anon, oinfo = frames_of(out)
    assert res.frames == len(src) == len(anon) == 24 and res.tracks == 1 and res.face_frames == 24
    assert oinfo.fps == info.fps and oinfo.frame_count == info.frame_count and oinfo.duration == info.duration
    assert audio_packets(out) == audio_packets(video)  # copied, not re-encoded
    rec = read_sidecar(out)
    assert rec.kind == "video" and rec.passwords == "per-face" and len(rec.tracks) == 1
    assert "holiday" not in rec.to_json()
    assert rec.tracks[0]["first_frame"] == 0 and len(rec.tracks[0]["transforms"]) == 24
    assert not {6, 7, 8, 9} & set(rec.tracks[0]["detected"])
    for i in range(24):  # every frame's face is replaced, the missed ones too
        x = 10 + 3 * i
        face = (slice(50 + 60, 50 + 160), slice(x + 60, x + 160))
        assert np.abs(anon[i][face].astype(int) - src[i][face].astype(int)).mean() > 10, i
    assert np.abs(anon[:, :40, -40:].astype(int) - src[:, :40, -40:].astype(int)).max() <= 12  # codec noise only

    back = str(tmp_path / "back.mp4")
    protect_video(protector, out, back, pw, recover=True, record=rec, options=QUIET)
    wrong = str(tmp_path / "wrong.mp4")
    protect_video(protector, out, wrong, FacePasswords.per_face("other", 16), recover=True, record=rec, options=QUIET)
    rb, _ = frames_of(back)
    rw, _ = frames_of(wrong)
    assert len(rb) == 24 and audio_packets(back) == audio_packets(video)
    from protect.frame import cut_crops
    anon_crops = cut_crops(anon[3], [np.asarray(rec.tracks[0]["transforms"][3]).reshape(2, 3)], protector.size)
    direct = protector.generate(anon_crops, [pw.for_key(0)], inverse=True)
    got = cut_crops(rb[3], [np.asarray(rec.tracks[0]["transforms"][3]).reshape(2, 3)], protector.size)
    got_wrong = cut_crops(rw[3], [np.asarray(rec.tracks[0]["transforms"][3]).reshape(2, 3)], protector.size)
    to255 = lambda t: (t.permute(0, 2, 3, 1).numpy() + 1) * 127.5  # noqa: E731
    assert np.abs(to255(got) - direct).mean() < 0.5 * np.abs(to255(got_wrong) - direct).mean()
    with pytest.raises(RecordError, match="does not match this file"):
        protect_video(protector, video, str(tmp_path / "x.mp4"), pw, recover=True, record=rec, options=QUIET)


@pytest.mark.slow  # three videos through the command line
def test_video_cli_folder_no_faces_and_corrupt(ckpt, video, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIT_PW", "tall ship")
    d = tmp_path / "in"
    d.mkdir()
    os.link(video, d / "clip.mp4")
    with av.open(str(d / "empty.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(6):
            f = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 30 * i, np.uint8), format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())
    (d / "broken.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + os.urandom(2000))
    rc = anonymize.main([str(d), "-o", str(tmp_path / "out"), "--checkpoint", ckpt, "--password-env", "FIT_PW",
                         "--quiet", "--fp32"])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 1
    assert "files: 3 (0 photos, 3 videos)" in text and "faces found: 1; faces anonymized: 1 (24 face-frames" in text
    assert "files without faces (written without metadata): 1\n  empty.mp4" in text
    assert "broken.mov:" in captured.err and "broken.mov" not in text
    with av.open(str(d / "empty.mp4")) as a, av.open(str(tmp_path / "out" / "empty.mp4")) as b:
        assert [bytes(p) for p in a.demux(video=0) if p.size] == [bytes(p) for p in b.demux(video=0) if p.size]
    assert read_sidecar(str(tmp_path / "out" / "empty.mp4")).tracks == []
    assert read_sidecar(str(tmp_path / "out" / "clip.mp4")).tracks
    rc = anonymize.main([str(tmp_path / "out" / "clip.mp4"), "-o", str(tmp_path / "back.mp4"), "--checkpoint", ckpt,
                         "--password-env", "FIT_PW", "--quiet", "--recover", "--fp32"])
    assert rc == 0 and "faces recovered: 1 (24 face-frames" in capsys.readouterr().out


def test_track_keys_pick_the_codes():
    pw = Password.from_passphrase("one for all", 16)
    shared = FacePasswords(shared=pw)
    assert shared.for_key(0) == shared.for_key(5) == pw and shared.scope == "shared"
    per = FacePasswords.per_face("one for all", 16)
    assert per.scope == "per-face" and per.for_key(0) != per.for_key(1)
    assert per.for_key(1) == FacePasswords.per_face("one for all", 16).for_key(1)  # same passphrase, same codes
    assert pw not in (per.for_key(0), per.for_key(1))


def test_rotated_and_truncated_videos(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIT_PW", "tall ship")
    d = tmp_path / "in"
    d.mkdir()
    make_face_video(str(d / "phone.mp4"), n=8, rotated=True)
    make_face_video(str(d / "cut.mkv"), n=24)
    data = (d / "cut.mkv").read_bytes()
    (d / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])  # a download that broke off
    rc = anonymize.main([str(d), "-o", str(tmp_path / "out"), "--checkpoint", ckpt, "--password-env", "FIT_PW",
                         "--quiet", "--fp32"])
    captured = capsys.readouterr()
    assert rc == 0 and "faces anonymized: 2" in captured.out
    assert "cut.mkv:" in captured.err and "video ends early" in captured.err
    with VideoReader(str(d / "phone.mp4")) as a, VideoReader(str(tmp_path / "out" / "phone.mp4")) as b:
        src, out = [f.image for f in a], [f.image for f in b]
        assert b.info.display_matrix == a.info.display_matrix and b.info.rotation == 90
        assert (b.info.coded_width, b.info.coded_height) == (a.info.coded_width, a.info.coded_height)
    assert len(out) == 8 and out[0].shape == src[0].shape == (320, 480, 3)
    assert np.abs(out[0][110:210, 70:170].astype(int) - src[0][110:210, 70:170].astype(int)).mean() > 10
    with VideoReader(str(tmp_path / "out" / "cut.mkv")) as r:
        assert 0 < sum(1 for _ in r) < 24
