"""Contact sheet of a story: one row per shot (its latent-rate frames, upscaled) + its caption."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .world import Story


def contact_sheet(story: Story, scale: int = 4, videos: Sequence[np.ndarray] | None = None,
                  wrap: int = 60) -> Image.Image:
    """PIL image of `story`. `videos` ("t h w 3" per shot, e.g. generated and decoded) replaces
    the ground-truth renders so generations can be shown next to their captions."""
    videos = list(videos) if videos is not None else [story.render_shot(k) for k in range(len(story.shots))]
    n = story.frame_size * scale
    gap, text_h = 4, 12
    cols = story.latent_frames
    wrapped = [textwrap.wrap(f"{k + 1}. {c}", wrap) for k, c in enumerate(story.captions)]
    row_h = [n + gap + text_h * len(w) + gap for w in wrapped]
    width = max(cols * (n + gap) + gap, 6 * wrap + 2 * gap)
    sheet = Image.new("RGB", (width, sum(row_h) + text_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 1), f"seed {story.seed} - {story.pattern}", fill=(0, 0, 0))
    y = text_h + gap
    for k, video in enumerate(videos):
        idx = [0] + [4 * i for i in range(1, cols)]
        for j, t in enumerate(idx):
            frame = np.clip(np.asarray(video[t], dtype=np.float32), 0, 1)
            img = Image.fromarray((frame * 255).round().astype(np.uint8)).resize((n, n), Image.NEAREST)
            sheet.paste(img, (gap + j * (n + gap), y))
        for i, line in enumerate(wrapped[k]):
            draw.text((gap, y + n + gap + i * text_h), line, fill=(0, 0, 0))
        y += row_h[k]
    return sheet
