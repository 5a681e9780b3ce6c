"""Shared set-up of the benchmarks: the scaled config, a story's memory banks, the contexts of
every memory method, machine info. Pure PyTorch (onestory/ only, never comfy)."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from onestory_lab.bench import costmodel as cm
from onestory.conditioner import AdaptiveConditioner, Context
from onestory.memory import MemoryBank
from onestory.sampling import cfg_velocity
from onestory.defaults import K as DEFAULT_K
from onestory.frame_selector import FrameSelector
from onestory.scorers import select
from onestory.wan import WanConfig, WanModel

METHODS = cm.METHODS


@dataclass(frozen=True)
class BenchConfig:
    """A Wan-shaped DiT small enough for 2 CPU cores, with 480p-like token ratios.

    21 latent frames per shot as at 480p/81 frames; the attention/linear FLOP balance N/(6·D)
    (~1.07 at Wan 14B 480p) is kept close (0.875 here); caption length scaled with the tokens;
    the selector keeps the paper's ratio selector width / DiT width ≈ 1024 / 5120.
    """

    name: str = "scaled"
    dim: int = 128
    ffn_dim: int = 352          # Wan 14B ratio 13824 / 5120 = 2.7
    num_heads: int = 2          # head_dim 64
    num_layers: int = 4
    text_dim: int = 4096
    text_len: int = 16
    channels: int = 16
    frames: int = 21            # latent frames per shot
    height: int = 8             # latent h, w -> 4 x 8 = 32 tokens per latent frame
    width: int = 16
    selector_width: int = 32
    selector_heads: int = 2
    selector_queries: int = 16
    selector_stride: int = 8
    k: int = DEFAULT_K
    cfg: float = 5.0
    steps_per_shot: int = 50    # S used for "fraction of a whole shot"
    shots: tuple[int, ...] = tuple(range(2, 11))
    repeats: int = 7
    seed: int = 0

    def wan_config(self) -> WanConfig:
        return WanConfig(model_type="t2v", in_dim=self.channels, dim=self.dim, ffn_dim=self.ffn_dim,
                         text_dim=self.text_dim, out_dim=self.channels, num_heads=self.num_heads,
                         num_layers=self.num_layers)

    def model_dims(self) -> cm.ModelDims:
        return cm.ModelDims(f"bench-{self.name}", dim=self.dim, ffn_dim=self.ffn_dim, num_heads=self.num_heads,
                            num_layers=self.num_layers, latent_channels=self.channels, in_dim=self.channels,
                            text_dim=self.text_dim, text_len=self.text_len)

    def geometry(self) -> cm.Geometry:
        return cm.Geometry.from_latent(self.name, self.frames, self.height, self.width)

    def selector_dims(self) -> cm.SelectorDims:
        return cm.SelectorDims(width=self.selector_width, num_queries=self.selector_queries,
                               heads=self.selector_heads, spatial_stride=self.selector_stride)


SCALED = BenchConfig()
QUICK = BenchConfig(name="quick", dim=64, ffn_dim=176, num_heads=2, num_layers=2, text_dim=64, text_len=8,
                    frames=5, height=8, width=12, selector_width=32, selector_heads=2, shots=(2, 3),
                    repeats=1, steps_per_shot=4)


def config_by_name(name: str) -> BenchConfig:
    return {"scaled": SCALED, "quick": QUICK}[name]


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "memory_bytes": mem, "torch": torch.__version__,
            "torch_num_threads": torch.get_num_threads(),
            "sdpa_backend_note": "CPU: F.scaled_dot_product_attention (fused flash-attention CPU kernel for float32)"}


class Story:
    """Model, OneStory modules and the memory banks of a story of random latents.

    `bank(s)` is the memory when shot s (1-based) is generated: shots 1..s-1.
    """

    def __init__(self, cfg: BenchConfig):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.model = WanModel(cfg.wan_config()).eval()
        self.conditioner = AdaptiveConditioner.from_patch_embedding(
            self.model.patch_embedding.weight, self.model.patch_embedding.bias, cfg.channels).eval()
        self.selector = FrameSelector(latent_channels=cfg.channels, text_dim=cfg.text_dim, width=cfg.selector_width,
                                      num_queries=cfg.selector_queries, heads=cfg.selector_heads,
                                      spatial_stride=cfg.selector_stride).eval()
        g = torch.Generator().manual_seed(cfg.seed + 1)
        self.text = torch.randn(cfg.text_len, cfg.text_dim, generator=g)
        self.negative = torch.zeros_like(self.text)
        self.noise = torch.randn(1, cfg.channels, cfg.frames, cfg.height, cfg.width, generator=g)
        self._banks = [MemoryBank.empty()]
        self._gen = g

    def bank(self, shot: int) -> MemoryBank:
        while len(self._banks) < shot:
            i = len(self._banks)
            latent = torch.randn(self.cfg.channels, self.cfg.frames, self.cfg.height, self.cfg.width,
                                 generator=self._gen)
            self._banks.append(self._banks[-1].add_shot(latent, f"shot {i}", seed=i))
        return self._banks[shot - 1]

    @torch.no_grad()
    def context(self, method: str, shot: int) -> Context:
        """The context tokens of `method` for shot `shot`, built as the method would (once per shot)."""
        cfg, bank = self.cfg, self.bank(shot)
        if method == "none" or bank.num_frames == 0:
            return Context.empty(cfg.dim)
        budget = cm.method_budget(method)
        if budget is not None:  # OneStory: learned selector -> budgeted adaptive conditioner
            selection = select(bank, cfg.k, "learned", text=self.text, selector=self.selector)
            return self.conditioner.build(bank, selection, budget)
        f = bank.num_frames
        if method == "storymem10":  # StoryMem: memory sink + recent frames, 10 full latent frames
            used = list(select(bank, 10, "sink_recent").kept)
        elif method == "full_history":
            used = list(range(f))
        elif method == "last_frame":
            used = [f - 1]
        else:
            raise ValueError(method)
        times = bank.frame_times()[used]
        return self.conditioner(bank.frames[used], torch.tensor(used), times, [0] * len(used))

    def velocity(self, ctx: Context) -> Callable:
        return cfg_velocity(self.model, cond=self.text[None], uncond=self.negative[None], scale=self.cfg.cfg,
                            ctx_tokens=ctx.tokens if len(ctx) else None,
                            ctx_positions=ctx.positions if len(ctx) else None)

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.noise.clone(), torch.tensor([0.7])


#: Clock of every timing: "cpu" = time.process_time (CPU seconds of this process: on a shared
#: machine, time the scheduler gives to other jobs is not counted - far less noise, and with one
#: torch thread it equals the compute time); "wall" = time.perf_counter. Set by bench/run.py.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = {"name": "cpu"}


def set_clock(name: str) -> None:
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}")
    _clock["name"] = name


def clock_name() -> str:
    return _clock["name"]


def now() -> float:
    return CLOCKS[_clock["name"]]()


def timed(fn: Callable[[], object]) -> float:
    t0 = now()
    fn()
    return now() - t0


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def as_dict(cfg: BenchConfig) -> dict:
    d = asdict(cfg)
    d["shots"] = list(cfg.shots)
    return d
