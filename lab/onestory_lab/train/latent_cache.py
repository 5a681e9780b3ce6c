"""The real-data training set: a latent cache written by the data pipeline (lab/onestory_lab/data).

Contract (format "onestory-latent-cache", version 1), a directory with

* ``manifest.json``   {"format": "onestory-latent-cache", "version": 1, "latent_channels": C,
                       "text_dim": D_t, ...}
* ``samples.jsonl``   one JSON object per sample: {"id": str, "shard": int | str, ...}
* ``shards/shard-NNNNN.safetensors`` holding, per sample id,
    ``<id>.latent.0|1|2``  "c t h w"  Wan VAE latents (bank space: before process_latent_in);
                                      .2 is the target shot, .0 and .1 the memory
    ``<id>.text``          "l d_t"    umT5 features of the target shot's caption
    ``<id>.text_mask``     "l"        bool, valid caption tokens
    ``<id>.labels``        "f"        selector pseudo-labels of the memory latent frames
                                      (f = t of shot 0 + t of shot 1)
    ``<id>.synthetic``     "f"        bool, frames of an inflated (synthetic) shot

Items are the same dict the story world's TripletDataset yields (shot1, shot2, shot3,
relevance, frame_synthetic), with precomputed ``text`` / ``text_mask`` instead of tokens, so one
model and one loop train on both. Captions are padded with zeros (mask False) or cut to
`text_len` tokens, as ComfyUI's umT5 conditioning is padded to 512.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

FORMAT, VERSION = "onestory-latent-cache", 1


class CacheError(ValueError):
    pass


def shard_path(root: str | os.PathLike, shard: int | str) -> Path:
    name = f"shard-{int(shard):05d}.safetensors" if str(shard).isdigit() else str(shard)
    return Path(root) / "shards" / name


class LatentCacheDataset(Dataset):
    def __init__(self, root: str | os.PathLike, text_len: int = 512) -> None:
        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            raise CacheError(f"{self.root}: no manifest.json; --data must be a latent-cache directory "
                             "(written by the data pipeline) or 'storyworld'")
        self.manifest = json.loads(mpath.read_text())
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise CacheError(f"{mpath}: format {self.manifest.get('format')!r} version "
                             f"{self.manifest.get('version')!r}; expected {FORMAT!r} version {VERSION}")
        for key in ("latent_channels", "text_dim"):
            if not isinstance(self.manifest.get(key), int):
                raise CacheError(f"{mpath}: '{key}' must be an integer")
        self.latent_channels = self.manifest["latent_channels"]
        self.text_dim = self.manifest["text_dim"]
        self.text_len = text_len
        lines = (self.root / "samples.jsonl").read_text().splitlines()
        self.samples = [json.loads(line) for line in lines if line.strip()]
        if not self.samples:
            raise CacheError(f"{self.root}/samples.jsonl lists no samples")
        self._open: dict[Path, Any] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _file(self, shard) -> Any:
        from safetensors import safe_open

        p = shard_path(self.root, shard)
        if p not in self._open:      # one handle per shard and process (DataLoader workers: their own)
            if not p.is_file():
                raise CacheError(f"{p} is missing (listed in samples.jsonl)")
            self._open[p] = safe_open(os.fspath(p), "pt")
        return self._open[p]

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        f, sid = self._file(s["shard"]), s["id"]
        try:
            lat = [f.get_tensor(f"{sid}.latent.{i}").float() for i in range(3)]
            text = f.get_tensor(f"{sid}.text").float()
            mask = f.get_tensor(f"{sid}.text_mask").bool()
            labels = f.get_tensor(f"{sid}.labels").float()
            synthetic = f.get_tensor(f"{sid}.synthetic").bool()
        except Exception as e:   # safetensors raises a bare error for a missing key
            raise CacheError(f"sample {sid!r} in {shard_path(self.root, s['shard'])}: {e}") from None
        c = self.latent_channels
        if any(x.ndim != 4 or x.shape[0] != c for x in lat):
            raise CacheError(f"sample {sid!r}: latents must be 'c t h w' with c={c}, got "
                             f"{[tuple(x.shape) for x in lat]}")
        if lat[0].shape[2:] != lat[1].shape[2:] or lat[0].shape[2:] != lat[2].shape[2:]:
            raise CacheError(f"sample {sid!r}: the three shots have different latent sizes")
        frames = lat[0].shape[1] + lat[1].shape[1]
        if labels.shape != (frames,) or synthetic.shape != (frames,):
            raise CacheError(f"sample {sid!r}: labels / synthetic must have one entry per memory latent "
                             f"frame ({frames}), got {tuple(labels.shape)} / {tuple(synthetic.shape)}")
        if text.ndim != 2 or text.shape[1] != self.text_dim or mask.shape != text.shape[:1]:
            raise CacheError(f"sample {sid!r}: text must be 'l {self.text_dim}' with a 'l' mask, got "
                             f"{tuple(text.shape)} / {tuple(mask.shape)}")
        text, mask = text[: self.text_len] * mask[: self.text_len, None], mask[: self.text_len]
        pad = self.text_len - text.shape[0]
        if pad:
            text = torch.cat([text, text.new_zeros(pad, text.shape[1])])
            mask = torch.cat([mask, mask.new_zeros(pad)])
        return {"shot1": lat[0], "shot2": lat[1], "shot3": lat[2], "text": text, "text_mask": mask,
                "relevance": labels, "frame_synthetic": synthetic.long()}


def write_cache(root: str | os.PathLike, samples: list[dict[str, Any]], text_dim: int,
                latent_channels: int = 16, per_shard: int = 2) -> Path:
    """Write a cache in the contract's layout (tests, and a reference for the data pipeline).
    Each sample: {"id", "latents": [3 x "c t h w"], "text": "l d_t", "text_mask": "l",
    "labels": "f", "synthetic": "f"}."""
    from safetensors.torch import save_file

    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"format": FORMAT, "version": VERSION,
                                                    "latent_channels": latent_channels, "text_dim": text_dim}))
    rows = []
    for start in range(0, len(samples), per_shard):
        shard = start // per_shard
        tensors = {}
        for s in samples[start:start + per_shard]:
            for i, z in enumerate(s["latents"]):
                tensors[f"{s['id']}.latent.{i}"] = z.contiguous()
            for key in ("text", "text_mask", "labels", "synthetic"):
                tensors[f"{s['id']}.{key}"] = s[key].contiguous()
            rows.append({"id": s["id"], "shard": shard})
        save_file(tensors, os.fspath(shard_path(root, shard)))
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
