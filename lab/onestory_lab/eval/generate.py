"""Batched autoregressive story generation with a trained StoryModel, on `onestory.pipeline`.

The model's DiT is the pipeline's sampler (`onestory.sampling.FlowSampler`: Euler with CFG, the
context in both CFG branches, the negative caption = zeros, the lab's text dropout); its selector
and conditioner do the selection and conditioning. An eval policy is ordinary pipeline settings
(`memory_settings`). Captions are the fixed-length (40 token) features the model was trained on;
the learned scorer reads the real tokens only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..storyworld.world import Story
from ..storyworld.text import Tokenizer
from onestory.memory import MemoryBank
from onestory.pipeline import MemorySettings, NextShotPipeline, ShotSpec
from onestory import defaults
from onestory.sampling import FlowSampler
from ..train.model import StoryModel


@dataclass(frozen=True)
class GenParams:
    policy: str = "both"       # both | selector | conditioner | last_frame (see memory_settings)
    # k, budget: the bundled story-world model's training values (for_model takes the model's own)
    k: int = 4
    budget: float = 2.0
    # the story-world sampler: cfg 3 lifts room and colour accuracy of shot 1 well above cfg 1 on
    # the bundled base; shift 1 and 3 read alike (docs/training.md)
    steps: int = defaults.STEPS
    shift: float = 1.0
    cfg: float = 3.0
    seed: int = 0
    # the context in CFG's negative branch too? False: CFG amplifies caption and memory together
    # (the node's `context_in_negative` off). On the world-v2 fine-tune it doubles recall on tuning
    # stories at cfg 3 (docs/results.md, "Sampler"), so the story world samples without it.
    context_in_negative: bool = False

    @staticmethod
    def for_model(model: StoryModel, **overrides) -> "GenParams":
        c = model.cfg
        base = dict(policy=c.policy, k=c.effective_k, budget=c.budget)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return GenParams(**base)


@dataclass
class StoryRun:
    story: Story
    latents: list[Tensor] = field(default_factory=list)              # per shot "c t h w"
    selections: list[Optional[dict]] = field(default_factory=list)   # per shot: kept, scores, tiers
    bank: Optional[MemoryBank] = None                                 # the generated story


#: score_fn(stories, shot, memory "b f c h w", text "b l d", mask "b l") -> scores "b f"
ScoreFn = Callable[[Sequence[Story], int, Tensor, Tensor, Tensor], Tensor]


#: the eval policies as pipeline settings: (scorer, kept frames)
POLICY_SCORERS = {"both": "learned", "selector": "learned", "conditioner": "recency", "last_frame": "recency",
                  "none": "recency"}


def memory_settings(params: GenParams) -> MemorySettings:
    """An eval policy as ordinary pipeline settings: last_frame = recency K 1, conditioner =
    recency K, selector = learned K 1, both = learned K, none = no memory (K 0)."""
    if params.policy not in POLICY_SCORERS:
        raise ValueError(f"unknown policy {params.policy!r}; expected one of {sorted(POLICY_SCORERS)}")
    k = {"both": max(1, params.k), "conditioner": max(1, params.k), "none": 0}.get(params.policy, 1)
    return MemorySettings(k=k, budget=params.budget, scorer=POLICY_SCORERS[params.policy])


def story_pipeline(model: StoryModel) -> NextShotPipeline:
    return NextShotPipeline(model.conditioner, selector=model.selector, normalization=model.norm)


@torch.no_grad()
def generate_batch(model: StoryModel, stories: Sequence[Story], params: GenParams,
                            tokenizer: Optional[Tokenizer] = None, score_fn: Optional[ScoreFn] = None) -> list[StoryRun]:
    """B stories advance shot by shot through the next-shot pipeline; the stories of a batch
    share one DiT call per step. ``score_fn`` replaces the model's selector for the learned
    policies (analysis: e.g. ground-truth relevance as scores, experiments/selection_oracle.py)."""
    tok = tokenizer or Tokenizer()
    settings = memory_settings(params)
    learned = settings.scorer == "learned"
    pipeline = story_pipeline(model)
    sampler = FlowSampler(model.dit, steps=params.steps, shift=params.shift, cfg=params.cfg, solver="euler",
                          context_in_negative=params.context_in_negative)
    shots = []
    for st in stories:
        ids, mask = tok.encode_batch(st.captions)
        text = model.text(ids, mask)
        shots.append([ShotSpec(st.captions[s], text[s], (st.seed * 7 + s) * 1009 + params.seed, mask[s])
                      for s in range(len(st.shots))])
    runs = [StoryRun(s) for s in stories]

    def scores(s: int, banks) -> Optional[list[Tensor]]:
        if score_fn is None or not learned:
            return None
        ids, mask = tok.encode_batch([st.captions[s] for st in stories])
        memory = torch.stack([model.norm.to_model(b.frames, channel_dim=1) for b in banks])
        return list(score_fn(stories, s, memory, model.text(ids, mask), mask))

    def record(s: int, batch) -> None:
        for i, run in enumerate(runs):
            run.latents.append(batch.latents[i][0].clone())
            sel = batch.plan.selections[i]
            run.selections.append(None if sel is None else {
                "kept": list(batch.plan.context.used[i]), "tiers": list(batch.plan.context.tiers[i]),
                "scores": [round(float(v), 4) for v in sel.scores] if learned else None})

    banks = pipeline.stories(shots, settings, (stories[0].latent_frames, 16, 16), sampler, scores=scores,
                             on_shot=record)
    for run, bank in zip(runs, banks):
        run.bank = bank
    return runs
