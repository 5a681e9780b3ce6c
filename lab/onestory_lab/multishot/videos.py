"""Reading a run's videos: one folder per story, one entry per shot.

    DIR/<story id>/shot_01/ 00000.png 00001.png ...    a frame folder per shot, or
    DIR/<story id>/shot_01.gif | .webp                 an animated image per shot
    DIR/<story id>/meta.json (optional)                {"fps": 16}

Shots are taken in name order; a story whose shot count differs from its annotation is an
error naming the story and what was found.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageSequence
from torch import Tensor

from onestory.errors import ShapeError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp")
ANIM_EXT = (".gif", ".webp")


def _to_tensor(images: list[Image.Image], where: str) -> Tensor:
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise ShapeError(f"{where}: frames differ in size {sorted(sizes)}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def read_shot(path: Path) -> Tensor:
    """A frame folder or an animated image -> "t 3 h w" in [0, 1]."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT)
        if not files:
            raise ShapeError(f"{path}: no frames (.png / .jpg / .webp) in this shot folder")
        images = []
        for f in files:
            with Image.open(f) as im:
                images.append(im.convert("RGB"))
        return _to_tensor(images, str(path))
    with Image.open(path) as im:
        return _to_tensor([fr.convert("RGB") for fr in ImageSequence.Iterator(im)], str(path))


def shot_entries(story_dir: Path) -> list[Path]:
    return sorted(p for p in story_dir.iterdir() if p.name.startswith("shot_")
                  and (p.is_dir() or p.suffix.lower() in ANIM_EXT))


def read_story(root: Path, story_id: str, shots: int) -> tuple[list[Tensor], Optional[float]]:
    d = root / story_id
    if not d.is_dir():
        raise ShapeError(f"story {story_id!r}: no folder {d} (expected {shots} entries shot_01 ... shot_{shots:02d})")
    entries = shot_entries(d)
    if len(entries) != shots:
        raise ShapeError(f"story {story_id!r}: {d} has {len(entries)} shots ({[e.name for e in entries]}) but the "
                         f"annotation has {shots}")
    fps = None
    meta = d / "meta.json"
    if meta.is_file():
        fps = json.loads(meta.read_text()).get("fps")
    return [read_shot(e) for e in entries], fps


def write_story(root: Path, story_id: str, shots: list[Tensor], fps: Optional[float] = None) -> Path:
    """Write shots "t 3 h w" as frame folders (the layout `read_story` reads)."""
    d = root / story_id
    for i, s in enumerate(shots):
        sd = d / f"shot_{i + 1:02d}"
        sd.mkdir(parents=True, exist_ok=True)
        arr = (s.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for j, a in enumerate(arr):
            Image.fromarray(a).save(sd / f"{j:05d}.png")
    if fps is not None:
        (d / "meta.json").write_text(json.dumps({"fps": fps}))
    return d
