"""Passwords: L-bit codes, their encodings, inverses, digit targets, and where a person's comes from.

A password is an L-bit code (L = ``passwd_length``, a multiple of 4; 16 in the paper). Codes are held
as bit tensors of shape (B, L), most significant bit first, so that any L works (64-bit codes do not
fit a signed int64).

* The vector fed to G encodes each bit b by the ``use_minus_one`` mode: ``half`` -> b - 0.5,
  ``one_fourth`` -> (b - 0.5) / 2, ``true`` -> 2b - 1.
* The recovery (inverse) password of p is its bitwise complement (2^L - 1 - p); in every mode its
  vector is exactly the negation of p's.
* The password classifier Q predicts the L/4 hexadecimal digits (most significant first).

A person's password is a :class:`Password`. It is made from a passphrase through a key-derivation
function, or from an explicit code given as an integer or hexadecimal string. It never prints its
value and refuses to be pickled, so it cannot reach a log, a checkpoint or a record by accident.

A passphrase is normalised before the key derivation (derivation 2, ``KDF_VERSION``): a leading
byte-order mark (U+FEFF, which some editors write at the start of a file) is dropped and the text is
put in Unicode normal form C, so "Zürich" typed as one character u-umlaut or as u + combining
diaeresis, on any system, gives one code. Derivation 1, of records made before, used the text as it
was; recovery uses the derivation its record names (protect/record.py).
"""
from __future__ import annotations

import getpass
import hashlib
import os
import sys
import unicodedata
from dataclasses import dataclass

import torch

MODES = ("half", "one_fourth", "true")


def check_length(length: int) -> int:
    if not isinstance(length, int) or length <= 0 or length % 4:
        raise ValueError(f"passwd_length must be a positive multiple of 4, got {length!r}")
    return length


# ---- bit tensors ------------------------------------------------------------------------------

def encode(bits: torch.Tensor, mode: str = "half") -> torch.Tensor:
    """(B, L) bits in {0, 1} -> the float vector fed to G."""
    b = bits.float()
    if mode == "half":
        return b - 0.5
    if mode == "one_fourth":
        return (b - 0.5) / 2
    if mode == "true":
        return 2 * b - 1
    raise ValueError(f"use_minus_one must be one of {MODES}, got {mode!r}")


def complement(bits: torch.Tensor) -> torch.Tensor:
    """The recovery password: every bit flipped (2^L - 1 - p)."""
    return 1 - bits


def digits(bits: torch.Tensor) -> torch.Tensor:
    """(B, L) bits -> (B, L/4) int64 hexadecimal digits, most significant first (Q's targets)."""
    b = bits.long().view(bits.shape[0], -1, 4)
    return b[..., 0] * 8 + b[..., 1] * 4 + b[..., 2] * 2 + b[..., 3]


def bits_from_int(value: int, length: int) -> torch.Tensor:
    """An integer code -> (L,) bits, most significant first."""
    check_length(length)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** length:
        raise ValueError(f"a {length}-bit password code must be an integer in [0, 2^{length})")
    return torch.tensor([(value >> (length - 1 - i)) & 1 for i in range(length)], dtype=torch.uint8)


def int_from_bits(bits: torch.Tensor) -> int:
    """(L,) bits -> the integer code. For tests and tools; do not print the result."""
    value = 0
    for b in bits.tolist():
        value = (value << 1) | int(b)
    return value


def random_bits(batch: int, length: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform codes in [0, 2^L): (B, L) uint8 bits."""
    gen_device = generator.device if generator is not None else "cpu"
    bits = torch.randint(0, 2, (batch, length), generator=generator, dtype=torch.uint8, device=gen_device)
    return bits.to(device)


def redraw_equal(bits: torch.Tensor, avoid: list[torch.Tensor], generator) -> torch.Tensor:
    """Redraw the rows of ``bits`` that equal the same row of any tensor in ``avoid``."""
    while True:
        same = torch.zeros(bits.shape[0], dtype=torch.bool, device=bits.device)
        for other in avoid:
            same |= (bits == other).all(dim=1)
        n = int(same.sum())
        if n == 0:
            return bits
        bits = bits.clone()
        bits[same] = random_bits(n, bits.shape[1], generator, bits.device)


@dataclass
class StepPasswords:
    """The five codes of one training sample (bits, (B, L)).

    p: anonymize; p2 != p: a second anonymization; inv = ~p: recover; w1, w2: wrong recovery codes with
    w1 != inv, w2 != inv, w2 != w1.
    """

    p: torch.Tensor
    p2: torch.Tensor
    inv: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor

    def to(self, device) -> StepPasswords:
        return StepPasswords(*(t.to(device, non_blocking=True) for t in (self.p, self.p2, self.inv, self.w1, self.w2)))

    def __repr__(self) -> str:  # never show codes
        return f"StepPasswords(batch={self.p.shape[0]}, bits={self.p.shape[1]})"


def flip_masks(batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) uint8 masks, each with k ones at random places, k uniform in 1..L per row."""
    dev = generator.device if generator is not None else "cpu"
    k = torch.randint(1, length + 1, (batch, 1), generator=generator, device=dev)
    order = torch.rand(batch, length, generator=generator, device=dev).argsort(dim=1)
    return (order < k).to(torch.uint8)


def draw_step_passwords(batch: int, length: int, generator: torch.Generator | None = None,
                        device="cpu", near_wrong: bool = False) -> StepPasswords:
    """p, p2, w1, w2 uniform (the paper), with the inequalities of :class:`StepPasswords`. With
    ``near_wrong`` (a departure, off by default), w1 is inv with k of its bits flipped, k uniform in
    1..L per sample: wrong passwords at every distance from the right one, half of them within L/2
    bits (a uniform w1 is L/2 bits away on average)."""
    check_length(length)
    p = random_bits(batch, length, generator, device)
    p2 = redraw_equal(random_bits(batch, length, generator, device), [p], generator)
    inv = complement(p)
    if near_wrong:
        w1 = inv ^ flip_masks(batch, length, generator).to(inv.device)
    else:
        w1 = redraw_equal(random_bits(batch, length, generator, device), [inv], generator)
    w2 = redraw_equal(random_bits(batch, length, generator, device), [inv, w1], generator)
    return StepPasswords(p, p2, inv, w1, w2)


# ---- a person's password -------------------------------------------------------------------------

# scrypt (hashlib, Python's standard library) turns a passphrase into a code. Why scrypt: it is a
# memory-hard key-derivation function, so a leaked code (or a model run that reveals it) does not let
# anyone cheaply test guesses of the passphrase itself, which people reuse elsewhere; and it spreads
# similar passphrases to unrelated codes. It does NOT make the L-bit code harder to guess: whoever holds
# the model can try all 2^L codes directly, so the strength of protection is L bits (16 in the paper).
# The salt is fixed and names the length, so a passphrase gives the same code on every machine, and the
# same passphrase at another length gives an independent code of the right number of bits.
_SCRYPT = dict(n=2 ** 14, r=8, p=1, maxmem=64 * 1024 * 1024)


KDF_VERSION = 2  # the derivation of new codes: the passphrase normalised (normalise_passphrase)
KDF_VERSIONS = (1, 2)  # 1: the passphrase as given (records made before normalisation)
BOM = "\ufeff"


def _salt(length: int) -> bytes:
    return f"face-identity-transformer/password/v1/L={length}".encode()


def normalise_passphrase(text: str) -> str:
    """The text derivation 2 hashes: without a leading byte-order mark, in Unicode normal form C."""
    return unicodedata.normalize("NFC", text[1:] if text.startswith(BOM) else text)


def _check_kdf(kdf) -> int:
    if isinstance(kdf, bool) or kdf not in KDF_VERSIONS:
        raise ValueError(f"unknown passphrase derivation {kdf!r} (known: {', '.join(map(str, KDF_VERSIONS))})")
    return kdf


class Password:
    """One person's L-bit password. Its value is never shown and it cannot be pickled."""

    __slots__ = ("_bits",)

    def __init__(self, bits: torch.Tensor):
        bits = torch.as_tensor(bits).to(torch.uint8).flatten().cpu()
        if bits.numel() == 0 or bits.numel() % 4 or bool(((bits != 0) & (bits != 1)).any()):
            raise ValueError("a password is a non-empty sequence of 0/1 bits whose length is a multiple of 4")
        object.__setattr__(self, "_bits", bits)

    # constructors
    @classmethod
    def from_passphrase(cls, passphrase: str, length: int = 16, kdf: int = KDF_VERSION) -> Password:
        """The code of a passphrase by derivation ``kdf`` (2: normalised first; 1: as given)."""
        check_length(length)
        if _check_kdf(kdf) >= 2 and isinstance(passphrase, str):
            passphrase = normalise_passphrase(passphrase)
        if not isinstance(passphrase, str) or not passphrase:
            raise ValueError("the passphrase is empty")
        key = hashlib.scrypt(passphrase.encode("utf-8"), salt=_salt(length), dklen=(length + 7) // 8, **_SCRYPT)
        value = int.from_bytes(key, "big") >> (8 * len(key) - length)
        return cls(bits_from_int(value, length))

    @classmethod
    def from_code(cls, code: int | str, length: int = 16) -> Password:
        """An explicit code: an integer, or a string in decimal or hexadecimal ('0x...')."""
        if isinstance(code, str):
            text = code.strip().lower().replace("_", "")
            try:
                code = int(text, 16) if text.startswith("0x") else int(text, 10)
            except ValueError:
                raise ValueError("a password code must be an integer, decimal or hexadecimal ('0x...')") from None
        return cls(bits_from_int(code, length))

    @classmethod
    def random(cls, length: int = 16, generator: torch.Generator | None = None) -> Password:
        return cls(random_bits(1, check_length(length), generator)[0])

    # views
    @property
    def length(self) -> int:
        return self._bits.numel()

    def bits(self, batch: int = 1, device="cpu") -> torch.Tensor:
        """(batch, L) bits, the same code on every row."""
        return self._bits.to(device).unsqueeze(0).expand(batch, -1).contiguous()

    def vector(self, mode: str = "half", batch: int = 1, device="cpu") -> torch.Tensor:
        return encode(self.bits(batch, device), mode)

    def inverse(self) -> Password:
        return Password(complement(self._bits))

    def __eq__(self, other) -> bool:
        return isinstance(other, Password) and torch.equal(self._bits, other._bits)

    def __hash__(self):
        return hash(bytes(self._bits.tolist()))

    def __repr__(self) -> str:
        return f"Password(<{self.length} bits, hidden>)"

    __str__ = __repr__

    def __format__(self, spec) -> str:
        return repr(self)

    def __setattr__(self, key, value):
        raise AttributeError("Password is immutable")

    def __reduce__(self):
        raise TypeError("a Password is never pickled or saved: it must not reach checkpoints or records")


# ---- where a person's password comes from --------------------------------------------------------

def read_passphrase(env: str | None = None, file: str | None = None, prompt: str = "Password: ",
                    confirm: bool = False) -> str:
    """The passphrase from an environment variable, a file (first line), or a terminal prompt.

    Never from a command-line argument: arguments are visible to every user through ``ps``.
    """
    if env and file:
        raise ValueError("give the password through an environment variable or a file, not both")
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"environment variable {env} is not set")
        if not value:
            raise ValueError(f"environment variable {env} is empty")
        return value
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.readline().rstrip("\r\n")
        except OSError as e:
            raise ValueError(f"cannot read the password file {file}: {e.strerror}") from None
        except UnicodeDecodeError:  # its message would show bytes of the password
            raise ValueError(f"the password file {file} is not UTF-8 text; save it as UTF-8") from None
        if not normalise_passphrase(value):  # a byte-order mark alone is no password either
            raise ValueError(f"the password file {file} is empty")
        return value
    if not sys.stdin.isatty():
        raise ValueError("no password given: use --password-env VAR or --password-file FILE "
                         "(no terminal to prompt on)")
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != value:
        raise ValueError("the two passwords differ")
    if not value:
        raise ValueError("the password is empty")
    return value


def password_from_text(text: str, length: int, kdf: int = KDF_VERSION) -> Password:
    """A passphrase, or an explicit code written as ``code:0x1a2b`` / ``code:6699``; ``kdf``: the
    passphrase derivation (2 normalises the text first, so ``code:`` after a byte-order mark is a code)."""
    if _check_kdf(kdf) >= 2:
        text = normalise_passphrase(text)
    if text.startswith("code:"):
        return Password.from_code(text[5:], length)
    return Password.from_passphrase(text, length, kdf)
