"""Frame bookkeeping shared by the metrics: checks, shot splitting, frame sampling."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import ShapeError


def check_frames(frames: Tensor, what: str) -> Tensor:
    """A float "t 3 h w" tensor in [0, 1] (values are clamped; integer tensors are rejected)."""
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ShapeError(f"{what}: expected frames 't 3 h w', got {shape}")
    if frames.shape[0] == 0:
        raise ShapeError(f"{what}: has no frames")
    if not frames.is_floating_point():
        raise ShapeError(f"{what}: frames must be float in [0, 1], got {frames.dtype}")
    return frames.float().clamp(0, 1)


def split_shots(frames: Tensor, lengths: Sequence[int], what: str = "story") -> list[Tensor]:
    """"t 3 h w" and per-shot frame counts -> one "t_s 3 h w" view per shot."""
    lengths = [int(n) for n in lengths]
    if any(n <= 0 for n in lengths):
        raise ShapeError(f"{what}: shot lengths must be positive, got {lengths}")
    if sum(lengths) != frames.shape[0]:
        raise ShapeError(f"{what}: shot lengths {lengths} add up to {sum(lengths)} frames but the "
                         f"video has {frames.shape[0]}")
    return list(torch.split(frames, lengths))


def sample_indices(n: int, k: int) -> list[int]:
    """k frame indices spread evenly over n frames, each the middle of its segment (VBench's
    "middle" sampling); all n frames when k <= 0 or k >= n."""
    if k <= 0 or k >= n:
        return list(range(n))
    return [int((i + 0.5) * n / k) for i in range(k)]
