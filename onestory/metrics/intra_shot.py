"""Intra-shot quality as VBench defines it (Huang et al. 2024; `Vchitect/VBench`), per shot.

    consistency(f)    frames f_0..f_{T-1} embedded and L2-normalised; for i >= 1
                      c_i = (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2;
                      score = mean_i c_i   (1 for a single-frame shot)
    subject           consistency with DINO features (VBench: DINO ViT-B/16)
    background        consistency with CLIP image features (VBench: CLIP ViT-B/32)
    aesthetic         mean over frames of LAION predictor(CLIP ViT-L/14 embedding) / 10
    dynamic degree    frames taken every round(fps / 8) (about 8 fps); per consecutive pair the
                      mean of the top 5 % optical-flow magnitudes (pixels); thres = 6 * min(h, w)
                      / 256, count = max(1, round(4 * T / 16)) for T sampled frames; the shot is
                      dynamic (1.0) if at least `count` pairs exceed thres, else 0.0.
                      (VBench writes round(4 * T / 16) without the max; for T < 3 that is 0 and
                      every clip would count as dynamic.)

A story's value of each is the mean over its shots.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .frames import sample_indices
from .interfaces import AestheticScorer, FlowModel, ImageEncoder


def consistency(frames: Tensor, encoder: ImageEncoder, batch: int = 32) -> float:
    """VBench subject / background consistency of one shot "t 3 h w"."""
    if frames.shape[0] < 2:
        return 1.0
    emb = torch.cat([encoder(frames[i:i + batch]).float() for i in range(0, frames.shape[0], batch)])
    emb = F.normalize(emb, dim=-1)
    prev = (emb[1:] * emb[:-1]).sum(-1).clamp(min=0)
    first = (emb[1:] * emb[:1]).sum(-1).clamp(min=0)
    return float(((prev + first) / 2).mean())


def aesthetic(frames: Tensor, scorer: AestheticScorer, max_frames: int = 0, batch: int = 32) -> float:
    idx = sample_indices(frames.shape[0], max_frames)
    f = frames[idx]
    scores = torch.cat([scorer(f[i:i + batch]).float().reshape(-1) for i in range(0, f.shape[0], batch)])
    return float(scores.mean() / 10.0)


def flow_magnitude_top5(flow: Tensor) -> Tensor:
    """flow "n 2 h w" -> "n": mean of the largest 5 % per-pixel magnitudes (VBench get_score)."""
    rad = flow.float().pow(2).sum(1).sqrt().flatten(1)
    k = int(rad.shape[1] * 0.05)
    if k == 0:
        return rad.max(1).values
    return rad.topk(k, dim=1).values.mean(1)


def dynamic_degree(frames: Tensor, flow: FlowModel, fps: float) -> tuple[float, list[float]]:
    """-> (1.0 if the shot is dynamic else 0.0, per-pair top-5 % magnitudes)."""
    interval = max(1, round(fps / 8))
    f = frames[::interval]
    if f.shape[0] < 2:
        return 0.0, []
    mags = flow_magnitude_top5(flow(f[:-1], f[1:]))
    thres = 6.0 * min(f.shape[-2:]) / 256.0
    count = max(1, round(4 * f.shape[0] / 16.0))
    moving = int((mags > thres).sum())
    return (1.0 if moving >= count else 0.0), [round(float(m), 4) for m in mags]


def mean(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
