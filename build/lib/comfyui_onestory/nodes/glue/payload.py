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


def planned_tiers(bank, selection, conditioner, budget: float) -> list[int]:
    """Kernel tier per kept frame (rank order) as the Adaptive Conditioner assigns it at `budget`;
    frames past the end of the list get no tokens at that budget."""
    from .core import solve_budget

    if not selection.kept or bank.num_frames == 0:
        return []
    return solve_budget(len(selection.kept), conditioner.kernels, bank.height, bank.width, budget,
                        conditioner.patch)


def tier_labels(conditioner) -> list[str]:
    """"1×", "2×", "4×": each tier's kernel side in backbone patches (1× = full detail)."""
    ph = conditioner.patch[1]
    return [f"{k[1] // ph}×" if k[1] == k[2] else f"{k[1] // ph}×{k[2] // conditioner.patch[2]}"
            for k in conditioner.kernels]


def memory_frames(bank, selection=None, overrides=None, tiers: Optional[list[int]] = None) -> list[dict]:
    """One entry per memory frame (the strip's data), in memory order.

    `bank` is the story as the node's selection saw it (overrides applied), so pinned/excluded
    are the effective flags; `override` is this node's own choice ("pin" / "exclude" / None)."""
    from .overrides import state_of

    rank = {} if selection is None else {index: r for r, index in enumerate(selection.kept)}
    out = []
    for i, rec in enumerate(bank.records):
        r = rank.get(i)
        out.append({
            "index": i, "shot": rec.shot, "frame": rec.frame, "source": rec.source,
            "score": None if selection is None else float(selection.scores[i]),
            "kept": r is not None, "rank": r,
            "tier": tiers[r] if tiers is not None and r is not None and r < len(tiers) else None,
            "pinned": rec.pinned, "excluded": rec.excluded,
            "override": None if overrides is None else state_of(overrides, bank, i),
        })
    return out


def thumb_strip(images: torch.Tensor, max_side: int = 96) -> torch.Tensor:
    """IMAGE "n h w 3" → one IMAGE "1 h' (n w') 3": every thumbnail side by side, each scaled down
    so its longer side is at most `max_side` (latent-size previews are usually already smaller)."""
    n, h, w, _ = images.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        images = torch.nn.functional.interpolate(images.movedim(-1, 1), size=(th, tw), mode="area").movedim(1, -1)
    return grid(images.clamp(0, 1), n)


def thumbs(rgb: torch.Tensor, save, first_frame: Optional[torch.Tensor] = None, max_side: int = 96) -> dict:
    """Thumbnails for the strip as ONE temp PNG (cell i = memory frame i, then the optional first
    frame of a new shot), saved by `save(image) -> ComfyUI image ref` (ui.PreviewImage), so the
    payload stays numbers only and the browser makes one /view request per node."""
    if first_frame is not None:
        rgb = torch.cat([rgb, first_frame], dim=0)
    n = int(rgb.shape[0])
    strip = thumb_strip(rgb, max_side)
    out = {"image": dict(save(strip)), "count": n, "cell": [int(strip.shape[2]) // n, int(strip.shape[1])]}
    if first_frame is not None:
        out["first_frame_cell"] = n - 1
    return out


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
