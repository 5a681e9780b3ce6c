"""`python -m onestory_lab demo`: a six-shot insert-and-recall story on the CPU with the bundled
story-world checkpoint (lab/onestory_lab/assets/storyworld_{dit,adapter}.safetensors, trained by
the one command in docs/training.md). The story is chosen by rule, never by hand: the first
insert-and-recall story of the recall study's fresh seed range (storyworld/splits.py).

Writes OUT/story.gif (the generated video, shot after shot), OUT/contact_sheet.png (each
generated shot, the memory frames its selector kept with their scores and conditioner tiers,
and the ground-truth render for comparison), OUT/story.safetensors (the memory bank) and
OUT/metrics.json; prints the recall metrics of this story and of `stories` held-out
insert-and-recall stories.
"""
from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
DIT = ASSETS / "storyworld_dit.safetensors"
ADAPTER = ASSETS / "storyworld_adapter.safetensors"
# the recall study's headline for the bundled checkpoint (written by experiments/recall_study.py --headline)
HEADLINE = ASSETS / "storyworld_headline.txt"
TIER_NAMES = ("2x2", "4x4", "8x8", "16x16")


def _frames(latent: torch.Tensor) -> np.ndarray:
    from .storyworld.latent import LatentCodec, tensor_to_frames

    return tensor_to_frames(LatentCodec().decode(latent.float()))     # "t h w 3"


def _latent_rate(latent: torch.Tensor) -> np.ndarray:
    """One pixel frame per latent frame ("n h w 3")."""
    px = _frames(latent)
    return px[[0] + [4 * i for i in range(1, latent.shape[1])]]


def _img(frame: np.ndarray, scale: int):
    from PIL import Image

    img = Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
    return img.resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)


def contact_sheet(run, scale: int = 3):
    """Rows = shots: caption; generated latent-rate frames | ground truth | kept memory frames
    (label: shot.frame, selector score, tier kernel)."""
    from PIL import Image, ImageDraw

    story = run.story
    n = story.frame_size * scale
    t = story.latent_frames
    gap, line = 6, 11
    mem_cols = max((len(s["kept"]) if s else 0) for s in run.selections)
    width = gap + t * (n + 2) + gap * 3 + t * (n + 2) + gap * 3 + mem_cols * (n + 4) + gap
    row_h = n + 3 * line + 3 * line + gap
    sheet = Image.new("RGB", (max(width, 640), line * 2 + len(story.shots) * row_h), "white")
    d = ImageDraw.Draw(sheet)
    d.text((gap, 2), f"OneStory demo - held-out insert_recall story (seed {story.seed}). "
                     "Left: generated | middle: ground truth | right: memory frames kept for this shot", fill="black")
    y = line * 2
    for s in range(len(story.shots)):
        for i, cap in enumerate(textwrap.wrap(f"shot {s + 1}: {story.captions[s]}", 110)[:2]):
            d.text((gap, y + i * line), cap, fill="black")
        yy = y + 2 * line + 2
        x = gap
        for f in _latent_rate(run.latents[s]):
            sheet.paste(_img(f, scale), (x, yy))
            x += n + 2
        x += gap * 3
        gt = story.render_shot(s)
        for j in range(t):
            sheet.paste(_img(gt[0 if j == 0 else 4 * j], scale), (x, yy))
            x += n + 2
        x += gap * 3
        sel = run.selections[s]
        if sel is None:
            d.text((x, yy + n // 2), "shot 1: text only (empty memory)", fill="gray")
        else:
            for r, (m, tier) in enumerate(zip(sel["kept"], sel["tiers"])):
                ms, mf = divmod(m, t)
                frame = _latent_rate(run.latents[ms])[mf]
                sheet.paste(_img(frame, scale), (x, yy))
                score = "" if sel["scores"] is None else f" {sel['scores'][m]:+.2f}"
                d.text((x, yy + n + 1), f"#{r + 1} s{ms + 1}.{mf}{score}", fill="black")
                d.text((x, yy + n + 1 + line), f"tier {TIER_NAMES[tier]}", fill=(0, 0, 160) if tier == 0 else "gray")
                x += n + 4
        y += row_h
    return sheet


def _gif(run, path: str, scale: int = 4) -> None:
    from PIL import ImageDraw

    frames = []
    for s, z in enumerate(run.latents):
        for f in _frames(z):
            img = _img(f, scale)
            ImageDraw.Draw(img).text((2, 1), f"{s + 1}", fill="white")
            frames.append(img)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=110, loop=0)


def _bank(run):
    from onestory.memory import MemoryBank

    bank = MemoryBank.empty()
    for s, z in enumerate(run.latents):
        sel = run.selections[s]
        sel_json = None if sel is None else {"scorer": "learned" if sel["scores"] else "recency",
                                             "kept": sel["kept"], "tiers": sel["tiers"], "scores": sel["scores"]}
        bank = bank.add_shot(z, run.story.captions[s], source="generated", selection=sel_json)
    return bank


def run_demo(out_dir: str, seed: Optional[int] = None, steps: Optional[int] = None, stories: int = 0,
             dit: Optional[str] = None, adapter: Optional[str] = None, threads: int = 2) -> dict:
    from .storyworld.dataset import eval_stories
    from .storyworld.inflation import story_seed
    from .storyworld.splits import STUDY_OFFSET
    from .storyworld.world import make_story
    from .eval.generate import GenParams, generate_batch
    from .eval.metrics import aggregate, story_metrics
    from .train.checkpoint import load_model

    torch.set_num_threads(threads)
    start = time.perf_counter()
    dit, adapter = dit or str(DIT), adapter or str(ADAPTER)
    if not (os.path.exists(dit) and os.path.exists(adapter)):
        raise SystemExit(f"bundled checkpoint missing ({dit}, {adapter}); train it with the command in "
                         "docs/training.md")
    os.makedirs(out_dir, exist_ok=True)
    model = load_model(dit, adapter)
    params = GenParams.for_model(model, steps=steps)
    c = model.cfg
    print(f"OneStory demo: story-world DiT (dim {c.dim}, {c.layers} layers) + selector + adaptive conditioner, "
          f"policy {params.policy}, K={params.k}, budget {params.budget}, {params.steps} Euler steps, cfg {params.cfg}")
    if dit == str(DIT) and HEADLINE.exists():
        print(HEADLINE.read_text().rstrip() + "\n")
    seed = STUDY_OFFSET if seed is None else seed
    story = make_story(story_seed("eval", seed), "insert_recall", pixel_frames=c.pixel_frames, world=c.world)
    per_shot = story.latent_frames
    run = generate_batch(model, [story], params)[0]
    metrics = story_metrics(story, run.latents)
    one = aggregate([metrics])
    for s in range(len(story.shots)):
        sel = run.selections[s]
        kept = "-" if sel is None else ", ".join(
            f"s{m // per_shot + 1}.{m % per_shot}" + ("" if sel["scores"] is None else f"({sel['scores'][m]:+.2f})")
            + f"@{TIER_NAMES[t]}" for m, t in zip(sel["kept"], sel["tiers"]))
        print(f"  shot {s + 1}: {story.captions[s]}\n          memory kept: {kept}")
    _gif(run, os.path.join(out_dir, "story.gif"))
    contact_sheet(run).save(os.path.join(out_dir, "contact_sheet.png"))
    _bank(run).save(os.path.join(out_dir, "story.safetensors"))
    print(f"\nthis story: character recall {one['character_recall']:.3f}, environment recall "
          f"{one['environment_recall']:.3f}, caption alignment {one['caption_alignment']:.3f}")
    result = {"story": one, "seed": seed}
    if stories > 0:
        held = eval_stories("insert_recall", stories, pixel_frames=c.pixel_frames, world=c.world, offset=seed)
        runs = generate_batch(model, held, params)
        agg = aggregate(story_metrics(r.story, r.latents) for r in runs)
        result["held_out"] = agg
        print(f"{stories} held-out insert_recall stories: character recall {agg['character_recall']:.3f}, "
              f"environment recall {agg['environment_recall']:.3f}, caption alignment "
              f"{agg['caption_alignment']:.3f}, shot-6 recall {agg.get('shot6_character_recall', float('nan')):.3f}")
    result["seconds"] = round(time.perf_counter() - start, 1)
    Path(out_dir, "metrics.json").write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out_dir}/story.gif, contact_sheet.png, story.safetensors, metrics.json "
          f"({result['seconds']} s)")
    return result
