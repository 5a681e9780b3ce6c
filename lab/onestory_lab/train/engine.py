"""The distributed engine of a training run: process group, model build, parallel wrapping.

Strategies (`--strategy`):

* ``single``  one process;
* ``ddp``     torch DistributedDataParallel (every rank holds the whole model);
* ``fsdp``    PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`): every DiT block is its own
              unit, the StoryModel (DiT embeddings/head + selector + conditioner) the root;
              parameters are sharded on dim 0 across ranks, optional `MixedPrecisionPolicy(bf16
              params, fp32 gradient reduction)`; optimizer created on the sharded parameters.
* ``auto``    ddp under torchrun (WORLD_SIZE > 1), otherwise single.

Activation checkpointing (`--checkpointing true`) wraps every DiT block with torch's
non-reentrant `checkpoint_wrapper` (before sharding, the torchtitan order).

A backbone DiT (`--backbone`) is built on the meta device, wrapped, then materialised on the
training device: every rank reads each weight from the memory-mapped file and keeps its shard
(`distribute_tensor(..., src_data_rank=None)`: local slicing, no communication), so no process
ever holds the whole DiT. The small modules (selector, conditioner, text encoder) are made on
the CPU first and copied in the same way.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from onestory.conditioner import AdaptiveConditioner
from onestory.wan import WanModel
from . import lora
from .backbone import Backbone
from .config import TrainConfig
from .model import StoryModel

AC_PREFIX = "_checkpoint_wrapped_module."


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    strategy: str

    @property
    def distributed(self) -> bool:
        return dist.is_initialized()


def clean(name: str) -> str:
    """A parameter name without the activation-checkpoint wrapper's infix."""
    return name.replace(AC_PREFIX, "")


def setup(cfg: TrainConfig) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    strategy = cfg.strategy if cfg.strategy != "auto" else ("ddp" if world > 1 else "single")
    if strategy == "single" and world > 1:
        raise ValueError(f"--strategy single under torchrun with {world} processes; use ddp or fsdp")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if (world > 1 or strategy == "fsdp") and not dist.is_initialized():
        if world == 1:   # FSDP in one process (no torchrun): a one-member group
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, dist.get_world_size() if dist.is_initialized() else 1, local, device, strategy)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(cfg: TrainConfig) -> tuple[StoryModel, TrainConfig, Optional[Backbone], dict[str, Tensor]]:
    """-> (model, cfg with the backbone's architecture, backbone or None, CPU values of the
    parameters/buffers to materialise later: empty when the model is already real)."""
    torch.manual_seed(cfg.seed)          # identical small modules on every rank
    bb = None
    snapshot: dict[str, Tensor] = {}
    if cfg.backbone:
        bb = Backbone.open(cfg.backbone, num_heads=cfg.backbone_heads or None)
        wc = bb.config
        if wc.model_type != "t2v" or wc.in_dim != wc.out_dim:
            raise ValueError(f"--backbone {cfg.backbone}: a {bb.family} DiT (in_dim {wc.in_dim}); training "
                             "supports text-to-video Wan DiTs (in_dim == out_dim) only")
        if wc.out_dim != 16:
            raise ValueError(f"--backbone {cfg.backbone}: {wc.out_dim}-channel latents; the trainer's latent "
                             "spaces (story world, Wan 2.1 VAE cache) have 16 channels")
        cfg = dataclasses.replace(cfg, dim=wc.dim, layers=wc.num_layers, heads=wc.num_heads,
                                  ffn_dim=wc.ffn_dim, text_dim=wc.text_dim)
        with torch.device("meta"):
            dit = WanModel(wc)
        cond = AdaptiveConditioner.from_patch_embedding(bb.tensor("patch_embedding.weight"),
                                                        bb.tensor("patch_embedding.bias"),
                                                        latent_channels=16, time_gap=cfg.time_gap)
        model = StoryModel(cfg, dit=dit, conditioner=cond)
        snapshot = {n: t.detach().clone() for n, t in _tensors(model) if not n.startswith("dit.")}
        model.to("meta")
    else:
        model = StoryModel(cfg)   # story-world DiT: from scratch or cfg.init (a story-world base)
    if cfg.dit == "lora":
        lora.inject(model.dit, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, seed=cfg.seed)
    elif cfg.dit == "frozen":
        model.dit.requires_grad_(False)
    if cfg.precision == "bf16" and cfg.dit != "full":
        _frozen_to(model.dit, torch.bfloat16)   # no fp32 master copy needed for weights that never change
    return model, cfg, bb, snapshot


def _tensors(model: nn.Module):
    yield from model.named_parameters()
    yield from model.named_buffers()


def _frozen_to(module: nn.Module, dtype: torch.dtype) -> None:
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            if not p.requires_grad and p.is_floating_point():
                setattr(m, name, nn.Parameter(p.detach().to(dtype), requires_grad=False))


def parallelize(model: StoryModel, cfg: TrainConfig, rt: Runtime) -> nn.Module:
    """Activation checkpointing, then FSDP2 sharding (fsdp). Returns the module to call for a
    training forward (DDP is applied after materialisation, see `wrap_ddp`)."""
    if cfg.checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

        for i, block in enumerate(model.dit.blocks):
            model.dit.blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    if rt.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        import warnings

        # StoryModel.forward returns views (the cropped velocity, label slices); the loop never
        # modifies them in place, which is what this FSDP2 warning is about
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        mesh = init_device_mesh(rt.device.type, (rt.world,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if cfg.precision == "bf16" else None,
                                  reduce_dtype=torch.float32)
        for block in model.dit.blocks:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def materialize(model: StoryModel, cfg: TrainConfig, rt: Runtime, bb: Optional[Backbone],
                snapshot: dict[str, Tensor]) -> None:
    """Give a meta-built model its values on rt.device (no-op for a real CPU model, which is only
    moved). Sharded parameters receive their local shard of the full value."""
    if bb is None:
        if rt.strategy != "fsdp":
            model.to(rt.device)
        elif rt.device.type != "cpu":
            raise ValueError("--strategy fsdp on CUDA without --backbone is not supported: the story-world "
                             "DiT is built on the CPU; use ddp for it")
        return
    from torch.distributed.tensor import DTensor, distribute_tensor

    model.to_empty(device=rt.device)
    with torch.no_grad():
        for name, t in _tensors(model):
            key = clean(name)
            if key.startswith("dit."):
                k = key[len("dit."):]
                full = (lora.init_value(k, tuple(t.shape), cfg.seed) if ".lora_" in k
                        else bb.tensor(k, t.dtype))
            elif key in snapshot:
                full = snapshot[key]
            else:
                raise KeyError(f"no value for {key} (not in the backbone, not a LoRA weight, not a small module)")
            full = full.to(device=rt.device, dtype=t.dtype)
            if isinstance(t, DTensor):
                if tuple(full.shape) != tuple(t.shape):
                    raise ValueError(f"{key}: backbone shape {tuple(full.shape)} vs model {tuple(t.shape)}")
                t.to_local().copy_(distribute_tensor(full, t.device_mesh, t.placements, src_data_rank=None).to_local())
            else:
                t.copy_(full)


def wrap_ddp(model: StoryModel, rt: Runtime) -> nn.Module:
    if rt.strategy != "ddp" or rt.world == 1:
        return model
    # find_unused_parameters: a policy may leave tiers (or the selector) unused in a step
    ids = None if rt.device.type == "cpu" else [rt.device.index]
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def full_value(t: Tensor) -> Tensor:
    """The whole tensor of a (possibly sharded) parameter, on the CPU (a collective under FSDP:
    every rank must call it in the same order)."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().to("cpu")
