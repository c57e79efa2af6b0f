"""Paint one synthetic face photo (250x250 RGB) with numpy, and return its exact five landmarks.

Every shape is an implicit function of face coordinates (negative inside), evaluated on the pixel
grid after inverting the photo's pose, and turned into an anti-aliased coverage from its value and
gradient: edges are smooth without supersampling, and the landmarks are the pose applied to the
same face points the features are drawn around, so they are exact. Shading (light on a rounded
head, eye sockets, nose sides, lips) is what lets a HOG face detector and a recogniser treat the
drawing like a photo. Work is done in small windows around each feature to stay fast.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .synthetic_traits import Identity, View

SIZE = 250
EYE_MID = (125.0, 110.0)  # canonical eye midpoint (pixels): CASIA-like framing

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

# How far each feature moves sideways per unit of yaw (a rough depth of the feature).
DEPTH = {"eye": 0.3, "brow": 0.35, "nose": 1.0, "bridge": 0.55, "mouth": 0.55}


def coverage(f: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Anti-aliased inside-ness of the implicit shape f < 0, edge about `soft` pixels wide."""
    gy, gx = np.gradient(f)
    g = np.sqrt(gx * gx + gy * gy) + 1e-6
    return np.clip(0.5 - f / (g * soft), 0.0, 1.0)


def gauss(u, v, cu, cv, su, sv):
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


class Canvas:
    """The image plus, for every pixel, its face coordinates under the photo's pose."""

    def __init__(self, background: np.ndarray, centre, px_per_unit: float, angle: float):
        self.img = background
        self.cx, self.cy = centre
        self.k = px_per_unit
        self.c, self.s = math.cos(angle), math.sin(angle)
        dx, dy = _XX - self.cx, _YY - self.cy
        self.u = (self.c * dx + self.s * dy) / self.k
        self.v = (-self.s * dx + self.c * dy) / self.k

    def to_px(self, u, v):
        return (self.cx + self.k * (self.c * u - self.s * v), self.cy + self.k * (self.s * u + self.c * v))

    def window(self, u0, v0, u1, v1, pad=3):
        """Pixel slices covering the face-space box, or None when it is (nearly) off the image."""
        xs, ys = zip(*(self.to_px(u, v) for u in (u0, u1) for v in (v0, v1)))
        x0, x1 = max(int(min(xs)) - pad, 0), min(int(max(xs)) + pad + 1, SIZE)
        y0, y1 = max(int(min(ys)) - pad, 0), min(int(max(ys)) + pad + 1, SIZE)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return None
        return (slice(y0, y1), slice(x0, x1))

    def uv(self, win):
        return self.u[win], self.v[win]

    def paint(self, win, alpha, colour):
        region = self.img[win]
        region += (np.asarray(colour, np.float32) - region) * alpha[..., None]

    def multiply(self, win, factor):
        self.img[win] *= factor[..., None] if factor.ndim == 2 else factor


def _smooth_noise(rng: np.random.Generator, cells: int, size, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random image resized with bicubic interpolation."""
    small = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    img = Image.fromarray(small[..., 0] if channels == 1 else small)
    out = np.asarray(img.resize((size[1], size[0]), Image.BICUBIC), np.float32) / 255.0
    return out


def background(view: View, rng: np.random.Generator) -> np.ndarray:
    c = view.bg_colours
    xx, yy = _XX / SIZE, _YY / SIZE
    t = np.clip(0.5 + (xx - 0.5) * math.cos(view.bg_angle) + (yy - 0.5) * math.sin(view.bg_angle), 0, 1)
    img = c[0] + (c[1] - c[0]) * t[..., None]
    if view.bg_kind == 1:  # blotchy texture (walls, foliage out of focus)
        blot = _smooth_noise(rng, int(rng.integers(4, 12)), (SIZE, SIZE))[..., None]
        img = img + (c[2] - img) * blot + (_smooth_noise(rng, 8, (SIZE, SIZE), 3) - 0.5) * 0.15
    elif view.bg_kind == 2:  # boxes: an interior, blurred as if out of focus
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(3, 8))):
            x0, y0 = rng.integers(-40, SIZE, 2)
            w, h = rng.integers(20, 160, 2)
            col = tuple(int(x) for x in (np.clip(c[2] + rng.normal(0, 0.25, 3), 0, 1) * 255))
            draw.rectangle([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=col)
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 4.0))))
        img = np.asarray(pil, np.float32) / 255.0
    fine = _smooth_noise(rng, 40, (SIZE, SIZE)) - 0.5
    return np.ascontiguousarray(np.clip(img + fine[..., None] * 0.06, 0, 1), dtype=np.float32)


def _lambert(nx, ny, nz, light, ambient):
    n = np.sqrt(nx * nx + ny * ny + nz * nz)
    d = np.maximum((nx * light[0] + ny * light[1] + nz * light[2]) / n, 0.0)
    return ambient + (1.0 - ambient) * 1.1 * d


def _head_field(ident: Identity, u, v, grow=0.0):
    """Head outline (superellipse narrowing to the chin) and the normalised coordinates it uses."""
    t = (v - ident.head_cy) / (ident.head_h + grow)
    wid = (ident.head_w + grow) * (1.0 - ident.jaw * np.clip(t, 0, 1))
    x = u / wid
    p = ident.square
    r = (np.abs(x) ** p + np.abs(t) ** p) ** (1.0 / p)
    return r - 1.0, x, t


def _skin_colour(ident: Identity, shade):
    """Skin lit by `shade`; shadows get warmer, as real skin does."""
    s = np.clip(shade, 0.05, 1.6)[..., None]
    return ident.skin * s ** np.array([0.85, 1.0, 1.12], np.float32)


def paint_body(cv: Canvas, ident: Identity, view: View):
    chin = ident.head_cy + ident.head_h
    win = cv.window(-3.2, chin - 1.2, 3.2, 4.0)
    if win is not None:
        u, v = cv.uv(win)
        # neck, shadowed below the chin
        f = np.maximum(np.abs(u) - 0.55 * ident.head_w, ident.head_cy - v)
        shade = 0.55 + 0.25 * np.clip((v - chin) / 0.6, 0, 1)
        cv.paint(win, coverage(f), _skin_colour(ident, shade))
        # shoulders and a V neckline
        cy, ax, ay = chin + 1.95, 2.6, 1.5
        f = np.sqrt((u / ax) ** 2 + ((v - cy) / ay) ** 2) - 1.0
        f = np.maximum(f, (chin + 0.75 - 0.9 * np.abs(u)) - v)
        shade = 0.6 + 0.4 * _lambert(u / ax, 0 * u, np.full_like(u, 0.8), view.light, 0.4)
        cv.paint(win, coverage(f, 1.2), view.shirt * shade[..., None])


def _hair_colour(ident: Identity, u, v, view: View, rng, cy):
    ang = np.arctan2(v - cy, u)
    streak = np.sin(ang * 38.0 + rng.uniform(0, 6.3)) * 0.5 + np.sin(ang * 91.0 + rng.uniform(0, 6.3)) * 0.5
    nz = np.sqrt(np.clip(1.0 - (u / (ident.head_w + 0.3)) ** 2 - ((v - cy) / 2.0) ** 2, 0.05, 1))
    shade = _lambert(u / (ident.head_w + 0.3), (v - cy) / 2.0, nz, view.light, 0.45)
    tone = shade * (0.9 + 0.1 * streak)
    return ident.hair * tone[..., None] + 0.06 * np.clip(tone - 0.9, 0, 1)[..., None]


def paint_back_hair(cv: Canvas, ident: Identity, view: View, rng):
    if ident.hair_style != "long":
        return
    bottom = ident.head_cy + ident.head_h + 0.35
    win = cv.window(-ident.head_w - 0.6, -2.6, ident.head_w + 0.6, bottom + 0.3)
    if win is None:
        return
    u, v = cv.uv(win)
    top = ident.head_cy - ident.head_h - ident.hair_volume
    ay = (bottom + 0.8 - top) / 2.0
    f = np.sqrt((u / (ident.head_w + 0.32)) ** 2 + ((v - (top + ay)) / ay) ** 2) - 1.0
    f = np.maximum(f, v - bottom)
    cv.paint(win, coverage(f, 1.5), _hair_colour(ident, u, v, view, rng, ident.head_cy) * 0.8)


def paint_ears(cv: Canvas, ident: Identity, view: View):
    for side in (-1.0, 1.0):
        eu, ev = side * (ident.head_w * 0.97), 0.33
        win = cv.window(eu - 0.2, ev - 0.35, eu + 0.2, ev + 0.35)
        if win is None:
            continue
        u, v = cv.uv(win)
        f = np.sqrt(((u - eu) / (0.14 * ident.ear)) ** 2 + ((v - ev) / (0.27 * ident.ear)) ** 2) - 1.0
        shade = 0.7 + 0.15 * gauss(u, v, eu + side * 0.04, ev, 0.06, 0.14)
        cv.paint(win, coverage(f), _skin_colour(ident, shade))


def paint_face(cv: Canvas, ident: Identity, view: View):
    """Head outline with Lambert shading of a rounded face, cheeks and a soft specular sheen."""
    win = cv.window(-ident.head_w - 0.1, ident.head_cy - ident.head_h - 0.1,
                    ident.head_w + 0.1, ident.head_cy + ident.head_h + 0.1)
    u, v = cv.uv(win)
    f, x, t = _head_field(ident, u, v)
    nx, ny = np.clip(x, -1, 1) * 0.95, t * 0.55
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.03, 1.0))
    shade = _lambert(nx, ny, nz, view.light, view.ambient)
    col = _skin_colour(ident, shade)
    for side in (-1.0, 1.0):
        blush = gauss(u, v, side * 0.58, 0.62, 0.2, 0.16)[..., None]
        col = col * (1 - ident.cheek * blush) + np.array([0.8, 0.25, 0.25], np.float32) * ident.cheek * blush
    for side in (-1.0, 1.0):  # hollow under the cheekbones, jaw line
        hollow = 0.1 * gauss(u, v, side * 0.78, 0.8, 0.14, 0.3) + 0.08 * gauss(u, v, side * 0.7, 1.45, 0.2, 0.12)
        col = col * (1.0 - hollow)[..., None]
    spec = np.clip((nx * view.light[0] + ny * view.light[1] + nz * view.light[2]) / np.sqrt(nx**2 + ny**2 + nz**2),
                   0, 1)
    col = col + 0.05 * (spec ** 12)[..., None]
    cv.paint(win, coverage(f, 1.2), col)


def paint_eye(cv: Canvas, ident: Identity, view: View, side: float):
    """Socket shadow, almond opening, sclera, iris, pupil (at the landmark), lids and lashes."""
    ex, ey = side * 0.5 + view.yaw * DEPTH["eye"], 0.0
    hw = ident.eye_hw
    win = cv.window(ex - 0.42, ey - 0.35, ex + 0.42, ey + 0.3)
    if win is None:
        return
    u, v = cv.uv(win)
    du = u - ex
    # the socket and the lid crease
    cv.multiply(win, 1.0 - 0.3 * gauss(u, v, ex + side * 0.02, ey - 0.05, 0.27, 0.16)
                - 0.12 * gauss(u, v, ex - side * 0.24, ey + 0.02, 0.07, 0.12))
    q = np.clip(1.0 - (du / hw) ** 2, 0.0, 1.0)
    tilt = -ident.eye_tilt * (du * side) / hw
    up = ey - ident.eye_up * q ** 0.75 + tilt
    lo = ey + ident.eye_lo * q ** 0.9 + tilt
    crease = np.abs(v - (up - 0.075 * q - 0.01)) - 0.012 * q
    cv.multiply(win, 1.0 - 0.25 * coverage(np.maximum(crease, np.abs(du) - hw * 0.9), 2.0))
    f_eye = np.maximum(np.maximum(up - v, v - lo), np.abs(du) - hw)
    a_eye = coverage(f_eye)
    sclera = np.array([0.9, 0.87, 0.84], np.float32) * (1.0 - 0.35 * (du / hw) ** 2)[..., None]
    cv.paint(win, a_eye, sclera * (0.75 + 0.25 * view.ambient / 0.55))
    r = np.sqrt(du * du + (v - ey) ** 2)
    rim = np.clip(r / ident.iris_r, 0, 1)[..., None]
    iris = ident.iris * (1.15 - 0.55 * rim ** 2)
    cv.paint(win, coverage(r - ident.iris_r) * a_eye, iris)
    cv.paint(win, coverage(r - ident.iris_r * 0.42) * a_eye, np.array([0.02, 0.02, 0.025], np.float32))
    # shadow of the upper lid on the eyeball, then the lash line and the lower lid
    cv.multiply(win, 1.0 - 0.35 * a_eye * np.clip(1.0 - (v - up) / 0.05, 0, 1))
    lash_col = np.minimum(ident.hair * 0.3 + 0.01, ident.skin * 0.25)
    thick = 0.022 + 0.02 * np.clip(du * side / hw, 0, 1)
    f_lash = np.maximum(np.abs(v - up + 0.005) - thick, np.abs(du) - hw - 0.02)
    cv.paint(win, coverage(f_lash) * 0.92, lash_col)
    f_low = np.maximum(np.abs(v - lo - 0.006) - 0.008, np.abs(du) - hw * 0.95)
    cv.multiply(win, 1.0 - 0.3 * coverage(f_low, 1.5))


def paint_brow(cv: Canvas, ident: Identity, view: View, side: float, rng):
    bx = side * 0.52 + view.yaw * DEPTH["brow"]
    by = -ident.brow_gap - view.brow_raise
    L = ident.brow_len
    win = cv.window(bx - L - 0.1, by - 0.2, bx + L + 0.1, by + 0.2)
    if win is None:
        return
    u, v = cv.uv(win)
    x = (u - bx) * side / L  # -1 inner end, +1 outer end
    centre = by - ident.brow_arch * (1 - x * x) - ident.brow_slant * x
    thick = ident.brow_thick * (1.0 - 0.4 * np.clip(x, -1, 1)) * np.sqrt(np.clip(1 - np.clip(x, -1, 1) ** 6, 0, 1))
    f = np.maximum(np.abs(v - centre) - thick / 2, np.abs(x) - 1.0)
    hairy = 0.75 + 0.25 * _smooth_noise(rng, 12, f.shape)
    col = np.minimum(ident.hair * 0.55 + 0.02, ident.skin * 0.45)  # brows are darker than the skin
    cv.paint(win, coverage(f, 1.3) * 0.9 * hairy, col)


def paint_nose(cv: Canvas, ident: Identity, view: View):
    nx, ny = view.yaw * DEPTH["nose"], ident.nose_y
    bx = view.yaw * DEPTH["bridge"]
    win = cv.window(nx - 0.45, -0.15, nx + 0.45, ny + 0.25)
    if win is None:
        return
    u, v = cv.uv(win)
    lit = 1.0 if view.light[0] >= 0 else -1.0  # the side the light comes from
    along = np.clip((v - 0.05) / (ny - 0.05), 0, 1)
    ridge = bx + (nx - bx) * along
    ramp = np.clip((v - 0.05) / 0.25, 0, 1) * np.clip((ny + 0.05 - v) / 0.1, 0, 1)
    dark = (0.1 + 0.35 * abs(view.light[0])) * gauss(u, 0, ridge - lit * 0.12, 0, 0.05, 1) * ramp
    dark += 0.08 * gauss(u, 0, ridge + lit * 0.12, 0, 0.04, 1) * ramp
    dark += 0.35 * gauss(u, v, nx, ny + 0.11, 0.15, 0.035)  # shadow under the nose
    for s in (-1.0, 1.0):  # creases around the nose wings
        dark += 0.22 * gauss(u, v, nx + s * (ident.nose_w + 0.01), ny + 0.01, 0.03, 0.06)
    bright = 0.12 * gauss(u, v, nx, ny - 0.03, 0.07, 0.06) + 0.06 * gauss(u, 0, ridge + lit * 0.03, 0, 0.03, 1) * ramp
    cv.multiply(win, (1.0 - dark) * (1.0 + bright))
    for s in (-1.0, 1.0):
        ncx, ncy = nx + s * ident.nose_w * 0.42, ny + 0.07
        du, dv = u - ncx, v - ncy
        rot = s * 0.35
        a, b = du * math.cos(rot) + dv * math.sin(rot), -du * math.sin(rot) + dv * math.cos(rot)
        f = np.sqrt((a / 0.055) ** 2 + (b / 0.026) ** 2) - 1.0
        cv.paint(win, coverage(f, 1.3) * 0.8, ident.skin * 0.25)


def mouth_geometry(ident: Identity, view: View):
    """Centre u, corner height and half width: the mouth corners are landmarks 4 and 5."""
    mx = view.yaw * DEPTH["mouth"]
    corner_v = ident.mouth_y - 0.06 * view.smile
    hw = ident.mouth_hw * (1.0 + 0.12 * view.smile)
    return mx, corner_v, hw


def paint_facial_hair(cv: Canvas, ident: Identity, view: View, rng):
    if ident.beard <= 0 and ident.moustache <= 0:
        return
    mx, cvv, hw = mouth_geometry(ident, view)
    win = cv.window(-ident.head_w, ident.nose_y, ident.head_w, ident.head_cy + ident.head_h + 0.05)
    if win is None:
        return
    u, v = cv.uv(win)
    f_face, _, _ = _head_field(ident, u, v, grow=-0.02)
    alpha = np.zeros_like(u)
    if ident.beard > 0:
        line = ident.mouth_y - 0.25 - 0.55 * (u / ident.head_w) ** 2
        alpha += ident.beard * coverage(np.maximum(f_face, line - v), 4.0)
    if ident.moustache > 0:  # a band over the upper lip, thinner under the nose, drooping at the ends
        x = np.clip((u - mx) / (hw + 0.06), -1, 1)
        centre = cvv - ident.lip_up - 0.06 + 0.07 * x ** 4
        half = 0.06 * (1.0 - 0.35 * np.exp(-(x / 0.2) ** 2)) * np.sqrt(1.0 - x ** 8)
        f = np.maximum(np.abs(v - centre) - half, np.abs(u - mx) - hw - 0.06)
        alpha = np.maximum(alpha, ident.moustache * coverage(f, 2.0))
    tex = 0.7 + 0.3 * _smooth_noise(rng, 70, u.shape)
    cv.paint(win, np.clip(alpha, 0, 1) * tex, _hair_colour(ident, u, v, view, rng, ident.head_cy) * 0.9)


def paint_mouth(cv: Canvas, ident: Identity, view: View):
    mx, corner_v, hw = mouth_geometry(ident, view)
    win = cv.window(mx - hw - 0.15, corner_v - 0.2, mx + hw + 0.15, corner_v + 0.35)
    if win is None:
        return
    u, v = cv.uv(win)
    du = u - mx
    q = np.clip(1.0 - (du / hw) ** 2, 0.0, 1.0)
    mid = corner_v + (0.015 + 0.05 * view.smile) * q       # the line where the lips meet
    opening = view.mouth_open * q
    thick_q = q ** 0.5
    outside = np.abs(du) - hw
    lower_top = mid + opening
    # shadow below the lower lip and a darker philtrum groove above the upper one
    cv.multiply(win, 1.0
                - 0.22 * gauss(u, v, mx, corner_v + 0.03 + view.mouth_open + ident.lip_lo + 0.07, hw * 0.55, 0.04)
                - 0.12 * gauss(u, v, mx, corner_v - ident.lip_up - 0.09, 0.04, 0.06))
    lip_shade = 0.8 + 0.2 * (view.light[1] < 0)
    bow = 1.0 - 0.22 * np.exp(-(du / 0.04) ** 2) + 0.1 * np.exp(-((np.abs(du) - 0.09) / 0.05) ** 2)
    f_up = np.maximum(np.maximum(mid - ident.lip_up * thick_q * bow - v, v - mid), outside)
    f_lo = np.maximum(np.maximum(lower_top - v, v - (lower_top + ident.lip_lo * thick_q)), outside)
    cv.paint(win, coverage(f_up, 1.2), ident.lip * 0.82 * lip_shade)
    sheen = 1.0 + 0.18 * gauss(u, v, mx, lower_top + ident.lip_lo * 0.45, hw * 0.4, 0.025)
    cv.paint(win, coverage(f_lo, 1.2), ident.lip[None, None] * (sheen * lip_shade)[..., None])
    if view.mouth_open > 0:
        f_in = np.maximum(np.maximum(mid - v, v - lower_top), outside)
        a_in = coverage(f_in)
        cv.paint(win, a_in, np.array([0.22, 0.07, 0.07], np.float32))
        teeth = np.maximum(np.maximum(mid - v, v - (mid + np.minimum(opening, 0.045))), np.abs(du) - hw * 0.6)
        cv.paint(win, coverage(teeth) * a_in, np.array([0.86, 0.83, 0.76], np.float32))
    f_line = np.maximum(np.abs(v - mid - opening * 0.5) - 0.008 - opening * 0.5, outside)
    cv.paint(win, coverage(f_line, 1.0) * 0.8, ident.lip * 0.35)


def paint_hair(cv: Canvas, ident: Identity, view: View, rng):
    if ident.hair_style == "bald":
        return
    vol = ident.hair_volume if ident.hair_style != "crop" else 0.04
    win = cv.window(-ident.head_w - vol - 0.1, ident.head_cy - ident.head_h - vol - 0.1,
                    ident.head_w + vol + 0.1, 0.6)
    if win is None:
        return
    u, v = cv.uv(win)
    f_cap, _, _ = _head_field(ident, u, v + vol * 0.35, grow=vol)
    w = ident.head_w
    style = ident.hair_style
    if style == "fringe":
        line = ident.hairline + 0.38 + 0.12 * (u / w) ** 2
    elif style == "side":
        line = ident.hairline + 0.08 + 0.5 * ((u - ident.part * 0.4) / w) ** 2 - 0.1 * ident.part * u / w
    else:
        line = ident.hairline + 0.55 * (u / w) ** 2
    side_bottom = 0.12 if style != "long" else 1.2
    f_front = np.minimum(v - line, np.maximum(0.86 * w - np.abs(u), v - side_bottom))
    f = np.maximum(f_cap, f_front)
    alpha = coverage(f, 1.6)
    if style == "crop":
        alpha = alpha * (0.7 + 0.2 * _smooth_noise(rng, 70, u.shape))
    cv.paint(win, alpha, _hair_colour(ident, u, v, view, rng, ident.head_cy - 0.3))


def finish(img: np.ndarray, view: View, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, optional blur and sensor noise; returns uint8 HWC."""
    img = (img - 0.5) * view.contrast + 0.5
    img = np.clip(img * view.gain, 0, 1)
    out = (img * 255.0 + 0.5).astype(np.uint8)
    if view.blur > 0:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(view.blur)))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= view.noise * 255.0
    noise += out
    noise += 0.5
    return np.clip(noise, 0, 255, out=noise).astype(np.uint8)


def render(ident: Identity, view: View, rng: np.random.Generator):
    """One photo: (250, 250, 3) uint8 and its (5, 2) landmarks in pixel coordinates (MTCNN order;
    continuous coordinates, so the centre of pixel column i is x = i + 0.5, and x / 125 - 1 spans the
    frame from edge to edge)."""
    centre = (EYE_MID[0] + view.shift[0], EYE_MID[1] + view.shift[1])
    cv = Canvas(background(view, rng), centre, ident.eye_px * view.scale, view.angle)
    paint_back_hair(cv, ident, view, rng)
    paint_body(cv, ident, view)
    paint_ears(cv, ident, view)
    paint_face(cv, ident, view)
    paint_nose(cv, ident, view)
    for side in (-1.0, 1.0):
        paint_eye(cv, ident, view, side)
        paint_brow(cv, ident, view, side, rng)
    paint_facial_hair(cv, ident, view, rng)
    paint_mouth(cv, ident, view)
    paint_hair(cv, ident, view, rng)
    mx, corner_v, hw = mouth_geometry(ident, view)
    pts = [(-0.5 + view.yaw * DEPTH["eye"], 0.0), (0.5 + view.yaw * DEPTH["eye"], 0.0),
           (view.yaw * DEPTH["nose"], ident.nose_y), (mx - hw, corner_v), (mx + hw, corner_v)]
    # continuous pixel coordinates: pixel (i, j) covers [i, i + 1) x [j, j + 1), its centre is i + 0.5
    landmarks = np.array([cv.to_px(u, v) for u, v in pts], np.float64) + 0.5
    return finish(cv.img, view, rng), landmarks
