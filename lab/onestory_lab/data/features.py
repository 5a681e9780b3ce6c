"""Image embeddings for the filters and the selector pseudo-labels, from LOCAL transformers folders.

A folder is what `save_pretrained` writes (config.json + model.safetensors, optionally
preprocessor_config.json). Supported model types: CLIP and SigLIP/SigLIP2 (`get_image_features`,
the projected image embedding) and DINOv2 (the final-layer-norm CLS token). Nothing is
downloaded: the folder is opened with `local_files_only=True`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import deps

# Per-family normalisation when the folder has no preprocessor_config.json.
DEFAULT_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "siglip2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
FAMILIES = tuple(DEFAULT_STATS)


class ImageEncoder:
    """frames "n h w 3" uint8 -> L2-normalised embeddings "n d" (float32, CPU)."""

    def __init__(self, folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 batch: int = 32) -> None:
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder} is not a transformers model folder (no config.json); "
                                    "pass the directory that save_pretrained wrote")
        config = json.loads(config_path.read_text())
        self.family = str(config.get("model_type", ""))
        if self.family not in FAMILIES:
            raise ValueError(f"{folder}: model_type {self.family!r} is not supported; use one of {FAMILIES}")
        transformers = deps.transformers()
        self.model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
        self.model.to(device).eval()
        self.device, self.dtype, self.batch = device, dtype, batch
        self.name = folder.name
        mean, std = DEFAULT_STATS[self.family]
        size = self._size(config)
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
            crop = p.get("crop_size") or p.get("size")
            if isinstance(crop, dict) and ("height" in crop or "shortest_edge" in crop):
                size = int(crop.get("height", crop.get("shortest_edge")))
            elif isinstance(crop, int):
                size = crop
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def _size(self, config: dict) -> int:
        if self.family == "dinov2":
            return 224   # DINOv2's processor centre-crops 224 (its config.image_size is the 518 pretraining size)
        vision = config.get("vision_config", config)
        return int(vision.get("image_size", 224))

    def _pixels(self, frames: np.ndarray) -> Tensor:
        """Centre square crop, bicubic resize to size x size, normalise: 'n 3 s s'."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        s = min(h, w)
        x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)
        return (x.clamp(0, 1) - self.mean) / self.std

    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> Tensor:
        out = []
        for i in range(0, len(frames), self.batch):
            px = self._pixels(frames[i:i + self.batch]).to(self.device, self.dtype)
            if self.family == "dinov2":
                feats = self.model(pixel_values=px).pooler_output
            else:
                feats = self.model.get_image_features(pixel_values=px)
                if not isinstance(feats, Tensor):   # transformers >= 5 returns a model output
                    feats = feats.pooler_output
            out.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)
