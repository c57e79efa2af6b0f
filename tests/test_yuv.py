"""Video frames kept in 4:2:0 YUV (protect/yuv.py): colours as FFmpeg converts them, faces blended
as in RGB, everything else untouched down to the byte, and the reader and writer use it only where it
fits the stream."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from protect.frame import blend_mask, cut_crop, face_region, paste_faces
from protect.video_io import VideoError, VideoReader, VideoWriter, write_video_with_tone
from protect.yuv import YUV_COLORSPACES, YuvImage, yuv_matrices

W, H = 96, 64


def smooth_rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """Colours that change slowly from pixel to pixel (chroma subsampling loses almost nothing)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(20, 236, (4, 6, 3)).astype(np.float32)
    return np.rint(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)).astype(np.uint8)


def av_yuv(rgb: np.ndarray, colorspace: int, full: bool) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return f.reformat(format="yuv420p", dst_colorspace=colorspace, dst_color_range=2 if full else 1)


def image_of(frame: av.VideoFrame, colorspace: int, full: bool) -> YuvImage:
    return YuvImage(frame.to_ndarray(), frame.height, frame.width, colorspace, full)


@pytest.mark.parametrize("colorspace", sorted(YUV_COLORSPACES))
@pytest.mark.parametrize("full", [False, True])
def test_matrices_invert_each_other_and_map_the_range(colorspace, full):
    to_yuv, to_rgb = yuv_matrices(colorspace, full)
    rgb = np.random.default_rng(1).uniform(0, 255, (50, 1, 3)).astype(np.float32)
    back = cv2.transform(cv2.transform(rgb, to_yuv), to_rgb)
    assert np.abs(back - rgb).max() < 1e-3
    corners = cv2.transform(np.array([[[0, 0, 0]], [[255, 255, 255]]], np.float32), to_yuv)[:, 0]
    lo, hi = (0.0, 255.0) if full else (16.0, 235.0)
    assert corners[0] == pytest.approx([lo, 128, 128], abs=1e-3)
    assert corners[1] == pytest.approx([hi, 128, 128], abs=1e-3)
    red = cv2.transform(np.array([[[255, 0, 0]]], np.float32), to_yuv)[0, 0]
    assert red[2] == pytest.approx(255.5 if full else 240.0, abs=1e-3)  # Cr of pure red: 128 + half the range


@pytest.mark.parametrize("colorspace", [1, 2, 5, 9])
@pytest.mark.parametrize("full", [False, True])
def test_rgb_of_a_region_is_ffmpegs_conversion(colorspace, full):
    rgb = smooth_rgb(colorspace)
    frame = av_yuv(rgb, colorspace if colorspace != 2 else None, full)
    img = image_of(frame, colorspace, full)
    want = frame.to_ndarray(format="rgb24", src_colorspace=colorspace if colorspace != 2 else None,
                            src_color_range=2 if full else 1).astype(np.float32)
    assert img.shape == (H, W, 3)
    assert np.abs(img.rgb_region(0, H, 0, W) - want).max() <= 3.0  # FFmpeg's fixed point, its rounding
    # any rectangle, odd corners included, is the same part of the whole frame's conversion
    whole = img.rgb_region(0, H, 0, W)
    for y0, y1, x0, x1 in [(3, 40, 5, 31), (0, 1, 0, 1), (11, 64, 77, 96), (1, 2, 95, 96)]:
        np.testing.assert_allclose(img.rgb_region(y0, y1, x0, x1), whole[y0:y1, x0:x1], atol=1e-3)
    assert np.array_equal(img.to_rgb(), np.rint(whole).astype(np.uint8))


def _mask_and_transform(size: int = 32):
    mask = blend_mask(size, np.array([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.1], [-0.3, 0.45], [0.3, 0.45]]), "crop")
    angle, scale = 0.2, 0.9  # a turned face, crop pixels per image pixel
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    m = np.array([[c, s, -c * 31 - s * 17 + 10], [-s, c, s * 31 - c * 17 + 12]], np.float64)
    return mask, m


def test_faces_pasted_in_yuv_are_the_rgb_blend_and_nothing_else_changes():
    rgb = smooth_rgb(3)
    frame = av_yuv(rgb, 1, False)
    img = image_of(frame, 1, False)
    before = img.buffer.copy()
    mask, m = _mask_and_transform()
    crop = smooth_rgb(4, 32, 32).astype(np.float32)
    img.paste_faces(crop[None], [m], mask)
    # the RGB blend of the same crop into the frame's own RGB, then converted: within rounding
    base = image_of(av.VideoFrame.from_ndarray(before, format="yuv420p"), 1, False).rgb_region(0, H, 0, W)
    blended = paste_faces(np.rint(base).astype(np.uint8), crop[None], [m], mask)
    want_y = cv2.transform(blended.astype(np.float32), yuv_matrices(1, False)[0])[:, :, 0]
    assert np.abs(img.y.astype(np.float32) - want_y).max() <= 1.5
    changed = img.buffer != before
    assert changed.any()
    # luma changes only where the blend weight is positive, chroma only in the 2x2 blocks touching it
    touched = paste_faces(np.zeros((H, W), np.uint8), np.full((1, 32, 32, 3), 255.0, np.float32), [m], mask) > 0
    assert not (img.y != before[:H]).reshape(H, W)[~touched].any()
    blocks = touched.reshape(H // 2, 2, W // 2, 2).any(axis=(1, 3))
    assert not (img.u != before.reshape(-1)[H * W:H * W * 5 // 4].reshape(H // 2, W // 2))[~blocks].any()
    # and cut again, the face is the crop (what recovery starts from), about as well as in RGB
    # (the RGB blend stored as 4:2:0 by FFmpeg and decoded again: what the RGB path gives)
    again = cut_crop(img, np.asarray(m), 32)
    stored = av_yuv(blended, 1, False).to_ndarray(format="rgb24", src_colorspace=1, src_color_range=1)
    rgb_again = cut_crop(stored, np.asarray(m), 32)
    err, rgb_err = (np.abs(a[4:-4, 4:-4] - crop[4:-4, 4:-4]).mean() for a in (again, rgb_again))
    assert err < rgb_err + 0.5, (err, rgb_err)


def _video(path, n=6, h=64, w=96, **kw):
    frames = [np.roll(smooth_rgb(5, h, w), 4 * i, axis=1) for i in range(n)]
    return write_video_with_tone(path, frames, 10, **kw)


def test_reader_gives_yuv_only_where_it_fits(tmp_path):
    with VideoReader(_video(tmp_path / "a.mp4", acodec=None)) as r:
        assert r.yuv420 == (2, False)  # unspecified matrix: BT.601 as swscale has it; limited range
        imgs = [f.image for f in r.frames(yuv=True)]
    with VideoReader(tmp_path / "a.mp4") as r:
        rgbs = [f.image for f in r]
    assert all(isinstance(i, YuvImage) for i in imgs)
    assert all(np.abs(i.to_rgb().astype(int) - c.astype(int)).max() <= 3 for i, c in zip(imgs, rgbs))
    # a 4:4:4 stream stays on the RGB path, and asking it for YUV frames is refused
    path = str(tmp_path / "b.mp4")
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv444p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(smooth_rgb(i), format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode())
    with VideoReader(path) as r:
        assert r.yuv420 is None
        with pytest.raises(VideoError, match="4:2:0"):
            next(r.frames(yuv=True))
    with VideoReader(path) as r, VideoWriter(tmp_path / "c.mp4", r.info) as w:
        assert not w.takes_yuv(r.yuv420)  # so pass 2 runs in RGB
        w.write(next(iter(r)).image)


def test_rotated_video_planes_turn_upright_and_back_bit_for_bit(tmp_path):
    src = _video(tmp_path / "r.mp4", acodec=None, rotation=90)
    with VideoReader(src) as r:
        info = r.info
        assert (info.width, info.height) == (64, 96) and r.yuv420 is not None
        imgs = [f.image for f in r.frames(yuv=True)]
    with VideoReader(src) as r:
        rgbs = [f.image for f in r]
    assert imgs[0].shape == rgbs[0].shape == (96, 64, 3)
    assert np.abs(imgs[0].to_rgb().astype(int) - rgbs[0].astype(int)).max() <= 3
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info, crf=0) as w:
        assert w.takes_yuv((imgs[0].colorspace, imgs[0].full_range))
        for i in imgs:
            w.write(i)
    with VideoReader(out) as r:
        again = [f.image for f in r.frames(yuv=True)]
        assert r.info.display_matrix == info.display_matrix
    assert all(np.array_equal(a.buffer, b.buffer) for a, b in zip(imgs, again))  # lossless: the same planes


def test_video_outside_the_faces_reaches_the_encoder_untouched(tmp_path):
    """End to end at crf 0: every luma pixel away from the faces is the decoded input's."""
    from protect.face_detect import DetectedFace, FaceDetector
    from protect.protector import FacePasswords, FaceProtector
    from protect.video import VideoOptions, protect_video
    from tests.anonymize_helpers import save_small_checkpoint

    class Fixed(FaceDetector):
        def _detect_raw(self, image):
            pts = np.array([[40, 26], [56, 26], [48, 34], [42, 42], [54, 42]], np.float32)
            return [DetectedFace(box=(34.0, 16.0, 62.0, 50.0), points=pts, score=0.99)]

    src = _video(tmp_path / "in.mp4", n=4, h=128, w=192, acodec=None)
    protector = FaceProtector(save_small_checkpoint(str(tmp_path / "g.pth")), Fixed(min_face=8))
    out = str(tmp_path / "out.mp4")
    res = protect_video(protector, src, out, FacePasswords.per_face("pw", 16),
                        options=VideoOptions(progress=False, crf=0, threads=False))
    assert res.face_frames == 4
    with VideoReader(src) as r:
        before = [f.image for f in r.frames(yuv=True)]
    with VideoReader(out) as r:
        after = [f.image for f in r.frames(yuv=True)]
    for a, b, t in zip(before, after, res.record.tracks[0]["transforms"]):
        ys, xs, weights = face_region((128, 192), np.asarray(t).reshape(2, 3), protector.mask)
        blended = np.zeros((128, 192), bool)
        blended[ys, xs] = weights > 0
        assert 0 < blended.sum() < blended.size // 2
        assert np.array_equal(a.y[~blended], b.y[~blended])  # bit for bit
        blocks = blended.reshape(64, 2, 96, 2).any(axis=(1, 3))
        assert np.array_equal(a.u[~blocks], b.u[~blocks]) and np.array_equal(a.v[~blocks], b.v[~blocks])
        assert np.abs(a.y[blended].astype(int) - b.y[blended]).mean() > 2  # the face did change
