"""Inter-shot consistency: C-Cons, E-Cons and their average (OneStory Table 1, "inter-shot").

For each shot, `frames_per_shot` frames are sampled (middle of evenly spaced segments). With
person masks from a segmenter (the paper: YOLO person segmentation), every frame gives person
regions (`regions.person_crop`) and one background (`regions.background`), each embedded with
DINOv2 and L2-normalised: P[s][i] "k d" (k persons in frame i of shot s) and B[s][i] "d".

    match_m(P, Q)   = (1/m) * sum of the m largest cosines picked greedily one-to-one between
                      the rows of P and Q (a pick removes its row and column); a character that
                      is not found (fewer than m persons in a frame) adds 0
    char_sim(s, t)  = mean over frame pairs (i, j) of match_m(P[s][i], P[t][j]),
                      m = number of characters the annotation says shots s and t share (1 for
                      pairs that share none: heatmap only)
    env_sim(s, t)   = mean over frame pairs (i, j) of cos(B[s][i], B[t][j])
    C-Cons          = mean of char_sim over the shot pairs s < t that share a character
    E-Cons          = mean of env_sim over the shot pairs s < t annotated with the same place
    inter-shot avg  = (C-Cons + E-Cons) / 2

The annotation alone decides which pairs count: a story whose characters never recur has no
C-Cons (None), one that never returns to a place has no E-Cons. Diagonal entries of the
matrices compare a shot's own frames (i != j; 1 for a single-frame shot).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .annotation import StoryAnnotation
from .frames import sample_indices
from .interfaces import ImageEncoder, PersonSegmenter
from .regions import background, check_masks, person_crop


@dataclass(frozen=True)
class ShotRegions:
    persons: tuple[Tensor, ...]     # per sampled frame: "k d", L2-normalised
    backgrounds: Tensor             # "n d", L2-normalised
    frames: tuple[int, ...]         # the sampled frame indices
    persons_found: int              # frames with at least one person


def shot_regions(shot: Tensor, dino: ImageEncoder, persons: Optional[PersonSegmenter] = None,
                 masks: Optional[Sequence[Tensor]] = None, frames_per_shot: int = 4,
                 crop: int = 224) -> ShotRegions:
    """shot "t 3 h w" -> its region embeddings. Person masks come from `persons` (called on the
    sampled frames) or from `masks` (one bool "k h w" per frame of the shot, precomputed)."""
    idx = sample_indices(shot.shape[0], frames_per_shot)
    frames = shot[idx]
    if masks is not None:
        if len(masks) != shot.shape[0]:
            raise ValueError(f"person masks: {len(masks)} given for a shot of {shot.shape[0]} frames")
        ms = check_masks([masks[i] for i in idx], frames, "person masks")
    elif persons is not None:
        ms = check_masks(persons(frames), frames, f"person segmenter {getattr(persons, 'name', '')!r}")
    else:
        raise ValueError("C-Cons / E-Cons need person masks: pass a person segmenter or masks")
    crops = [person_crop(f, m, crop) for f, mk in zip(frames, ms) for m in mk if m.any()]
    counts = [int(sum(bool(m.any()) for m in mk)) for mk in ms]
    bgs = torch.stack([background(f, mk) for f, mk in zip(frames, ms)])
    emb_bg = F.normalize(dino(bgs).float(), dim=-1)
    if crops:
        emb_p = F.normalize(dino(torch.stack(crops)).float(), dim=-1)
    else:
        emb_p = emb_bg.new_zeros(0, emb_bg.shape[-1])
    per_frame = tuple(torch.split(emb_p, counts)) if crops else tuple(emb_p[:0] for _ in counts)
    return ShotRegions(per_frame, emb_bg, tuple(idx), sum(c > 0 for c in counts))


def match(p: Tensor, q: Tensor, m: int) -> float:
    """Greedy one-to-one matching of m characters between person sets p "a d" and q "b d"."""
    if m <= 0:
        raise ValueError("match needs m >= 1")
    sims = p @ q.T
    total = 0.0
    for _ in range(min(m, sims.shape[0], sims.shape[1])):
        flat = int(torch.argmax(sims))
        r, c = divmod(flat, sims.shape[1])
        total += float(sims[r, c])
        sims[r, :] = -float("inf")
        sims[:, c] = -float("inf")
    return total / m


def _pairs(a: int, b: int, same: bool) -> list[tuple[int, int]]:
    return [(i, j) for i in range(a) for j in range(b) if not (same and i == j)]


def char_similarity(a: ShotRegions, b: ShotRegions, m: int, same: bool = False) -> float:
    pairs = _pairs(len(a.persons), len(b.persons), same)
    if not pairs:
        return 1.0
    return sum(match(a.persons[i], b.persons[j], m) for i, j in pairs) / len(pairs)


def env_similarity(a: ShotRegions, b: ShotRegions, same: bool = False) -> float:
    sims = a.backgrounds @ b.backgrounds.T
    pairs = _pairs(sims.shape[0], sims.shape[1], same)
    if not pairs:
        return 1.0
    return sum(float(sims[i, j]) for i, j in pairs) / len(pairs)


@dataclass(frozen=True)
class InterShot:
    c_cons: Optional[float]
    e_cons: Optional[float]
    inter_avg: Optional[float]
    character: list[list[float]]          # "s s" char_sim (m = shared count, 1 where none)
    environment: list[list[float]]        # "s s" env_sim
    character_pairs: list[tuple[int, int]]
    place_pairs: list[tuple[int, int]]
    persons_found: list[int]              # per shot: sampled frames with a person


def inter_shot(regions: Sequence[ShotRegions], story: StoryAnnotation) -> InterShot:
    n = len(story.shots)
    if len(regions) != n:
        raise ValueError(f"story {story.id!r}: {len(regions)} shots of regions for {n} annotated shots")
    cp = story.character_pairs()
    pp = story.place_pairs()
    char = [[0.0] * n for _ in range(n)]
    env = [[0.0] * n for _ in range(n)]
    for s in range(n):
        for t in range(s, n):
            m = len(cp.get((s, t), ())) or 1
            char[s][t] = char[t][s] = char_similarity(regions[s], regions[t], m, same=s == t)
            env[s][t] = env[t][s] = env_similarity(regions[s], regions[t], same=s == t)
    c = sum(char[s][t] for s, t in cp) / len(cp) if cp else None
    e = sum(env[s][t] for s, t in pp) / len(pp) if pp else None
    avg = (c + e) / 2 if c is not None and e is not None else None
    return InterShot(c, e, avg, char, env, sorted(cp), pp, [r.persons_found for r in regions])
