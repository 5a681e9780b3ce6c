"""Losses. L_shot: rectified flow on the target (last) shot. L_sel: selector scores vs labels.

σ distribution: logit-normal (SD3: σ = sigmoid(m + s·n)), optionally followed by a shift
(σ' = shift·σ / (1 + (shift−1)·σ), Wan's schedule). Default m = 0, s = 1, shift = 1: mass on
mid noise levels, where the velocity is hardest to predict, while ~20 % of the samples stay
below σ = 0.3 so the last sampler steps can clean up (with shift 3 only ~3 % did, and the tiny
model's samples stayed grainy). See docs/training.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_sigma(n: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0,
                 shift: float = 1.0) -> Tensor:
    s = torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    return shift * s / (1 + (shift - 1) * s)


def noisy(x0: Tensor, noise: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """x_σ = (1−σ)·x₀ + σ·ε and the target velocity v = ε − x₀ (x0 "b c t h w", sigma "b")."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1 - s) * x0 + s * noise, noise - x0


def shot_loss(v_pred: Tensor, v_target: Tensor) -> Tensor:
    return F.mse_loss(v_pred.float(), v_target.float())


def selector_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """MSE of the selector's per-frame scores vs pseudo-labels (real in [0,1], cross −1, augment 0)."""
    return F.mse_loss(scores.float(), labels.float())
