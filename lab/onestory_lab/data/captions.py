"""Per-shot captions from a JSONL file any captioner can write, and the optional referential rewrite.

One JSON object per line:
    {"video": "clips/a.mp4", "shot": 0, "caption": "A woman in a red coat walks ..."}
    {"video": "clips/a.mp4", "start": 120, "end": 250, "caption": "..."}
`video` is the path as given to `data shots` (or just its file name when that is unique);
`shot` is the shot index in shots.jsonl, or `start`/`end` (frames, end exclusive) name the shot
that overlaps the range most (at least half of the shorter of the two).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .records import Shot


class CaptionError(ValueError):
    pass


@dataclass(frozen=True)
class CaptionTable:
    by_index: dict[tuple[str, int], str]
    by_range: dict[str, list[tuple[int, int, str]]]

    def lookup(self, shot: Shot) -> str | None:
        for key in (shot.video, os.path.basename(shot.video)):
            if (key, shot.index) in self.by_index:
                return self.by_index[(key, shot.index)]
        best, best_overlap = None, 0
        for key in (shot.video, os.path.basename(shot.video)):
            for start, end, text in self.by_range.get(key, ()):
                overlap = min(end, shot.end) - max(start, shot.start)
                if overlap > best_overlap and 2 * overlap >= min(end - start, shot.frames):
                    best, best_overlap = text, overlap
        return best


def read_captions(path: str | Path) -> CaptionTable:
    by_index: dict[tuple[str, int], str] = {}
    by_range: dict[str, list[tuple[int, int, str]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                video, text = str(obj["video"]), str(obj["caption"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CaptionError(f"{path}:{n}: expected a JSON object with 'video' and 'caption' ({e})") from e
            if not text:
                continue
            if "shot" in obj:
                by_index[(video, int(obj["shot"]))] = text
            elif "start" in obj and "end" in obj:
                by_range.setdefault(video, []).append((int(obj["start"]), int(obj["end"]), text))
            else:
                raise CaptionError(f"{path}:{n}: give either 'shot' or 'start' and 'end'")
    return CaptionTable(by_index, by_range)


@dataclass(frozen=True)
class RewriteRequest:
    """One shot's caption plus what came before it in the same video."""

    previous_caption: str
    previous_frames: np.ndarray   # "t h w 3" uint8: a few frames of the previous shot
    caption: str
    frames: np.ndarray            # "t h w 3" uint8: a few frames of this shot


class CaptionRewriter(Protocol):
    """Turns an independent caption into a referential one ("the same woman ..." instead of
    describing her again), given the previous shot. Applied to every shot after a video's first."""

    def rewrite(self, request: RewriteRequest) -> str: ...


PROMPT = ("Previous shot: {previous}\nCurrent shot: {current}\n"
          "Rewrite the current shot's description so that people and places already seen in the previous "
          "shot are referred to as such (for example 'the same woman'), and describe only what changes. "
          "Answer with the rewritten description only.\nRewritten:")


class TransformersRewriter:
    """A causal language model from a LOCAL transformers folder (config, weights, tokenizer).

    Text-only: it sees the two captions, not the frames (a VLM can be plugged in through the
    CaptionRewriter protocol)."""

    def __init__(self, folder: str | Path, device: str = "cpu", max_new_tokens: int = 96) -> None:
        from . import deps

        transformers = deps.transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        self.model.to(device).eval()
        self.device, self.max_new_tokens = device, max_new_tokens

    def rewrite(self, request: RewriteRequest) -> str:
        import torch

        prompt = PROMPT.format(previous=request.previous_caption, current=request.caption)
        ids = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        return text.split("\n")[0].strip() or request.caption   # an empty answer keeps the original
