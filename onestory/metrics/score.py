"""Score one story: every metric whose model is available; the others name what is missing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..errors import ShapeError
from . import alignment, inter_shot, intra_shot
from .annotation import StoryAnnotation
from .frames import check_frames
from .interfaces import Models


@dataclass(frozen=True)
class ScoreOptions:
    region_frames: int = 4        # frames per shot for C-Cons / E-Cons
    align_frames: int = 8         # frames per shot for S-Align (ViCLIP takes 8)
    aesthetic_frames: int = 0     # 0 = every frame (VBench)
    consistency_frames: int = 0   # 0 = every frame (VBench)
    fps: float = 16.0             # frame rate of the shots (dynamic degree samples ~8 fps)
    crop: int = 224


@dataclass
class StoryScore:
    story: str
    pattern: Optional[str]
    metrics: dict = field(default_factory=dict)        # Table 1 keys -> float | None
    per_shot: dict = field(default_factory=dict)       # key -> list per shot
    matrices: dict = field(default_factory=dict)       # "character" / "environment" -> "s s"
    models: dict = field(default_factory=dict)         # metric -> model name
    missing: dict = field(default_factory=dict)        # metric -> why it was not computed

    def to_json(self) -> dict:
        return {"story": self.story, "pattern": self.pattern, "metrics": self.metrics,
                "per_shot": self.per_shot, "matrices": self.matrices, "models": self.models,
                "missing": self.missing}


def _name(m: object) -> str:
    return str(getattr(m, "name", type(m).__name__))


def _sub(frames: Tensor, k: int) -> Tensor:
    from .frames import sample_indices
    return frames[sample_indices(frames.shape[0], k)]


@torch.no_grad()
def score_story(shots: Sequence[Tensor], story: StoryAnnotation, models: Models,
                options: ScoreOptions = ScoreOptions(),
                person_masks: Optional[Sequence[Sequence[Tensor]]] = None) -> StoryScore:
    """shots: one "t 3 h w" tensor in [0, 1] per shot, in story order.
    person_masks: optional precomputed masks (per shot, per frame a bool "k h w"), used instead
    of `models.persons`."""
    if len(shots) != len(story.shots):
        raise ShapeError(f"story {story.id!r}: the video has {len(shots)} shots but the annotation has "
                         f"{len(story.shots)}")
    shots = [check_frames(s, f"story {story.id!r}, shot {i + 1}") for i, s in enumerate(shots)]
    out = StoryScore(story.id, story.pattern)
    m = out.metrics

    # inter-shot
    if models.dino is None:
        out.missing["c_cons"] = out.missing["e_cons"] = models.why_missing("dino")
    elif models.persons is None and person_masks is None:
        out.missing["c_cons"] = out.missing["e_cons"] = models.why_missing("persons")
    else:
        regions = [inter_shot.shot_regions(s, models.dino, models.persons,
                                           None if person_masks is None else person_masks[i],
                                           options.region_frames, options.crop) for i, s in enumerate(shots)]
        r = inter_shot.inter_shot(regions, story)
        m.update(c_cons=r.c_cons, e_cons=r.e_cons, inter_avg=r.inter_avg)
        out.matrices.update(character=r.character, environment=r.environment,
                            character_pairs=[list(p) for p in r.character_pairs],
                            place_pairs=[list(p) for p in r.place_pairs])
        out.per_shot["persons_found"] = r.persons_found
        seg = "given masks" if person_masks is not None else _name(models.persons)
        out.models["c_cons"] = out.models["e_cons"] = f"{_name(models.dino)} | persons: {seg}"

    # S-Align
    if models.text is None:
        out.missing["s_align"] = models.why_missing("text")
    else:
        per = alignment.s_align(shots, story.captions, models.text, options.align_frames)
        out.per_shot["s_align"] = per
        m["s_align"] = sum(per) / len(per)
        out.models["s_align"] = alignment.describe(models.text)

    # intra-shot (VBench)
    for key, enc in (("subject", models.subject), ("background", models.clip)):
        if enc is None:
            out.missing[key] = models.why_missing("subject" if key == "subject" else "clip")
            continue
        per = [intra_shot.consistency(_sub(s, options.consistency_frames), enc) for s in shots]
        out.per_shot[key] = per
        m[key] = sum(per) / len(per)
        out.models[key] = _name(enc)
    if "subject" in m and "background" in m:
        m["intra_avg"] = (m["subject"] + m["background"]) / 2
    if models.aesthetic is None:
        out.missing["aesthetic"] = models.why_missing("aesthetic")
    else:
        per = [intra_shot.aesthetic(s, models.aesthetic, options.aesthetic_frames) for s in shots]
        out.per_shot["aesthetic"] = per
        m["aesthetic"] = sum(per) / len(per)
        out.models["aesthetic"] = _name(models.aesthetic)
    if models.flow is None:
        out.missing["dynamic_degree"] = models.why_missing("flow")
    else:
        res = [intra_shot.dynamic_degree(s, models.flow, options.fps) for s in shots]
        out.per_shot["dynamic_degree"] = [r[0] for r in res]
        out.per_shot["flow_top5"] = [r[1] for r in res]
        m["dynamic_degree"] = sum(r[0] for r in res) / len(res)
        out.models["dynamic_degree"] = _name(models.flow)
    return out
