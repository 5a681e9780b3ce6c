"""A ComfyUI-format Wan DiT checkpoint (the file in `models/diffusion_models`) read lazily.

Keys are the original Wan names, optionally under a prefix such as `model.diffusion_model.`;
the architecture is detected from the shapes (`WanConfig.from_state_dict`, as ComfyUI's
`detect_unet_config`). Tensors are read one at a time from the memory-mapped file, so a 14B
checkpoint never sits whole in a process's memory: every rank reads only what it shards.

Storage dtypes: fp32 / bf16 / fp16 load as they are. fp8 (e4m3fn / e5m2) weights are upcast:
ComfyUI's "scaled fp8" files store `X.weight` in fp8 with a per-tensor `X.scale_weight`
(newer files: `X.weight_scale`), and the real weight is `weight.float() * scale`. Block-wise
or channel-wise scales and integer-packed formats (int4, nvfp4, ...) are refused with an
error naming the key: a base DiT to train on must be a bf16/fp16/fp32 (or per-tensor fp8) file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from onestory.wan import WanConfig

FP8 = tuple(d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d)
# Keys of ComfyUI's quantised files that carry no weight of their own.
_QUANT_AUX = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
_MARKERS = ("scaled_fp8",)


class BackboneError(ValueError):
    pass


@dataclass
class Backbone:
    path: str
    config: WanConfig
    prefix: str
    keys: list[str]                                  # weight names without the prefix
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    @staticmethod
    def open(path: str | os.PathLike, num_heads: Optional[int] = None) -> "Backbone":
        from safetensors import safe_open

        p = os.fspath(path)
        if not p.endswith(".safetensors"):
            raise BackboneError(f"--backbone {p!r}: expected a .safetensors Wan checkpoint "
                                "(ComfyUI models/diffusion_models); pickled .pt/.ckpt files are not read")
        if not os.path.isfile(p):
            raise BackboneError(f"--backbone {p!r} does not exist")
        with safe_open(p, "pt") as f:
            meta = f.metadata() or {}
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
            dtypes = {k: _dtype(f.get_slice(k).get_dtype()) for k in f.keys()}
        config = WanConfig.from_state_dict(shapes, metadata=meta, num_heads=num_heads)
        prefix = _prefix(shapes)
        keys = [k[len(prefix):] for k in shapes if k.startswith(prefix)
                and not k.endswith(_QUANT_AUX) and k[len(prefix):] not in _MARKERS]
        for k in keys:
            d = dtypes[prefix + k]
            if d is None or not (d.is_floating_point or d in FP8):
                raise BackboneError(f"--backbone {p!r}: {prefix + k} is stored as "
                                    f"{d or 'a non-float dtype'}, a packed quantised format; "
                                    "train on a bf16/fp16/fp32 (or per-tensor fp8) checkpoint")
        return Backbone(p, config, prefix, keys, {k: dtypes[prefix + k] for k in keys})

    @property
    def family(self) -> str:
        from onestory.adapter import BackboneInfo

        return BackboneInfo.from_wan_config(self.config).family

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
        """One weight by its Wan name, upcast from fp8 with its scale, in `dtype`."""
        from safetensors import safe_open

        key = self.prefix + name
        with safe_open(self.path, "pt") as f:
            t = f.get_tensor(key)
            if t.dtype in FP8:
                scale = None
                base = key[: -len(".weight")] if key.endswith(".weight") else key
                for aux in (".scale_weight", ".weight_scale"):
                    if base + aux in f.keys():
                        scale = f.get_tensor(base + aux).float()
                if scale is not None and scale.numel() != 1:
                    raise BackboneError(f"--backbone {self.path!r}: {base} has a {tuple(scale.shape)} fp8 scale "
                                        "(block/channel-wise); only per-tensor scaled fp8 is upcast")
                t = t.float() * (scale.reshape(()) if scale is not None else 1.0)
        return t.to(dtype)


def _dtype(name: str) -> Optional[torch.dtype]:
    table = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
             "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
             "I8": torch.int8, "U8": torch.uint8, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool}
    return table.get(name)


def _prefix(sd) -> str:
    if "head.modulation" in sd:
        return ""
    for k in sd:
        if k.endswith(".head.modulation"):
            return k[: -len("head.modulation")]
    raise BackboneError("no 'head.modulation' key: not a Wan diffusion model")
