"""Video read/write: frame count, timing, rotation and copied audio survive a pass through."""
import os
import warnings

import av
import numpy as np
import pytest

from protect.video_io import (
    TruncatedVideoWarning,
    VideoError,
    VideoReader,
    VideoWriter,
    inverse_orientation,
    matrix_from_rotate_tag,
    orient,
    orientation,
    write_video_with_tone,
)
from tests.video_helpers import process_video

W, H, N, FPS = 160, 120, 30, 15


def coded_frame(i: int) -> np.ndarray:
    """A frame with a red marker in its top-left corner, so orientation is visible."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 1] = (40 + 5 * i) % 200
    img[H // 2:, W // 2:, 2] = np.random.default_rng(i).integers(0, 255, (H - H // 2, W - W // 2), dtype=np.uint8)
    img[: H // 3, : W // 4] = (230, 20, 20)
    return img


def make_video(path, *, n=N, rotation=None, vcodec="libx264", acodec="aac", pts=None, faststart=False):
    """n frames W x H at FPS (pts in 1/FPS units unless given) plus a 440 Hz mono audio track."""
    return write_video_with_tone(path, (coded_frame(i) for i in range(n)), FPS, vcodec=vcodec, acodec=acodec,
                                 rotation=rotation, pts=pts,
                                 container_options={"movflags": "faststart"} if faststart else None)


def audio_packets(path):
    with av.open(path) as c:
        a = c.streams.audio[0]
        info = (a.codec_context.name, a.rate)
        pk = [(bytes(p), p.duration, float(p.pts * p.time_base)) for p in c.demux(a) if p.dts is not None]
    return info, pk


def display_matrix(path):
    with VideoReader(path) as r:
        return r.info.display_matrix


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "in.mp4")


def test_roundtrip_keeps_frames_timing_and_audio(mp4, tmp_path):
    out = str(tmp_path / "out.mp4")
    with VideoReader(mp4) as r:
        src = list(r)
        info = r.info
    assert len(src) == N and info.fps == FPS and info.frame_count == N and info.frame_count_exact
    assert src[0].image.shape == (H, W, 3) and src[0].image.dtype == np.uint8
    process_video(mp4, out, progress=False)
    with VideoReader(out) as r2:
        dst = list(r2)
        assert r2.info.fps == FPS and r2.info.codec == "h264"
        assert r2.info.frame_count == N
    assert len(dst) == N
    assert [f.time for f in dst] == pytest.approx([f.time for f in src], abs=1e-4)
    assert max(np.abs(a.image.astype(int) - b.image).mean() for a, b in zip(src, dst)) < 3
    (codec_in, sr_in), pk_in = audio_packets(mp4)
    (codec_out, sr_out), pk_out = audio_packets(out)
    assert (codec_out, sr_out) == (codec_in, sr_in) == ("aac", 44100)
    assert len(pk_out) == len(pk_in) > 10
    assert sum(p[1] for p in pk_out) == sum(p[1] for p in pk_in)
    assert [p[0] for p in pk_out] == [p[0] for p in pk_in]  # byte-identical: copied, not re-encoded
    assert [p[2] for p in pk_out] == pytest.approx([p[2] for p in pk_in], abs=1e-6)  # same timing


def test_variable_frame_timing_kept(tmp_path):
    pts = [0, 1, 3, 4, 7, 8, 9, 12, 13, 15]
    src = make_video(tmp_path / "vfr.mp4", n=len(pts), pts=pts, acodec=None)
    out = str(tmp_path / "vfr_out.mp4")
    process_video(src, out, progress=False)
    with VideoReader(out) as r:
        times = [f.time for f in r]
    assert times == pytest.approx([p / FPS for p in pts], abs=1e-4)


def test_rotated_input_upright_frames_and_same_rotation(tmp_path):
    src = make_video(tmp_path / "rot.mp4", rotation=90)  # display = stored frame turned 90 deg counter-clockwise
    with VideoReader(src) as r:
        info = r.info
        first = next(iter(r)).image
    assert info.rotation == pytest.approx(90) and (info.width, info.height) == (H, W)
    assert (info.coded_width, info.coded_height) == (W, H)
    assert first.shape == (W, H, 3)
    assert first[-5, 5, 0] > 200 and first[5, 5, 0] < 60  # marker moved from top-left to bottom-left
    err = {k: np.abs(first.astype(int) - np.rot90(coded_frame(0), k)).mean() for k in (1, -1)}
    assert err[1] < 8 and err[1] < err[-1] / 3

    out = str(tmp_path / "rot_out.mp4")
    process_video(src, out, progress=False)
    with VideoReader(out) as r2:
        assert r2.info.display_matrix == info.display_matrix
        assert (r2.info.coded_width, r2.info.coded_height) == (W, H)
        again = next(iter(r2)).image
    assert np.abs(again.astype(int) - first).mean() < 3


def test_webm_vp9_opus_rotation(tmp_path):
    src = make_video(tmp_path / "in.webm", n=10, rotation=-90, vcodec="libvpx-vp9", acodec="libopus")
    out = str(tmp_path / "out.webm")
    info = process_video(src, out, progress=False)
    assert info.rotation == pytest.approx(-90)
    with VideoReader(out) as r:
        assert r.info.codec == "vp9" and r.info.display_matrix == info.display_matrix
        frames = list(r)
    assert len(frames) == 10 and frames[0].image[5, -5, 0] > 200  # clockwise: marker at top-right
    (codec_in, sr_in), pk_in = audio_packets(src)
    (codec_out, sr_out), pk_out = audio_packets(out)
    assert (codec_out, sr_out, len(pk_out)) == (codec_in, sr_in, len(pk_in)) == ("opus", 48000, len(pk_in))


@pytest.mark.skipif("libx265" not in av.codecs_available, reason="no HEVC encoder to make the input")
def test_phone_style_hevc_mov_portrait(tmp_path):
    """Like a phone clip: HEVC in .mov, stored landscape, displayed portrait; output is H.264."""
    src = make_video(tmp_path / "phone.mov", n=8, vcodec="libx265", rotation=-90)
    out = str(tmp_path / "phone_out.mov")
    info = process_video(src, out, progress=False)
    assert info.codec == "hevc" and (info.width, info.height) == (H, W)
    with VideoReader(out) as r:
        assert r.info.codec == "h264" and r.info.display_matrix == info.display_matrix
        assert sum(1 for _ in r) == 8 and r.info.audio[0].codec == "aac"


def test_orientations_invert_and_legacy_rotate_tag():
    img = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    for o in [(1, 0, 0, 1), (-1, 0, 0, 1), (1, 0, 0, -1), (-1, 0, 0, -1),
              (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, -1, 0), (0, -1, -1, 0)]:
        assert np.array_equal(orient(orient(img, o), inverse_orientation(o)), img)
    # the old `rotate` tag is clockwise degrees: 90 means turn the stored frame clockwise
    assert np.array_equal(orient(img, orientation(matrix_from_rotate_tag(90))), np.rot90(img, -1))
    assert np.array_equal(orient(img, orientation(matrix_from_rotate_tag(180))), np.rot90(img, 2))
    assert orientation((65536, 0, 0, 30000, 65536, 0, 0, 0, 1 << 30)) is None  # shear: not a 90-degree turn


def test_batches_with_progress(mp4, capsys):
    with VideoReader(mp4) as r:
        batches = list(r.batches(8, progress="demo"))
    assert [len(b.images) for b in batches] == [8, 8, 8, 6]
    assert [b.start for b in batches] == [0, 8, 16, 24]
    assert batches[1].images.shape == (8, H, W, 3)
    err = capsys.readouterr().err
    assert "demo" in err and f"{N}/{N}" in err and "frame/s" in err


def test_corrupt_and_missing_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4000))
    with pytest.raises(VideoError, match="junk.mp4"):
        VideoReader(junk)
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        VideoReader(tmp_path / "nothere.mp4")
    text = tmp_path / "notes.mov"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mov"):
        VideoReader(text)


def test_truncated_files(tmp_path):
    full = make_video(tmp_path / "full.mp4", n=60, acodec=None)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp4"  # index (moov) at the end: a cut file cannot be opened at all
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cut.mp4.*cut short"):
        VideoReader(cut)

    fast = make_video(tmp_path / "fast.mp4", n=60, acodec=None, faststart=True)
    data = open(fast, "rb").read()
    cut2 = tmp_path / "cut_fast.mp4"  # index first: the frames before the cut are readable
    cut2.write_bytes(data[: len(data) * 6 // 10])
    with pytest.warns(TruncatedVideoWarning, match=r"cut_fast.mp4.*decoded \d+ of 60 frames"):
        with VideoReader(cut2) as r:
            n = sum(1 for _ in r)
    assert 0 < n < 60 and r.truncated and r.frames_decoded == n


def test_writer_safety(mp4, tmp_path):
    with VideoReader(mp4) as r:
        info = r.info
        frame = next(iter(r))
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"user data")
    with pytest.raises(FileExistsError):
        VideoWriter(existing, info)
    assert existing.read_bytes() == b"user data"
    # AAC cannot be copied into webm: refused up front, nothing written
    with pytest.raises(VideoError, match="aac"):
        VideoWriter(tmp_path / "x.webm", info)
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(tmp_path / "bad.mp4", info) as w:
            w.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "boom.mp4", info) as w:
            w.write(frame.image, frame.pts)
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["keep.mp4"]  # no output, no temporary left behind
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with VideoWriter(tmp_path / "silent.mp4", info, copy_audio=False) as w:
            w.write(frame.image, frame.pts)
    with VideoReader(tmp_path / "silent.mp4") as r:
        assert r.info.audio == () and sum(1 for _ in r) == 1
