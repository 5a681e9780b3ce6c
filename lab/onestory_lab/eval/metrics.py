"""Exact metrics of a generated story, read back with the deterministic attribute reader.

For shot s and each of its latent frames (ground truth `story.truth(s, j)`):
* character recall   recurring characters (shown in an earlier shot, so the caption withholds
                     their appearance: "the second figure") rendered with all three attributes
                     right. The memory mechanism's job.
* environment recall recurring rooms ("back in the first room") read correctly.
* caption alignment  NEW entities (characters / rooms the caption states in full) rendered right.
* attribute accuracy for each recurring character, the read character nearest to its true x
                     centre: shape / colour / pattern right (0 for all three if none was read).
Counts are summed over frames and stories and turned into ratios by `aggregate`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

from ..storyworld.decode import read_latent
from ..storyworld.world import Story

KEYS = ("char_hit", "char_n", "env_hit", "env_n", "cap_hit", "cap_n",
        "shape_hit", "colour_hit", "pattern_hit")


def story_metrics(story: Story, latents: Sequence, readings=None,
                  frames: Optional[Sequence[int]] = None) -> dict:
    """Counts for one story; also per-shot counts ("shot{s}_char_hit/_n", "shot{s}_colour_hit",
    "shot{s}_env_hit/_n": where in a story memory is used).
    `frames`: latent frames of each shot to read (default all; the cast and room are the same in
    every frame of a shot, so reading fewer only changes the sample size, not what is measured)."""
    c: Counter = Counter()
    seen_chars: set[int] = set()
    seen_envs: set[int] = set()
    for s, z in enumerate(latents):
        # a requested frame beyond a short shot reads its last frame (1-latent-frame shots read 0)
        idx = (list(range(z.shape[1])) if frames is None
               else sorted({min(j, z.shape[1] - 1) for j in frames}))
        reads = readings[s] if readings is not None else read_latent(z[:, idx], world=story.world)
        shot = story.shots[s]
        for j, rd in zip(idx, reads):
            truth = story.truth(s, j)
            got = Counter(r.character for r in rd.characters)
            for cid, ch, pl in zip(truth.character_ids, truth.characters, truth.placements):
                hit = got[ch] > 0
                if hit:
                    got[ch] -= 1
                if cid in seen_chars:
                    c["char_n"] += 1
                    c["char_hit"] += hit
                    c[f"shot{s + 1}_char_n"] += 1
                    c[f"shot{s + 1}_char_hit"] += hit
                    cx = pl.x + pl.size / 2
                    if rd.characters:
                        near = min(rd.characters, key=lambda r: abs(r.x + r.size / 2 - cx))
                        c["shape_hit"] += near.character.shape == ch.shape
                        c["colour_hit"] += near.character.colour == ch.colour
                        c[f"shot{s + 1}_colour_hit"] += near.character.colour == ch.colour
                        c["pattern_hit"] += near.character.pattern == ch.pattern
                else:
                    c["cap_n"] += 1
                    c["cap_hit"] += hit
            env_ok = rd.environment == truth.environment
            if shot.environment in seen_envs:
                c["env_n"] += 1
                c["env_hit"] += env_ok
                c[f"shot{s + 1}_env_n"] += 1
                c[f"shot{s + 1}_env_hit"] += env_ok
            else:
                c["cap_n"] += 1
                c["cap_hit"] += env_ok
        seen_chars |= set(shot.cast)
        seen_envs.add(shot.environment)
    return dict(c)


def aggregate(counts: Iterable[dict]) -> dict[str, float]:
    tot: Counter = Counter()
    n = 0
    for d in counts:
        tot.update(d)
        n += 1
    r = lambda a, b: float(tot[a]) / tot[b] if tot[b] else float("nan")  # noqa: E731
    out = {"stories": n,
           "character_recall": r("char_hit", "char_n"),
           "environment_recall": r("env_hit", "env_n"),
           "caption_alignment": r("cap_hit", "cap_n"),
           "shape_acc": r("shape_hit", "char_n"), "colour_acc": r("colour_hit", "char_n"),
           "pattern_acc": r("pattern_hit", "char_n"),
           "recurring_character_frames": int(tot["char_n"])}
    for s in range(1, 7):
        if tot[f"shot{s}_char_n"]:
            out[f"shot{s}_character_recall"] = r(f"shot{s}_char_hit", f"shot{s}_char_n")
            out[f"shot{s}_colour_acc"] = r(f"shot{s}_colour_hit", f"shot{s}_char_n")
        if tot[f"shot{s}_env_n"]:
            out[f"shot{s}_environment_recall"] = r(f"shot{s}_env_hit", f"shot{s}_env_n")
    return out
