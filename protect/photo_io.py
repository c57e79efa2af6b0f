"""Photos in and out for the face protector: every pixel format kept, EXIF rotation applied, bombs refused.

Reading (``load_photo``) returns the pixels in their native form, so that anonymizing never changes
more than the faces: gray (HxW), gray + alpha (HxWx2), RGB, RGBA; 8 or 16 bits (16-bit colour PNG
and TIFF are decoded with OpenCV, which keeps the depth Pillow would drop). Other modes are
converted with a note (palette -> RGB(A), CMYK/YCbCr/LAB -> RGB, 1-bit -> gray, 32-bit integer gray
-> 16 bits when it fits). EXIF rotation is applied to the pixels, so faces are upright for the
detector; outputs are written upright without EXIF, which a privacy tool should drop anyway (GPS
position, camera serial). The ICC colour profile is kept. Animated and multi-page images are
refused: processing only their first frame would leave the other frames unprotected. Images larger
than ``max_pixels`` are refused from their header, before any pixel is decoded.

Writing (``encode_photo``) picks the format from the extension. PNG carries the record in an iTXt
chunk (placed before the image data, so that reading the header finds it); other formats get a
sidecar file. JPEG is lossy: recovery from it degrades, and the caller warns. The record's pixel
hash is taken from the encoded bytes decoded again, exactly as recovery will read them.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from protect.record import PNG_KEY, Record
from utils.fileio import IMAGE_EXTENSIONS

__all__ = ["PhotoError", "Photo", "load_photo", "decode_photo", "encode_photo", "output_extension",
           "jpeg_without_metadata", "IMAGE_EXTENSIONS", "LOSSY_EXTENSIONS", "WRITABLE_EXTENSIONS",
           "DEFAULT_MAX_PIXELS", "png_with_text"]

DEFAULT_MAX_PIXELS = 100_000_000
LOSSY_EXTENSIONS = {".jpg", ".jpeg"}
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF",
                ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM"}
WRITABLE_EXTENSIONS = frozenset(_PIL_FORMATS)  # photo outputs (GIF is read, never written: 256 colours)
_CONVERTED = {"1": "L", "P": None, "PA": "RGBA", "RGBX": "RGB", "RGBa": "RGBA", "La": "LA", "CMYK": "RGB",
              "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


class PhotoError(ValueError):
    """A photo that cannot be read or written; the message names the file and the problem."""


@dataclass
class Photo:
    native: np.ndarray
    icc: bytes | None = None
    record: Record | None = None  # from a PNG's record chunk
    notes: list = field(default_factory=list)
    orientation: int = 1  # the EXIF orientation that was applied to the pixels


def output_extension(ext: str) -> str:
    """The extension an output of this input type gets: GIF is written as PNG (GIF would quantise)."""
    ext = ext.lower()
    return ".png" if ext == ".gif" else ext


# ---- reading -----------------------------------------------------------------------------------

def load_photo(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PhotoError(f"{path}: cannot read ({e.strerror})") from None
    return decode_photo(data, path, max_pixels)


def decode_photo(data: bytes, where: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked from the header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode(data, where, max_pixels)
    except PhotoError:
        raise
    except Exception as e:  # noqa: BLE001 -- any decoder failure means this file is unusable
        msg = str(e).split("\n")[0]
        what = "truncated or corrupt image" if "truncat" in msg.lower() or isinstance(e, (OSError, SyntaxError)) \
            else "unreadable image"
        raise PhotoError(f"{where}: {what} ({type(e).__name__}: {msg})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _decode(data: bytes, where: str, max_pixels: int) -> Photo:
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001
        raise PhotoError(f"{where}: not an image Pillow can read ({type(e).__name__})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise PhotoError(f"{where}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of "
                         f"{max_pixels / 1e6:.0f} (a decompression bomb guard; raise it with --max-megapixels)")
    if getattr(im, "n_frames", 1) > 1:
        raise PhotoError(f"{where}: has {im.n_frames} frames (animated or multi-page); only still images are "
                         f"processed, since the other frames would stay unprotected (convert it to a video)")
    notes = []
    args = im.tile[0].args if im.tile else ""  # before anything loads the pixels (and empties tile)
    rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args and \
        isinstance(args[0], str) else ""
    orientation = int(im.getexif().get(0x0112, 1) or 1)
    record = None
    text = im.info.get(PNG_KEY) if im.format == "PNG" else None  # our chunk precedes the image data
    if isinstance(text, (str, bytes)):
        record = Record.from_json(text, f"{where} (record chunk)")
    icc = im.info.get("icc_profile")
    if im.mode in ("RGB", "RGBA") and ";16" in rawmode:
        native = _decode_16bit_colour(data, where)
        notes.append("16-bit colour image")
    else:
        im.load()
        native = _native_from_pil(im, where, notes)
    if orientation != 1:
        native = _apply_orientation(native, orientation)
        notes.append(f"EXIF orientation {orientation} applied (written upright, without EXIF)")
    return Photo(np.ascontiguousarray(native), icc, record, notes, orientation)


def _decode_16bit_colour(data: bytes, where: str) -> np.ndarray:
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise PhotoError(f"{where}: cannot decode this 16-bit colour image")
    return a[:, :, [2, 1, 0, 3][: a.shape[2]]]  # BGR(A) -> RGB(A)


def _native_from_pil(im: Image.Image, where: str, notes: list) -> np.ndarray:
    mode = im.mode
    if mode in _CONVERTED:
        target = _CONVERTED[mode] or ("RGBA" if "transparency" in im.info else "RGB")
        notes.append(f"{mode} image converted to {target}")
        im = im.convert(target)
        mode = target
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise PhotoError(f"{where}: 32-bit integer pixels outside 0..65535 are not supported")
        notes.append("32-bit integer gray image written as 16 bits")
        return a.astype(np.uint16)
    raise PhotoError(f"{where}: pixel mode {mode} is not supported (use 8 or 16-bit gray or RGB(A))")


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1..8 -> the upright image (as Pillow's ImageOps.exif_transpose)."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: np.swapaxes(x, 0, 1), 6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
           7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1], 8: lambda x: np.swapaxes(x, 0, 1)[::-1]}
    return ops[orientation](a) if orientation in ops else a


# ---- writing -----------------------------------------------------------------------------------

def encode_photo(native: np.ndarray, ext: str, *, icc: bytes | None = None, record: Record | None = None,
                 jpeg_quality: int = 95) -> tuple[bytes, np.ndarray, list[str]]:
    """Encode for a file with extension ``ext``. Returns (bytes, the pixels as they will read back,
    notes). With a ``record``, its ``output`` is set to describe those pixels; PNG embeds it."""
    ext = ext.lower()
    if ext not in _PIL_FORMATS:
        raise PhotoError(f"cannot write {ext or 'files without an extension'}: use one of "
                         f"{', '.join(sorted(_PIL_FORMATS))}")
    notes = []
    a = native
    fmt = _PIL_FORMATS[ext]
    if fmt in ("JPEG", "BMP", "PPM", "WEBP") and a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
        notes.append(f"{ext} holds 8 bits per channel: written with 8")
    if fmt in ("JPEG", "PPM") and a.ndim == 3 and a.shape[2] in (2, 4):
        a = a[:, :, : a.shape[2] - 1]
        notes.append(f"{ext} has no alpha channel: transparency dropped")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint16 and a.ndim == 3:
        if a.shape[2] == 2:  # gray + alpha at 16 bits: OpenCV writes 1, 3 or 4 channels
            a = np.concatenate([np.repeat(a[:, :, :1], 3, 2), a[:, :, 1:]], 2)
            notes.append("16-bit gray + alpha written as 16-bit RGBA")
        ok, buf = cv2.imencode(ext, a[:, :, [2, 1, 0, 3][: a.shape[2]]])
        if not ok:
            raise PhotoError(f"OpenCV could not encode a 16-bit colour {ext} image")
        data = buf.tobytes()
    else:
        im = Image.fromarray(np.ascontiguousarray(a))
        kwargs = {}
        if icc and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
            kwargs["icc_profile"] = icc
        if fmt == "JPEG":
            kwargs.update(quality=jpeg_quality, subsampling=0)
        elif fmt == "WEBP":
            kwargs.update(lossless=True, exact=True)
        elif fmt == "PNG":
            kwargs.update(compress_level=6)
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kwargs)
        data = buf.getvalue()
    decoded = decode_photo(data, "encoded output", max_pixels=2 ** 62).native
    if record is not None:
        from protect.protector import native_info
        record.output = native_info(decoded)
        if fmt == "PNG":
            data = png_with_text(data, PNG_KEY, record.to_json())
    return data, decoded, notes


def png_with_text(png: bytes, key: str, text: str) -> bytes:
    """Insert a compressed iTXt chunk before the first IDAT chunk of a PNG file."""
    body = key.encode("latin-1") + b"\0" + b"\1\0" + b"\0" + b"\0" + zlib.compress(text.encode("utf-8"), 9)
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            return png[:pos] + chunk + png[pos:]
        pos += 12 + length
    raise PhotoError("encoded PNG has no image data")


_JFIF = b"JFIF\x00"
_KEPT_APP = {0xE0: _JFIF, 0xE2: b"ICC_PROFILE\x00", 0xEE: b"Adobe"}  # JFIF header, colour profile, colour transform


def jpeg_without_metadata(data: bytes) -> bytes | None:
    """The same JPEG stream without its metadata, its pixels untouched (no re-encoding), or None when
    the file is not a plain JPEG stream that can be rewritten this way.

    Kept: the JFIF header (with its thumbnail dropped), the ICC profile, Adobe's colour-transform
    segment, and what decoding needs (tables, frame and scan headers, the coded data). Everything
    else goes: EXIF (and its GPS, maker notes and thumbnail), XMP, IPTC/Photoshop, comments, other
    application segments, and anything after the end of the image (MPF's extra pictures)."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return None
    out, pos = [b"\xff\xd8"], 2
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            out.append(b"\xff\xd9")
            return b"".join(out)
        if pos + 4 > n:
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        if marker == 0xDA:  # scan header, then coded data up to the next marker (not stuffing or a restart)
            while True:
                end = data.find(b"\xff", end)
                if end < 0 or end + 1 >= n:
                    return None
                follower = data[end + 1]
                if follower == 0x00 or 0xD0 <= follower <= 0xD7:
                    end += 2
                elif follower == 0xFF:
                    end += 1
                else:
                    break
            out.append(data[pos:end])
        elif marker == 0xE0 and data[pos + 4:pos + 9] == _JFIF and length >= 16:
            out.append(b"\xff\xe0\x00\x10" + data[pos + 4:pos + 16] + b"\x00\x00")  # no thumbnail
        elif marker in _KEPT_APP and data[pos + 4:pos + 4 + len(_KEPT_APP[marker])] == _KEPT_APP[marker]:
            out.append(data[pos:end])
        elif 0xC0 <= marker <= 0xCF and marker != 0xC8 or marker in (0xDB, 0xDD):  # frames, tables, restarts
            out.append(data[pos:end])
        pos = end
    return None
