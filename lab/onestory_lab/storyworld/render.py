"""Pixel rendering of the story world: palettes, shape/pattern masks, environment backgrounds.

Everything is integer-positioned and deterministic, so the attribute reader (`decode.py`) can
re-render candidates and match them exactly (analysis by synthesis). Frames are float32
"h w 3" in [0, 1].

Palette design (why these colours): characters are saturated, their pattern shade is the same
hue at 40 % brightness, environments are pastel. The three families are far apart in RGB
(checked by `min_palette_gap` and `min_room_gap`, asserted in tests), so a pixel's family is never
ambiguous on clean renders and stays separable under moderate noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted")
# Patterns added by later world versions (spec.py); the renderer draws every pattern it knows.
EXTRA_PATTERNS: tuple[str, ...] = ("spotted",)
CHAR_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (240, 210, 0),
    "magenta": (220, 0, 180),
    "cyan": (0, 190, 220),
    "lime": (110, 220, 0),
}
# Pattern pixels are the character colour darkened; the silhouette therefore stays intact.
DARK_FACTOR = 0.4
ENV_COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (130, 165, 245),
    "green": (140, 235, 130),
    "grey": (170, 170, 170),
    "sand": (235, 225, 120),
    "lilac": (215, 150, 240),
    "peach": (255, 160, 160),
}
TEXTURES: tuple[str, ...] = ("bare", "tiled", "carpeted")
LAYOUTS: tuple[str, ...] = ("door-left", "door-right", "window")
FRAMINGS: tuple[str, ...] = ("wide", "medium", "close-up")
# Character size as a fraction of the frame edge; rounded to odd pixel sizes so shapes
# have an exact centre pixel (9 / 13 / 17 px at 32 px frames).
FRAMING_SCALE: dict[str, float] = {"wide": 0.28, "medium": 0.41, "close-up": 0.53}

# Shading factors are strong enough that every texture/layout element differs from its room's
# base colour by more than the reader's tolerance (grey * 0.25 = 42/255 > 0.12).
TILE_FACTOR = 0.75      # tiled: grid lines every `tile` px
CARPET_FACTOR = 0.75    # carpeted: lower 30 % of the frame
DOOR_FACTOR = 0.5
WINDOW_MIX = 0.6        # window = mix(background, white, 0.6)


@dataclass(frozen=True)
class Character:
    shape: str
    colour: str
    pattern: str

    def words(self) -> tuple[str, str, str]:
        return (self.colour, self.pattern, self.shape)


@dataclass(frozen=True)
class Environment:
    colour: str
    texture: str
    layout: str

    def words(self) -> tuple[str, str, str]:
        return (self.colour, self.texture, self.layout)


@dataclass(frozen=True)
class Placement:
    """One character in one latent-rate state; (x, y) is the top-left pixel of its size² box."""

    character: int
    x: int
    y: int
    size: int


def framing_size(framing: str, frame_size: int, scale: float | None = None) -> int:
    """Body edge in pixels (odd); `scale` overrides the v1 fraction (world versions, spec.py)."""
    s = int(round((FRAMING_SCALE[framing] if scale is None else scale) * frame_size))
    return s if s % 2 == 1 else s + 1


def rgb(colour: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) / 255.0


def char_rgb(colour: str) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) float RGB of a character colour."""
    bright = rgb(CHAR_COLOURS[colour])
    return bright, np.round(bright * 255.0 * DARK_FACTOR) / 255.0


@lru_cache(maxsize=None)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """bool "size size"; every shape touches all four sides of its box (bbox == size²)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = np.abs(xx - c), np.abs(yy - c)
    if shape == "circle":
        m = dx**2 + dy**2 <= (size / 2.0) ** 2
    elif shape == "square":
        m = np.ones((size, size), dtype=bool)
    elif shape == "triangle":   # apex up, base on the bottom row
        m = dx <= (yy / max(size - 1, 1)) * c + 0.5
    elif shape == "diamond":
        m = dx + dy <= c + 0.5
    elif shape == "cross":
        arm = size / 6.0
        m = (dx <= arm) | (dy <= arm)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    m = np.asarray(m, dtype=bool)
    m.setflags(write=False)
    return m


@lru_cache(maxsize=None)
def pattern_mask(pattern: str, size: int) -> np.ndarray:
    """bool "size size": pixels drawn in the dark shade (box-relative, so it moves with the body)."""
    yy, xx = np.mgrid[0:size, 0:size]
    if pattern == "solid":
        m = np.zeros((size, size), dtype=bool)
    elif pattern == "striped":  # horizontal stripes, 2 px on / 2 px off
        m = (yy // 2) % 2 == 1
    elif pattern == "dotted":   # 1 px dots on a 3 px lattice
        m = (yy % 3 == 1) & (xx % 3 == 1)
    elif pattern == "spotted":  # 2 x 2 px dots on a 4 px lattice (whole codec cells at even offsets)
        m = ((yy // 2) % 2 == 1) & ((xx // 2) % 2 == 1)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS + EXTRA_PATTERNS}")
    m = np.asarray(m, dtype=bool)
    m.setflags(write=False)
    return m


def character_patch(ch: Character, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask "s s" bool, colours "s s 3" float) of a character drawn in its own box."""
    mask = shape_mask(ch.shape, size)
    bright, dark = char_rgb(ch.colour)
    dark_px = pattern_mask(ch.pattern, size)
    colours = np.where(dark_px[..., None], dark, bright).astype(np.float32)
    return mask, colours


@lru_cache(maxsize=None)
def _background(env: Environment, frame_size: int) -> np.ndarray:
    h = w = frame_size
    u = frame_size / 32.0  # layout geometry is specified at 32 px and scaled
    base = rgb(ENV_COLOURS[env.colour])
    img = np.broadcast_to(base, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    tile = max(4, int(round(8 * u)))
    if env.texture == "tiled":
        img[(yy % tile == 0) | (xx % tile == 0)] = base * TILE_FACTOR
    elif env.texture == "carpeted":
        img[yy >= int(round(0.7 * h))] = base * CARPET_FACTOR
    elif env.texture != "bare":
        raise ValueError(f"unknown texture {env.texture!r}; expected one of {TEXTURES}")
    dw, dh, m = int(round(7 * u)), int(round(14 * u)), int(round(2 * u))
    if env.layout == "door-left":
        img[h - dh:, m:m + dw] = base * DOOR_FACTOR
    elif env.layout == "door-right":
        img[h - dh:, w - m - dw:w - m] = base * DOOR_FACTOR
    elif env.layout == "window":
        ww, wh = int(round(10 * u)), int(round(6 * u))
        img[m // 2 + 1:m // 2 + 1 + wh, (w - ww) // 2:(w + ww) // 2] = base + (1 - base) * WINDOW_MIX
    else:
        raise ValueError(f"unknown layout {env.layout!r}; expected one of {LAYOUTS}")
    img = np.round(img * 255.0) / 255.0  # land on the uint8 grid so PNG/uint8 round trips are exact
    img = img.astype(np.float32)
    img.setflags(write=False)
    return img


def background(env: Environment, frame_size: int) -> np.ndarray:
    """float32 "h w 3" (read-only, cached)."""
    return _background(env, frame_size)


def render_frame(env: Environment, characters: dict[int, Character] | tuple[Character, ...],
                 placements: tuple[Placement, ...], frame_size: int) -> np.ndarray:
    """float32 "h w 3" in [0, 1]: the background with every placed character pasted on top."""
    img = background(env, frame_size).copy()
    for p in placements:
        mask, colours = character_patch(characters[p.character], p.size)
        y0, x0 = p.y, p.x
        if y0 < 0 or x0 < 0 or y0 + p.size > frame_size or x0 + p.size > frame_size:
            raise ValueError(f"placement {p} leaves the {frame_size}px frame")
        region = img[y0:y0 + p.size, x0:x0 + p.size]
        region[mask] = colours[mask]
    return img


def all_characters(shapes: tuple[str, ...] = SHAPES, patterns: tuple[str, ...] = PATTERNS
                   ) -> tuple[Character, ...]:
    """Every character of a world's attribute sets (default: the v1 world's)."""
    return tuple(Character(s, c, p) for s in shapes for c in CHAR_COLOURS for p in patterns)


def all_environments() -> tuple[Environment, ...]:
    return tuple(Environment(c, t, l) for c in ENV_COLOURS for t in TEXTURES for l in LAYOUTS)


def min_palette_gap(frame_size: int = 32) -> float:
    """Smallest max-abs RGB gap between any character pixel colour and any background pixel colour."""
    chars = np.stack([c for name in CHAR_COLOURS for c in char_rgb(name)])
    bgs = np.unique(np.concatenate([background(e, frame_size).reshape(-1, 3)
                                    for e in all_environments()]), axis=0)
    return float(np.abs(chars[:, None] - bgs[None]).max(-1).min())


def min_room_gap() -> float:
    """Smallest max-abs RGB gap between two room base colours."""
    cols = np.stack([rgb(c) for c in ENV_COLOURS.values()])
    d = np.abs(cols[:, None] - cols[None]).max(-1)
    return float(d[~np.eye(len(cols), dtype=bool)].min())
