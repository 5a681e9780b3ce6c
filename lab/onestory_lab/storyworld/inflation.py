"""Three-shot training samples with the paper's shot inflation (arXiv 2512.07802 §4.4, App. A).

Every sample is a triplet whose last shot is the target:
* ``real3``   three consecutive shots of a story;
* ``cross``   two consecutive shots (first, last) plus a shot of *another* story inserted at
              position 0 or 1 (cross-video insertion; its frames get relevance -1);
* ``augment`` two consecutive shots plus a colour- or spatially-transformed copy of the first
              (augmented first shot; its frames get relevance 0).
The target caption is computed from the *real* shots of the triplet only (grammar.caption), so
"the first figure" always means the first figure the model can actually see among real shots.
Real memory frames get `storyworld.relevance` labels in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import grammar
from .world import NUM_SHOTS, PATTERN_NAMES, FrameTruth, Story, make_story, relevance

KINDS: tuple[str, ...] = ("real3", "cross", "augment")
SYNTHETIC: tuple[str, ...] = ("", "cross", "augment")   # index = synthetic code per memory shot
CROSS_LABEL = -1.0
AUGMENT_LABEL = 0.0
SPLIT_BASE: dict[str, int] = {"train": 0, "eval": 1 << 40}


def story_seed(split: str, index: int) -> int:
    """Disjoint seed ranges per split (eval seeds start at 2**40), so no eval story is trained on.
    Which eval indices may be used for what: `storyworld/splits.py`."""
    if split not in SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_BASE)}")
    if not 0 <= index < 1 << 40:
        raise ValueError(f"story index {index} out of range [0, 2**40)")
    return SPLIT_BASE[split] + index


@dataclass(frozen=True)
class Triplet:
    shots: tuple[np.ndarray, np.ndarray, np.ndarray]   # pixels "t h w 3" each; last = target
    caption: str                                       # caption of the target
    relevance: np.ndarray                              # "f": latent frames of shots 0 and 1
    synthetic: tuple[str, str]                         # per memory shot: "" | "cross" | "augment"
    kind: str
    story: Story
    shot_ids: tuple[int | None, int | None, int]      # story shot of each slot (None = synthetic)
    augmentation: str = ""                             # "hflip" | "rgb-roll" for kind "augment"

    def target_truth(self) -> tuple[FrameTruth, ...]:
        return tuple(self.story.truth(self.shot_ids[2], i) for i in range(self.story.latent_frames))


def augment(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Spatial (horizontal flip) or colour (RGB channel roll) transform of a shot "t h w 3"."""
    if rng.random() < 0.5:
        return np.ascontiguousarray(frames[:, :, ::-1]), "hflip"
    return np.ascontiguousarray(np.roll(frames, 1, axis=-1)), "rgb-roll"


def make_triplet(seed: int, index: int, frame_size: int = 32, pixel_frames: int = 9,
                 mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 split: str = "train", pool: int = 1 << 30, world: str = "v1") -> Triplet:
    """Training sample `index` of the stream `seed` (pure function of its arguments).

    Stories are drawn from `split` indices [0, pool); cross-video shots come from a different
    story of the same split."""
    rng = np.random.default_rng([seed, index, 0x3_5407_802])
    kind = KINDS[int(rng.choice(3, p=np.asarray(mix) / np.sum(mix)))]
    pattern = PATTERN_NAMES[int(rng.integers(len(PATTERN_NAMES)))]
    story_index = int(rng.integers(pool))
    story = make_story(story_seed(split, story_index), pattern, frame_size, pixel_frames, world)
    shots = story.shots
    n = story.latent_frames

    if kind == "real3":
        s = int(rng.integers(NUM_SHOTS - 2))
        ids = (s, s + 1, s + 2)
        memory = [shots[s], shots[s + 1]]
        cap = grammar.caption(story.characters, story.environments, memory, shots[s + 2])
        return Triplet(tuple(story.render_shot(i) for i in ids), cap,
                       relevance(memory, shots[s + 2]), ("", ""), kind, story, ids)

    s = int(rng.integers(NUM_SHOTS - 1))
    first, last = shots[s], shots[s + 1]
    cap = grammar.caption(story.characters, story.environments, [first], last)
    real_rel = relevance([first], last)
    first_px = story.render_shot(s)
    aug_name = ""
    if kind == "cross":
        other_index = int(rng.integers(pool - 1))
        other_index += other_index >= story_index        # never the same story
        other = make_story(story_seed(split, other_index),
                           PATTERN_NAMES[int(rng.integers(len(PATTERN_NAMES)))], frame_size, pixel_frames,
                           world)
        syn_px = other.render_shot(int(rng.integers(NUM_SHOTS)))
        syn_rel = np.full(n, CROSS_LABEL, dtype=np.float32)
    else:
        syn_px, aug_name = augment(first_px, rng)
        syn_rel = np.full(n, AUGMENT_LABEL, dtype=np.float32)
    if rng.random() < 0.5:   # (first, syn, last)
        px = (first_px, syn_px)
        rel = np.concatenate([real_rel, syn_rel])
        synth: tuple[str, str] = ("", kind)
        ids: tuple[int | None, int | None, int] = (s, None, s + 1)
    else:                    # (syn, first, last)
        px = (syn_px, first_px)
        rel = np.concatenate([syn_rel, real_rel])
        synth = (kind, "")
        ids = (None, s, s + 1)
    return Triplet((px[0], px[1], story.render_shot(s + 1)), cap, rel.astype(np.float32), synth,
                   kind, story, ids, aug_name)
