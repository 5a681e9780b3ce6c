"""A selection over a memory of F frames and the hard top-K that makes one.

Because a selection is a list of indices and the conditioner reads the raw memory latents, the
generation loss never reaches the scorer: the learned Frame Selector is trained by L_sel only.
Shapes use einops notation: ``f`` memory frames.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

from .errors import OneStoryError, ShapeError

__all__ = ["Selection", "top_k", "check_k"]


@dataclass(frozen=True, eq=False)
class Selection:
    """Result of a selection over a memory of F frames.

    scores: "f" float32 CPU, detached; one finite score per memory frame (excluded frames keep
            their score, they are simply never kept).
    kept:   memory indices ranked best first: pinned frames first, then by score; ties go to
            the later frame.
    scorer: name of the scorer that produced ``scores``.
    """

    scores: Tensor
    kept: tuple[int, ...]
    scorer: str

    def __post_init__(self):
        scores = torch.as_tensor(self.scores)
        if scores.ndim != 1:
            raise ShapeError(f"Selection.scores has shape {tuple(scores.shape)}; expected 'f'")
        scores = scores.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if not torch.isfinite(scores).all():
            raise OneStoryError("Selection.scores contains NaN or inf: scores must be finite")
        kept = tuple(operator.index(i) for i in self.kept)
        f = scores.numel()
        if len(set(kept)) != len(kept) or any(i < 0 or i >= f for i in kept):
            raise OneStoryError(f"Selection.kept={kept} must hold distinct indices in 0..{f - 1}")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "kept", kept)
        object.__setattr__(self, "scorer", str(self.scorer))

    @classmethod
    def _checked(cls, scores: Tensor, kept: tuple[int, ...], scorer: str) -> "Selection":
        """For `top_k`, which has already established everything `__post_init__` checks
        (finite float32 CPU scores, distinct in-range int indices): skips the second pass."""
        selection = object.__new__(cls)
        object.__setattr__(selection, "scores", scores)
        object.__setattr__(selection, "kept", kept)
        object.__setattr__(selection, "scorer", str(scorer))
        return selection

    @property
    def num_frames(self) -> int:
        return self.scores.numel()

    def __len__(self) -> int:
        return len(self.kept)

    def to_json(self) -> dict:
        """JSON-able summary (story files, UI payloads)."""
        return {"scorer": self.scorer, "num_frames": self.num_frames, "kept": list(self.kept),
                "scores": [float(s) for s in self.scores.tolist()]}

    @staticmethod
    def from_json(data: dict) -> "Selection":
        try:
            return Selection(torch.tensor(data["scores"], dtype=torch.float32),
                             tuple(data["kept"]), data["scorer"])
        except (KeyError, TypeError) as exc:
            raise OneStoryError(f"selection JSON is missing or has a malformed field ({exc}); "
                                "expected keys scorer, kept, scores") from None


def _all_finite(values: Tensor) -> bool:
    # one tensor op (torch.isfinite(x).all() is five): this runs on every selection
    return all(map(math.isfinite, values.tolist()))


def _flags(values: Iterable[bool] | None, f: int, name: str) -> list[bool]:
    if values is None:
        return [False] * f
    if isinstance(values, Tensor):
        values = values.reshape(-1).tolist()
    out = list(map(bool, values))
    if len(out) != f:
        raise ShapeError(f"{name} has {len(out)} entries but there are {f} scores: give one flag "
                         "per memory frame")
    return out


def check_k(k) -> int:
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise OneStoryError(f"k={k!r} must be an integer >= 0 (number of memory frames to "
                            "keep)") from None
    if k < 0:
        raise OneStoryError(f"k={k} must be >= 0 (number of memory frames to keep)")
    return k


def top_k(scores: Tensor, k: int, pinned: Sequence[bool] | None = None,
          excluded: Sequence[bool] | None = None, scorer: str = "learned") -> Selection:
    """Hard top-K over ``scores`` "f" (detached first: no gradient flows through a selection).

    * ``k < 0`` is an error; ``k`` larger than the number of selectable (not excluded) frames is
      clamped to it - asking for more memory than exists is not an error, the conditioner's
      budget decides how many kept frames are actually used.
    * Pinned frames are always kept (so ``len(kept) = max(k, #pinned)`` after clamping) and
      ranked first; excluded frames are never kept (a frame both pinned and excluded is
      excluded: exclusion is the stronger user intent).
    * Ranking is by score, ties broken by the later frame (higher index) first.
    """
    if not isinstance(scores, Tensor):
        scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.ndim != 1:
        raise ShapeError(f"scores has shape {tuple(scores.shape)}; expected 'f' (one score per "
                         "memory frame)")
    k = check_k(k)
    values = scores.detach().float().cpu().contiguous()
    if not _all_finite(values):
        raise OneStoryError("scores contains NaN or inf: every memory frame needs a finite score")
    f = values.numel()
    pin = _flags(pinned, f, "pinned")
    exc = _flags(excluded, f, "excluded")
    # Best first, ties to the later frame: a stable descending sort of the reversed scores keeps
    # equal scores in reversed (= later frame first) order.
    order = (f - 1) - torch.sort(values.flip(0), descending=True, stable=True).indices
    if not any(pin) and not any(exc):
        return Selection._checked(values, tuple(order[:k].tolist()), scorer)
    pin_t = torch.tensor(pin, dtype=torch.bool)[order]
    exc_t = torch.tensor(exc, dtype=torch.bool)[order]
    pinned_ids = order[pin_t & ~exc_t].tolist()
    others = order[~pin_t & ~exc_t].tolist()
    kept = pinned_ids + others[:max(0, k - len(pinned_ids))]
    return Selection._checked(values, tuple(kept), scorer)


