"""Per-video curation (the paper's filters and selector pseudo-labels) and three-shot samples.

For each video's shots, in order: a shot without a caption or shorter than the clip is dropped;
a shot whose DINOv2 embedding is a near-duplicate of the previous kept shot is dropped; a shot
whose CLIP/SigLIP embedding is unrelated to the previous kept shot starts a new segment (the
pair is never a memory -> target step). Only shots adjacent in the source and kept on both sides
are consecutive in a segment.

Pseudo-label of a memory latent frame r for a target shot (arXiv 2512.07802 App. A.2):
    y_r = 1/2 (cos_DINO(frame_r, target) + cos_CLIP(frame_r, target))
where a frame's embedding is that of the pixel frame the latent frame ends on (0, 4, 8, ...) and
the target's is the normalised mean over its latent frames.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..storyworld.inflation import AUGMENT_LABEL, CROSS_LABEL
from .records import Clip, Shot


@dataclass(frozen=True)
class ClipSpec:
    frames: int      # pixel frames per clip, 1 + 4n
    stride: int      # take every stride-th source frame
    width: int
    height: int

    @property
    def span(self) -> int:
        return (self.frames - 1) * self.stride + 1

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // 4

    def clip(self, shot: Shot) -> Clip:
        """The centred window of the shot (requires shot.frames >= span)."""
        start = shot.start + (shot.frames - self.span) // 2
        return Clip(shot.video, shot.index, start, start + self.span, self.stride)

    def frame_indices(self, clip: Clip) -> list[int]:
        return list(range(clip.start, clip.end, clip.stride))

    def label_frames(self, clip: Clip) -> list[int]:
        """Source frame of each latent frame: pixel frames 0, 4, 8, ... of the clip."""
        idx = self.frame_indices(clip)
        return [idx[min(4 * k, len(idx) - 1)] for k in range(self.latent_frames)]


@dataclass(frozen=True)
class Thresholds:
    min_related: float = 0.5      # CLIP/SigLIP cosine of adjacent shots below this: unrelated, split
    max_duplicate: float = 0.95   # DINOv2 cosine above this: near-duplicate, drop the later shot


def cosine_labels(memory_dino: Tensor, target_dino: Tensor, memory_clip: Tensor, target_clip: Tensor) -> Tensor:
    """"f d" memory frame embeddings and "t d" target ones (unit rows) -> labels "f"."""
    td = F.normalize(target_dino.mean(0), dim=0)
    tc = F.normalize(target_clip.mean(0), dim=0)
    return 0.5 * (memory_dino @ td + memory_clip @ tc)


def shot_embedding(frames: Tensor) -> Tensor:
    return F.normalize(frames.mean(0), dim=0)


@dataclass
class VideoPlan:
    video: str
    segments: list[list[dict]] = field(default_factory=list)   # kept shots (shot json + caption + clip)
    labels: dict[str, list[float]] = field(default_factory=dict)   # "i>j": labels of shot i's frames for target j
    dropped: list[dict] = field(default_factory=list)             # {"shot": i, "reason": ...}

    def to_json(self) -> dict:
        return {"video": self.video, "status": "ok", "segments": self.segments, "labels": self.labels,
                "dropped": self.dropped}


def sample_id(clips: list[dict], kinds: list[str]) -> str:
    key = json.dumps([clips, kinds], sort_keys=True).encode()
    return hashlib.sha1(key).hexdigest()[:16]


def make_samples(plans: list[dict], cross_share: float = 0.5, seed: int = 0) -> list[dict]:
    """Three-shot samples from the planned videos (storyworld/inflation.py's rules).

    A segment of n >= 3 shots gives its n - 2 consecutive triplets ("real3"); a segment of exactly
    2 shots gives one inflated triplet: the synthetic shot is a shot of another video ("cross",
    labels -1) with probability cross_share, else an augmented copy of the first shot ("augment",
    labels 0; horizontal flip or RGB roll), placed first or second with equal probability."""
    pool = [(p["video"], s) for p in plans for seg in p["segments"] for s in seg]
    samples: list[dict] = []
    for p in plans:
        for seg in p["segments"]:
            if len(seg) >= 3:
                for i in range(len(seg) - 2):
                    a, b, c = seg[i], seg[i + 1], seg[i + 2]
                    labels = p["labels"][f"{a['index']}>{c['index']}"] + p["labels"][f"{b['index']}>{c['index']}"]
                    samples.append(_sample([a, b, c], ["", "", ""], labels, c["caption"], "real3"))
            elif len(seg) == 2:
                first, last = seg
                real = p["labels"][f"{first['index']}>{last['index']}"]
                rng = np.random.default_rng([seed, int(sample_id([first["clip"], last["clip"]], [])[:8], 16)])
                others = [s for v, s in pool if v != p["video"]]
                use_cross = bool(others) and rng.random() < cross_share
                if use_cross:
                    syn = others[int(rng.integers(len(others)))]
                    kind, syn_labels = "cross", [CROSS_LABEL] * len(real)
                else:
                    syn = first
                    kind, syn_labels = f"augment:{int(rng.integers(1 << 31))}", [AUGMENT_LABEL] * len(real)
                if rng.random() < 0.5:
                    samples.append(_sample([first, syn, last], ["", kind, ""], real + syn_labels, last["caption"], kind))
                else:
                    samples.append(_sample([syn, first, last], [kind, "", ""], syn_labels + real, last["caption"], kind))
    return samples


def _sample(shots: list[dict], kinds: list[str], labels: list[float], caption: str, kind: str) -> dict:
    clips = [s["clip"] for s in shots]
    return {"id": sample_id(clips, kinds), "kind": kind.split(":")[0], "clips": clips, "inflation": kinds,
            "captions": [s["caption"] for s in shots], "labels": [float(x) for x in labels]}
