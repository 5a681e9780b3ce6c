"""Sharded checkpoints (torch.distributed.checkpoint) and the exported artifacts of a run.

A checkpoint directory (runs with --strategy fsdp, a --backbone, or a LoRA / frozen DiT):

* ``dcp/``                 DCP checkpoint written by every rank in parallel through
                           `HuggingFaceStorageWriter(save_distributed=True)`: one safetensors file
                           per rank holding its shards of the trainable parameters
                           (``model/<name>``) and of AdamW's moments (``optim/<name>/<key>``).
                           Loads in place and reshards to another world size; never unpickles.
                           A frozen backbone is not stored: it is re-read from --backbone.
* ``trainer.json``         step, world size, config, optimizer hyper-parameters.
* ``rng-rank<r>.safetensors``  each rank's torch (and CUDA) RNG state.
* ``adapter.safetensors``  selector + conditioner (`onestory.adapter`, the Adapter Loader's file).
* ``lora.safetensors``     (--dit lora) ComfyUI LoRA: `diffusion_model.<module>.lora_down/up.weight`
                           + `.alpha`, loads with the stock LoraLoaderModelOnly.
* ``dit.safetensors``      (--dit full) the whole DiT in original Wan keys (ComfyUI UNETLoader).

Everything is written under ``<dir>.tmp`` and swapped in by rank 0 after a barrier, so an
interrupted save leaves the previous checkpoint intact. Exact resume: the data order, the
learning rate and every random draw of a step are functions of (seed, step, rank) (loop.py),
so weights + optimizer moments + step reproduce the uninterrupted run; the global RNG states
are restored as well for anything that draws from them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from onestory.adapter import OneStoryAdapter, save_adapter
from . import lora
from .checkpoint import replace_dir
from .config import TrainConfig
from .engine import Runtime, clean, full_value
from .model import StoryModel


def _barrier(rt: Runtime) -> None:
    if dist.is_initialized():
        dist.barrier()


def _trainable(model: StoryModel) -> set[str]:
    return {clean(n) for n, p in model.named_parameters() if p.requires_grad}


def _flat(model: StoryModel, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    keep = _trainable(model)
    msd = {k: v for k, v in get_model_state_dict(model).items() if k in keep}
    osd = get_optimizer_state_dict(model, optimizer)
    flat = {f"model/{k}": v for k, v in msd.items()}
    for fqn, state in osd["state"].items():
        for key, value in state.items():
            flat[f"optim/{fqn}/{key}"] = value
    return flat, osd


def save(directory: str | os.PathLike, model: StoryModel, optimizer: torch.optim.Optimizer, step: int,
         cfg: TrainConfig, rt: Runtime, family: str) -> Path:
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    if rt.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "dcp").mkdir(parents=True)
    _barrier(rt)
    flat, osd = _flat(model, optimizer)
    dcp.save(flat, storage_writer=HuggingFaceStorageWriter(os.fspath(tmp / "dcp"), save_distributed=True))
    rng = {"cpu": torch.get_rng_state()}
    if rt.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(rt.device)
    save_file(rng, os.fspath(tmp / f"rng-rank{rt.rank}.safetensors"))
    export(tmp, model, cfg, rt, family)
    if rt.rank == 0:
        groups = [{k: v for k, v in g.items() if k != "params"} for g in osd["param_groups"]]
        # parameters that never had a gradient (e.g. conditioner tiers no step used) have no AdamW
        # state: recorded so that a resume does not invent one
        (tmp / "trainer.json").write_text(json.dumps({"step": step, "world": rt.world, "config": cfg.to_json(),
                                                      "param_groups": groups, "optim_params": sorted(osd["state"])},
                                                     indent=1, sort_keys=True))
        replace_dir(tmp, final)
    _barrier(rt)
    return final


def load(directory: str | os.PathLike, model: StoryModel, optimizer: torch.optim.Optimizer, rt: Runtime) -> int:
    """Load trainable weights, optimizer state and this rank's RNG state in place; -> step."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    d = Path(directory)
    info = json.loads((d / "trainer.json").read_text())
    stateful = set(info["optim_params"])
    # a fresh optimizer's state dict holds every parameter (torch initialises it with a zero step);
    # load only those the checkpoint has, and drop the invented states afterwards
    flat, osd = _flat(model, optimizer)
    flat = {k: v for k, v in flat.items()
            if not k.startswith("optim/") or k[len("optim/"):].rsplit("/", 1)[0] in stateful}
    dcp.load(flat, storage_reader=HuggingFaceStorageReader(os.fspath(d / "dcp")))
    msd = {k[len("model/"):]: v for k, v in flat.items() if k.startswith("model/")}
    for key, value in flat.items():
        if key.startswith("optim/"):
            fqn, name = key[len("optim/"):].rsplit("/", 1)
            osd["state"][fqn][name] = value
    osd["state"] = {fqn: st for fqn, st in osd["state"].items() if fqn in stateful}
    set_model_state_dict(model, msd, options=StateDictOptions(strict=False))
    set_optimizer_state_dict(model, optimizer, osd, options=StateDictOptions(strict=False))
    names = {id(p): clean(n) for n, p in model.named_parameters()}
    for p in [p for p in optimizer.state if names.get(id(p)) not in stateful]:
        del optimizer.state[p]
    rng_file = d / f"rng-rank{rt.rank}.safetensors"
    if info["world"] == rt.world and rng_file.exists():   # another world size: per-rank states do not map
        rng = load_file(os.fspath(rng_file))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and rt.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], rt.device)
    return int(info["step"])


def gather(model: StoryModel, names: set[str]) -> dict[str, torch.Tensor]:
    """Full CPU values of the named parameters (collective: call on every rank); rank 0 gets them."""
    out = {}
    for n, p in model.named_parameters():
        key = clean(n)
        if key in names:
            value = full_value(p)
            if not dist.is_initialized() or dist.get_rank() == 0:
                out[key] = value.float()
    return out


def export(directory: Path, model: StoryModel, cfg: TrainConfig, rt: Runtime, family: str) -> None:
    """Write adapter.safetensors and lora.safetensors (--dit lora) or dit.safetensors (--dit full)."""
    names = _trainable(model) | {clean(n) for n, _ in model.named_parameters()
                                 if clean(n).startswith(("selector.", "conditioner."))}
    if cfg.dit == "full":
        names |= {clean(n) for n, _ in model.named_parameters() if clean(n).startswith("dit.")}
    values = gather(model, names)
    if rt.rank != 0:
        return
    sel = {k[len("selector."):]: v for k, v in values.items() if k.startswith("selector.")} if cfg.learned else None
    cond = {k[len("conditioner."):]: v for k, v in values.items() if k.startswith("conditioner.")}
    meta = OneStoryAdapter.from_modules(_Shape(model.conditioner), model.selector if cfg.learned else None,
                                        backbone=family, text_dim=cfg.text_dim, default_budget=cfg.budget,
                                        default_k=max(1, cfg.effective_k)).meta
    save_adapter(directory / "adapter.safetensors", sel, cond, meta)
    info = {"onestory.train_config": cfg.dumps(), "backbone": family,
            "config": json.dumps({"transformer": {"num_heads": cfg.heads}})}
    dit = {k[len("dit."):]: v for k, v in values.items() if k.startswith("dit.")}
    if cfg.dit == "lora":
        save_file(lora.comfy_lora(dit, cfg.lora_alpha), os.fspath(directory / "lora.safetensors"),
                  metadata={**info, "lora_rank": str(cfg.lora_rank), "lora_alpha": str(cfg.lora_alpha),
                            "lora_targets": cfg.lora_targets})
    elif cfg.dit == "full":
        dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        save_file({k: v.to(dtype).contiguous() for k, v in dit.items()}, os.fspath(directory / "dit.safetensors"),
                  metadata={**info, "num_heads": str(cfg.heads)})


class _Shape:
    """The conditioner's configuration without touching its (possibly sharded) weights."""

    def __init__(self, conditioner) -> None:
        self.patch, self.dim, self.kernels = conditioner.patch, conditioner.dim, conditioner.kernels
        self.latent_channels, self.time_gap = conditioner.latent_channels, conditioner.time_gap


__all__ = ["save", "load", "export", "gather"]
