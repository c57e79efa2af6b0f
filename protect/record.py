"""The record of an anonymization: what recovery needs to re-cut exactly the same crops.

A record is versioned JSON. For PNG output it lives inside the file (an iTXt chunk named
``face-identity-transformer``); for every other output (JPEG, WebP, TIFF, BMP, video) it is a sidecar
file beside it, ``OUTPUT.record.json``. It holds:

    format, version       "face-identity-transformer/record", 2 (version 1 records are read too)
    kdf                   which passphrase derivation made the codes (models/passwords.py): 2 normalises
                          the passphrase (Unicode NFC, no byte-order mark) before scrypt; version 1
                          records, which lack the key, were made by derivation 1 (the raw text)
    kind                  "image" or "video"
    output                what the record belongs to: image -> width, height, channels, dtype and
                          the SHA-256 of its decoded pixels; video -> width, height, frame count,
                          fps and the SHA-256 of the file
    checkpoint            the generator's fingerprint, img_size, passwd_length, use_minus_one
    framing               mean_landmarks (5x2, normalised) and where they came from
                          ("checkpoint", "casia-default", "user"); mask name (the blend region)
    detector              {"name": "dlib-hog", "upsample": .., "min_face": .., ...} or {"name": "given"}
    passwords             "shared" (one password for every face) or "per-face" (one per face key)
    precision             "fp32" or "bf16" (informational: recovery may use either)
    faces (image)         [{"key": K, "transform": [a, b, c, d, e, f]}]: the 2x3 image->crop matrix
    tracks (video)        [{"key": K, "first_frame": F, "transforms": [[6 floats] per frame],
                            "detected": [frame indices with a detection]}]

Never in a record: the password, its code, or anything computed from them (not even a hash: with
16-bit codes a hash would give the code away in 65,536 tries). Nor the faces' landmarks: the
similarity transform says where a face is and how large, not its shape.

Recovery refuses a record that does not fit its image (``check_recovery``; the message names the
record): its sizes must be the image's, every crop must overlap the image and be of a size a face can
have there (``check_crops``), and no face may be listed twice.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from models.passwords import KDF_VERSION, KDF_VERSIONS
from training.checkpoint import check_mean_landmarks
from utils.config import check_number

FORMAT = "face-identity-transformer/record"
VERSION = 2
VERSIONS = (1, 2)  # the record versions this tool reads
PNG_KEY = "face-identity-transformer"
SIDECAR_SUFFIX = ".record.json"


class RecordError(ValueError):
    """A record that is unreadable or does not belong to this image, video or checkpoint."""


def pixel_sha256(native: np.ndarray) -> str:
    """SHA-256 over the dtype, shape and bytes of decoded pixels."""
    a = np.ascontiguousarray(native)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path(path: str) -> str:
    return os.fspath(path) + SIDECAR_SUFFIX


@dataclass
class Record:
    kind: str
    checkpoint: dict
    framing: dict
    detector: dict
    passwords: str
    precision: str
    output: dict = field(default_factory=dict)
    faces: list = field(default_factory=list)
    tracks: list = field(default_factory=list)
    kdf: int = KDF_VERSION  # the passphrase derivation of its codes
    source: str = field(default="record", compare=False)  # where it was read from: named in messages

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "version": VERSION, "kdf": self.kdf, "kind": self.kind, "output": self.output,
             "checkpoint": self.checkpoint, "framing": self.framing, "detector": self.detector,
             "passwords": self.passwords, "precision": self.precision}
        if self.kind == "image":
            d["faces"] = self.faces
        else:
            d["tracks"] = self.tracks
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "record") -> Record:
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise RecordError(f"{where}: not a JSON record ({e})") from None
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d, where: str = "record") -> Record:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise RecordError(f"{where}: not a face-identity-transformer record (key 'format')")
        version = d.get("version")
        if isinstance(version, bool) or version not in VERSIONS:
            raise RecordError(f"{where}: record version {version!r} is not supported (this tool reads "
                              f"versions {', '.join(map(str, VERSIONS))})")
        kdf = 1 if version == 1 else d.get("kdf")
        if isinstance(kdf, bool) or kdf not in KDF_VERSIONS:
            raise RecordError(f"{where}: key 'kdf' (the passphrase derivation) must be one of "
                              f"{', '.join(map(str, KDF_VERSIONS))}, got {kdf!r}")
        kind = d.get("kind")
        if kind not in ("image", "video"):
            raise RecordError(f"{where}: key 'kind' must be 'image' or 'video', got {kind!r}")
        for key, typ in (("output", dict), ("checkpoint", dict), ("framing", dict), ("detector", dict),
                         ("passwords", str), ("precision", str)):
            if not isinstance(d.get(key), typ):
                raise RecordError(f"{where}: key '{key}' is missing or not a {typ.__name__}")
        if d["passwords"] not in ("shared", "per-face"):
            raise RecordError(f"{where}: key 'passwords' must be 'shared' or 'per-face', got {d['passwords']!r}")
        ck = d["checkpoint"]
        if not isinstance(ck.get("fingerprint"), str) or not isinstance(ck.get("img_size"), int):
            raise RecordError(f"{where}: key 'checkpoint' needs 'fingerprint' and 'img_size'")
        check_number(ck["img_size"], f"{where}: key 'checkpoint.img_size'", low=1, integer=True, error=RecordError)
        for key in ("width", "height") + (("frames",) if kind == "video" else ()):
            check_number(d["output"].get(key), f"{where}: key 'output.{key}'", low=0 if key == "frames" else 1,
                         integer=True, error=RecordError)
        if d["detector"].get("min_face") is not None:
            check_number(d["detector"]["min_face"], f"{where}: key 'detector.min_face'", low=0, error=RecordError)
        check_mean_landmarks(d["framing"].get("mean_landmarks"), f"{where}: key 'framing.mean_landmarks'", RecordError)
        rec = cls(kind, ck, d["framing"], d["detector"], d["passwords"], d["precision"], d["output"], kdf=kdf,
                  source=where)
        if kind == "image":
            rec.faces = _check_faces(d.get("faces"), where)
        else:
            rec.tracks = _check_tracks(d.get("tracks"), where)
        return rec

    @property
    def mean_landmarks(self) -> np.ndarray:
        return np.asarray(self.framing["mean_landmarks"], dtype=np.float64)

    def check_model(self, model, where: str = "record") -> None:
        """The record must have been made with this generator (same weights, same input size)."""
        ck = self.checkpoint
        if ck["fingerprint"] != model.fingerprint:
            raise RecordError(f"{where}: made with another generator (fingerprint {ck['fingerprint'][:12]}...); "
                              f"this checkpoint is {model.fingerprint[:12]}... -- recover with the checkpoint "
                              f"that anonymized it")
        if ck["img_size"] != model.img_size or ck.get("passwd_length", model.passwd_length) != model.passwd_length:
            raise RecordError(f"{where}: made for a {ck['img_size']} px, {ck.get('passwd_length')}-bit generator; "
                              f"this one is {model.img_size} px, {model.passwd_length}-bit")


def _transform(v, where: str) -> list[float]:
    a = np.asarray(v, dtype=np.float64) if isinstance(v, list) else None
    if a is None or a.shape != (6,) or not np.isfinite(a).all() or abs(a[0] * a[4] - a[1] * a[3]) < 1e-12:
        raise RecordError(f"{where}: a transform must be 6 finite numbers of an invertible 2x3 matrix")
    return [float(x) for x in a]


def _check_faces(faces, where: str) -> list:
    if not isinstance(faces, list):
        raise RecordError(f"{where}: key 'faces' is missing or not a list")
    out = []
    for i, f in enumerate(faces):
        if not isinstance(f, dict) or not isinstance(f.get("key"), int):
            raise RecordError(f"{where}: faces[{i}] needs an integer 'key'")
        out.append({"key": f["key"], "transform": _transform(f.get("transform"), f"{where}: faces[{i}]")})
    _unique_keys([f["key"] for f in out], "faces", where)
    return out


def _unique_keys(keys: list, what: str, where: str) -> None:
    seen = {}
    for i, k in enumerate(keys):
        if k in seen:
            raise RecordError(f"{where}: {what}[{seen[k]}] and {what}[{i}] have the same key {k}: a face is listed "
                              "twice")
        seen[k] = i


def _check_tracks(tracks, where: str) -> list:
    if not isinstance(tracks, list):
        raise RecordError(f"{where}: key 'tracks' is missing or not a list")
    out = []
    for i, t in enumerate(tracks):
        if not isinstance(t, dict) or not isinstance(t.get("key"), int) or not isinstance(t.get("first_frame"), int) \
                or t["first_frame"] < 0 or not isinstance(t.get("transforms"), list) or not t["transforms"]:
            raise RecordError(f"{where}: tracks[{i}] needs integer 'key' and 'first_frame' and a list 'transforms'")
        tf = [_transform(m, f"{where}: tracks[{i}]") for m in t["transforms"]]
        detected = t.get("detected", [])
        if not isinstance(detected, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in detected):
            raise RecordError(f"{where}: tracks[{i}] key 'detected' must be a list of frame numbers")
        out.append({"key": t["key"], "first_frame": t["first_frame"], "transforms": tf, "detected": detected})
    _unique_keys([t["key"] for t in out], "tracks", where)
    return out


def max_faces(width: int, height: int, min_face: float) -> int:
    """How many faces of side ``min_face`` px fit side by side in a width x height image: the most a
    record can list for it (more can only come from a damaged or crafted record)."""
    m = max(float(min_face), 1.0)
    return max(1, int(width // m) * int(height // m))


def check_face_count(count: int, width: int, height: int, min_face: float, where: str = "record") -> None:
    """Refuse a record listing more faces (in one frame) than ``max_faces`` before any work on them."""
    limit = max_faces(width, height, min_face)
    if count > limit:
        raise RecordError(f"{where}: lists {count} faces, but at most {limit} faces of {min_face:g} px fit a "
                          f"{width}x{height} image; the record is damaged or was not made by this tool")


def active_tracks(tracks: list) -> int:
    """The largest number of tracks that cover one frame (a video record's faces per frame)."""
    events = sorted([(t["first_frame"], 1) for t in tracks] +
                    [(t["first_frame"] + len(t["transforms"]), -1) for t in tracks])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def crop_corners(transforms, size: int) -> np.ndarray:
    """(N, 4, 2): the corners, in image pixels, of the size x size crops cut by N 2x3 image->crop
    matrices (pixel-index coordinates: a crop spans -0.5 .. size - 0.5)."""
    m = np.asarray(transforms, np.float64).reshape(-1, 2, 3)
    q = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    return np.einsum("nij,nkj->nki", np.linalg.inv(m[:, :, :2]), q[None] - m[:, None, :, 2])


def _overlaps(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N,) whether each convex quad overlaps the image rectangle (separating-axis test)."""
    rect = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    edges = np.roll(corners, -1, axis=1)[:, :2] - corners[:, :2]
    axes = np.concatenate([np.broadcast_to(np.eye(2), (len(corners), 2, 2)),
                           np.stack([-edges[..., 1], edges[..., 0]], -1)], axis=1)  # (N, 4, 2)
    a = np.einsum("nkd,nad->nak", corners, axes)  # (N, axes, corners)
    b = np.einsum("kd,nad->nak", rect, axes)
    return ((a.max(-1) > b.min(-1)) & (b.max(-1) > a.min(-1))).all(-1)


def check_crops(transforms, size: int, width: int, height: int, min_face: float, where: str = "record",
                names: list[str] | None = None) -> None:
    """Every crop must fit a width x height image: overlap it, have a side of at least
    max(2, min_face / 2) image pixels (a face of min_face px has a crop about 2.5 times its side) and at
    most 8 times the image's longer side, and no two crops may coincide (one face listed twice)."""
    if not len(transforms):
        return
    names = names or [f"faces[{i}]" for i in range(len(transforms))]
    corners = crop_corners(transforms, size)
    side = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=-1)
    low, high = max(2.0, float(min_face) / 2), 8.0 * max(width, height)
    inside = _overlaps(corners, width, height)
    for i in range(len(corners)):
        if not inside[i]:
            x, y = corners[i].mean(0)
            raise RecordError(f"{where}: {names[i]}: its crop (centre {x:.6g}, {y:.6g}) lies outside the "
                              f"{width}x{height} image")
        if not low <= side[i] <= high:
            raise RecordError(f"{where}: {names[i]}: its crop is {side[i]:.3g} px wide, but crops of faces in a "
                              f"{width}x{height} image are {low:g} to {high:g} px wide")
    seen: dict = {}
    for i, c in enumerate(np.rint(corners).astype(np.int64)):
        key = c.tobytes()
        if key in seen:
            raise RecordError(f"{where}: {names[seen[key]]} and {names[i]} are the same crop: a face is listed twice")
        seen[key] = i


def _check_fit(record: Record, width: int, height: int, min_face: float, where: str) -> None:
    """The record's sizes are the input's, and its crops fit it (``check_crops``)."""
    out = record.output
    if (out.get("width"), out.get("height")) != (width, height):
        raise RecordError(f"{where}: made for a {out.get('width')}x{out.get('height')} "
                          f"{'video' if record.kind == 'video' else 'image'}, not this {width}x{height} one")
    size = int(record.checkpoint["img_size"])
    if record.kind == "image":
        check_crops([f["transform"] for f in record.faces], size, width, height, min_face, where)
        return
    frames = out.get("frames", 0)
    by_frame: dict[int, tuple[list, list]] = {}
    for i, t in enumerate(record.tracks):
        end = t["first_frame"] + len(t["transforms"])
        if end > frames:
            raise RecordError(f"{where}: tracks[{i}] runs to frame {end - 1}, but the video has {frames} frames")
        for j, m in enumerate(t["transforms"]):
            tf, names = by_frame.setdefault(t["first_frame"] + j, ([], []))
            tf.append(m)
            names.append(f"tracks[{i}] (frame {t['first_frame'] + j})")
    for tf, names in by_frame.values():
        check_crops(tf, size, width, height, min_face, where, names)


def check_recovery(record: Record, kind: str, *, model, digest: str, scope: str, width: int, height: int,
                   min_face: float, src: str | None = None) -> None:
    """Refuse to recover a photo (``kind`` "image") or a video with a record that was not made for it.

    The one place that checks, in this order: the record's kind, how many faces it lists (before any
    work on them), that it fits the input (sizes, crops, no face twice), the generator (``model``),
    the input's ``digest`` (a photo's pixels, a video file's bytes) and the password ``scope``.
    Messages name the record (``record.source``), and ``src`` the video."""
    video = kind == "video"
    at = f"{src}: " if src else ""
    where = f"{at}{record.source}"
    if record.kind != kind:
        raise RecordError(f"{where}: the record belongs to a photo, not a video" if video
                          else f"{where}: this record belongs to a video, not a photo")
    faces = active_tracks(record.tracks) if video else len(record.faces)
    check_face_count(faces, width, height, min_face, f"{where} (faces in one frame)" if video else where)
    _check_fit(record, width, height, min_face, where)
    record.check_model(model, where)
    if record.output.get("sha256") != digest:
        if video:
            raise RecordError(f"{where}: the record does not match this file (it was re-encoded, edited, or the record "
                              f"belongs to another video)")
        raise RecordError(f"{where}: the record does not match this image (made for a {record.output.get('width')}x"
                          f"{record.output.get('height')} image with other pixels): it was edited or re-encoded, "
                          f"or the record belongs to another file")
    if record.passwords != scope:
        if video:
            how = "--per-face" if record.passwords == "per-face" else "without --per-face"
            raise ValueError(f"{src or 'this video'} was anonymized with {record.passwords} passwords; recover it "
                             f"the same way ({how})")
        how = "--per-face / FacePasswords.per_face" if record.passwords == "per-face" else "one password"
        raise ValueError(f"this image was anonymized with {record.passwords} passwords; recover it the same way "
                         f"({how})")


def read_sidecar(path: str) -> Record | None:
    """The sidecar record of ``path``, or None when there is none."""
    side = sidecar_path(path)
    if not os.path.isfile(side):
        return None
    with open(side, "rb") as f:
        return Record.from_json(f.read(), side)
