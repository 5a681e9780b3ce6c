"""torch Datasets over the story world: inflated training triplets and six-shot eval stories.

Split: training triplets draw stories from `story_seed("train", i)`, evaluation stories are
`story_seed("eval", offset + i)` for i < per_pattern, per pattern; the splits are disjoint by
construction, and `splits.py` says which eval offsets are for tuning and which are reserved.
Items are generated on the fly (rendering a shot is ~1 ms), deterministic in the index.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import grammar
from .inflation import KINDS, SYNTHETIC, make_triplet, story_seed
from .latent import LatentCodec, frames_to_tensor
from .world import PATTERN_NAMES, Story, make_story
from .text import Tokenizer


class TripletDataset(Dataset):
    """Item (a dict; default collate works):
    shot1, shot2, shot3   "c t h w" float32 latents (shot3 = target)
    tokens, token_mask    "l" long / bool: caption of shot3
    relevance             "f" float32, f = 2t: label of every memory latent frame (shot1 then
                          shot2); real in [0, 1], cross-video -1, augmented first shot 0
    frame_synthetic       "f" long: 0 real, 1 cross-video, 2 augmented (SYNTHETIC codes)
    shot_synthetic        "2" long: the same per memory shot
    kind                  long: index into KINDS ("real3", "cross", "augment")
    caption               str

    standalone_captions: caption shot3 as if no shot came before it (every character and room
    described in full), for a model that sees no memory (the text-only base); default: the
    grammar's caption given the two memory shots.
    """

    def __init__(self, length: int, seed: int = 0, frame_size: int = 32, pixel_frames: int = 9,
                 codec: LatentCodec | None = None, tokenizer: Tokenizer | None = None,
                 mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 standalone_captions: bool = False, world: str = "v1") -> None:
        self.length = length
        self.world = world
        self.seed = seed
        self.frame_size = frame_size
        self.pixel_frames = pixel_frames
        self.codec = codec or LatentCodec()
        self.tokenizer = tokenizer or Tokenizer()
        self.mix = mix
        self.standalone_captions = standalone_captions

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        tr = make_triplet(self.seed, index, self.frame_size, self.pixel_frames, self.mix, world=self.world)
        lat = [self.codec.encode(frames_to_tensor(px)) for px in tr.shots]
        caption = tr.caption
        if self.standalone_captions:
            st = tr.story
            caption = grammar.caption(st.characters, st.environments, [], st.shots[tr.shot_ids[2]])
        ids, mask = self.tokenizer.encode(caption)
        n = lat[0].shape[1]
        codes = [SYNTHETIC.index(s) for s in tr.synthetic]
        return {
            "shot1": lat[0], "shot2": lat[1], "shot3": lat[2],
            "tokens": ids, "token_mask": mask,
            "relevance": torch.from_numpy(tr.relevance),
            "frame_synthetic": torch.tensor(np.repeat(codes, n), dtype=torch.long),
            "shot_synthetic": torch.tensor(codes, dtype=torch.long),
            "kind": torch.tensor(KINDS.index(tr.kind), dtype=torch.long),
            "caption": caption,
        }


def eval_stories(pattern: str, count: int = 100, frame_size: int = 32,
                 pixel_frames: int = 9, offset: int = 0, world: str = "v1") -> list[Story]:
    """The held-out six-shot stories of one pattern: eval indices [offset, offset + count)
    (eval seed split, never used for training; `splits.py`: offset 0 = tuning range,
    `FRESH_OFFSET` = the reserved range)."""
    if offset < 0:
        raise ValueError(f"story offset {offset} must be >= 0")
    return [make_story(story_seed("eval", offset + i), pattern, frame_size, pixel_frames, world)
            for i in range(count)]


class EvalStoryDataset(Dataset):
    """Six-shot held-out stories, `per_pattern` of each pattern (pattern-major order).

    Item: {"story": Story (ground truth: story.truth(shot, frame)), "pattern": str,
           "latents": "s c t h w", "tokens": "s l", "token_mask": "s l", "captions": list[str]}.
    Story objects do not collate: use batch_size=None or collate_fn=list."""

    def __init__(self, per_pattern: int = 100, patterns: Sequence[str] = PATTERN_NAMES,
                 frame_size: int = 32, pixel_frames: int = 9, codec: LatentCodec | None = None,
                 tokenizer: Tokenizer | None = None, offset: int = 0, world: str = "v1") -> None:
        self.items = [(p, offset + i) for p in patterns for i in range(per_pattern)]
        self.world = world
        self.frame_size = frame_size
        self.pixel_frames = pixel_frames
        self.codec = codec or LatentCodec()
        self.tokenizer = tokenizer or Tokenizer()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pattern, i = self.items[index]
        story = make_story(story_seed("eval", i), pattern, self.frame_size, self.pixel_frames, self.world)
        latents = torch.stack([self.codec.encode(frames_to_tensor(story.render_shot(k)))
                               for k in range(len(story.shots))])
        ids, mask = self.tokenizer.encode_batch(story.captions)
        return {"story": story, "pattern": pattern, "latents": latents, "tokens": ids,
                "token_mask": mask, "captions": list(story.captions)}


#: Story indices of `StoryPrefixPool` start here (training split, apart from the triplets').
PREFIX_POOL_BASE = 1 << 39


class StoryPrefixPool:
    """Whole six-shot training-split stories, rendered once, for L_sel on story-length memory.

    A 3-shot training sample gives the selector two memory shots; at evaluation it ranks up to
    five. `batch(s, index)` returns, for stories ``index`` and target shot ``s`` (1..5):
    memory "b (s t) c h w" (shots 0..s-1, bank space), the target's caption tokens "b l" and
    mask "b l", and `storyworld.relevance` labels "b (s t)". Patterns alternate (i mod 3).
    """

    def __init__(self, count: int, seed: int = 0, frame_size: int = 32, pixel_frames: int = 9,
                 codec: LatentCodec | None = None, tokenizer: Tokenizer | None = None,
                 world: str = "v1") -> None:
        if count < 1:
            raise ValueError(f"StoryPrefixPool count={count}: need at least one story")
        from .world import relevance

        codec = codec or LatentCodec()
        tok = tokenizer or Tokenizer()
        lat, ids, masks, rels = [], [], [], []
        for i in range(count):
            st = make_story(story_seed("train", PREFIX_POOL_BASE + seed * count + i),
                            PATTERN_NAMES[i % len(PATTERN_NAMES)], frame_size, pixel_frames, world)
            lat.append(torch.stack([codec.encode(frames_to_tensor(st.render_shot(k)))
                                    for k in range(len(st.shots))]))
            enc = [tok.encode(c) for c in st.captions]
            ids.append(torch.stack([a for a, _ in enc]))
            masks.append(torch.stack([m for _, m in enc]))
            rels.append([torch.from_numpy(relevance(st.shots[:s], st.shots[s]))
                         for s in range(1, len(st.shots))])
        self.latents = torch.stack(lat)            # "n s c t h w"
        self.tokens = torch.stack(ids)             # "n s l"
        self.token_mask = torch.stack(masks)       # "n s l"
        self.relevance = rels                      # [n][s-1] -> "(s t)"
        self.shots = self.latents.shape[1]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, s: int, index: Sequence[int]) -> dict[str, torch.Tensor]:
        if not 1 <= s < self.shots:
            raise ValueError(f"target shot {s} out of range 1..{self.shots - 1}")
        idx = torch.as_tensor(list(index), dtype=torch.long)
        mem = self.latents[idx, :s]                                   # "b s c t h w"
        return {"memory": mem.transpose(2, 3).flatten(1, 2),          # "b (s t) c h w"
                "tokens": self.tokens[idx, s], "token_mask": self.token_mask[idx, s],
                "relevance": torch.stack([self.relevance[i][s - 1] for i in idx.tolist()])}
