"""The latent cache: manifest.json + samples.jsonl + shards/shard-NNNNN.safetensors.

Layout (format "onestory-latent-cache", version 1; docs/training-wan.md, "Cache format"):
* manifest.json: format, version, encoders (file name + sha256), latent_channels, text_dim,
  clip (frames, stride, width, height), samples (count so far);
* samples.jsonl: one line per sample: id, shard (index N of shards/shard-NNNNN), kind, clips (video, shot, start, end, stride),
  captions, inflation (per shot: "" | "cross" | "augment:<name>");
* shards/shard-NNNNN.safetensors, per sample id:
    <id>.latent.0|1|2  "c t h w"  bank-space Wan VAE latents (last = the target shot)
    <id>.text          "l d_t"    umT5 features of the target's caption
    <id>.text_mask     "l"        bool
    <id>.labels        "f"        selector pseudo-labels, latent frames of shots 0 then 1
    <id>.synthetic     "f"        bool, frame of an inflated shot

A shard file is written to a temporary name and renamed; its sample lines are appended to
samples.jsonl afterwards in one fsynced write. A shard whose lines are not (all) in samples.jsonl
is not finished: a rerun drops its lines and writes it again.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from .records import read_jsonl, write_atomic

FORMAT, VERSION = "onestory-latent-cache", 1


def shard_name(index: int) -> str:
    """File of shard `index`, relative to the cache directory."""
    return f"shards/shard-{index:05d}.safetensors"


class CacheWriter:
    def __init__(self, root: str | Path, manifest: dict, shard_size: int) -> None:
        self.root = Path(root)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self.samples_path = self.root / "samples.jsonl"
        self.shard_size = shard_size
        old = self.root / "manifest.json"
        if old.exists():
            prev = json.loads(old.read_text())
            if prev.get("format") != FORMAT or prev.get("version") != VERSION:
                raise ValueError(f"{self.root} holds another format ({prev.get('format')} v{prev.get('version')})")
            for key in ("encoders", "latent_channels", "text_dim", "clip"):
                if prev.get(key) != manifest.get(key):
                    raise ValueError(f"{self.root} was built with a different {key} ({prev.get(key)} vs "
                                     f"{manifest.get(key)}); write the new cache to another --out directory")
        self.manifest = {"format": FORMAT, "version": VERSION, **manifest}
        self.done = self._recover()
        self.next_shard = 1 + max((d["shard"] for d in self.done.values()), default=-1)
        self._write_manifest()

    def _recover(self) -> dict[str, dict]:
        """Samples of finished shards. A shard is finished when its file exists and all of its
        lines (`shard_samples` of them) are in samples.jsonl; other lines are dropped, so that
        shard is written again."""
        lines = [obj for _, obj in read_jsonl(self.samples_path)]
        per_shard = Counter(o["shard"] for o in lines)
        finished = {s for s, n in per_shard.items() if (self.root / shard_name(s)).exists()
                    and all(o["shard_samples"] == n for o in lines if o["shard"] == s)}
        keep = [o for o in lines if o["shard"] in finished]
        raw = self.samples_path.read_bytes() if self.samples_path.exists() else b""
        if len(keep) != len(lines) or (raw and not raw.endswith(b"\n")):
            write_atomic(self.samples_path, "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in keep).encode())
        return {o["id"]: o for o in keep}

    def _write_manifest(self) -> None:
        self.manifest["samples"] = len(self.done)
        write_atomic(self.root / "manifest.json", (json.dumps(self.manifest, indent=2) + "\n").encode())

    def write_shard(self, records: list[dict], tensors: dict[str, Tensor]) -> str:
        from safetensors.torch import save

        index, name = self.next_shard, shard_name(self.next_shard)
        self.next_shard += 1
        write_atomic(self.root / name, save({k: v.contiguous() for k, v in tensors.items()},
                                            metadata={"format": FORMAT, "samples": str(len(records))}))
        lines = [{**r, "shard": index, "shard_samples": len(records)} for r in records]
        with open(self.samples_path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in lines))
            f.flush()
            os.fsync(f.fileno())
        for o in lines:
            self.done[o["id"]] = o
        self._write_manifest()
        return name


def read_sample(root: str | Path, record: dict) -> dict[str, Tensor]:
    """All tensors of one sample (for checks and tools; the trainer reads shards directly)."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(Path(root) / shard_name(record["shard"])), framework="pt") as f:
        for suffix in ("latent.0", "latent.1", "latent.2", "text", "text_mask", "labels", "synthetic"):
            out[suffix] = f.get_tensor(f"{record['id']}.{suffix}")
    return out


def check_sample(tensors: dict[str, Tensor], channels: int, text_dim: int) -> None:
    """The contract's shapes: raises AssertionError naming the first violation."""
    lat = [tensors[f"latent.{i}"] for i in range(3)]
    assert all(x.ndim == 4 and x.shape[0] == channels for x in lat), [tuple(x.shape) for x in lat]
    f = lat[0].shape[1] + lat[1].shape[1]
    assert tensors["labels"].shape == (f,) and tensors["synthetic"].shape == (f,)
    assert tensors["synthetic"].dtype == torch.bool and tensors["text_mask"].dtype == torch.bool
    assert tensors["text"].ndim == 2 and tensors["text"].shape[1] == text_dim
    assert tensors["text_mask"].shape == tensors["text"].shape[:1]
