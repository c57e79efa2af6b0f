"""Video in and out (mp4, mov, mkv, webm) with PyAV: frames as RGB uint8 arrays (or, for 8-bit 4:2:0
streams, as their decoded YUV planes: protect/yuv.py), audio copied as is.

Decisions, so that what a viewer sees stays the same after processing:

* Rotation. Phones store portrait video as landscape pixels plus a display matrix (the mp4/mov
  ``tkhd`` matrix, webm projection; FFmpeg's DISPLAYMATRIX side data; very old files: a ``rotate``
  tag, in clockwise degrees). ``VideoReader`` returns frames UPRIGHT, as a player shows them, since
  face detectors need upright faces. ``VideoWriter`` turns the frames back to the stored orientation
  and writes the SAME display matrix, so the output has the input's coded size and rotation
  metadata and every player shows it exactly like the input. Matrices that are not a multiple of 90
  degrees (with or without mirroring) are rare; their frames are returned as stored, with a warning,
  and the matrix is still copied, so the display is still identical.
* Timing. The writer keeps the input's time base and each frame's pts (pass the reader's ``pts``
  along), so frame count, fps and variable frame timing are unchanged.
* Codecs. mp4/mov get H.264 (libx264, preset fast, CRF 18: visually lossless); webm gets VP9, or
  VP8 when the input is VP8; mkv gets VP8/VP9 for VP8/VP9/AV1 input and H.264 otherwise. Colour
  tags (matrix, range, primaries, transfer) are copied.
* Audio. Every audio stream of the input is COPIED packet by packet (remuxed, never re-encoded),
  interleaved with the video by time. If the output container cannot hold that audio codec (e.g.
  AAC into webm) the writer refuses before writing anything, rather than dropping sound.
* Metadata. Container tags (creation time, GPS location, device model) are deliberately NOT copied:
  this module serves a face-privacy tool. Subtitle and data streams are not copied either.
* Errors. A file that cannot be opened or yields no frame raises ``VideoError`` naming the file. A
  stream that breaks off after some frames (truncated download, damaged tail) gives a
  ``TruncatedVideoWarning`` naming the file and the number of frames decoded, and iteration ends
  there; ``reader.truncated`` tells the caller. The frames decoded are good frames, and for a
  privacy tool processing what exists beats refusing the whole file.
* Output files are written to a temporary file and renamed into place (utils/fileio.py), and an
  existing file is never replaced unless ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from protect.yuv import YUV_COLORSPACES, YuvImage
from utils.fileio import atomic_open

__all__ = ["VideoError", "TruncatedVideoWarning", "AudioInfo", "VideoInfo", "Frame", "FrameBatch",
           "VideoReader", "VideoWriter", "VIDEO_EXTENSIONS", "Orientation", "orientation", "orient",
           "inverse_orientation", "orient_yuv", "matrix_from_rotate_tag", "YUV420_FORMATS"]

YUV420_FORMATS = {"yuv420p": False, "yuvj420p": True}  # 8-bit 4:2:0 decoder formats -> full range

VIDEO_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names the file."""


class TruncatedVideoWarning(UserWarning):
    """The video stream ended early (damaged or cut file); the frames before it were returned."""


# ---- orientation (display matrix) ------------------------------------------------------------

Orientation = tuple[int, int, int, int]  # (a, b, c, d) of FFmpeg's matrix, each -1, 0 or 1


def orientation(matrix: tuple[int, ...] | None) -> Orientation | None:
    """Signs (a, b, c, d) of a display matrix that rotates by a multiple of 90 degrees and/or
    mirrors, (1, 0, 0, 1) for no matrix, None for any other transform.

    FFmpeg maps a stored pixel (p, q) to the displayed (p', q') = (a p + c q, b p + d q) plus a
    translation; a, b, c, d are 16.16 fixed point at matrix[0], [1], [3], [4]."""
    if matrix is None:
        return (1, 0, 0, 1)
    a, b, c, d = (matrix[i] / 65536.0 for i in (0, 1, 3, 4))
    if matrix[2] or matrix[5]:  # perspective terms
        return None
    signs = []
    for v in (a, b, c, d):
        if abs(v) < 1e-3:
            signs.append(0)
        elif abs(abs(v) - 1) < 1e-3:
            signs.append(1 if v > 0 else -1)
        else:
            return None
    a, b, c, d = signs
    if not ((b == c == 0 and a and d) or (a == d == 0 and b and c)):
        return None
    return (a, b, c, d)


def orient(image: np.ndarray, o: Orientation) -> np.ndarray:
    """Apply orientation ``o`` to a stored HxWxC image, giving the displayed image."""
    a, b, c, d = o
    if b == 0:  # p' = a p, q' = d q: flips only
        out = image[:, ::-1] if a < 0 else image
        return out[::-1] if d < 0 else out
    out = image.transpose(1, 0, 2)  # out[p, q] = image[q, p]; then q' = b p (rows), p' = c q (cols)
    if b < 0:
        out = out[::-1]
    if c < 0:
        out = out[:, ::-1]
    return out


def inverse_orientation(o: Orientation) -> Orientation:
    a, b, c, d = o
    return (a, c, b, d)  # orthogonal: the inverse is the transpose


def orient_yuv(image: YuvImage, o: Orientation) -> YuvImage:
    """Orientation ``o`` applied to each plane of a 4:2:0 frame (a quarter turn swaps the chroma
    planes' sides as it does the luma plane's, so they stay half its size)."""
    y, u, v = (orient(p[:, :, None], o)[:, :, 0] for p in (image.y, image.u, image.v))
    return YuvImage.from_planes(y, u, v, image.colorspace, image.full_range)


def matrix_from_rotate_tag(degrees_cw: float) -> tuple[int, ...]:
    """The display matrix of the legacy ``rotate`` tag (clockwise degrees), as FFmpeg builds it."""
    r = math.radians(degrees_cw)
    cs, sn = round(math.cos(r) * 65536), round(math.sin(r) * 65536)
    return (cs, sn, 0, -sn, cs, 0, 0, 0, 1 << 30)  # == av_display_rotation_set(matrix, degrees_cw)


def _rotation_ccw(matrix: tuple[int, ...] | None) -> float:
    """Counter-clockwise rotation (degrees, like PyAV's ``VideoFrame.rotation``) of a matrix."""
    if matrix is None:
        return 0.0
    return -math.degrees(math.atan2(matrix[1] / 65536.0, matrix[0] / 65536.0)) + 0.0


# ---- reading -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """What a writer needs to reproduce a video. ``width``/``height`` are those of the frames the
    reader returns (upright); ``coded_*`` those stored in the file. ``pts`` values are in
    ``time_base`` units. ``frame_count`` comes from the container index when ``frame_count_exact``,
    otherwise it is duration x fps (webm/mkv have no count in the header)."""

    path: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    fps: Fraction
    time_base: Fraction
    frame_count: int | None
    frame_count_exact: bool
    duration: float | None
    codec: str
    display_matrix: tuple[int, ...] | None
    rotation: float  # counter-clockwise degrees of display_matrix (0 without one)
    upright: bool  # frames are returned as displayed (False only for odd, non-90-degree matrices)
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    sample_aspect_ratio: Fraction | None
    audio: tuple[AudioInfo, ...]


@dataclass
class Frame:
    index: int
    pts: int  # in the stream's time base (VideoInfo.time_base)
    time: float  # seconds
    image: np.ndarray | YuvImage | None  # HxWx3 uint8 RGB, upright; a YuvImage from frames(yuv=True);
    # None when not converted (VideoReader.frames)


@dataclass
class FrameBatch:
    start: int  # index of the first frame
    images: np.ndarray  # (B, H, W, 3) uint8
    pts: list[int]


def _parse_duration_tag(value: str | None) -> float | None:
    """'HH:MM:SS.fraction' (matroska's per-track DURATION tag) -> seconds."""
    try:
        h, m, sec = value.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (AttributeError, ValueError):
        return None


def _open_input(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"video file not found: {path}")
    if os.path.isdir(path):
        raise VideoError(f"{path} is a folder, not a video file")
    try:
        return av.open(path, mode="r")
    except av.FFmpegError as e:
        if _mp4_without_index(path):
            raise VideoError(f"{path}: cut short before its index (the mp4/mov 'moov' box, written last) was "
                             f"saved, so no frame can be located; only files with the index first "
                             f"(-movflags +faststart) or mkv/webm files can be read up to a break") from None
        raise VideoError(f"{path}: not a readable video file ({e.strerror or e}); "
                         f"it may be corrupt or cut short") from None


def _mp4_without_index(path: str) -> bool:
    """An ISO media file (mp4, mov: 'ftyp' first) whose top-level boxes hold media but no 'moov'."""
    boxes = []
    with contextlib.suppress(OSError), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size and len(boxes) < 1000:
            f.seek(pos)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if length == 1 and len(head) == 16:
                length = int.from_bytes(head[8:16], "big")
            boxes.append(kind)
            if length < 8:  # 0: the box runs to the end of the file
                break
            pos += length
    return bool(boxes) and boxes[0] == b"ftyp" and b"moov" not in boxes and b"mdat" in boxes


class VideoReader:
    """Read a video once, frame by frame (``for frame in reader``) or in batches
    (``reader.batches(16, progress=True)``). Frames are upright RGB uint8 (see module docstring).

    The first frame is decoded on opening, so an unreadable file fails here, not mid-loop."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._container = _open_input(self.path)
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise

    def _setup(self) -> None:
        c = self._container
        if not c.streams.video:
            raise VideoError(f"{self.path}: has no video stream")
        self._stream = s = c.streams.video[0]
        s.thread_type = "AUTO"
        self.frames_decoded = 0
        self.truncated = False
        self._used = False
        self._decoder = self._decode()
        try:
            first = next(self._decoder)
        except StopIteration:
            raise VideoError(f"{self.path}: no video frame could be decoded (empty or corrupt file)") from None
        self._first = first

        matrix = None
        sd = first.side_data.get("DISPLAYMATRIX") if first.side_data else None
        if sd is not None:
            matrix = tuple(int(v) for v in np.frombuffer(bytes(sd), dtype="<i4")[:9])
            if matrix == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30):
                matrix = None
        elif "rotate" in s.metadata:
            with contextlib.suppress(ValueError):
                deg = float(s.metadata["rotate"])
                matrix = matrix_from_rotate_tag(deg) if deg % 360 else None
        o = orientation(matrix)
        if o is None:
            warnings.warn(f"{self.path}: display matrix {matrix} is not a multiple of 90 degrees; frames are "
                          f"returned as stored and the matrix is copied to outputs", stacklevel=3)
        self._orient = o if o not in (None, (1, 0, 0, 1)) else None

        tb = s.time_base or Fraction(1, 90000)
        fps = s.average_rate or s.guessed_rate or s.base_rate
        if not fps:
            raise VideoError(f"{self.path}: frame rate unknown")
        # The video track's own length (mp4 index, or the DURATION tag of FFmpeg-made mkv/webm) tells
        # a cut-off file apart; the container's duration may include a longer audio track.
        self._track_end = float(s.duration * tb) if s.duration else _parse_duration_tag(s.metadata.get("DURATION"))
        duration = self._track_end or (c.duration / 1e6 if c.duration else None)
        exact = bool(s.frames)
        count = int(s.frames) if exact else (round(duration * fps) if duration else None)
        cw, ch = first.width, first.height
        swap = self._orient is not None and self._orient[0] == 0
        self._yuv_format = first.format.name
        self.info = VideoInfo(
            path=self.path, width=ch if swap else cw, height=cw if swap else ch, coded_width=cw,
            coded_height=ch, fps=Fraction(fps), time_base=Fraction(tb), frame_count=count,
            frame_count_exact=exact, duration=duration, codec=s.codec_context.name,
            display_matrix=matrix, rotation=_rotation_ccw(matrix), upright=o is not None,
            colorspace=int(first.colorspace), color_range=int(first.color_range),
            color_primaries=int(first.color_primaries), color_trc=int(first.color_trc),
            sample_aspect_ratio=s.sample_aspect_ratio or None,
            audio=tuple(AudioInfo(a.index, a.codec_context.name, a.rate, a.codec_context.channels)
                        for a in c.streams.audio),
        )

    @property
    def yuv420(self) -> tuple[int, bool] | None:
        """The colour system (colorspace, full range) of the YuvImage frames that ``frames(yuv=True)``
        gives, or None where it cannot: frames come as YuvImage when the stream is 8-bit 4:2:0 with an
        even coded size, an upright orientation and a colour matrix that protect/yuv.py knows."""
        info = self.info
        if (self._yuv_format in YUV420_FORMATS and info.coded_width % 2 == 0 and info.coded_height % 2 == 0
                and info.upright and info.colorspace in YUV_COLORSPACES):
            return info.colorspace, YUV420_FORMATS[self._yuv_format] or info.color_range == 2
        return None

    def _decode(self) -> Iterator[av.VideoFrame]:
        try:
            for packet in self._container.demux(self._stream):
                yield from packet.decode()
        except av.FFmpegError as e:
            if self.frames_decoded == 0:
                raise VideoError(f"{self.path}: not a decodable video ({e.strerror or e})") from None
            self._warn_truncated(f"decoding failed ({e.strerror or e})")

    def _warn_truncated(self, why: str) -> None:
        self.truncated = True
        expected = f" of {self.info.frame_count}" if self.info.frame_count_exact else ""
        warnings.warn(f"{self.path}: video ends early, {why}: decoded {self.frames_decoded}{expected} frames",
                      TruncatedVideoWarning, stacklevel=4)

    def _to_frame(self, f: av.VideoFrame, index: int, convert: bool = True,
                  yuv: tuple[int, bool] | None = None) -> Frame:
        image = None
        if convert and yuv is not None:
            w, h = self.info.coded_width, self.info.coded_height
            if f.format.name != self._yuv_format or (f.width, f.height) != (w, h):
                f = f.reformat(w, h, self._yuv_format)  # the stream changed its format mid-way
            image = YuvImage(f.to_ndarray(), h, w, *yuv)
            if self._orient is not None:
                image = orient_yuv(image, self._orient)
        elif convert:
            image = f.to_ndarray(format="rgb24", src_color_range=f.color_range or None)
            if self._orient is not None:
                image = np.ascontiguousarray(orient(image, self._orient))
        pts = f.pts
        if pts is None:  # raw streams without timestamps: evenly spaced
            pts = round(index / self.info.fps / self.info.time_base)
        return Frame(index, int(pts), float(pts * self.info.time_base), image)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, wanted=None, yuv: bool = False) -> Iterator[Frame]:
        """Every frame in order, as iterating the reader gives them. With ``wanted`` (frame index ->
        bool), the frames it does not want come without pixels (``image`` None): decoded, since the
        codec needs them, but not converted to RGB. With ``yuv`` (where ``yuv420``), images are the
        decoded planes as YuvImage (protect/yuv.py), not converted at all."""
        if self._used:
            raise VideoError(f"{self.path}: a VideoReader is read once; open a new one to read again")
        system = self.yuv420 if yuv else None
        if yuv and system is None:
            raise VideoError(f"{self.path}: frames are not 8-bit 4:2:0 with a known colour matrix; read them as RGB")
        self._used = True
        end = 0.0
        for f in self._chain():
            index = self.frames_decoded
            fr = self._to_frame(f, index, wanted is None or wanted(index), system)
            self.frames_decoded += 1
            end = fr.time
            yield fr
        if self.truncated:
            return
        info = self.info
        if info.frame_count_exact and self.frames_decoded < info.frame_count:
            self._warn_truncated("the stream has fewer frames than its index")
        elif self._track_end is not None and end + 1 / info.fps < self._track_end - max(2 / info.fps, 0.1):
            self._warn_truncated(f"the last frame is at {end:.2f} s of a {self._track_end:.2f} s track")

    def _chain(self):
        first, self._first = self._first, None
        if first is not None:
            yield first
        yield from self._decoder

    def batches(self, batch_size: int, progress: bool | str = False) -> Iterator[FrameBatch]:
        """Frames in batches of ``batch_size`` (the last may be shorter). ``progress``: show a tqdm
        bar counting frames (and frames per second); a string is used as its label."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bar = None
        if progress:
            from tqdm import tqdm
            label = progress if isinstance(progress, str) else os.path.basename(self.path)
            bar = tqdm(total=self.info.frame_count, desc=label, unit="frame", dynamic_ncols=True)
        try:
            buf: list[Frame] = []
            for fr in self:
                buf.append(fr)
                if len(buf) == batch_size:
                    yield self._batch(buf, bar)
                    buf = []
            if buf:
                yield self._batch(buf, bar)
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def _batch(buf: list[Frame], bar) -> FrameBatch:
        if bar is not None:
            bar.update(len(buf))
        return FrameBatch(buf[0].index, np.stack([f.image for f in buf]), [f.pts for f in buf])

    def close(self) -> None:
        self._decoder.close()
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- writing -----------------------------------------------------------------------------------

def _video_codec(fmt: str, source_codec: str) -> tuple[str, dict[str, str]]:
    """Encoder and its options: the source's codec family where the container allows it."""
    if fmt == "webm" or (fmt == "matroska" and source_codec in ("vp8", "vp9", "av1")):
        if source_codec == "vp8":
            return "libvpx", {"crf": "10", "b:v": "4M", "deadline": "good", "cpu-used": "4"}
        return "libvpx-vp9", {"crf": "24", "b:v": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"}
    return "libx264", {"crf": "18", "preset": "fast"}


class VideoWriter:
    """Write upright RGB frames as a video shaped like ``like`` (a reader's ``info``): same frame
    size, time base, display matrix and colour tags; audio streams of ``like.path`` copied.

    Use as a context manager; on an exception nothing is left at ``path``. ``crf`` overrides the
    codec's default quality (lower = better: x264 18, VP9 24, VP8 10)."""

    def __init__(self, path: str | os.PathLike, like: VideoInfo, *, overwrite: bool = False,
                 copy_audio: bool = True, crf: int | None = None):
        self.path = os.fspath(path)
        self.like = like
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in VIDEO_EXTENSIONS:
            raise VideoError(f"{self.path}: unsupported output type {ext or '(none)'}; "
                             f"use one of {', '.join(sorted(VIDEO_EXTENSIONS))}")
        if os.path.exists(self.path):
            if os.path.exists(like.path) and os.path.samefile(self.path, like.path):
                raise VideoError(f"{self.path}: output would replace its own input")
            if not overwrite:
                raise FileExistsError(f"{self.path} exists; choose another name or allow overwriting")
        fmt = VIDEO_EXTENSIONS[ext]
        self.frames_written = 0
        self._last_pts: int | None = None
        self._orient = None
        if like.upright and like.display_matrix is not None:
            self._orient = inverse_orientation(orientation(like.display_matrix))
        self._stack = contextlib.ExitStack()
        self._audio_in = None
        try:
            f = self._stack.enter_context(atomic_open(self.path, "wb"))
            self._out = av.open(f, mode="w", format=fmt)
            self._stack.callback(self._out.close)
            self._add_video(fmt, crf)
            self._add_audio(copy_audio)
        except BaseException as e:
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise

    def _add_video(self, fmt: str, crf: int | None) -> None:
        like = self.like
        codec, options = _video_codec(fmt, like.codec)
        if codec not in av.codecs_available:
            raise VideoError(f"{self.path}: encoder {codec} is missing from this PyAV/FFmpeg build")
        if crf is not None:
            options["crf"] = str(int(crf))
        s = self._out.add_stream(codec, rate=like.fps, options=options)
        s.width, s.height = like.coded_width, like.coded_height
        # x264's 4:2:0 needs even sizes; odd-sized inputs keep full chroma rather than losing a pixel
        # row. libvpx codes odd sizes in 4:2:0 itself (and VP8 has no 4:4:4).
        even = like.coded_width % 2 == 0 and like.coded_height % 2 == 0
        s.pix_fmt = "yuv420p" if even or codec != "libx264" else "yuv444p"
        s.time_base = like.time_base
        s.codec_context.time_base = like.time_base
        cc = s.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc = like.colorspace, like.color_primaries, like.color_trc
        self._range = like.color_range or 1  # unspecified means limited (MPEG) range
        # swscale indexes its YUV coefficients by FFmpeg's colorspace number for these; others
        # (unspecified, RGB, YCgCo) use its default, as the reader's conversion did.
        self._sws_colorspace = like.colorspace if like.colorspace in (1, 4, 5, 6, 7, 9, 10) else None
        # YuvImage frames of this colour matrix and range are encoded from their planes (write)
        self._yuv = (like.colorspace, self._range == 2) if s.pix_fmt == "yuv420p" else None
        cc.color_range = self._range
        if like.sample_aspect_ratio:
            cc.sample_aspect_ratio = like.sample_aspect_ratio
        if like.display_matrix is not None:
            s.set_display_matrix(list(like.display_matrix))
        s.thread_type = "AUTO"
        self._vstream = s

    def _add_audio(self, copy_audio: bool) -> None:
        self._audio_map = {}
        if not copy_audio or not self.like.audio:
            return
        self._audio_in = _open_input(self.like.path)
        self._stack.callback(self._audio_in.close)
        supported = self._out.supported_codecs
        for a in self._audio_in.streams.audio:
            name = a.codec_context.name
            if name not in supported:
                raise VideoError(f"{self.path}: a {os.path.splitext(self.path)[1]} file cannot hold the input's "
                                 f"{name} audio, which is copied, not re-encoded; write to "
                                 f"{os.path.splitext(self.like.path)[1]} instead")
            out = self._audio_map[a.index] = self._out.add_stream_from_template(a)
            if "language" in a.metadata:  # the one stream tag worth keeping (players pick tracks by it)
                out.metadata["language"] = a.metadata["language"]
        self._audio_packets = (p for p in self._audio_in.demux(*self._audio_in.streams.audio)
                               if p.dts is not None)
        self._pending = next(self._audio_packets, None)

    def _mux_audio_until(self, t: float | None) -> None:
        """Copy input audio packets with a timestamp up to ``t`` seconds (all for ``None``)."""
        while self._audio_map and self._pending is not None:
            p = self._pending
            if t is not None and float(p.dts * p.time_base) > t:
                return
            p.stream = self._audio_map[p.stream.index]
            self._out.mux(p)
            self._pending = next(self._audio_packets, None)

    def _mux_video(self, packets) -> None:
        for p in packets:
            if p.dts is not None:
                self._mux_audio_until(float(p.dts * p.time_base))
            self._out.mux(p)

    def takes_yuv(self, system: tuple[int, bool] | None) -> bool:
        """YuvImage frames of this colour system (colorspace, full range) are encoded from their
        planes as they are (``write``), with no conversion."""
        return system is not None and self._yuv == tuple(system)

    def write(self, image: np.ndarray | YuvImage, pts: int | None = None) -> None:
        """Append one upright HxWx3 uint8 RGB frame, or a YuvImage (protect/yuv.py) of that size.
        ``pts`` (in ``like.time_base`` units) should be the source frame's pts; without it frames are
        spaced evenly at ``like.fps``."""
        like = self.like
        if isinstance(image, YuvImage):
            if image.shape != (like.height, like.width, 3):
                raise ValueError(f"{self.path}: frames must be {like.width}x{like.height}, got "
                                 f"{image.width}x{image.height}")
            if self.takes_yuv((image.colorspace, image.full_range)):
                coded = orient_yuv(image, self._orient) if self._orient is not None else image
                frame = av.VideoFrame.from_ndarray(coded.buffer, format="yuv420p")
                frame.color_range, frame.colorspace = self._range, like.colorspace
                self._encode(frame, pts)
                return
            image = image.to_rgb()
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (like.height, like.width, 3):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"{self.path}: frames must be uint8 arrays of shape "
                             f"({like.height}, {like.width}, 3), got {got}")
        coded = orient(image, self._orient) if self._orient is not None else image
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(coded), format="rgb24")
        frame = frame.reformat(format=self._vstream.pix_fmt, dst_colorspace=self._sws_colorspace,
                               dst_color_range=self._range)
        self._encode(frame, pts)

    def _encode(self, frame: av.VideoFrame, pts: int | None) -> None:
        like = self.like
        if pts is None:
            pts = round(self.frames_written / like.fps / like.time_base)
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders need strictly increasing timestamps
        self._last_pts = pts
        frame.pts, frame.time_base = pts, like.time_base
        self._mux_video(self._vstream.encode(frame))
        self.frames_written += 1

    def write_batch(self, images: np.ndarray, pts: list[int] | None = None) -> None:
        for i, im in enumerate(images):
            self.write(im, None if pts is None else pts[i])

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio, and move the file into place."""
        if self._stack is None:
            return
        stack, self._stack = self._stack, None
        try:
            if self.frames_written == 0:
                raise VideoError(f"{self.path}: no frames were written")
            self._mux_video(self._vstream.encode(None))
            self._mux_audio_until(None)
        except BaseException as e:
            stack.__exit__(type(e), e, e.__traceback__)
            raise
        stack.close()

    def abort(self) -> None:
        """Discard the output (nothing appears at ``path``)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            err = VideoError(f"{self.path}: aborted")
            with contextlib.suppress(Exception):
                stack.__exit__(VideoError, err, None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video_with_tone(path: str | os.PathLike, frames, fps: int, *, vcodec: str = "libx264",
                          vcodec_options: dict | None = None, acodec: str | None = "aac", tone_hz: float = 440.0,
                          amplitude: float = 0.3, rotation: float | None = None, pts=None,
                          container_options: dict | None = None) -> str:
    """Encode RGB frames (uint8 HxWx3, frames stored as given) into a new video, with a mono sine
    tone as its audio track (``acodec=None``: none). For demos, benchmarks and tests that need a
    video with sound; ``rotation`` writes a display matrix (counter-clockwise degrees), ``pts`` custom
    frame timestamps in 1/fps units."""
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    out = av.open(str(path), "w", options=container_options or {})
    try:
        vs = out.add_stream(vcodec, rate=fps, options=vcodec_options or {})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = None
        if acodec:
            aus = out.add_stream(acodec, rate=48000 if acodec == "libopus" else 44100)
            aus.layout = "mono"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = (i if pts is None else pts[i]), Fraction(1, fps)
            out.mux(vs.encode(f))
        out.mux(vs.encode())
        if aus is not None:
            sr = aus.rate
            total = sr * len(frames) // fps
            for s in range(0, total, 960):  # 960: a frame size every audio codec here accepts
                t = np.arange(s, min(s + 960, total)) / sr
                af = av.AudioFrame.from_ndarray((amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None],
                                                format="fltp", layout="mono")
                af.sample_rate, af.pts = sr, s
                out.mux(aus.encode(af))
            out.mux(aus.encode())
    finally:
        out.close()
    return str(path)
