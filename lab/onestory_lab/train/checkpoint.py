"""Checkpoints without pickle. A checkpoint directory holds

* ``dit.safetensors``        the DiT state dict in original Wan key names (loads with
                             ``WanModel.from_state_dict``); metadata ``onestory.train_config``
                             (TrainConfig JSON) and ``num_heads``;
* ``adapter.safetensors``    selector (learned policies only) + conditioner, `onestory.adapter`;
* ``optimizer.safetensors``  AdamW moments per parameter name (``{name}::{key}``);
* ``trainer.json``           step, config, optimizer param_groups (hyper-parameters).
Files are written into ``<dir>.tmp`` and swapped in with os.replace, so an interrupted save
never leaves a half-written checkpoint under the real name.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from onestory.adapter import OneStoryAdapter
from onestory.wan import WanModel
from .config import TrainConfig
from .model import StoryModel

CONFIG_KEY = "onestory.train_config"


def _contig(state: dict) -> dict:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def adapter_of(model: StoryModel) -> OneStoryAdapter:
    cfg = model.cfg
    return OneStoryAdapter.from_modules(model.conditioner, model.selector if cfg.learned else None,
                                        backbone="wan2.1-t2v", text_dim=cfg.text_dim,
                                        default_budget=cfg.budget, default_k=max(1, cfg.effective_k))


def save_weights(model: StoryModel, dit_path: str | os.PathLike, adapter_path: str | os.PathLike,
                 dtype: torch.dtype = torch.float32) -> None:
    meta = {CONFIG_KEY: model.cfg.dumps(), "num_heads": str(model.cfg.heads)}
    save_file({k: v.to(dtype) for k, v in _contig(model.dit.state_dict()).items()}, os.fspath(dit_path), metadata=meta)
    adapter_of(model).save(adapter_path)


def save_checkpoint(directory: str | os.PathLike, model: StoryModel, optimizer: torch.optim.Optimizer,
                    step: int) -> Path:
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "dit.safetensors", tmp / "adapter.safetensors")
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{names[id(p)]}::{key}"] = t.detach().contiguous().clone()
    save_file(tensors, os.fspath(tmp / "optimizer.safetensors"))
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [names[id(p)] for p in g["params"]]}
              for g in optimizer.param_groups]
    (tmp / "trainer.json").write_text(json.dumps({"step": step, "config": model.cfg.to_json(),
                                                  "param_groups": groups}, indent=1, sort_keys=True))
    replace_dir(tmp, final)
    return final


def replace_dir(tmp, final) -> None:
    """Move the finished checkpoint folder ``tmp`` to ``final``; the previous checkpoint is kept
    as ``final.old`` until the new one is in place, so a crash never leaves none."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: str | os.PathLike, model: StoryModel,
                    optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Load weights (and optimizer state) into `model`; returns the step to continue from."""
    d = Path(directory)
    info = json.loads((d / "trainer.json").read_text())
    model.dit.load_state_dict(load_file(os.fspath(d / "dit.safetensors")))
    adapter = OneStoryAdapter.load(d / "adapter.safetensors")
    model.conditioner.load_state_dict(adapter.conditioner.state_dict())
    if adapter.selector is not None:
        model.selector.load_state_dict(adapter.selector.state_dict())
    if optimizer is not None:
        state = load_file(os.fspath(d / "optimizer.safetensors"))
        params = dict(model.named_parameters())
        for (name, key), value in ((k.split("::"), v) for k, v in state.items()):
            optimizer.state[params[name]][key] = value
        for group, saved in zip(optimizer.param_groups, info["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})
    return int(info["step"])


# What a fine-tuning run must share with the base DiT it starts from (strict load).
ARCH_FIELDS = ("dim", "layers", "heads", "ffn_dim", "text_dim", "pixel_frames", "latent_norm", "world")


def base_architecture(init: str | os.PathLike) -> dict:
    """The architecture fields of the TrainConfig a base DiT was trained with (its metadata), so
    `--init base/dit.safetensors` needs no repeated `--dim/--layers/...` flags."""
    from safetensors import safe_open

    with safe_open(os.fspath(init), "pt") as f:
        meta = f.metadata() or {}
    if CONFIG_KEY not in meta:
        raise ValueError(f"{init} has no {CONFIG_KEY} metadata: pass the architecture flags explicitly")
    saved = json.loads(meta[CONFIG_KEY])
    return {k: saved[k] for k in ARCH_FIELDS if k in saved}


def load_model(dit_path: str | os.PathLike, adapter_path: str | os.PathLike) -> StoryModel:
    """A StoryModel from a (dit, adapter) pair written by `save_weights` (eval, demo)."""
    from safetensors import safe_open

    with safe_open(os.fspath(dit_path), "pt") as f:
        meta = f.metadata() or {}
    cfg = TrainConfig.from_json(json.loads(meta[CONFIG_KEY]))
    dit = WanModel.from_state_dict(load_file(os.fspath(dit_path)), num_heads=cfg.heads)
    adapter = OneStoryAdapter.load(adapter_path)
    model = StoryModel(cfg, dit=dit, conditioner=adapter.conditioner,
                       selector=adapter.selector if adapter.selector is not None else None)
    return model.float().eval()
