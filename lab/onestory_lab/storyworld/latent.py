"""Exact, training-free latent codec for the story world ("b c t h w" latents like ComfyUI's).

encode (pixels "b 3 t h w" in [0, 1], t = 4n+1):
  1. x -> 2x - 1                      (zero-centred, like the Wan VAE's [-1, 1] input)
  2. time, Wan causal layout: latent frame 0 = pixel frame 0; latent frame i = mean of pixel
     frames 4i-3..4i.  t -> n+1 latent frames.
  3. space: pixel-unshuffle by `spatial` (s): every s x s x 3 cell -> a k = 3 s² vector.
  4. channels: z = Q v with a fixed basis Q "c k".

decode is the pseudo-inverse: v = Qᵀ z, pixel-shuffle, every latent frame i >= 1 repeated over
its 4 pixel frames, (v + 1) / 2.

Exactness. Step 2 is an orthogonal projection onto videos that are constant inside each
4-frame group; the story world is rendered at latent rate (storyworld.py), so its videos lie in
that span and step 2 loses nothing. Step 3 is a permutation. Step 4: with the default
s = 2 -> k = 12 and c = 16, Q = H16[:, :12] / 4 (columns of the Sylvester-Hadamard matrix) has
orthonormal columns, so QᵀQ = I and decode(encode(x)) == x up to float32 rounding (and exactly
after re-quantizing to uint8) for every world video. The converse encode(decode(z)) = QQᵀz is
the projection onto the 12-dim data span; the other 4 directions carry nothing and a model
learns to leave them at 0.

Why 16 channels instead of 12: Wan 2.1 latents have C = 16, so the DiT (in_dim 16, I2V 36 =
16+4+16), the selector's and conditioner's latent_channels, and LatentNormalization all run
with the production shapes. Why a Hadamard lift rather than 4 zero channels: every channel is
a dense ±¼ mix of all 12 cell values, so every channel varies with the data (zero channels
would have std 0 and break per-channel latent normalization; measured per-channel std on world
shots is ~0.07-1.2, so they are not equal - smooth images put most energy in the sum-like
rows), and the basis is exact in binary floating point and needs no seed. Pass channels=12 for the plain unshuffle, or
channels < 12 for a lossy orthogonal projection (then decode(encode(x)) is only the projection).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from einops import rearrange
from torch import Tensor


def hadamard(n: int) -> Tensor:
    """Sylvester Hadamard matrix "n n" (n a power of two), entries ±1."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard order {n} is not a power of two")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@dataclass(frozen=True)
class LatentCodec:
    spatial: int = 2
    temporal: int = 4
    channels: int = 16

    def __post_init__(self) -> None:
        if self.spatial < 1 or self.temporal < 1 or self.channels < 1:
            raise ValueError(f"LatentCodec({self}) needs positive spatial/temporal/channels")

    @property
    def cell(self) -> int:
        """k = 3 s²: pixel values per latent position per latent frame."""
        return 3 * self.spatial**2

    @property
    def exact(self) -> bool:
        """True if decode(encode(x)) == x for every group-constant video."""
        return self.channels >= self.cell

    @cached_property
    def basis(self) -> Tensor:
        """Q "c k": orthonormal columns if c >= k, orthonormal rows otherwise; decode uses Qᵀ."""
        c, k = self.channels, self.cell
        if c == k:
            return torch.eye(k)
        if c > k and c & (c - 1) == 0:
            return hadamard(c)[:, :k] / math.sqrt(c)
        g = torch.Generator().manual_seed(0)
        a = torch.randn(max(c, k), min(c, k), generator=g, dtype=torch.float64)
        q, _ = torch.linalg.qr(a)                       # "max min", orthonormal columns
        return (q if c > k else q.T).float()

    def latent_frames(self, pixel_frames: int) -> int:
        if pixel_frames < 1 or (pixel_frames - 1) % self.temporal:
            raise ValueError(f"{pixel_frames} pixel frames: need {self.temporal}n+1 (e.g. 5, 9)")
        return (pixel_frames - 1) // self.temporal + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal + 1

    def encode(self, video: Tensor) -> Tensor:
        """pixels "b 3 t h w" (or "3 t h w") in [0, 1] -> latent "b c n h/s w/s" (or "c n ...")."""
        squeeze = video.ndim == 4
        x = video[None] if squeeze else video
        b, ch, t, h, w = x.shape
        s = self.spatial
        if ch != 3 or h % s or w % s:
            raise ValueError(f"encode expects 'b 3 t h w' with h, w divisible by {s}; got {tuple(x.shape)}")
        n = self.latent_frames(t)
        x = x.float() * 2.0 - 1.0
        rest = rearrange(x[:, :, 1:], "b c (n g) h w -> b c n g h w", g=self.temporal).mean(3)
        x = torch.cat([x[:, :, :1], rest], dim=2)                       # "b 3 n h w"
        v = rearrange(x, "b c n (h s1) (w s2) -> b n h w (c s1 s2)", s1=s, s2=s)
        z = v @ self.basis.T.to(v)
        z = rearrange(z, "b n h w c -> b c n h w")
        assert z.shape[2] == n
        return z[0] if squeeze else z

    def decode(self, latent: Tensor) -> Tensor:
        """latent "b c n h w" (or "c n h w") -> pixels "b 3 t h*s w*s", t = 4(n-1)+1, not clamped."""
        squeeze = latent.ndim == 4
        z = latent[None] if squeeze else latent
        if z.shape[1] != self.channels:
            raise ValueError(f"decode expects {self.channels} channels; got {tuple(z.shape)}")
        s = self.spatial
        v = rearrange(z.float(), "b c n h w -> b n h w c") @ self.basis.to(torch.float32)
        x = rearrange(v, "b n h w (c s1 s2) -> b c n (h s1) (w s2)", c=3, s1=s, s2=s)
        rest = x[:, :, 1:].repeat_interleave(self.temporal, dim=2)
        x = (torch.cat([x[:, :, :1], rest], dim=2) + 1.0) / 2.0
        return x[0] if squeeze else x

    def latent_shape(self, pixel_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """"c n h w" of one encoded shot."""
        return (self.channels, self.latent_frames(pixel_frames), height // self.spatial,
                width // self.spatial)


# Per-channel statistics of the default codec's latents over story-world shots (1,800 shots of
# 300 training stories, all patterns; tests/test_storyworld_codec.py re-measures them). The sum-like
# channels 0/4/8/12 carry ~0.8 std, the detail channels (edges, stripes, dots) only ~0.08-0.23:
# without standardising, the detail drowns in unit noise already at mid σ and the DiT learns
# room colours long before shapes or patterns (measured: docs/training.md).
WORLD_MEAN = (0.829, -0.031, -0.029, 0.004, 0.262, -0.011, -0.01, 0.001,
              0.452, -0.011, -0.011, 0.001, -0.115, 0.01, 0.008, -0.001)
WORLD_STD = (0.799, 0.229, 0.23, 0.107, 0.751, 0.137, 0.146, 0.076,
             0.793, 0.138, 0.17, 0.082, 0.749, 0.149, 0.159, 0.082)


def frames_to_tensor(frames: np.ndarray) -> Tensor:
    """numpy "t h w 3" (float [0,1] or uint8) -> torch "3 t h w" float32."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return rearrange(x, "t h w c -> c t h w")


def tensor_to_frames(video: Tensor) -> np.ndarray:
    """torch "3 t h w" -> numpy "t h w 3" float32 (clamped to [0, 1])."""
    return rearrange(video.detach().float().clamp(0, 1), "c t h w -> t h w c").cpu().numpy()
