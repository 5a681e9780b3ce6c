"""S-Align: how well each shot matches its caption.

    video-text model (ViCLIP, the paper's choice):  cos(V(clip), T(caption)), clip = `frames`
        frames sampled from the shot (middle of evenly spaced segments; ViCLIP takes 8)
    image-text model (CLIP / SigLIP, when no video-text model is at hand):
        mean over sampled frames of cos(I(frame), T(caption))

The two are different metrics: a report names the model it used and never averages one
with the other (`stats.aggregate` refuses).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from .frames import sample_indices


def is_video_model(model: object) -> bool:
    return hasattr(model, "encode_videos")


def s_align(shots: Sequence[Tensor], captions: Sequence[str], model: object, frames: int = 8) -> list[float]:
    """Per-shot S-Align for shots "t 3 h w" and their captions."""
    if len(shots) != len(captions):
        raise ValueError(f"{len(shots)} shots but {len(captions)} captions")
    text = F.normalize(model.encode_texts(list(captions)).float(), dim=-1)
    out = []
    for shot, t in zip(shots, text):
        if is_video_model(model):
            n = int(getattr(model, "frames", frames))
            idx = sample_indices(shot.shape[0], n)
            idx = (idx * n)[:n] if len(idx) < n else idx    # short shots repeat frames
            v = F.normalize(model.encode_videos(shot[sorted(idx)][None]).float(), dim=-1)[0]
            out.append(float(v @ t))
        else:
            img = F.normalize(model.encode_images(shot[sample_indices(shot.shape[0], frames)]).float(), dim=-1)
            out.append(float((img @ t).mean()))
    return out


def model_kind(model: object) -> str:
    return "video-text" if is_video_model(model) else "image-text"


def describe(model: object) -> str:
    return f"{getattr(model, 'name', type(model).__name__)} ({model_kind(model)})"

