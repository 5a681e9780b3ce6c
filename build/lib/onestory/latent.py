"""Conversion between bank space (raw VAE latents, as ComfyUI stores them) and model space
(what the DiT's patch embedding sees)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Wan 2.1 VAE statistics (ComfyUI comfy/latent_formats.py `Wan21`, Wan2.1 repo wan/modules/vae.py).
WAN21_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclass(frozen=True)
class LatentNormalization:
    """Per-channel affine map: model = (bank - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def identity(channels: int) -> "LatentNormalization":
        return LatentNormalization((0.0,) * channels, (1.0,) * channels)

    @staticmethod
    def wan21() -> "LatentNormalization":
        return LatentNormalization(WAN21_MEAN, WAN21_STD)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def is_identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(v == 1.0 for v in self.std)

    def _stats(self, x: Tensor, channel_dim: int) -> tuple[Tensor, Tensor]:
        shape = [1] * x.ndim
        shape[channel_dim] = self.channels
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return mean, std

    def to_model(self, x: Tensor, channel_dim: int = 1) -> Tensor:
        """Model-space float32 copy-or-view of x: callers must not modify the result in place."""
        if self.is_identity:  # standalone default: skip two full passes over the memory
            return x.float()
        mean, std = self._stats(x, channel_dim)
        return (x.float() - mean) / std

    def to_bank(self, x: Tensor, channel_dim: int = 1) -> Tensor:
        if self.is_identity:
            return x.float()
        mean, std = self._stats(x, channel_dim)
        return x.float() * std + mean
