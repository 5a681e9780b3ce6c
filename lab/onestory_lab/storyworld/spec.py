"""World versions: the attribute sets and body sizes a story is drawn from (`make_story(world=)`).

``v1`` is the original world (5 shapes, 3 patterns, bodies 9 / 13 / 17 px at 32 px frames).
``v2`` is built so that every stated attribute is visible at the DiT's token scale (a token is a
4 x 4 pixel block: 2 x 2 latent cells of 2 x 2 pixels), after measuring why the v1 base draws
shapes at chance (docs/storyworld.md, "World versions"):

* shapes: square, triangle, diamond, cross. The circle is dropped: it differs from the square
  and the diamond only along its edge, by less than one token, and the v1 model drew every
  shape as the same ragged blob (read back as "diamond" for 4 of 5 shapes). The four kept
  silhouettes differ in whole tokens (corners, lower half, off-axis quadrants);
* patterns: solid, striped, spotted. "spotted" is 2 x 2 dark dots on a 4 px lattice, i.e. whole
  latent cells, where v1's "dotted" was 1 px dots on a 3 px lattice that cut across cells;
* bodies 13 / 17 / 21 px (single character) and 13 px for pairs (two bodies must fit side by
  side in 32 px with a one-pixel gap); positions snapped to even pixels so patterns line up
  with the codec's 2 x 2 cells.
A story of one world never uses another world's shapes or patterns, and the reader
(`decode.read_frame(world=)`) only considers that world's candidates, so chance levels follow
the world: 1/4 for a v2 shape, 1/5 for a v1 shape.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldSpec:
    name: str
    shapes: tuple[str, ...]
    patterns: tuple[str, ...]
    framing_scale: tuple[tuple[str, float], ...]   # framing -> body size / frame edge
    pair_framings: tuple[str, ...]                 # framings a two-character shot may use
    even_positions: bool                           # snap body boxes to even pixels

    def scale(self, framing: str) -> float:
        return dict(self.framing_scale)[framing]


WORLDS: dict[str, WorldSpec] = {
    "v1": WorldSpec("v1", ("circle", "square", "triangle", "diamond", "cross"),
                    ("solid", "striped", "dotted"),
                    (("wide", 0.28), ("medium", 0.41), ("close-up", 0.53)), ("wide", "medium"), False),
    "v2": WorldSpec("v2", ("square", "triangle", "diamond", "cross"),
                    ("solid", "striped", "spotted"),
                    (("wide", 0.41), ("medium", 0.53), ("close-up", 0.66)), ("wide",), True),
}
DEFAULT_WORLD = "v1"


def world_spec(name: str) -> WorldSpec:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; expected one of {tuple(WORLDS)}")
    return WORLDS[name]
