"""`python -m onestory_lab eval`: metrics of a trained model on held-out stories, per pattern."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..storyworld.dataset import eval_stories
from ..storyworld.splits import range_of
from ..storyworld.world import PATTERN_NAMES
from ..train.checkpoint import load_model
from ..train.model import StoryModel
from .generate import GenParams, ScoreFn, generate_batch
from .metrics import aggregate, story_metrics


def evaluate(model: StoryModel, patterns: Sequence[str] = PATTERN_NAMES, per_pattern: int = 100,
             params: Optional[GenParams] = None, batch: int = 50, progress: bool = True,
             frames: Optional[Sequence[int]] = None, score_fn: Optional[ScoreFn] = None,
             story_offset: int = 0) -> dict:
    """Stories are eval indices [story_offset, story_offset + per_pattern) of every pattern
    (storyworld/splits.py names the ranges; the JSON records the offset and its range)."""
    params = params or GenParams.for_model(model)
    model.eval()
    results: dict = {"params": params.__dict__, "frames_read": frames, "story_offset": story_offset,
                     "seed_range": range_of(story_offset, per_pattern), "patterns": {}}
    for pattern in patterns:
        t0 = time.perf_counter()
        stories = eval_stories(pattern, per_pattern, pixel_frames=model.cfg.pixel_frames,
                               offset=story_offset, world=model.cfg.world)
        counts = []
        for i in range(0, len(stories), batch):
            runs = generate_batch(model, stories[i:i + batch], params, score_fn=score_fn)
            counts += [story_metrics(r.story, r.latents, frames=frames) for r in runs]
        res = aggregate(counts)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results["patterns"][pattern] = res
        if progress:
            print(f"{pattern:14s} char recall {res['character_recall']:.3f}  env recall "
                  f"{res['environment_recall']:.3f}  caption {res['caption_alignment']:.3f}  "
                  f"({res['stories']} stories, {res['seconds']} s)", flush=True)
    return results


def evaluate_files(dit: str, adapter: str, out: Optional[str] = None, **kw) -> dict:
    gen_keys = ("policy", "k", "budget", "steps", "shift", "cfg", "seed", "context_in_negative")
    model = load_model(dit, adapter)
    params = GenParams.for_model(model, **{k: kw.pop(k) for k in gen_keys if k in kw})
    torch.set_num_threads(kw.pop("threads", torch.get_num_threads()))
    res = evaluate(model, params=params, **kw)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=1))
    return res
