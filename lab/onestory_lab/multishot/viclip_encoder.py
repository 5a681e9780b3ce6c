"""ViCLIP as `onestory evaluate`'s S-Align model (`interfaces.VideoTextModel`), from a local folder.

    DIR/viclip/viclip.safetensors            the official state dict, converted once (docs/evaluation.md)
    DIR/viclip/bpe_simple_vocab_16e6.txt.gz  the CLIP vocabulary that comes with it

Frames are prepared as VBench's `overall_consistency` prepares them for ViCLIP (`preprocess="vbench"`,
the default): the short side resized to 224 (bicubic, antialiased), a centre 224 x 224 crop, CLIP's
mean / std. `preprocess="internvid"` follows InternVid's own demo (`frames2tensor`) and ViCLIP's
evaluation transform instead: the whole frame resized to 224 x 224, ImageNet mean / std.
Embeddings are L2-normalised, as ViCLIP's `get_vid_features` / `get_text_features` return them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from onestory.errors import ShapeError
from onestory.metrics.encoders import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, MissingModel

from .clip_tokenizer import Tokenizer, load_tokenizer
from .viclip import ViCLIP, from_state_dict

WEIGHTS = "viclip.safetensors"
VOCAB = "bpe_simple_vocab_16e6.txt.gz"
WHERE = ("ViCLIP-L/14 from the Hugging Face repo OpenGVLab/ViCLIP: ViClip-InternVid-10M-FLT.pth converted to "
         f"{WEIGHTS} (docs/evaluation.md gives the one line) and {VOCAB} from the same repo")


@dataclass(frozen=True)
class Preprocess:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: bool   # True: short side to size + centre crop; False: whole frame squeezed to size x size


PREPROCESS = {"vbench": Preprocess(CLIP_MEAN, CLIP_STD, crop=True),
              "internvid": Preprocess(IMAGENET_MEAN, IMAGENET_STD, crop=False)}


def prepare(frames: Tensor, size: int, how: Preprocess) -> Tensor:
    """"n 3 h w" in [0, 1] -> "n 3 size size" normalised (torchvision's Resize(size) + CenterCrop(size)
    arithmetic when `how.crop`)."""
    h, w = frames.shape[-2:]
    if how.crop:
        short, long = (h, w) if h <= w else (w, h)
        long = int(size * long / short)
        hw = (size, long) if h <= w else (long, size)
    else:
        hw = (size, size)
    x = F.interpolate(frames.float(), size=hw, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    if how.crop:
        top, left = int(round((hw[0] - size) / 2.0)), int(round((hw[1] - size) / 2.0))
        x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(how.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(how.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def arch_name(model: ViCLIP) -> str:
    c = model.config
    known = {(14, 1024, 768): "ViCLIP-L/14", (16, 768, 512): "ViCLIP-B/16"}
    return known.get((c.patch_size, c.vision_width, c.text_width), f"ViCLIP-{c.vision_width}w/{c.patch_size}")


class ViCLIPEncoder:
    """`interfaces.VideoTextModel`: clips "n t 3 h w" in [0, 1] (t = `frames`) and captions -> "n d"."""

    def __init__(self, model: ViCLIP, tokenizer: Tokenizer, preprocess: str = "vbench", name: str = ""):
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {sorted(PREPROCESS)}, got {preprocess!r}")
        self.model, self.tokenizer, self.preprocess = model.eval(), tokenizer, preprocess
        self.frames = model.config.frames
        suffix = "" if preprocess == "vbench" else f", {preprocess} preprocessing"
        self.name = name or f"{arch_name(model)}{suffix}"

    @property
    def device(self) -> torch.device:
        return self.model.temp.device

    @torch.no_grad()
    def encode_videos(self, clips: Tensor) -> Tensor:
        if clips.ndim != 5 or clips.shape[2] != 3 or clips.shape[1] != self.frames:
            raise ShapeError(f"ViCLIP clips: expected 'n {self.frames} 3 h w' in [0, 1], got {tuple(clips.shape)}")
        n = clips.shape[0]
        x = prepare(clips.flatten(0, 1), self.model.config.image_size, PREPROCESS[self.preprocess])
        x = x.unflatten(0, (n, self.frames)).to(self.device)
        return F.normalize(self.model.encode_video(x).float(), dim=-1).cpu()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        ids = self.tokenizer(list(texts), self.model.config.context_length).to(self.device)
        return F.normalize(self.model.encode_ids(ids).float(), dim=-1).cpu()


def load_viclip(folder: str | Path, preprocess: str = "vbench") -> ViCLIPEncoder:
    """`folder` with viclip.safetensors + bpe_simple_vocab_16e6.txt.gz -> ViCLIPEncoder, or
    MissingModel naming what is absent or wrong."""
    d = Path(folder)
    absent = [f for f in (WEIGHTS, VOCAB) if not (d / f).is_file()]
    if absent:
        raise MissingModel(f"text: {d} lacks {' and '.join(absent)}; put {WHERE} in {d}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise MissingModel(f"text: {d / WEIGHTS} is not a readable .safetensors file ({e})") from None
    try:
        model = from_state_dict(state)
    except ValueError as e:
        raise MissingModel(f"text: {d / WEIGHTS} is not a ViCLIP state dict ({str(e).strip()[:400]}); expected the "
                           "'model' entry of ViClip-InternVid-10M-FLT.pth (keys vision_encoder.*, text_encoder.*, "
                           "temp), converted as docs/evaluation.md shows") from None
    try:
        tokenizer = load_tokenizer(d / VOCAB, model.config.vocab_size)
    except (OSError, EOFError, ValueError) as e:
        raise MissingModel(f"text: {d / VOCAB} does not fit the model ({e})") from None
    return ViCLIPEncoder(model, tokenizer, preprocess)
