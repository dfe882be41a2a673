"""Procedural 2-D "concept cards" with exact concept labels, drawn with numpy (no TensorFlow, no GPU).

A card is one R x R RGB image (default 64 x 64) showing ONE object on a light, slightly varied grey background:

- shape in SHAPES: circle, square, triangle (equilateral) or star (five points, inner radius STAR_INNER x outer);
  square, triangle and star get a random rotation. The object's circumradius is SIZE_RANGE (fractions of the image
  side) times _EXTENT[shape] / 2, so every shape spans roughly 25-60 % of the side, and it lies wholly in the image.
- color in COLORS: the fill's hue is drawn around HUES[color] (+- HUE_JITTER degrees) with random saturation and
  brightness (HSV), so no colour is one exact RGB. "none" is an achromatic mid/dark grey fill (HSV saturation 0,
  value in NONE_VALUE): the absence of any hue, clearly apart from both the four hues and the light background.
- pattern in PATTERNS, drawn inside the object as dark marks of the fill's own hue (the fill times MARK_SHADE, so
  the marks never change the object's hue): "dotted" (a lattice of round dots), "striped" (parallel bands),
  "zigzagged" (parallel zigzag bands), "none" (plain fill). Orientation and phase are random, the scale is drawn
  from a range given in fractions of the image side (so a card at 32 px is the 64 px card at half the size).

Shape, colour and pattern are drawn independently and uniformly from np.random.default_rng(seed). The 16-way task
is shape x pattern: label = SHAPES.index(shape) * len(PATTERNS) + PATTERNS.index(pattern) (colour is irrelevant to
it). GROUPS holds the concept groups the study probes; a group's last entry is its "none" (shape has none).

Geometry lives in image coordinates (x right, y down, the image is [0, 1]^2; pixel (i, j) has its centre at
((j + 0.5) / R, (i + 0.5) / R)). Each shape has a signed distance function d (negative inside): `mask` is the
object's exact footprint at pixel centres (d <= 0), and the edges are anti-aliased analytically (the object's
coverage of a pixel is clip(0.5 - d * R, 0, 1)); pattern marks are anti-aliased the same way. The background is a
grey level with a linear gradient plus per-pixel noise (mostly luminance, a little per channel), so its HSV
saturation stays below ~0.03; the same luminance noise, weaker, textures the object.

Everything except the pixel noise is drawn first from the seed's generator, so the labels and the geometry depend on
the seed only; the noise comes next from the same generator and depends on (seed, resolution). Each card is drawn on
its own with cheap float32 coordinate maths (the object only in the window its circumcircle covers), so a card is the
same in any batch; a single core renders a few thousand 64 x 64 cards a second.
"""
from __future__ import annotations

import colorsys
import math
from typing import Sequence

import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
COLORS = ("red", "yellow", "green", "blue", "none")
PATTERNS = ("dotted", "striped", "zigzagged", "none")
GROUPS = {"color": COLORS, "pattern": PATTERNS, "shape": SHAPES}
NUM_CLASSES = len(SHAPES) * len(PATTERNS)  # 16
CLASS_NAMES = tuple(f"{s}/{p}" for s in SHAPES for p in PATTERNS)
TEST_SEED_OFFSET = 1_000_000
MIN_RESOLUTION = 16

HUES = {"red": 0.0, "yellow": 55.0, "green": 125.0, "blue": 220.0}  # HSV hue (degrees) of the four colours
HUE_JITTER = 8.0  # degrees either side
SATURATION = (0.72, 0.95)
VALUE = {"red": (0.72, 0.92), "yellow": (0.86, 0.98), "green": (0.62, 0.85), "blue": (0.72, 0.95)}
NONE_VALUE = (0.3, 0.46)  # the grey of "none"-coloured objects
MARK_SHADE = 0.38  # pattern marks are the fill times this
SIZE_RANGE = (0.25, 0.6)  # the object's nominal extent, fraction of the image side
STAR_INNER = 0.5  # star's inner radius / outer radius
_EXTENT = {"circle": 1.0, "square": 1.2, "triangle": 1.3, "star": 1.25}  # circumradius / (size / 2)
_MARGIN = 0.02  # the object's circumcircle keeps this far from the image border
BACKGROUND_LEVEL = (0.72, 0.86)
BACKGROUND_GRADIENT = 0.06  # at most this much brighter/darker from the centre to a corner
_LUMA_NOISE, _CHROMA_NOISE, _OBJECT_NOISE = 0.035, 0.006, 0.5
# pattern scales, fractions of the image side
DOT_PERIOD = (0.11, 0.15)  # lattice spacing; dot radius DOT_RADIUS x spacing
DOT_RADIUS = 0.3
STRIPE_PERIOD = (0.10, 0.14)  # band spacing; the dark band is half of it
ZIGZAG_PERIOD = (0.15, 0.19)  # spacing across the zigzag's axis; zig wavelength ZIGZAG_WAVELENGTH x this
ZIGZAG_WAVELENGTH = (1.1, 1.4)
ZIGZAG_AMPLITUDE = 0.3  # zig half height, x the spacing

_NUM_PARAMS = 20


def _check(seed, resolution) -> tuple[int, int]:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be an int >= {MIN_RESOLUTION}, got {resolution!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed), int(resolution)


def label_of(shape: str, pattern: str) -> int:
    """The 16-way class of a (shape, pattern) pair: SHAPES.index(shape) * len(PATTERNS) + PATTERNS.index(pattern)."""
    return SHAPES.index(shape) * len(PATTERNS) + PATTERNS.index(pattern)


def nearest_color(rgb) -> np.ndarray | str:
    """Colour name of RGB values [..., 3] (uint8, or floats in [0, 1]): "none" where the HSV saturation is below 0.25,
    else the colour whose hue in HUES is nearest (circularly) to the HSV hue."""
    rgb = np.asarray(rgb)
    rgb = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = np.maximum(mx - mn, 1e-12)
    hue = 60 * np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4))
    names = np.array(list(HUES))
    gap = np.abs((hue[..., None] - np.array(list(HUES.values())) + 180) % 360 - 180)
    out = np.where(mx - mn < 0.25 * np.maximum(mx, 1e-12), "none", names[gap.argmin(-1)])
    return str(out) if out.ndim == 0 else out


def _params(rng: np.random.Generator) -> dict:
    """Labels and geometry of one card (resolution independent)."""
    u = rng.random(_NUM_PARAMS)
    shape, color, pattern = SHAPES[int(u[0] * 4)], COLORS[int(u[1] * 5)], PATTERNS[int(u[2] * 4)]
    size = SIZE_RANGE[0] + u[3] * (SIZE_RANGE[1] - SIZE_RANGE[0])
    radius = _EXTENT[shape] * size / 2
    lo, hi = radius + _MARGIN, 1 - radius - _MARGIN
    cx, cy = lo + u[4] * (hi - lo), lo + u[5] * (hi - lo)
    if color == "none":
        fill = (NONE_VALUE[0] + u[9] * (NONE_VALUE[1] - NONE_VALUE[0]),) * 3
    else:
        hue = (HUES[color] + (2 * u[7] - 1) * HUE_JITTER) % 360
        v0, v1 = VALUE[color]
        fill = colorsys.hsv_to_rgb(hue / 360, SATURATION[0] + u[8] * (SATURATION[1] - SATURATION[0]),
                                   v0 + u[9] * (v1 - v0))
    return dict(shape=shape, color=color, pattern=pattern, radius=radius, cx=cx, cy=cy,
                rotation=u[6] * 2 * math.pi, fill=np.asarray(fill, np.float32),
                pattern_angle=u[10] * math.pi, pattern_scale=u[11], phase=(u[12], u[13]), zig=u[14],
                bg_level=BACKGROUND_LEVEL[0] + u[15] * (BACKGROUND_LEVEL[1] - BACKGROUND_LEVEL[0]),
                bg_angle=u[16] * 2 * math.pi, bg_gradient=(2 * u[17] - 1) * BACKGROUND_GRADIENT)


def _frac(t):
    return t - np.floor(t)


def _length(px, py):
    return np.sqrt(px * px + py * py)  # np.hypot is several times slower


def _polar_fold(px, py, n: int):
    """Distance from the centre and angle folded into [0, pi/n] (0: a sector's axis) for n-fold symmetry."""
    rho = _length(px, py)
    a = np.arctan2(py, px) % np.float32(2 * math.pi / n) - np.float32(math.pi / n)
    return rho, np.abs(a)


def _sdf(p: dict, px, py):
    """Signed distance (image units, negative inside) to the shape centred at the origin, already unrotated. Exact:
    folding the plane by the shape's symmetry leaves one edge segment to measure against (corners stay sharp)."""
    r = p["radius"]
    if p["shape"] == "circle":
        return _length(px, py) - np.float32(r)
    n = {"square": 4, "triangle": 3, "star": 5}[p["shape"]]
    rho, a = _polar_fold(px, py, n)
    qx, qy = rho * np.cos(a), rho * np.sin(a)
    if p["shape"] != "star":  # the edge runs from (apothem, 0) to the corner (apothem, half side)
        out = qx - np.float32(r * math.cos(math.pi / n))
        over = np.maximum(qy - np.float32(r * math.sin(math.pi / n)), 0)
        return np.where(out > 0, _length(out, over), out)
    # star: the edge runs from the tip T = (r, 0) to the inner corner V = r_in (cos pi/5, sin pi/5)
    ex, ey = STAR_INNER * r * math.cos(math.pi / 5) - r, STAR_INNER * r * math.sin(math.pi / 5)
    norm2 = ex * ex + ey * ey
    tx, ty = qx - np.float32(r), qy
    t = np.clip((tx * np.float32(ex) + ty * np.float32(ey)) * np.float32(1 / norm2), 0, 1)
    dist = _length(tx - t * np.float32(ex), ty - t * np.float32(ey))
    outside = tx * np.float32(ey) - ty * np.float32(ex) > 0  # on the far side of the edge from the centre
    return np.where(outside, dist, -dist)


def _marks(p: dict, px, py, res: int):
    """Pattern coverage in [0, 1] of each pixel (0 for "none"), in object-centred coordinates."""
    c, s = math.cos(p["pattern_angle"]), math.sin(p["pattern_angle"])
    u, v = c * px + s * py, -s * px + c * py
    k, (f1, f2) = p["pattern_scale"], p["phase"]
    if p["pattern"] == "dotted":
        period = DOT_PERIOD[0] + k * (DOT_PERIOD[1] - DOT_PERIOD[0])
        du, dv = _frac(u / period + f1) - 0.5, _frac(v / period + f2) - 0.5
        d = _length(du, dv) * np.float32(period) - np.float32(DOT_RADIUS * period)
    elif p["pattern"] == "striped":
        period = STRIPE_PERIOD[0] + k * (STRIPE_PERIOD[1] - STRIPE_PERIOD[0])
        d = (np.abs(_frac(v / period + f1) - 0.5) - 0.25) * np.float32(period)
    else:  # zigzagged: bands whose axis follows a triangle wave along u
        period = ZIGZAG_PERIOD[0] + k * (ZIGZAG_PERIOD[1] - ZIGZAG_PERIOD[0])
        wavelength = period * (ZIGZAG_WAVELENGTH[0] + p["zig"] * (ZIGZAG_WAVELENGTH[1] - ZIGZAG_WAVELENGTH[0]))
        amp = ZIGZAG_AMPLITUDE * period
        tri = np.abs(2 * _frac(u / wavelength + f2) - 1) * np.float32(2 * amp) - np.float32(amp)  # in [-amp, amp]
        slope = 4 * amp / wavelength
        d = (np.abs(_frac((v - tri) / period + f1) - 0.5) - 0.25) * np.float32(period / math.hypot(1, slope))
    return np.clip(0.5 - d * np.float32(res), 0, 1)


def _draw(seed: int, res: int) -> dict:
    rng = np.random.default_rng(seed)
    p = _params(rng)
    # pixel noise bytes, luminance [R,R] then per channel [3,R,R] (raw generator output: several times faster than
    # .random); as floats in [-1, 1) they are (byte + 0.5) / 128 - 1. Channels lead until the end: numpy broadcasts
    # over a trailing axis of 3 slowly.
    raw = rng.bit_generator.random_raw(-(-res * res // 2)).view(np.uint8)[:res * res * 4]
    lum, chroma = raw[:res * res].reshape(res, res), raw[res * res:].reshape(3, res, res)
    coord = (np.arange(res, dtype=np.float32) + 0.5) / res
    # background: grey level + linear gradient + noise
    k = p["bg_gradient"] * math.sqrt(2)
    gx, gy = k * math.cos(p["bg_angle"]), k * math.sin(p["bg_angle"])
    luma = lum * np.float32(_LUMA_NOISE / 128)
    grey = ((p["bg_level"] - _LUMA_NOISE * (1 - 1 / 256) - _CHROMA_NOISE * (1 - 1 / 256) + gy * (coord[:, None] - 0.5))
            + gx * (coord[None, :] - 0.5)) + luma
    rgb = grey + chroma * np.float32(_CHROMA_NOISE / 128)  # [3,R,R]
    # the object, drawn in the window of pixels its circumcircle touches
    r = p["radius"]
    i0, i1 = max(int((p["cy"] - r) * res) - 1, 0), min(int((p["cy"] + r) * res) + 2, res)
    j0, j1 = max(int((p["cx"] - r) * res) - 1, 0), min(int((p["cx"] + r) * res) + 2, res)
    dx, dy = coord[None, j0:j1] - np.float32(p["cx"]), coord[i0:i1, None] - np.float32(p["cy"])
    c, s = math.cos(p["rotation"]), math.sin(p["rotation"])
    d = _sdf(p, c * dx + s * dy, c * dy - s * dx)  # in the shape's frame (the rotation is harmless for the circle)
    mask = np.zeros((res, res), bool)
    mask[i0:i1, j0:j1] = d <= 0
    alpha = np.clip(0.5 - d * np.float32(res), 0, 1)
    fill = p["fill"][:, None, None]
    obj = (fill - np.float32(_OBJECT_NOISE * _LUMA_NOISE * (1 - 1 / 256))) + _OBJECT_NOISE * luma[i0:i1, j0:j1]
    if p["pattern"] != "none":
        obj = obj + _marks(p, dx, dy, res) * (fill * np.float32(MARK_SHADE - 1))
    window = rgb[:, i0:i1, j0:j1]
    window += alpha * (obj - window)
    rgb *= np.float32(255)
    rgb += np.float32(0.5)
    np.clip(rgb, 0, 255, out=rgb)
    return {"rgb": rgb.astype(np.uint8).transpose(1, 2, 0), "mask": mask,
            "shape": p["shape"], "color": p["color"], "pattern": p["pattern"],
            "label": label_of(p["shape"], p["pattern"])}


def render_card(seed: int, resolution: int = 64) -> dict:
    """The card of `seed` at resolution x resolution: rgb uint8 [R,R,3], mask bool [R,R] (the object's exact
    footprint: pixel centres inside it), shape / color / pattern (str) and label (int, the 16-way shape x pattern
    class). Deterministic per (seed, resolution); the labels and geometry depend on the seed only."""
    seed, resolution = _check(seed, resolution)
    card = _draw(seed, resolution)
    card["rgb"] = np.ascontiguousarray(card["rgb"])
    return card


def render_cards(seeds: Sequence[int], resolution: int = 64) -> dict:
    """Render the cards of `seeds` (each depends only on its own seed). Returns, with N = len(seeds), R = resolution:
    rgb uint8 [N,R,R,3]; mask bool [N,R,R]; shape / color / pattern '<U' strings [N]; label int32 [N]."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("render_cards needs at least one seed")
    checked = [_check(s, resolution) for s in seeds]
    res = checked[0][1]
    out = {"rgb": np.empty((len(seeds), res, res, 3), np.uint8), "mask": np.empty((len(seeds), res, res), bool)}
    names = {"shape": [], "color": [], "pattern": [], "label": []}
    for i, (seed, _) in enumerate(checked):
        card = _draw(seed, res)
        out["rgb"][i], out["mask"][i] = card["rgb"], card["mask"]
        for k in names:
            names[k].append(card[k])
    out.update({k: np.array(names[k]) for k in ("shape", "color", "pattern")})
    out["label"] = np.array(names["label"], np.int32)
    return out
