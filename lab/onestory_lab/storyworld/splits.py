"""The story world's seed ranges: which stories training, tuning and final reports may touch.

Every story is `make_story(story_seed(split, index), pattern, ...)` (inflation.py). Two seed
splits exist by construction (`SPLIT_BASE`): "train" (seeds [0, 2**40)) and "eval" (seeds
[2**40, 2**41)); no training stream ever draws an eval seed. The eval split is further cut into
index ranges with different rules, addressed by an *offset* into it
(`eval_stories(..., offset=N)`, `python -m onestory_lab eval --story-offset N`):

============  =========================  ==================================================
range         eval indices               who may use it
============  =========================  ==================================================
train         (the "train" split)        training streams: triplets (indices < 2**30) and the
                                         selector's story-prefix pool (indices >= 2**39)
tuning        [0, 2**30)                 evaluation while developing: sampler settings,
                                         checkpoints, probes
fresh         [2**30, 2**31)             reserved for final reported numbers only; no run,
                                         probe or tuning decision may look at it
============  =========================  ==================================================

A report states the range of every number it gives (`range_of(offset)`). The recall study's
table (docs/results.md) and the demo story use the fresh sub-range from `STUDY_OFFSET`
(= 2**30 + 2**20): the demo renders its first insert-and-recall story, whatever it shows.
"""
from __future__ import annotations

TUNING_OFFSET = 0
FRESH_OFFSET = 1 << 30
FRESH_END = 1 << 31
STUDY_OFFSET = FRESH_OFFSET + (1 << 20)   # first story of the recall study's table and of the demo

RANGES: dict[str, tuple[int, int]] = {"tuning": (TUNING_OFFSET, FRESH_OFFSET),
                                      "fresh": (FRESH_OFFSET, FRESH_END)}


def range_of(offset: int, count: int = 1) -> str:
    """Name of the eval range holding indices [offset, offset + count); raises if they straddle two."""
    for name, (lo, hi) in RANGES.items():
        if lo <= offset and offset + count <= hi:
            return name
    raise ValueError(f"eval indices [{offset}, {offset + count}) are not inside one range of "
                     f"{RANGES}; pick --story-offset inside tuning or fresh")


def offset_of(name: str) -> int:
    """First eval index of a named range ("tuning" or "fresh")."""
    if name not in RANGES:
        raise ValueError(f"unknown seed range {name!r}; expected one of {tuple(RANGES)}")
    return RANGES[name][0]
