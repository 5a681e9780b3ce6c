"""StoryModel: the tiny Wan DiT + FrameSelector + AdaptiveConditioner + the fixed text encoder,
with per-item context batching (every item keeps its own frames, tiers and RoPE positions)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from onestory.conditioner import AdaptiveConditioner
from ..storyworld.latent import WORLD_MEAN, WORLD_STD
from ..storyworld.world import latent_states
from ..storyworld.text import TextEncoder, Tokenizer
from onestory.latent import LatentNormalization
from onestory.frame_selector import FrameSelector
from onestory.wan import WanConfig, WanModel
from .config import TrainConfig


@dataclass
class BatchContext:
    tokens: Optional[Tensor]          # "b n d" or None (empty memory)
    positions: Optional[Tensor]       # "b n 3"
    kept: list[list[int]]             # ranked memory indices actually used, per item
    tiers: list[int]                  # tier per rank (shared by the batch)


def wan_config(cfg: TrainConfig) -> WanConfig:
    return WanConfig(model_type="t2v", in_dim=16, dim=cfg.dim, ffn_dim=cfg.ffn_dim, text_dim=cfg.text_dim,
                     out_dim=16, num_heads=cfg.heads, num_layers=cfg.layers)


class StoryModel(nn.Module):
    def __init__(self, cfg: TrainConfig, dit: Optional[WanModel] = None,
                 conditioner: Optional[AdaptiveConditioner] = None,
                 selector: Optional[FrameSelector] = None) -> None:
        super().__init__()
        self.cfg = cfg
        if dit is None:
            dit = WanModel(wan_config(cfg))
            if cfg.wan_init:
                dit.init_weights()
            if cfg.init:   # pretrained base DiT (strict load; the config must match)
                from safetensors.torch import load_file
                dit.load_state_dict(load_file(cfg.init))
        self.dit = dit
        if conditioner is None:   # paper: patchifiers initialised from the backbone's patch embedding
            conditioner = AdaptiveConditioner.from_patch_embedding(
                self.dit.patch_embedding.weight, self.dit.patch_embedding.bias, latent_channels=16,
                time_gap=cfg.time_gap)
        self.conditioner = conditioner
        self.selector = selector if selector is not None else FrameSelector(
            16, cfg.text_dim, width=cfg.sel_width, num_queries=cfg.sel_queries, heads=cfg.sel_heads,
            spatial_stride=cfg.sel_stride, max_shots=cfg.sel_shots)
        # story world: its fixed text encoder (buffers only); real data: precomputed umT5
        # features come with the batch ("text", "text_mask"), so no text encoder is held
        self.text = None if cfg.real_data else TextEncoder(cfg.text_dim, len(Tokenizer()))
        # bank space = the codec's latents (what the reader decodes); model space = what the DiT,
        # selector and conditioner see - the same split as ComfyUI's VAE latents vs process_latent_in.
        # A latent cache holds Wan 2.1 VAE latents: model space = ComfyUI's Wan21 process_in.
        if cfg.real_data:
            self.norm = LatentNormalization.wan21()
        else:
            self.norm = (LatentNormalization(WORLD_MEAN, WORLD_STD) if cfg.latent_norm
                         else LatentNormalization.identity(16))

    # ---- context -------------------------------------------------------------------------

    def context(self, memory: Tensor, ranked: Sequence[Sequence[int]], budget: float) -> BatchContext:
        """memory "b f c h w" (model space); ranked: per item, memory indices best first (same
        length for all items). Tokens "b n d" and positions "b n 3" (time order per item), built
        by `AdaptiveConditioner.build_batch`, the builder the next-shot pipeline uses."""
        if memory.shape[1] == 0 or all(len(r) == 0 for r in ranked):
            return BatchContext(None, None, [[] for _ in ranked], [])
        lengths = {len(r) for r in ranked}
        if len(lengths) != 1:
            raise ValueError(f"every item needs the same number of ranked frames, got {sorted(lengths)}")
        batch = self.conditioner.build_batch([memory[i, list(r)] for i, r in enumerate(ranked)], ranked, budget)
        if not batch.uniform:
            raise ValueError("items produced different context token counts")
        return BatchContext(batch.tokens, batch.positions, [list(u) for u in batch.used], list(batch.tiers[0]))

    def shot_ordinals(self, memory: Tensor) -> Tensor:
        """"b f": the shot ordinal of every frame of a story-ordered memory "b f c h w" (every
        shot has the same number of latent frames)."""
        t = latent_states(self.cfg.pixel_frames)
        b, f = memory.shape[:2]
        if f % t:
            raise ValueError(f"memory has {f} frames, not a whole number of {t}-frame shots")
        return torch.arange(f // t, device=memory.device).repeat_interleave(t).expand(b, f)

    def scores(self, memory: Tensor, text: Tensor, mask: Tensor) -> Tensor:
        shots = self.shot_ordinals(memory) if self.selector.uses_shot_order else None
        return self.selector(memory, text, mask, shots=shots)

    def caption(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Caption features "b l d_t" and mask "b l": precomputed (latent cache: "text",
        "text_mask") or encoded from story-world tokens by the fixed text encoder."""
        if "text" in batch:
            return batch["text"], batch["text_mask"]
        if self.text is None:
            raise ValueError("this model has no text encoder (latent-cache training): batches need "
                             "precomputed 'text' / 'text_mask' features")
        return self.text(batch["tokens"], batch["token_mask"]), batch["token_mask"]

    def velocity(self, x: Tensor, sigma: Tensor, text: Tensor, ctx: BatchContext) -> Tensor:
        return self.dit(x, sigma * 1000.0, text, ctx_tokens=ctx.tokens, ctx_positions=ctx.positions)

    # ---- training forward (what DDP wraps) -------------------------------------------------

    def forward(self, batch: dict, x_noisy: Tensor, sigma: Tensor, drop_text: Tensor, policy: str,
                generator: torch.Generator, story: Optional[dict] = None
                ) -> tuple[Tensor, Tensor, Tensor, BatchContext, Optional[Tensor]]:
        """-> (v_pred, selector scores "b f", L_sel-ready labels "b f", context, scores of the
        story-prefix items "b' f'" or None). `story`: a `StoryPrefixPool.batch` (inside forward
        so that DDP sees one use of the selector per step)."""
        memory = self.norm.to_model(torch.cat([batch["shot1"], batch["shot2"]], dim=2)).transpose(1, 2)   # "b f c h w"
        text, mask = self.caption(batch)
        scores = self.scores(memory, text, mask) if self.cfg.learned else None
        f = memory.shape[1]
        real = batch["frame_synthetic"] == 0
        ranked = [rank_frames_item(policy, f, self.cfg.effective_k, None if scores is None else scores[i],
                                   real[i], generator)
                  for i in range(memory.shape[0])]
        ctx = self.context(memory, ranked, self.cfg.budget)
        cond = text * (~drop_text).to(text.dtype)[:, None, None]
        v = self.velocity(x_noisy, sigma, cond, ctx)
        story_scores = None
        if story is not None:
            s_mem = self.norm.to_model(story["memory"], channel_dim=2)
            s_text, s_mask = self.caption(story)
            story_scores = self.scores(s_mem, s_text, s_mask)
        return v, scores, batch["relevance"], ctx, story_scores


def rank_frames_item(policy, f, k, scores, real, generator):
    from .policies import rank_frames

    return rank_frames(policy, f, k, scores=scores, real=real, generator=generator)
