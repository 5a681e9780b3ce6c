"""The training loop: one loop for the story world and a real-data latent cache, on one
process, DDP or FSDP2 (engine.py), on the CPU (gloo) or CUDA (nccl).

Determinism: the data of step s / rank r / item i is dataset position (s·world + r)·batch + i
(a finite dataset: position mod its length, in a per-epoch permutation seeded by (seed, epoch)),
and every random draw of a step (σ, noise, text dropout, warm-up context) comes from a
generator seeded with (seed, step, rank), so a resumed run continues exactly as an
uninterrupted one (same world size).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..storyworld.dataset import StoryPrefixPool, TripletDataset
from . import engine, sharded
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import noisy, sample_sigma, selector_loss, shot_loss
from .model import StoryModel

INFLATION_MIX = (1 / 3, 1 / 3, 1 / 3)
NO_INFLATION_MIX = (1.0, 0.0, 0.0)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of lr."""
    if step < cfg.warmup_lr_steps:
        return cfg.lr * (step + 1) / cfg.warmup_lr_steps
    span = max(1, cfg.steps - cfg.warmup_lr_steps)
    p = min(1.0, (step - cfg.warmup_lr_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def step_generator(cfg: TrainConfig, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 64 + rank)


class _Batches(torch.utils.data.Sampler):
    """Batches of dataset indices for steps start..steps-1 of this rank. `length` None: position
    = index (the unbounded story world); else a per-epoch permutation of range(length)."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int,
                 length: Optional[int] = None, seed: int = 0) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world
        self.length, self.seed = length, seed
        self._perm: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def _index(self, position: int) -> int:
        if self.length is None:
            return position
        epoch, j = divmod(position, self.length)
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.length, generator=g).tolist())
        return self._perm[1][j]

    def __iter__(self):
        for s in range(self.start, self.steps):
            base = (s * self.world + self.rank) * self.batch
            yield [self._index(p) for p in range(base, base + self.batch)]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)   # a render worker must not fight the training threads for cores


def make_optimizer(cfg: TrainConfig, model: StoryModel) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def policy_at(cfg: TrainConfig, step: int) -> str:
    """Decoupled conditioning: uniformly sampled real context during the warm-up (learned
    policies only), then the configured policy."""
    return "uniform" if cfg.learned and step < cfg.decoupled_steps else cfg.policy


def story_batch(cfg: TrainConfig, pool: Optional[StoryPrefixPool], step: int, rank: int) -> Optional[dict]:
    """This step's story-prefix L_sel items (own generator: the other draws of a step do not
    depend on whether they are on)."""
    if pool is None or not cfg.sel_story_batch or not cfg.learned:
        return None
    g = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + step) * 64 + rank) * 2 + 1)
    s = 1 + int(torch.randint(pool.shots - 1, (1,), generator=g))
    return pool.batch(s, torch.randint(len(pool), (cfg.sel_story_batch,), generator=g).tolist())


def train_step(model, ddp, optimizer, cfg: TrainConfig, batch: dict, step: int, rank: int,
               pool: Optional[StoryPrefixPool] = None) -> dict:
    g = step_generator(cfg, step, rank)
    x0 = model.norm.to_model(batch["shot3"])
    b, dev = x0.shape[0], x0.device
    sigma = sample_sigma(b, g, cfg.sigma_mean, cfg.sigma_std, cfg.sigma_shift).to(dev)
    noise = torch.randn(x0.shape, generator=g).to(dev)
    drop = (torch.rand(b, generator=g) < cfg.text_dropout).to(dev)
    x_noisy, target = noisy(x0, noise, sigma)
    policy = policy_at(cfg, step)
    story = story_batch(cfg, pool, step, rank)
    if story is not None:
        story = _to(story, dev)
    # bf16 under single/DDP: autocast (FSDP casts through its MixedPrecisionPolicy instead)
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                and not _is_fsdp(model) else contextlib.nullcontext())
    with autocast:
        v, scores, labels, ctx, story_scores = ddp(batch, x_noisy, sigma, drop, policy, g, story)
    l_shot = shot_loss(v, target)
    l_sel = selector_loss(scores, labels) if scores is not None else torch.zeros((), device=dev)
    if story_scores is not None:    # the two L_sel terms weigh equally
        l_story = selector_loss(story_scores, story["relevance"])
        l_sel = 0.5 * (l_sel + l_story)
    loss = l_shot + cfg.sel_weight * l_sel if scores is not None else l_shot
    for group in optimizer.param_groups:
        group["lr"] = lr_at(cfg, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # The selector learns from L_sel only (hard top-K passes no gradient), so it gets its own
    # clip: under one global clip the DiT's gradient norm decided, step by step, how much of
    # the selector's gradient survived.
    sel_params = set(map(id, model.selector.parameters()))
    gnorm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if id(p) not in sel_params],
                                           cfg.grad_clip)
    sel_norm = torch.nn.utils.clip_grad_norm_(model.selector.parameters(), cfg.grad_clip)
    optimizer.step()
    out = {"step": step + 1, "loss": loss.item(), "l_shot": l_shot.item(), "l_sel": l_sel.item(),
           "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(gnorm), "sel_grad_norm": float(sel_norm),
           "policy": policy,
           "ctx_tokens": 0 if ctx.tokens is None else int(ctx.tokens.shape[1])}
    if scores is not None:   # selector top-1 hits a maximally relevant frame
        rel = labels
        top = scores.detach().argmax(1)
        out["sel_top1"] = (rel.gather(1, top[:, None])[:, 0] >= rel.max(1).values - 1e-6).float().mean().item()
    if story_scores is not None:   # top-1 on story prefixes that have a relevant frame
        rel = story["relevance"]
        has = rel.max(1).values > 0
        hit = rel.gather(1, story_scores.detach().argmax(1)[:, None])[:, 0] >= rel.max(1).values - 1e-6
        out["l_sel_story"] = l_story.item()
        out["sel_story_top1"] = hit[has].float().mean().item() if bool(has.any()) else float("nan")
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _is_fsdp(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def make_dataset(cfg: TrainConfig):
    """-> (dataset, finite length for the sampler or None = unbounded, in index order)."""
    if cfg.real_data:
        from .latent_cache import LatentCacheDataset

        ds = LatentCacheDataset(cfg.data, text_len=cfg.text_len)
        if ds.text_dim != cfg.text_dim:
            raise ValueError(f"latent cache {cfg.data} has text_dim {ds.text_dim}, the DiT {cfg.text_dim}")
        if ds.latent_channels != 16:
            raise ValueError(f"latent cache {cfg.data} has {ds.latent_channels}-channel latents; 16 expected")
        return ds, min(len(ds), cfg.data_size) if cfg.data_size else len(ds)
    ds = TripletDataset(length=1 << 40, seed=cfg.seed, pixel_frames=cfg.pixel_frames,
                        mix=INFLATION_MIX if cfg.inflation else NO_INFLATION_MIX,
                        standalone_captions=cfg.standalone_captions, world=cfg.world)
    return ds, (cfg.data_size or None)


def train(cfg: TrainConfig, resume: bool = False, log: Optional[callable] = None,
          stop_at: Optional[int] = None) -> StoryModel:
    """Train to cfg.steps (the lr schedule spans cfg.steps). `stop_at` ends the run early after
    that many steps with a checkpoint, as an interruption would (tests, time-sliced runs)."""
    rt = engine.setup(cfg)
    rank, world = rt.rank, rt.world
    torch.set_num_threads(cfg.threads)
    model, cfg, bb, snapshot = engine.build(cfg)
    # the story world's single/DDP full-DiT runs keep their safetensors checkpoint (checkpoint.py);
    # everything else (FSDP, a backbone, LoRA / frozen DiT) checkpoints through DCP (sharded.py)
    legacy = rt.strategy != "fsdp" and cfg.dit == "full" and bb is None
    family = bb.family if bb is not None else "wan2.1-t2v"
    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    engine.parallelize(model, cfg, rt)
    engine.materialize(model, cfg, rt, bb, snapshot)
    optimizer = make_optimizer(cfg, model)       # after sharding: on the sharded parameters
    start = 0
    if resume and (ckpt / "trainer.json").exists():
        start = (load_checkpoint(ckpt, model, optimizer) if legacy
                 else sharded.load(ckpt, model, optimizer, rt))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=1, sort_keys=True))
    ddp = engine.wrap_ddp(model, rt)
    model.train()
    ds, length = make_dataset(cfg)
    pool = None
    if cfg.sel_story_batch and cfg.learned and start < cfg.steps:
        pool = StoryPrefixPool(cfg.sel_story_pool, cfg.seed, pixel_frames=cfg.pixel_frames, world=cfg.world)
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    loader = DataLoader(ds, batch_sampler=_Batches(start, end, cfg.batch_size, rank, world, length, cfg.seed),
                        num_workers=cfg.workers, persistent_workers=False,
                        worker_init_fn=_one_thread if cfg.workers else None,
                        pin_memory=rt.device.type == "cuda")
    bar = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.policy}", dynamic_ncols=True)
    logf = open(out / "log.jsonl", "a") if rank == 0 else None
    t0 = time.perf_counter()
    for step, batch in enumerate(loader, start=start):
        ts = time.perf_counter()
        rec = train_step(model, ddp, optimizer, cfg, _to(batch, rt.device), step, rank, pool)
        rec["sec"] = round(time.perf_counter() - ts, 4)
        rec["elapsed"] = round(time.perf_counter() - t0, 2)
        rec["world"] = world
        save_now = (step + 1) % cfg.ckpt_every == 0 or step + 1 == end
        if rank == 0:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", sel=f"{rec['l_sel']:.3f}")
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
            if log is not None:
                log(rec)
            if save_now and legacy:
                save_checkpoint(ckpt, model, optimizer, step + 1)
        if save_now and not legacy:
            sharded.save(ckpt, model, optimizer, step + 1, cfg, rt, family)
        elif save_now and world > 1:
            dist.barrier()
    if bar is not None:
        bar.close()
    if logf is not None:
        logf.close()
    return model
