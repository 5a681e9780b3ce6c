"""Batched autoregressive story generation with a trained StoryModel.

Equivalent to `onestory.story.NextShotGenerator` run story by story (select on the memory of
generated shots with the shot's caption -> conditioner -> Euler with CFG, the context in both
CFG branches and the negative caption = zeros), but B stories advance together: at shot s every
story's memory has the same number of frames, so one batched DiT call serves them all; each
story keeps its own kept frames, tiers and RoPE positions ("b n 3").
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
from onestory.sampling import FlowSampler, wan_sigmas
from ..train.model import StoryModel
from ..train.policies import rank_frames


@dataclass(frozen=True)
class GenParams:
    policy: str = "both"       # both | selector | conditioner | last_frame
    k: int = 4
    budget: float = 2.0
    # measured on the bundled base (docs/results.md, "sampler"): cfg 3 lifts room and colour
    # accuracy of shot 1 well above cfg 1; shift 1 and 3 read alike
    steps: int = 20
    shift: float = 1.0
    cfg: float = 3.0
    seed: int = 0

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


@torch.no_grad()
def generate_batch(model: StoryModel, stories: Sequence[Story], params: GenParams,
                   tokenizer: Optional[Tokenizer] = None, score_fn: Optional[ScoreFn] = None) -> list[StoryRun]:
    """``score_fn`` replaces the model's selector for the learned policies (analysis: e.g.
    ground-truth relevance as scores, bench/selection_oracle.py)."""
    tok = tokenizer or Tokenizer()
    b = len(stories)
    shots = len(stories[0].shots)
    runs = [StoryRun(s) for s in stories]
    memory = None     # "b f c h w", model space
    norm = model.norm
    sigmas = wan_sigmas(params.steps, params.shift)
    for s in range(shots):
        ids, mask = tok.encode_batch([st.captions[s] for st in stories])
        text = model.text(ids, mask)
        ctx = model.context(torch.zeros(b, 0, 16, 1, 1), [[] for _ in range(b)], params.budget)
        scores = None
        if memory is not None:
            f = memory.shape[1]
            if params.policy in ("both", "selector"):
                scores = (model.scores(memory, text, mask) if score_fn is None
                          else score_fn(stories, s, memory, text, mask))
            ranked = [rank_frames(params.policy, f, params.k, None if scores is None else scores[i])
                      for i in range(b)]
            ctx = model.context(memory, ranked, params.budget)
        noise = torch.stack([torch.randn(16, stories[0].latent_frames, 16, 16, generator=torch.Generator()
                                         .manual_seed((st.seed * 7 + s) * 1009 + params.seed)) for st in stories])
        x = noise
        uncond = torch.zeros_like(text)
        for i in range(params.steps):
            sig = sigmas[i].expand(b)
            if params.cfg == 1.0:
                v = model.velocity(x, sig, text, ctx)
            else:
                both_ctx = type(ctx)(None if ctx.tokens is None else torch.cat([ctx.tokens, ctx.tokens]),
                                     None if ctx.positions is None else torch.cat([ctx.positions, ctx.positions]),
                                     ctx.kept, ctx.tiers)
                vv = model.velocity(torch.cat([x, x]), torch.cat([sig, sig]), torch.cat([text, uncond]), both_ctx)
                v_c, v_u = vv.chunk(2)
                v = v_u + params.cfg * (v_c - v_u)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        bank = norm.to_bank(x)    # "b c t h w", bank space: what the reader decodes
        for i, run in enumerate(runs):
            run.latents.append(bank[i].clone())
            if memory is None:
                run.selections.append(None)
            else:
                run.selections.append({"kept": ctx.kept[i], "tiers": list(ctx.tiers[:len(ctx.kept[i])]),
                                       "scores": None if scores is None else [round(float(v), 4) for v in scores[i]]})
        new = x.transpose(1, 2)    # "b t c h w"
        memory = new if memory is None else torch.cat([memory, new], dim=1)
    return runs


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
def generate_batch_pipeline(model: StoryModel, stories: Sequence[Story], params: GenParams,
                            tokenizer: Optional[Tokenizer] = None, score_fn: Optional[ScoreFn] = None) -> list[StoryRun]:
    tok = tokenizer or Tokenizer()
    settings = memory_settings(params)
    learned = settings.scorer == "learned"
    pipeline = story_pipeline(model)
    sampler = FlowSampler(model.dit, steps=params.steps, shift=params.shift, cfg=params.cfg, solver="euler",
                          context_in_negative=True)
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
