"""Glue of the Story Score node: metric models from models/onestory_eval and ComfyUI's
CLIP_VISION, the story annotation widget, shot splitting, and the heatmap IMAGE.

The metrics themselves are the core's (`onestory.metrics`), the same functions
`python -m onestory_lab evaluate` runs.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .core import metric_annotation, metric_encoders, metric_frames, metric_interfaces, metric_score

FOLDER = "onestory_eval"
KINDS = ("dino", "text", "persons", "aesthetic", "flow")
FLOAT_KEYS = ("c_cons", "e_cons", "inter_avg", "s_align", "subject", "background", "intra_avg", "aesthetic",
              "dynamic_degree")


@dataclass(frozen=True)
class EvalModel:
    """What travels on the ONESTORY_EVAL_MODEL socket."""

    kind: str        # one of KINDS
    name: str
    model: Any       # DinoEncoder | ImageText | DetectorPersons | (weight, bias) | FlowModel


# ---- models/onestory_eval ------------------------------------------------------------------
def register_folder() -> None:
    import folder_paths

    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})


def folders() -> list[str]:
    import folder_paths

    register_folder()
    return list(folder_paths.folder_names_and_paths[FOLDER][0])


def list_models() -> list[str]:
    """.safetensors files and transformers folders (with config.json) in models/onestory_eval."""
    names: set[str] = set()
    for root in folders():
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, files in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            if "config.json" in files and rel != ".":
                names.add(rel.replace(os.sep, "/"))
                dirnames[:] = []
                continue
            names.update(os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                         for f in files if f.endswith(".safetensors"))
    return sorted(names)


def resolve(name: str) -> Path:
    for root in folders():
        p = Path(root) / name
        if p.exists() and Path(os.path.realpath(p)).is_relative_to(os.path.realpath(root)):
            return p
    raise metric_encoders.MissingModel(
        f"{name!r} is not in {folders()}; put the model there (docs/evaluation.md lists what to get)")


def detect_kind(path: Path) -> str:
    if path.is_dir():
        cfg = json.loads((path / "config.json").read_text())
        arch = " ".join(cfg.get("architectures") or [])
        mtype = str(cfg.get("model_type", ""))
        if "ForObjectDetection" in arch:
            return "persons"
        if mtype in ("clip", "siglip", "siglip2"):
            return "text"
        if mtype in ("dinov2", "vit", "dinov2_with_registers"):
            return "dino"
        raise metric_encoders.MissingModel(f"{path.name}: model_type {mtype!r} is not a metric model this node "
                                           "uses (DINOv2 / CLIP / SigLIP / an object detector)")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys if k in ("weight", "linear.weight")}
    if any(k.removeprefix("dinov2.") == "embeddings.patch_embeddings.projection.weight" for k in keys):
        return "dino"
    if any(s[0] == 1 for s in shapes.values()):
        return "aesthetic"
    if any(k.startswith("feature_encoder.") for k in keys):
        return "flow"
    raise metric_encoders.MissingModel(f"{path.name}: not a DINOv2, LAION aesthetic head or RAFT safetensors "
                                       f"(first keys: {sorted(keys)[:4]})")


def _raft_large():
    try:
        from torchvision.models.optical_flow import raft_large
    except Exception as e:   # absent, or built for another torch
        raise metric_encoders.MissingModel(f"flow: torchvision's RAFT cannot be imported ({type(e).__name__}: {e})") from None
    return raft_large


def load_eval_model(name: str, person_threshold: float = 0.5) -> EvalModel:
    import transformers   # a ComfyUI requirement

    path = resolve(name)
    kind = detect_kind(path)
    enc, tf = metric_encoders, transformers
    model = {"dino": lambda: enc.load_dinov2(path, tf), "text": lambda: enc.load_image_text(path, tf),
             "persons": lambda: enc.load_person_detector(path, tf, person_threshold),
             "aesthetic": lambda: enc.load_aesthetic_head(path),
             "flow": lambda: enc.load_raft(path, _raft_large())}[kind]()
    return EvalModel(kind, Path(name).name, model)


class ClipVisionEncoder:
    """ComfyUI's CLIP_VISION as an image encoder: its projected image_embeds (center crop, as VBench)."""

    def __init__(self, clip_vision: Any, name: str = "clip_vision"):
        self.clip_vision, self.name = clip_vision, name

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        out = self.clip_vision.encode_image(images.permute(0, 2, 3, 1), crop=True)
        return out["image_embeds"].float().cpu()

    __call__ = encode_images


def expect(model: Optional[EvalModel], kind: str, socket: str) -> Optional[EvalModel]:
    if model is not None and model.kind != kind:
        raise ValueError(f"Story Score: the {socket} input got a {model.kind} model ({model.name}); it needs a "
                         f"{kind} model")
    return model


def build_models(dino: EvalModel, persons: Optional[EvalModel], text: Optional[EvalModel], clip_vision: Any,
                 aesthetic: Optional[EvalModel], flow: Optional[EvalModel]):
    expect(dino, "dino", "dino")
    for m, kind in ((persons, "persons"), (text, "text"), (aesthetic, "aesthetic"), (flow, "flow")):
        expect(m, kind, kind)
    clip = ClipVisionEncoder(clip_vision) if clip_vision is not None else None
    missing = []
    aest = None
    if aesthetic is not None and clip is None:
        missing.append(("aesthetic", "aesthetic: connect a CLIP_VISION (ViT-L/14, e.g. clip_vision_vit_l) for the "
                                     "LAION head"))
    elif aesthetic is not None:
        aest = metric_encoders.aesthetic_on(clip, *aesthetic.model, name=f"laion-aesthetic[{aesthetic.name}]")
    for m, field, why in ((persons, "persons", "connect a person detector (OneStory Eval Model Loader) or person_masks"),
                          (text, "text", "connect a CLIP / SigLIP model (OneStory Eval Model Loader) to text"),
                          (clip_vision, "clip", "connect a CLIP_VISION (VBench: CLIP ViT-B/32)"),
                          (aesthetic, "aesthetic", "connect the LAION head (OneStory Eval Model Loader) and a CLIP_VISION"),
                          (flow, "flow", "connect RAFT weights (OneStory Eval Model Loader; needs torchvision)")):
        if m is None:
            missing.append((field, f"{field}: {why}"))
    return metric_interfaces.Models(
        dino=dino.model, subject=dino.model, clip=clip, aesthetic=aest, text=None if text is None else text.model,
        persons=None if persons is None else persons.model, flow=None if flow is None else flow.model,
        missing=tuple(missing))


# ---- story annotation ------------------------------------------------------------------------
def parse_annotation(text: str, captions: Optional[Sequence[str]] = None):
    """The widget: one story as JSON (a story object or a one-story benchmark) or the shot-list
    text. Shot lines without a caption ("[A @P]") take the connected story's captions."""
    text = text.strip()
    if not text:
        raise ValueError("Story Score: story_annotation is empty; list the shots as '[A @P] caption' lines "
                         "(which characters and place each shot shows)")
    A = metric_annotation
    if text.startswith("{"):
        data = json.loads(text)
        if data.get("format") == A.BENCH_FORMAT:
            b = A.benchmark_from_json(data, "story_annotation")
            if len(b.stories) != 1:
                raise ValueError(f"Story Score: story_annotation holds {len(b.stories)} stories; give one")
            return b.stories[0]
        return A.benchmark_from_json({"format": A.BENCH_FORMAT, "version": A.BENCH_VERSION, "task": "t2msv",
                                      "stories": [data]}, "story_annotation").stories[0]
    lines, k = [], 0
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            if captions is None or k >= len(captions):
                raise ValueError(f"Story Score: shot line {s!r} has no caption and no story caption is connected "
                                 f"for shot {k + 1}")
            line = f"{s} {captions[k]}"
        if s.startswith("["):
            k += 1
        lines.append(line)
    stories = A.parse_shot_list("\n".join(lines), "story_annotation")
    if len(stories) != 1:
        raise ValueError(f"Story Score: story_annotation holds {len(stories)} stories; give one")
    return stories[0]


def story_shots(story: Any, total: int) -> tuple[list[int], list[str]]:
    """Pixel-frame lengths of the story's shots in `total` frames, and their captions. Decode Story
    decodes each shot on its own (n latent frames -> 4n-3 frames each); VAE Decode of Story To Latent
    decodes them joined (the first shot 4n-3, every later one 4n). The frame count tells which."""
    shots = [i for i, s in enumerate(story.shots) if s.source != "reference"]
    counts = [int(story.shot_frames(i).shape[1]) for i in shots]
    captions = [story.shots[i].caption for i in shots]
    separate = [4 * n - 3 for n in counts]
    joined = [4 * n - 3 if j == 0 else 4 * n for j, n in enumerate(counts)]
    for lengths in (separate, joined):
        if sum(lengths) == total:
            return lengths, captions
    raise ValueError(f"Story Score: the images have {total} frames but the story's {len(counts)} shots decode to "
                     f"{sum(separate)} (Decode Story) or {sum(joined)} (VAE Decode of Story To Latent); connect "
                     "the images of that story or give shot_lengths")


def parse_lengths(text: str, total: int, shots: int) -> list[int]:
    text = text.strip()
    if not text:
        if total % shots:
            raise ValueError(f"Story Score: {total} frames do not split evenly into {shots} shots; give shot_lengths "
                             "(e.g. '33,32,32') or connect the story")
        return [total // shots] * shots
    try:
        lengths = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"Story Score: shot_lengths {text!r} must be comma-separated frame counts") from None
    return lengths


# ---- scoring and the heatmap -------------------------------------------------------------------
def score(images: Tensor, lengths: Sequence[int], annotation, models, fps: float, person_masks: Optional[Tensor]):
    """images "b h w c" (ComfyUI IMAGE) -> StoryScore."""
    frames = images.permute(0, 3, 1, 2).float()
    if len(lengths) != len(annotation.shots):
        raise ValueError(f"Story Score: story {annotation.id!r} is annotated with {len(annotation.shots)} shots "
                         f"but shot_lengths gives {len(lengths)} ({list(lengths)})")
    shots = metric_frames.split_shots(frames, lengths, f"story {annotation.id!r}")
    masks = None
    if person_masks is not None:
        if person_masks.shape[0] != frames.shape[0] or tuple(person_masks.shape[-2:]) != tuple(frames.shape[-2:]):
            raise ValueError(f"Story Score: person_masks {tuple(person_masks.shape)} must have one mask per frame "
                             f"of the images {tuple(frames.shape[:1]) + tuple(frames.shape[-2:])}")
        per = [m[None] > 0.5 for m in person_masks]     # one union mask per frame: a single person region
        masks, i = [], 0
        for n in lengths:
            masks.append(per[i:i + n])
            i += n
    opts = metric_score.ScoreOptions(fps=float(fps))
    return metric_score.score_story(shots, annotation, models, opts, person_masks=masks)


def _colour(v: float) -> tuple[int, int, int]:
    """0 -> dark blue, 1 -> yellow (a viridis-like ramp)."""
    if v is None or math.isnan(v):
        return (60, 60, 60)
    t = min(1.0, max(0.0, v))
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    x = t * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    f = x - i
    return tuple(int(stops[i][c] * (1 - f) + stops[i + 1][c] * f) for c in range(3))


def heatmap(result) -> Tensor:
    """Shot x shot character and environment similarity (annotated pairs outlined white) and a
    per-shot S-Align row -> IMAGE "1 h w 3"."""
    from PIL import Image, ImageDraw

    mats = result.matrices
    n = len(result.per_shot.get("s_align") or mats.get("character") or [])
    n = n or 1
    cell, pad, head = 44, 16, 22
    panel = n * cell
    w = pad * 3 + panel * 2
    h = head + panel + pad + head + cell + pad
    img = Image.new("RGB", (w, h), (24, 26, 33))
    d = ImageDraw.Draw(img)
    for p, (key, pairs, title) in enumerate((("character", "character_pairs", "C-Cons (character)"),
                                             ("environment", "place_pairs", "E-Cons (environment)"))):
        x0 = pad + p * (panel + pad)
        d.text((x0, 4), title, fill=(235, 235, 235))
        m = mats.get(key)
        marked = {tuple(q) for q in mats.get(pairs, [])} | {tuple(q[::-1]) for q in mats.get(pairs, [])}
        for s in range(n):
            for t in range(n):
                v = m[s][t] if m else None
                box = [x0 + t * cell, head + s * cell, x0 + (t + 1) * cell - 1, head + (s + 1) * cell - 1]
                d.rectangle(box, fill=_colour(v), outline=(255, 255, 255) if (s, t) in marked else None,
                            width=2 if (s, t) in marked else 0)
                d.text((box[0] + 6, box[1] + 16), "-" if v is None else f"{v:.2f}",
                       fill=(0, 0, 0) if v is not None and v > 0.6 else (255, 255, 255))
    y0 = head + panel + pad
    d.text((pad, y0 + 4), "S-Align per shot", fill=(235, 235, 235))
    align = result.per_shot.get("s_align")
    for s in range(n):
        v = align[s] if align else None
        box = [pad + s * cell, y0 + head, pad + (s + 1) * cell - 1, y0 + head + cell - 1]
        d.rectangle(box, fill=_colour(None if v is None else (v + 1) / 2))
        d.text((box[0] + 4, box[1] + 16), "-" if v is None else f"{v:.3f}", fill=(255, 255, 255))
    import numpy as np

    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def outputs(result) -> tuple[str, list[float]]:
    floats = [float("nan") if result.metrics.get(k) is None else float(result.metrics[k]) for k in FLOAT_KEYS]
    return json.dumps(result.to_json(), indent=1), floats
