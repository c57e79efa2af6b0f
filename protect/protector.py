"""Anonymize and recover the faces of one photo with a password (the Python API).

    from protect.protector import FaceProtector
    from models.passwords import Password

    protector = FaceProtector("checkpoint.pth.tar")           # or an InferenceModel; dlib HOG by default
    pw = Password.from_passphrase("correct horse", protector.passwd_length)
    anonymized, record = protector.anonymize(image, pw)       # image: HxWx3 uint8 RGB (or gray/RGBA, 16-bit)
    restored = protector.recover(anonymized, record, pw)      # the same password: its complement is applied
    protector.anonymize(image, pw, landmarks=[five_points])   # your own detector: (5, 2) points per face

Each face is framed by the similarity that takes its five points onto the generator's mean
landmarks (protect/frame.py), passed through G at the checkpoint's size, warped back and
blended with a feathered mask; nothing outside the masks changes. The record (protect/record.py)
holds the exact transforms, so recovery re-cuts the same crops; without one, recovery detects the
faces again and is approximate (``ApproximateRecoveryWarning``). A wrong password is not an error:
it gives another realistic face, as in the paper.

Passwords per face (``FacePasswords``): one password for every face ("shared"), or one per face
("per-face"): either a list of Passwords in face order, or codes derived from ONE passphrase and each
face's key by the same scrypt KDF as Password.from_passphrase (passphrase + U+241F + "face K"), so a
code found for one face says nothing about the others and the user still types one passphrase. Face
keys: the index of the face in left-to-right order in a photo (in the order given with
``landmarks``), the track id in a video.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.passwords import KDF_VERSION, KDF_VERSIONS, Password, normalise_passphrase, password_from_text
from protect.face_detect import DetectedFace, FaceDetector
from protect.frame import BLENDS, blend_kind, blend_mask, crop_points, cut_crops, face_transform, paste_faces, work_rgb
from protect.record import Record, RecordError, check_crops, check_recovery, pixel_sha256
from training.checkpoint import CASIA_MEAN_LANDMARKS, InferenceModel, check_mean_landmarks

__all__ = ["FaceProtector", "FacePasswords", "Outcome", "ApproximateRecoveryWarning", "RecordError"]

_SEP = "\u241f"  # SYMBOL FOR UNIT SEPARATOR: cannot be typed by accident inside a passphrase


class ApproximateRecoveryWarning(UserWarning):
    """Recovery without a record: faces were detected again, so the crops differ slightly."""


class FacePasswords:
    """Which password each face gets. Holds secrets: never printed, never pickled.

    From text (``from_text``: a passphrase or ``code:...``), codes are derived when first needed, by
    the passphrase derivation ``kdf`` (models/passwords.py); ``derived_by(record.kdf)`` gives the
    same passwords by the derivation that made a record, so records made before passphrases were
    normalised still recover."""

    __slots__ = ("_shared", "_text", "_phrase", "_given", "_length", "_kdf", "_plain", "_cache")

    def __init__(self, *, shared: Password | None = None, passphrase: str | None = None,
                 given: Sequence[Password] | None = None, text: str | None = None, length: int = 16):
        if sum(x is not None for x in (shared, passphrase, given, text)) != 1:
            raise ValueError("give exactly one of: a shared Password, a shared passphrase (text), a passphrase for "
                             "per-face codes, a list")
        for phrase in (passphrase, text):
            if phrase is not None and not (isinstance(phrase, str) and normalise_passphrase(phrase)):
                raise ValueError("the passphrase is empty")
        if given is not None:
            given = list(given)
            if not given or not all(isinstance(p, Password) for p in given):
                raise TypeError("a per-face password list must hold Password objects")
        if shared is not None and not isinstance(shared, Password):
            raise TypeError(f"expected a Password, got {type(shared).__name__}")
        source = passphrase if passphrase is not None else text
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_phrase", passphrase)
        object.__setattr__(self, "_given", given)
        object.__setattr__(self, "_length", shared.length if shared is not None else
                           given[0].length if given else int(length))
        object.__setattr__(self, "_kdf", KDF_VERSION)
        # already normalised: every derivation gives the same codes (one scrypt, not one per derivation)
        object.__setattr__(self, "_plain", source is not None and normalise_passphrase(source) == source)
        object.__setattr__(self, "_cache", {})

    @classmethod
    def per_face(cls, passphrase: str, length: int = 16) -> FacePasswords:
        return cls(passphrase=passphrase, length=length)

    @classmethod
    def from_text(cls, text: str, length: int = 16, per_face: bool = False) -> FacePasswords:
        """What a user typed: one passphrase (or ``code:...``) for every face, or per-face codes."""
        return cls(passphrase=text, length=length) if per_face else cls(text=text, length=length)

    def derived_by(self, kdf: int) -> FacePasswords:
        """These passwords with passphrases derived by derivation ``kdf`` (a record's)."""
        if kdf not in KDF_VERSIONS:
            raise ValueError(f"unknown passphrase derivation {kdf!r}")
        other = object.__new__(FacePasswords)
        for key in self.__slots__:
            object.__setattr__(other, key, getattr(self, key))
        object.__setattr__(other, "_kdf", kdf)
        return other

    @property
    def scope(self) -> str:
        return "shared" if self._shared is not None or self._text is not None else "per-face"

    @property
    def length(self) -> int:
        return self._length

    def for_key(self, key: int) -> Password:
        if self._shared is not None:
            return self._shared
        if self._given is not None:
            if not 0 <= key < len(self._given):
                raise ValueError(f"face {key} has no password: {len(self._given)} passwords were given")
            return self._given[key]
        kdf = KDF_VERSION if self._plain else self._kdf
        slot = (kdf, None if self._text is not None else int(key))
        if slot not in self._cache:
            if self._text is not None:
                self._cache[slot] = password_from_text(self._text, self._length, kdf)
            else:
                self._cache[slot] = Password.from_passphrase(f"{self._phrase}{_SEP}face {int(key)}", self._length, kdf)
        return self._cache[slot]

    def __repr__(self) -> str:
        return f"FacePasswords(<{self.scope}, {self._length} bits, hidden>)"

    __str__ = __repr__

    def __setattr__(self, key, value):
        raise AttributeError("FacePasswords is immutable")

    def __reduce__(self):
        raise TypeError("passwords are never pickled or saved")


def as_face_passwords(password, length: int) -> FacePasswords:
    """A Password, a passphrase string, a list of Passwords (one per face) or a FacePasswords."""
    if isinstance(password, FacePasswords):
        passwords = password
    elif isinstance(password, Password):
        passwords = FacePasswords(shared=password)
    elif isinstance(password, str):
        passwords = FacePasswords(text=password, length=length)
    elif isinstance(password, (list, tuple)):
        passwords = FacePasswords(given=password)
    else:
        raise TypeError(f"expected a Password, a passphrase, a list of Passwords or FacePasswords, "
                        f"got {type(password).__name__}")
    if passwords.length != length:
        raise ValueError(f"the password has {passwords.length} bits but this generator takes {length}")
    return passwords


@dataclass
class Outcome:
    """Result of one photo: the image (same shape and dtype as given), its record (anonymization) or
    None, the faces processed, the faces too small to process, whether recovery was approximate, and
    each processed face's 2x3 image->crop transform (where it was cut and pasted)."""

    image: np.ndarray
    record: Record | None
    faces: int
    too_small: int = 0
    approximate: bool = False
    transforms: list = field(default_factory=list)


class FaceProtector:
    """A generator, a detector and a framing: everything needed to protect photos and frames.

    model: an InferenceModel or a checkpoint path. detector: any FaceDetector (default dlib HOG).
    mean_landmarks: (5, 2) normalised framing overriding the checkpoint's (or the CASIA default).
    amp: bf16 autocast for G (faster on CPUs with AMX and on GPUs; output differs by about one level).
    batch_size: faces per generator call. In eval mode G normalises with its tracked inference
        statistics, or each image beside its complement-password twin (models/networks.py), so a
        face's result does not depend on the other faces of its call; every call holds exactly
        ``batch_size`` images (a short last call is filled with copies of its last face), because
        oneDNN picks its convolution kernels by batch size: in float32 a face came out up to 2e-5
        different alone, in a call of 3 and in a call of 5 (bf16: the same). So a face's result is
        the same bit for bit whatever else is in its batch, in a photo or in any frame of a video.
        On the CPU the model's G is switched to channels_last (faster oneDNN convolutions, same
        results).
    blend: "crop" (the whole crop, feathered outside it: recovery re-cuts what G made) or "face" (a
        feathered ellipse over the face only: fewer pixels change); protect/frame.py.
    """

    def __init__(self, model: InferenceModel | str, detector: FaceDetector | None = None, *, device="cpu",
                 mean_landmarks=None, amp: bool = False, batch_size: int = 4, blend: str = "crop"):
        if isinstance(model, (str, os.PathLike)):
            model = InferenceModel(os.fspath(model), device)
        self.model = model
        if mean_landmarks is not None:
            self.mean_landmarks = check_mean_landmarks(mean_landmarks, "--mean-landmarks")
            self.framing_source = "user"
        else:
            self.mean_landmarks = model.mean_landmarks.double().numpy().reshape(5, 2)
            same = torch.allclose(model.mean_landmarks.double(), CASIA_MEAN_LANDMARKS.double())
            self.framing_source = "casia-default" if same else "checkpoint"
        if detector is None:
            from protect.face_detect import DlibDetector
            detector = DlibDetector()
        self.detector = detector
        self.amp, self.batch_size = bool(amp), int(batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if model.device.type == "cpu":  # oneDNN convolutions are much faster in channels_last
            model.G.to(memory_format=torch.channels_last)
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
        self.blend = blend
        self.target = crop_points(self.mean_landmarks, self.size)
        self.mask = blend_mask(self.size, self.mean_landmarks, blend)

    @property
    def size(self) -> int:
        return self.model.img_size

    @property
    def passwd_length(self) -> int:
        return self.model.passwd_length

    # ---- building blocks (shared with video) -------------------------------------------------

    def detector_info(self) -> dict:
        d = self.detector
        info = {"name": getattr(d, "name", type(d).__name__), "min_face": getattr(d, "min_face", None)}
        for key in ("upsample", "max_side"):
            if hasattr(d, key):
                info[key] = getattr(d, key)
        return info

    def record(self, kind: str, scope: str, detector: dict) -> Record:
        m = self.model
        return Record(kind=kind, passwords=scope, detector=detector, precision="bf16" if self.amp else "fp32",
                      checkpoint={"fingerprint": m.fingerprint, "img_size": m.img_size,
                                  "passwd_length": m.passwd_length, "use_minus_one": m.mode},
                      framing={"mean_landmarks": self.mean_landmarks.tolist(), "source": self.framing_source,
                               "mask": self.mask.name})

    def record_min_face(self, record: Record | None) -> float:
        """The smallest face a record can hold: the smaller of its detector's and this one's min_face
        (without a record: this one's)."""
        sizes = [getattr(self.detector, "min_face", None), record.detector.get("min_face") if record else None]
        sizes = [float(v) for v in sizes if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
        return min(sizes) if sizes else 32.0

    def for_recovery(self, record: Record, kind: str, *, digest: str, scope: str, width: int, height: int,
                     src: str | None = None) -> FaceProtector:
        """Check ``record`` against the input to recover (``check_recovery``), then return this protector
        with the record's framing: the one path by which photos and videos accept a record."""
        check_recovery(record, kind, model=self.model, digest=digest, scope=scope, width=width, height=height,
                       min_face=self.record_min_face(record), src=src)
        return self.use_record_framing(record)

    def use_record_framing(self, record: Record) -> FaceProtector:
        """This protector with the record's framing and blend mask (recovery blends where anonymization
        did), or self when they are the same."""
        try:
            kind = blend_kind(record.framing.get("mask", BLENDS["face"]))
        except ValueError as e:
            raise RecordError(f"record: {e}") from None
        if kind == self.blend and np.allclose(record.mean_landmarks, self.mean_landmarks, atol=1e-9):
            return self
        other = object.__new__(FaceProtector)
        other.__dict__.update(self.__dict__)
        other.mean_landmarks, other.framing_source = record.mean_landmarks, record.framing.get("source", "user")
        other.blend = kind
        other.target = crop_points(other.mean_landmarks, self.size)
        other.mask = blend_mask(self.size, other.mean_landmarks, kind)
        return other

    def transform(self, points) -> np.ndarray:
        return face_transform(points, self.target)

    def generate(self, crops: torch.Tensor, passwords: Sequence[Password], inverse: bool) -> np.ndarray:
        """G on (N, 3, S, S) crops in [-1, 1], face i with passwords[i] (its complement when
        ``inverse``). Returns (N, S, S, 3) float32 in [0, 255]."""
        if len(passwords) != crops.shape[0]:
            raise ValueError("one password per crop")
        if crops.shape[0] == 0:
            return np.zeros((0, self.size, self.size, 3), np.float32)
        bits = torch.cat([(p.inverse() if inverse else p).bits() for p in passwords])
        outs, size = [], self.batch_size
        for i in range(0, crops.shape[0], size):
            x, b = crops[i:i + size], bits[i:i + size]
            n = x.shape[0]
            if n < size:  # always ``size`` images per call: the last face repeated (see the class docstring)
                x = torch.cat([x, x[-1:].expand(size - n, -1, -1, -1)])
                b = torch.cat([b, b[-1:].expand(size - n, -1)])
            y = self.model(x.contiguous(memory_format=torch.channels_last), b, amp=self.amp)[:n]
            outs.append(y.clamp(-1, 1).add(1).mul(127.5).permute(0, 2, 3, 1).cpu())
        return torch.cat(outs).contiguous().numpy()

    def find_faces(self, rgb: np.ndarray) -> tuple[list[DetectedFace], int]:
        """Detected faces in left-to-right order (their keys), and the number too small to use."""
        found = self.detector.detect_all(rgb)
        faces = sorted(found.faces, key=lambda f: (float(f.points[:, 0].mean()), float(f.points[:, 1].mean())))
        return faces, len(found.too_small)

    # ---- one photo ----------------------------------------------------------------------------

    def process(self, image: np.ndarray, password, *, record: Record | None = None, recover: bool = False,
                landmarks=None) -> Outcome:
        """Anonymize (``recover=False``) or recover one photo; see the module docstring."""
        native = _check_native(image)
        rgb = work_rgb(native)
        passwords = as_face_passwords(password, self.passwd_length)
        protector, too_small, approximate = self, 0, False
        if recover and record is not None:
            protector = self.for_recovery(record, "image", digest=pixel_sha256(native), scope=passwords.scope,
                                   width=native.shape[1], height=native.shape[0])
            passwords = passwords.derived_by(record.kdf)
            keys = [f["key"] for f in record.faces]
            transforms = [np.asarray(f["transform"], np.float64).reshape(2, 3) for f in record.faces]
        else:
            if landmarks is not None:
                points = [np.asarray(p, np.float64).reshape(5, 2) for p in landmarks]
                detector = {"name": "given"}
            else:
                faces, too_small = self.find_faces(rgb)
                points = [f.points for f in faces]
                detector = self.detector_info()
            keys = list(range(len(points)))
            transforms = [self.transform(p) for p in points]
            if not recover:  # never write a record that recovery would refuse
                check_crops(transforms, self.size, native.shape[1], native.shape[0], self.record_min_face(None),
                            "the faces to anonymize")
            approximate = recover
            if recover:
                warnings.warn("no record: faces were detected again, so recovery is approximate",
                              ApproximateRecoveryWarning, stacklevel=2)
        crops = cut_crops(rgb, transforms, protector.size)
        gen = protector.generate(crops, [passwords.for_key(k) for k in keys], inverse=recover)
        result = paste_faces(native, gen, transforms, protector.mask)
        rec = None
        if not recover:
            rec = protector.record("image", passwords.scope, detector)
            rec.faces = [{"key": k, "transform": [float(v) for v in m.reshape(-1)]} for k, m in zip(keys, transforms)]
            rec.output = native_info(result)
        return Outcome(result, rec, len(keys), too_small, approximate, transforms)

    def anonymize(self, image: np.ndarray, password, landmarks=None) -> tuple[np.ndarray, Record]:
        out = self.process(image, password, landmarks=landmarks)
        return out.image, out.record

    def recover(self, image: np.ndarray, record: Record | None, password, landmarks=None) -> np.ndarray:
        return self.process(image, password, record=record, recover=True, landmarks=landmarks).image


def native_info(native: np.ndarray) -> dict:
    return {"width": int(native.shape[1]), "height": int(native.shape[0]),
            "channels": int(native.shape[2]) if native.ndim == 3 else 1, "dtype": native.dtype.name,
            "sha256": pixel_sha256(native)}


def _check_native(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image (HxWx3 uint8 RGB, or gray/RGBA, 8 or 16 bits), "
                        f"got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"image pixels must be uint8 or uint16, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 image, got shape {image.shape}")
    return image
