"""Random parameters of synthetic faces: what stays fixed for an identity, what changes per photo.

Face geometry is expressed in "face units": one unit is the distance between the eye centres, the
origin is the midpoint between the eyes, u points right and v points down (image axes). The
renderer maps face units to pixels with each photo's pose. Identity traits are strong and
many (head shape, skin, eyes, brows, nose, mouth, hair, beard) so that a recogniser can learn who is
who; photo variables (pose, expression, light, background, clothes, noise) are drawn independently
per image so that it has to.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

# Palettes (RGB in [0, 1]); identities interpolate between neighbours and jitter the result.
SKIN_TONES = np.array([
    [0.96, 0.82, 0.72], [0.90, 0.72, 0.60], [0.80, 0.60, 0.46], [0.68, 0.48, 0.34],
    [0.52, 0.35, 0.24], [0.38, 0.25, 0.17], [0.28, 0.18, 0.13]], np.float32)
HAIR_COLOURS = np.array([
    [0.06, 0.05, 0.05], [0.16, 0.10, 0.07], [0.30, 0.19, 0.11], [0.48, 0.33, 0.19],
    [0.78, 0.64, 0.40], [0.55, 0.24, 0.11], [0.62, 0.61, 0.59]], np.float32)
HAIR_WEIGHTS = np.array([0.30, 0.25, 0.16, 0.10, 0.08, 0.05, 0.06])
IRIS_COLOURS = np.array([
    [0.20, 0.12, 0.07], [0.36, 0.22, 0.10], [0.42, 0.38, 0.18], [0.26, 0.40, 0.28],
    [0.28, 0.42, 0.62], [0.42, 0.48, 0.52]], np.float32)
HAIR_STYLES = ("short", "crop", "long", "fringe", "bald", "side")
HAIR_STYLE_WEIGHTS = np.array([0.30, 0.14, 0.22, 0.14, 0.06, 0.14])


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person recognisable."""
    eye_px: float          # eye distance in pixels at scale 1 (the photo scale multiplies it)
    head_w: float          # half width of the head outline
    head_h: float          # half height of the head outline
    head_cy: float         # vertical centre of the head outline
    jaw: float             # narrowing of the lower face (0: ellipse)
    square: float          # superellipse exponent of the outline (2: ellipse)
    skin: np.ndarray       # (3,) base skin colour
    eye_hw: float          # half width of an eye opening
    eye_up: float          # upper lid height above the eye centre
    eye_lo: float          # lower lid depth below the eye centre
    eye_tilt: float        # canthal tilt (outer corners up when > 0)
    iris_r: float
    iris: np.ndarray       # (3,) iris colour
    brow_gap: float        # brow height above the eye line
    brow_len: float        # half length
    brow_thick: float
    brow_arch: float
    brow_slant: float      # inner end lower when > 0
    nose_y: float          # nose tip below the eye line
    nose_w: float          # half width of the nose wings
    mouth_y: float         # mouth corners below the eye line
    mouth_hw: float        # half width of the mouth
    lip_up: float
    lip_lo: float
    lip: np.ndarray        # (3,) lip colour
    hair_style: str
    hair: np.ndarray       # (3,) hair colour
    hairline: float        # v of the hairline at the centre
    hair_volume: float     # thickness of the hair above the head outline
    part: float            # side parting position (-1..1) for the "side" style
    ear: float             # ear size factor
    beard: float           # 0: none, else beard density
    moustache: float       # 0: none, else density
    cheek: float           # blush strength


@dataclass(frozen=True)
class View:
    """Everything that changes between two photos of one person."""
    angle: float           # in-plane rotation, radians
    scale: float           # multiplies Identity.eye_px
    shift: tuple           # (dx, dy) pixels of the eye midpoint from its canonical place
    yaw: float             # feature shift per unit depth (slight head turn), face units
    smile: float           # 0..1
    mouth_open: float      # opening height in face units
    brow_raise: float      # face units
    light: np.ndarray      # (3,) unit light direction (x right, y down, z to the camera)
    ambient: float
    gain: np.ndarray       # (3,) per-channel exposure
    contrast: float
    bg_kind: int           # 0 gradient, 1 smooth texture, 2 boxes
    bg_colours: np.ndarray  # (3, 3) colours of the background
    bg_angle: float
    shirt: np.ndarray      # (3,) clothing colour
    noise: float           # standard deviation of pixel noise, [0, 1] units
    blur: float            # Gaussian blur radius in pixels (0: none)


def _pick(rng: np.random.Generator, palette: np.ndarray, weights=None, jitter=0.04) -> np.ndarray:
    """A colour between two neighbouring palette entries, jittered."""
    if weights is None:
        t = rng.uniform(0, len(palette) - 1)
        i = min(int(t), len(palette) - 2)
        col = palette[i] + (palette[i + 1] - palette[i]) * (t - i)
    else:
        col = palette[rng.choice(len(palette), p=weights / weights.sum())]
    return np.clip(col * rng.uniform(0.9, 1.1) + rng.normal(0, jitter, 3), 0.02, 0.98).astype(np.float32)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A colour of everyday scenes and clothes: mostly low saturation, any hue and brightness."""
    hue, sat, val = rng.random(), rng.beta(1.2, 2.5), rng.uniform(0.1, 0.95)
    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32)
    return rgb


def sample_identity(rng: np.random.Generator) -> Identity:
    skin = _pick(rng, SKIN_TONES, jitter=0.02)
    style = str(rng.choice(HAIR_STYLES, p=HAIR_STYLE_WEIGHTS))
    masculine = rng.random() < 0.5
    # blond and red hair are rare on dark skin; without this, features vanish against hair and skin
    hair_weights = HAIR_WEIGHTS * (np.array([1, 1, 1, 0.3, 0.05, 0.05, 1]) if skin.mean() < 0.45 else 1.0)
    lip = np.clip(skin * np.array([0.95, 0.62, 0.62]) + np.array([0.08, 0.0, 0.02]) * rng.uniform(0.3, 1.2),
                  0, 1).astype(np.float32)
    return Identity(
        eye_px=float(rng.uniform(41.0, 49.0)),
        head_w=float(rng.uniform(1.02, 1.24)), head_h=float(rng.uniform(1.62, 1.86)),
        head_cy=float(rng.uniform(0.05, 0.2)), jaw=float(rng.uniform(0.0, 0.22)),
        square=float(rng.uniform(2.0, 2.8)), skin=skin,
        eye_hw=float(rng.uniform(0.19, 0.24)), eye_up=float(rng.uniform(0.075, 0.1)),
        eye_lo=float(rng.uniform(0.045, 0.065)), eye_tilt=float(rng.uniform(-0.03, 0.05)),
        iris_r=float(rng.uniform(0.085, 0.1)), iris=_pick(rng, IRIS_COLOURS, np.ones(6), jitter=0.03),
        brow_gap=float(rng.uniform(0.26, 0.36)), brow_len=float(rng.uniform(0.22, 0.3)),
        brow_thick=float(rng.uniform(0.05, 0.1) * (1.2 if masculine else 0.9)),
        brow_arch=float(rng.uniform(0.01, 0.06)), brow_slant=float(rng.uniform(-0.04, 0.05)),
        nose_y=float(rng.uniform(0.52, 0.66)), nose_w=float(rng.uniform(0.2, 0.29)),
        mouth_y=float(rng.uniform(1.02, 1.2)), mouth_hw=float(rng.uniform(0.36, 0.46)),
        lip_up=float(rng.uniform(0.06, 0.1)), lip_lo=float(rng.uniform(0.08, 0.13)), lip=lip,
        hair_style=style, hair=_pick(rng, HAIR_COLOURS, hair_weights, jitter=0.03),
        hairline=float(rng.uniform(-1.12, -0.86)), hair_volume=float(rng.uniform(0.08, 0.3)),
        part=float(rng.uniform(-0.6, 0.6)), ear=float(rng.uniform(0.85, 1.15)),
        beard=float(rng.uniform(0.5, 0.9)) if masculine and rng.random() < 0.25 else 0.0,
        moustache=float(rng.uniform(0.5, 0.9)) if masculine and rng.random() < 0.3 else 0.0,
        cheek=float(rng.uniform(0.0, 0.08)),
    )


def sample_view(rng: np.random.Generator) -> View:
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.15), 1.0], np.float32)
    smile = float(rng.uniform(0, 1) ** 1.5)
    return View(
        angle=float(np.deg2rad(rng.normal(0, 4.0))), scale=float(rng.uniform(0.93, 1.07)),
        shift=(float(rng.normal(0, 2.5)), float(rng.normal(0, 2.5))),
        yaw=float(rng.uniform(-0.12, 0.12)), smile=smile,
        mouth_open=float(rng.uniform(0.0, 0.12)) if rng.random() < 0.35 else 0.0,
        brow_raise=float(rng.uniform(0.0, 0.06)) if rng.random() < 0.3 else 0.0,
        light=light / np.linalg.norm(light), ambient=float(rng.uniform(0.35, 0.55)),
        gain=(rng.uniform(0.8, 1.15) * rng.uniform(0.94, 1.06, 3)).astype(np.float32),
        contrast=float(rng.uniform(0.85, 1.1)),
        bg_kind=int(rng.integers(0, 3)), bg_colours=np.stack([_muted(rng) for _ in range(3)]),
        bg_angle=float(rng.uniform(0, 2 * np.pi)), shirt=_muted(rng),
        noise=float(rng.uniform(0.002, 0.015)), blur=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.4 else 0.0,
    )
