"""UI payloads: what the frontend strip shows for a selection or a story (JSON-able only)."""
from __future__ import annotations

from typing import Optional

import torch


def selection_payload(bank, selection, k: int, tiers: Optional[list[int]] = None) -> dict:
    """Scores and kept frames with their shot/frame/caption, plus a note when K was clamped."""
    data = selection.to_json()
    kept = []
    for rank, index in enumerate(selection.kept):
        rec = bank.records[index]
        kept.append({"rank": rank, "index": index, "shot": rec.shot, "frame": rec.frame,
                     "source": rec.source, "pinned": rec.pinned,
                     "score": float(selection.scores[index]),
                     "caption": bank.shots[rec.shot].caption,
                     **({"tier": tiers[rank]} if tiers is not None and rank < len(tiers) else {})})
    selectable = sum(1 for r in bank.records if not r.excluded)
    note = (f"K={k} is more than the {selectable} selectable memory frames; all of them were kept."
            if k > selectable else "")
    return {**data, "k": k, "kept_frames": kept, "num_frames": bank.num_frames, "note": note}


def story_payload(bank) -> dict:
    return {
        "num_shots": bank.num_shots,
        "num_frames": bank.num_frames,
        "fingerprint": bank.fingerprint(),
        "shots": [{"index": i, "caption": s.caption, "source": s.source, "seed": s.seed,
                   "frames": sum(1 for r in bank.records if r.shot == i)} for i, s in enumerate(bank.shots)],
        "frames": [{"shot": r.shot, "frame": r.frame, "source": r.source, "pinned": r.pinned,
                    "excluded": r.excluded} for r in bank.records],
    }


def grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """IMAGE "n h w 3" → one IMAGE "1 (rows h) (cols w) 3", row-major, black padding."""
    n, h, w, c = images.shape
    cols = max(1, min(columns, n))
    rows = (n + cols - 1) // cols
    out = torch.zeros(rows * h, cols * w, c)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return out[None]
