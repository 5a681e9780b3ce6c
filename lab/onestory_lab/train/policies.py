"""Training's context policies: which memory frames become context tokens, ranked best first.
(Evaluation runs the same policies as next-shot pipeline settings: `eval.generate.memory_settings`.)

* ``last_frame``   the newest memory frame only (at the finest tier);
* ``conditioner``  training-free recency ranking, top-K, adaptive tiers (conditioner only);
* ``selector``     learned top-1 at the finest tier (selector only);
* ``both``         learned top-K, adaptive tiers (the full method);
* ``none``         no context at all (text-only pretraining of the base DiT);
* ``uniform``      decoupled-conditioning warm-up: K frames drawn uniformly from the REAL memory
                   frames (never cross-video / augmented ones) in random rank order; when fewer
                   than K real frames exist the remaining ranks are filled with other frames at
                   the lowest ranks, so every item of a batch has the same token count.
Scores are always detached: a selection passes no gradient (hard top-K).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from onestory.selection import top_k


def rank_frames(policy: str, f: int, k: int, scores: Optional[Tensor] = None,
                real: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> list[int]:
    """Ranked memory indices (best first) for one item with `f` memory frames."""
    if policy == "none":
        return []
    k = max(1, min(k, f))
    if policy == "last_frame":
        return [f - 1]
    if policy == "conditioner":
        return list(range(f - 1, f - 1 - k, -1))
    if policy in ("selector", "both"):
        if scores is None:
            raise ValueError(f"policy {policy!r} needs selector scores")
        return list(top_k(scores.detach(), 1 if policy == "selector" else k).kept)
    if policy == "uniform":
        real_ids = [i for i in range(f) if real is None or bool(real[i])]
        other = [i for i in range(f) if i not in real_ids]
        perm = torch.randperm(len(real_ids), generator=generator).tolist()
        chosen = [real_ids[i] for i in perm][:k]
        if len(chosen) < k:
            fill = torch.randperm(len(other), generator=generator).tolist()
            chosen += [other[i] for i in fill][:k - len(chosen)]
        return chosen
    raise ValueError(f"unknown policy {policy!r}")
