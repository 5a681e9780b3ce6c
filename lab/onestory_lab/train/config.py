"""TrainConfig: every knob of a training run (saved as JSON next to each checkpoint)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

POLICIES = ("both", "selector", "conditioner", "last_frame", "none")
STRATEGIES = ("auto", "single", "ddp", "fsdp")   # auto: ddp under torchrun (WORLD_SIZE > 1), else single
DIT_MODES = ("full", "lora", "frozen")            # how the DiT trains (selector + conditioner always do)
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    out: str = "runs/storyworld"
    steps: int = 1000
    batch_size: int = 12            # per process
    lr: float = 5e-4                # paper §1.6: AdamW lr 5e-4, wd 0.01
    weight_decay: float = 0.01
    warmup_lr_steps: int = 50       # linear lr warm-up (optimisation, not "decoupled conditioning")
    grad_clip: float = 1.0
    seed: int = 0
    init: str = ""                  # DiT safetensors to start from (a pretrained base, as the paper
                                    # fine-tunes Wan); the conditioner is re-inflated from its patch embedding
    # story world
    pixel_frames: int = 9           # frames per shot, 4n+1 (1 = one latent frame per shot: 64 tokens)
    world: str = "v1"               # world version (storyworld/spec.py): attribute sets, body sizes
    standalone_captions: bool = False  # caption every target as if it were the story's first shot
                                    # (every entity described in full): for the text-only base,
                                    # which sees no memory, like Wan's single-shot pretraining
    latent_norm: bool = False       # model space = per-channel standardised latents (data/latent.py
                                    # WORLD_MEAN/STD), as Wan's DiT sees VAE latents; False = raw codec
    # tiny Wan DiT (head_dim 64)
    wan_init: bool = False          # from scratch: Wan's init (xavier, zero head) vs PyTorch defaults
    dim: int = 128
    layers: int = 3
    heads: int = 2
    ffn_dim: int = 256
    text_dim: int = 128
    # selector (its own width)
    sel_width: int = 64
    sel_queries: int = 4
    sel_heads: int = 2
    sel_stride: int = 4
    sel_shots: int = 0              # shot-order embedding slots of the selector (0 = content only,
                                    # the paper's selector); see FrameSelector
    sel_story_batch: int = 0        # extra L_sel items per step whose memory is a whole story
                                    # prefix (shots 1..s-1 of a six-shot story, s in 2..6), so the
                                    # selector learns to rank memories as long as evaluation's;
                                    # 0 = L_sel on the 3-shot samples only (the paper)
    sel_story_pool: int = 2000      # training-split stories rendered once for those items
    time_gap: float = 1.0           # one empty RoPE time step between memory and the new shot
    # memory mechanism
    policy: str = "both"            # both | selector | conditioner | last_frame (ablation (a)) | none
                                    # (none: no context, text-only base pretraining)
    k: int = 4                      # kept frames (policies both / conditioner); 1 for the others
    budget: float = 2.0             # context budget in latent-frame equivalents (finest tier)
    inflation: bool = True          # shot inflation (cross-video / augmented memory shots)
    decoupled_steps: int = 200      # warm-up on uniformly sampled real context; 0 = off
    sel_weight: float = 1.0         # λ of L_sel
    # rectified flow
    sigma_mean: float = 0.0         # logit-normal(mean, std), then the sampler's shift
    sigma_std: float = 1.0
    sigma_shift: float = 1.0         # 1 = plain logit-normal (3 starved low σ: grainy samples)
    text_dropout: float = 0.1       # caption -> zeros (the negative prompt of CFG)
    # scale (docs/training-wan.md): engine, backbone, data, what trains
    strategy: str = "auto"          # single | ddp | fsdp (FSDP2 fully_shard per DiT block + root) | auto
    backbone: str = ""              # ComfyUI-format Wan DiT safetensors (original Wan keys); its
                                    # architecture replaces dim/layers/heads/ffn_dim/text_dim
    backbone_heads: int = 0         # override num_heads detection (0 = dim // 128, as ComfyUI)
    data: str = "storyworld"        # "storyworld" or a latent-cache directory (train/latent_cache.py)
    data_size: int = 0              # > 0: train on the first N items only (overfit checks)
    text_len: int = 512             # latent cache: captions padded / cut to this many tokens (umT5: 512)
    dit: str = "full"               # full | lora | frozen
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_targets: str = "q,k,v,o,ffn.0,ffn.2"   # module-name suffixes inside the DiT blocks
    precision: str = "fp32"         # bf16: FSDP MixedPrecisionPolicy(bf16 params, fp32 reduce) or
                                    # autocast (single/ddp); master weights and optimizer stay fp32
    checkpointing: bool = False     # activation checkpointing per DiT block (recompute in backward)
    device: str = "auto"            # auto: cuda:LOCAL_RANK when CUDA is available, else cpu
    # bookkeeping
    log_every: int = 10
    ckpt_every: int = 200
    threads: int = 2
    workers: int = 0                # DataLoader worker processes rendering the story world (items
                                    # are a pure function of their index: results do not change)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r}; expected one of {POLICIES}")
        from ..storyworld.spec import world_spec

        world_spec(self.world)      # unknown world -> clear error naming the versions
        if self.pixel_frames < 1 or (self.pixel_frames - 1) % 4:
            raise ValueError(f"pixel_frames={self.pixel_frames}: need 4n+1 (1, 5, 9, ...)")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        for name, allowed in (("strategy", STRATEGIES), ("dit", DIT_MODES), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")
        if self.dit == "lora" and (self.lora_rank < 1 or self.lora_alpha <= 0):
            raise ValueError("--dit lora needs lora_rank >= 1 and lora_alpha > 0")
        if self.real_data and (self.sel_shots or self.sel_story_batch):
            raise ValueError("sel_shots / sel_story_batch are story-world features (shot ordinals, story "
                             "prefixes); set them to 0 with a latent cache")
        if self.sel_shots < 0 or self.sel_story_batch < 0 or self.sel_story_pool < 1:
            raise ValueError("sel_shots and sel_story_batch must be >= 0, sel_story_pool >= 1")

    @property
    def effective_k(self) -> int:
        if self.policy == "none":
            return 0
        return self.k if self.policy in ("both", "conditioner") else 1

    @property
    def real_data(self) -> bool:
        return self.data != "storyworld"

    @property
    def learned(self) -> bool:
        return self.policy in ("both", "selector")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
