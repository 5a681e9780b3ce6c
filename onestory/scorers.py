"""Scoring a memory bank and keeping the top K: the training-free scorers and `select`.

* ``recency``, ``novelty``, ``sink_recent`` (StoryMem's memory sink + recent window) and
  ``uniform`` work without training;
* ``learned`` runs a trained `onestory.frame_selector.FrameSelector`.
`select` scores a bank and applies `onestory.selection.top_k` with the bank's pins and excludes.
Shapes use einops notation: ``f`` memory frames, ``l`` caption tokens.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import defaults
from .defaults import K as DEFAULT_K
from .errors import OneStoryError, ShapeError
from .frame_selector import FrameSelector
from .latent import LatentNormalization
from .selection import Selection, _all_finite, check_k, top_k

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .memory import MemoryBank

SCORERS = ("learned", "recency", "novelty", "sink_recent", "uniform")

__all__ = ["SCORERS", "score_frames", "select"]


def _rank_scores(order: Sequence[int], f: int) -> Tensor:
    """Scores in (0, 1] that make `top_k` reproduce ``order`` (a permutation of range(f))."""
    scores = torch.empty(f, dtype=torch.float32)
    for pos, i in enumerate(order):
        scores[i] = (f - pos) / f
    return scores


def _by_time_desc(times: list[float], indices: Iterable[int]) -> list[int]:
    return sorted(indices, key=lambda i: (-times[i], -i))


def _spread_order(indices: list[int]) -> list[int]:
    """1-D farthest-point order over a time-ordered list, starting at its first element:
    first, last, middle, quarter points, ... (each next pick maximises its distance to the
    picks so far; ties go to the later position)."""
    if not indices:
        return []
    n = len(indices)
    chosen = [0]
    dist = [abs(p - 0) for p in range(n)]
    while len(chosen) < n:
        best = max(range(n), key=lambda p: (dist[p], p))
        chosen.append(best)
        dist = [min(dist[p], abs(p - best)) for p in range(n)]
    return [indices[p] for p in chosen]


def _uniform_positions(n: int, k: int) -> list[int]:
    """k positions evenly spread over n items: centres of k equal bins."""
    return sorted({min(n - 1, int((j + 0.5) * n / k)) for j in range(k)})


def _novelty_order(emb: Tensor, pinned: list[bool], excluded: list[bool]) -> list[int]:
    """Greedy farthest-point order. Seed = pinned frames (already kept); if none, the frame with
    the largest summed distance to all candidates (the most atypical one). Each next frame
    maximises its minimum distance to the frames chosen so far (ties: later frame). Excluded
    frames come last (they are never kept, so they must not shadow their near-duplicates)."""
    f = emb.shape[0]
    # exact pairwise distances (the matmul shortcut would turn duplicates into tiny non-zeros)
    dist = torch.cdist(emb, emb, compute_mode="donot_use_mm_for_euclid_dist")  # "f f" float64
    avail = torch.tensor([not excluded[i] and not pinned[i] for i in range(f)], dtype=torch.bool)
    order = [i for i in range(f - 1, -1, -1) if pinned[i] and not excluded[i]]

    def last_argmax(values: Tensor) -> int:   # ties -> later frame
        return f - 1 - int(torch.argmax(values.flip(0)))

    if not order and avail.any():
        total = dist[:, avail].sum(dim=1)
        first = last_argmax(torch.where(avail, total, torch.full_like(total, -math.inf)))
        order.append(first)
        avail[first] = False
    if avail.any():
        mind = dist[:, order].min(dim=1).values
        while avail.any():
            i = last_argmax(torch.where(avail, mind, torch.full_like(mind, -math.inf)))
            order.append(i)
            avail[i] = False
            mind = torch.minimum(mind, dist[:, i])
    order += [i for i in range(f - 1, -1, -1) if excluded[i]]
    return order


def _check_bank(bank: "MemoryBank") -> None:
    if bank is None or bank.num_frames == 0:
        raise OneStoryError("memory bank is empty: generate or add a first shot before selecting "
                            "memory frames (the first shot needs no memory)")


def score_frames(bank: "MemoryBank", scorer: str, *, text: Tensor | None = None,
                 selector: FrameSelector | None = None,
                 normalization: LatentNormalization | None = None,
                 k: int | None = None) -> Tensor:
    """One finite float32 score per memory frame ("f", CPU); higher = keep first.

    * ``recency``: later frames (by ``bank.frame_times()``) score higher.
    * ``novelty``: greedy farthest-point order in a pooled-latent embedding (model space,
      4x4 average pool, L2): starts from the pinned frames, else from the most atypical
      frame; each next frame maximises its min distance to those already chosen. Rank scores.
    * ``sink_recent``: StoryMem's memory: the first shot's frames (memory sink, spread over the
      shot from its first frame) interleaved with the most recent frames, recent first:
      newest, sink 1, 2nd newest, sink 2, ... Rank scores.
    * ``uniform``: with ``k``, the k frames at the centres of k equal bins over the
      non-excluded frames (time order) score 1, the rest 0; without ``k``, a nested spread
      order (first, last, middle, ...) as rank scores.
    * ``learned``: ``selector`` (FrameSelector) on the bank in model space with caption tokens
      ``text`` "l d_t" (or "1 l d_t"); evaluated without gradient.
    Rank scores are (F - position) / F, so `top_k` reproduces the scorer's order exactly.
    """
    _check_bank(bank)
    if scorer not in SCORERS:
        raise OneStoryError(f"scorer={scorer!r} is unknown: choose one of {', '.join(SCORERS)}")
    f = bank.num_frames
    records = bank.records
    norm = normalization or LatentNormalization.identity(bank.channels)
    if norm.channels != bank.channels:
        raise OneStoryError(f"normalization has {norm.channels} channels but the bank has "
                            f"{bank.channels}; use the normalization of the bank's VAE")
    if scorer == "learned":
        return _score_learned(bank, text, selector, norm)
    pinned = [bool(r.pinned) for r in records]
    excluded = [bool(r.excluded) for r in records]
    times = [float(t) for t in bank.frame_times().tolist()]

    if scorer == "recency":
        return _rank_scores(_by_time_desc(times, range(f)), f)

    if scorer == "sink_recent":
        first_shot = min(r.shot for r in records)
        sink_ids = sorted((i for i in range(f) if records[i].shot == first_shot),
                          key=lambda i: (times[i], i))
        sink = _spread_order(sink_ids)
        recent = _by_time_desc(times, range(f))
        order: list[int] = []
        seen: set[int] = set()
        queues = [recent, sink]
        pos = [0, 0]
        turn = 0
        while len(order) < f:
            q = queues[turn]
            while pos[turn] < len(q) and q[pos[turn]] in seen:
                pos[turn] += 1
            if pos[turn] < len(q):
                order.append(q[pos[turn]])
                seen.add(q[pos[turn]])
            turn = 1 - turn
        return _rank_scores(order, f)

    if scorer == "uniform":
        timeline = sorted(range(f), key=lambda i: (times[i], i))
        if k is None:
            return _rank_scores(_spread_order(timeline), f)
        k = check_k(k)
        usable = [i for i in timeline if not excluded[i]]
        scores = torch.zeros(f, dtype=torch.float32)
        if usable and k > 0:
            for p in _uniform_positions(len(usable), min(int(k), len(usable))):
                scores[usable[p]] = 1.0
        return scores

    # novelty
    x = norm.to_model(bank.frames, channel_dim=1)
    emb = F.adaptive_avg_pool2d(x, (4, 4)).flatten(1).double()
    return _rank_scores(_novelty_order(emb, pinned, excluded), f)


def _score_learned(bank: "MemoryBank", text: Tensor | None, selector: FrameSelector | None,
                   norm: LatentNormalization) -> Tensor:
    if selector is None:
        raise OneStoryError("scorer 'learned' needs a trained FrameSelector (load an adapter), or "
                            "choose a training-free scorer: recency, novelty, sink_recent, uniform")
    if text is None:
        raise OneStoryError("scorer 'learned' needs the caption tokens of the new shot (text "
                            f"'l d_t', d_t = {selector.text_dim})")
    if not isinstance(text, Tensor):
        raise ShapeError(f"text is a {type(text).__name__}; expected a tensor 'l d_t'")
    if text.ndim == 3 and text.shape[0] == 1:
        text = text[0]
    if text.ndim != 2:
        raise ShapeError(f"text has shape {tuple(text.shape)}; expected caption tokens 'l d_t' "
                         "(one caption)")
    scores = selector.score_bank(bank, text, norm)
    if not _all_finite(scores):
        raise OneStoryError("the FrameSelector produced NaN/inf scores: check the adapter weights "
                            "and the text tensor")
    return scores


def select(bank: "MemoryBank", k: int = DEFAULT_K, scorer: str = defaults.SCORER, *,
           text: Tensor | None = None, selector: FrameSelector | None = None,
           normalization: LatentNormalization | None = None) -> Selection:
    """Score the bank's frames and keep the top ``k``, honouring the bank's pins and excludes.

    ``normalization`` maps bank space to model space (None = identity); it matters for
    ``learned`` and ``novelty``. Empty bank -> OneStoryError.
    """
    _check_bank(bank)
    k = check_k(k)
    scores = score_frames(bank, scorer, text=text, selector=selector,
                          normalization=normalization, k=k)
    return top_k(scores, k, [r.pinned for r in bank.records], [r.excluded for r in bank.records],
                 scorer)
