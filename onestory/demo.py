"""`python -m onestory demo`: a six-shot story on the CPU with the embedded default model.

Until the story-world checkpoint exists this runs the full next-shot loop (select →
condition → sample → remember) on a tiny RANDOMLY INITIALISED Wan-architecture model: the
pictures are noise, the mechanics (memory, selection, context tokens, story file) are real.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Optional

import torch
from torch import Tensor

from .conditioner import AdaptiveConditioner
from .memory import MemoryBank
from .story import NextShotGenerator, ShotSpec, StoryParams, generate_story
from .wan import WanConfig, WanModel

CAPTIONS = (
    "a woman in a red coat enters a small cafe",
    "the same woman orders a coffee at the counter",
    "a stranger in a green hat reads a newspaper outside",
    "back inside, the woman in the red coat sits by the window",
    "the stranger in the green hat walks into the cafe",
    "the woman and the stranger talk at the window table",
)


def hashed_text(caption: str, dim: int, length: int = 16) -> Tensor:
    """Deterministic caption features "l d" from hashed words (stands in for umT5 here)."""
    rows = []
    for word in caption.lower().split()[:length]:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        rows.append(torch.randn(dim, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(rows)


def random_model(seed: int) -> WanModel:
    torch.manual_seed(seed)
    cfg = WanConfig(model_type="t2v", in_dim=16, dim=64, ffn_dim=128, text_dim=32, out_dim=16,
                    num_heads=2, num_layers=2)
    return WanModel(cfg).eval()


def latent_preview(frame: Tensor) -> Tensor:
    """"c h w" latent -> "3 h w" uint8 preview from the first three channels (min-max scaled)."""
    rgb = frame[:3].float()
    lo, hi = rgb.amin(), rgb.amax()
    return ((rgb - lo) / (hi - lo + 1e-8) * 255).to(torch.uint8)


def contact_sheet(bank: MemoryBank, scale: int = 8):
    """One row per shot; a shot's frames left to right. Returns a PIL image."""
    from PIL import Image

    h, w = bank.height * scale, bank.width * scale
    frames_per_shot = max(r.frame for r in bank.records) + 1
    sheet = Image.new("RGB", (frames_per_shot * (w + 2), bank.num_shots * (h + 2)), "white")
    for idx, rec in enumerate(bank.records):
        tile = latent_preview(bank.frames[idx]).permute(1, 2, 0).numpy()
        img = Image.fromarray(tile).resize((w, h), Image.NEAREST)
        sheet.paste(img, (rec.frame * (w + 2), rec.shot * (h + 2)))
    return sheet


def run_demo(out_dir: str, seed: int = 0, steps: Optional[int] = None) -> MemoryBank:
    print("OneStory demo — NOTE: no trained story-world checkpoint is bundled yet, so this runs the")
    print("complete next-shot loop on a tiny RANDOMLY INITIALISED Wan-architecture model (dim 64,")
    print("2 layers). The frames are noise; memory, selection, context tokens and the story file are real.\n")
    os.makedirs(out_dir, exist_ok=True)
    model = random_model(seed)
    cfg = model.config
    conditioner = AdaptiveConditioner.from_patch_embedding(
        model.patch_embedding.weight, model.patch_embedding.bias, latent_channels=cfg.out_dim)
    generator = NextShotGenerator(model, conditioner)
    params = StoryParams(frames=3, height=16, width=16, k=4, budget=1.0, scorer="sink_recent",
                         steps=steps or 8, cfg=3.0)
    shots = [ShotSpec(c, hashed_text(c, cfg.text_dim), seed=seed * 100 + i) for i, c in enumerate(CAPTIONS)]

    start = time.perf_counter()

    def progress(shot: int, info) -> None:
        if info.step + 1 == info.total:
            print(f"  shot {shot + 1}/{len(shots)} sampled ({info.total} steps)")

    bank = generate_story(generator, shots, params, progress=progress)
    elapsed = time.perf_counter() - start

    print(f"\n{bank.num_shots} shots, {bank.num_frames} latent frames in memory, {elapsed:.1f} s")
    for i, rec in enumerate(bank.shots):
        sel = rec.selection
        kept = "—" if sel is None else ", ".join(str(k) for k in sel["kept"])
        print(f"  shot {i + 1}: {rec.caption!r}\n          remembered memory frames: {kept}")
    story_path = os.path.join(out_dir, "story.safetensors")
    bank.save(story_path)
    sheet_path = os.path.join(out_dir, "contact_sheet.png")
    contact_sheet(bank).save(sheet_path)
    print(f"\nwrote {story_path}\nwrote {sheet_path}")
    return bank
