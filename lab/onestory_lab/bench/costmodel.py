"""Analytic cost model of OneStory and of the memory schemes it is compared with (pure Python).

Counts, per denoising step of a Wan DiT, the tokens, the FLOPs (self-attention projections,
attention itself, cross-attention, FFN, embeddings/head) and a rough activation-memory
estimate, for a given model size, video geometry, memory method and shot index; plus the
per-shot cost of the Frame Selector and the Adaptive Conditioner. No tensors are created:
this module only needs the standard library, so it can price Wan 2.1 14B at 720p on any
laptop. ``python -m onestory_lab.bench.costmodel`` prints the headline numbers.

Conventions
-----------
* A multiply-add counts as 2 FLOPs; only matmul/conv FLOPs are counted (norms, RoPE, GELU,
  softmax and other element-wise work are ignored - they are O(N·D), not O(N·D²) or O(N²·D)).
* OneStory's context tokens are concatenated to the noisy tokens after the patch embedding and
  run through every block (self-attention jointly, and, as ordinary tokens, cross-attention and
  FFN), then dropped before the head - exactly what ``onestory.wan.WanModel.forward`` does. So a
  block costs as for a sequence of ``N = N_noise + N_ctx`` tokens; the head only sees N_noise.
* One denoising step = one forward at batch 2 (classifier-free guidance, both branches in one
  batch, the context in both, as ``onestory.sampling.cfg_velocity`` does by default).
* Shots are 1-based: shot s is generated with shots 1..s-1 (``(s-1)·T`` latent frames) in memory.
* FLOP ratios are what the model predicts for the full-size presets (GPU, where the big
  matmuls and attention both run near peak). For time on one measured machine, `StepTimeModel`
  prices the FLOP classes of `flop_classes` at rates calibrated on two measured steps (the
  benchmark does this on the CPU at its scaled config; see docs/performance.md).

Memory methods (``METHODS``)
----------------------------
``none``           no memory (shot 1 conditions, or a plain Wan run)
``onestory_b1/2/3`` OneStory: top-K frames (K = ``k``) patchified by rank with the kernel table,
                   total tokens bounded by ``budget × tokens_per_frame((1,2,2))``; counted with the
                   real budget solver (``mode="solver"``) or the bound (``mode="bound"``)
``storymem10``     StoryMem-style: 10 memory frames as full latent frames ((1,2,2) tokens each)
``full_history``   every earlier latent frame as (1,2,2) tokens (grows by T frames per shot)
``last_frame``     the last latent frame of the previous shot as (1,2,2) tokens
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Sequence

# The real solver and defaults, not copies: the model prices exactly what the code builds.
from onestory.conditioner import DEFAULT_KERNELS, DEFAULT_PATCH, Kernel, budget_tokens, solve_budget, tokens_per_frame
from onestory.defaults import K as DEFAULT_K

METHODS = ("none", "onestory_b1", "onestory_b2", "onestory_b3", "storymem10", "full_history", "last_frame")
METHOD_LABELS = {
    "none": "no memory",
    "onestory_b1": "OneStory budget 1",
    "onestory_b2": "OneStory budget 2",
    "onestory_b3": "OneStory budget 3",
    "storymem10": "StoryMem-style (10 frames)",
    "full_history": "full history",
    "last_frame": "last frame only",
}


# ---------------------------------------------------------------------------------------------
# model, geometry, selector
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelDims:
    """The DiT sizes that matter for cost (names as in ``onestory.wan.WanConfig``)."""

    name: str
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    latent_channels: int = 16
    in_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512          # umT5 caption tokens (Wan pads to 512)
    freq_dim: int = 256
    patch: Kernel = (1, 2, 2)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class Geometry:
    """A shot's pixel size and frame count, and the VAE that encodes it."""

    name: str
    height: int
    width: int
    frames: int
    vae_stride: Kernel = (4, 8, 8)

    @property
    def latent(self) -> tuple[int, int, int]:
        """(T, h, w) latent frames of one shot (Wan's causal VAE: 1 + (frames - 1) / stride_t)."""
        st, sh, sw = self.vae_stride
        return (1 + (self.frames - 1) // st, math.ceil(self.height / sh), math.ceil(self.width / sw))

    @staticmethod
    def from_latent(name: str, t: int, h: int, w: int) -> "Geometry":
        """A geometry given directly in latent units (for the scaled benchmark config)."""
        return Geometry(name, height=h, width=w, frames=t, vae_stride=(1, 1, 1))


@dataclass(frozen=True)
class SelectorDims:
    """``onestory.frame_selector.FrameSelector`` sizes (its and the adapter's defaults)."""

    width: int = 1024
    num_queries: int = 16
    heads: int = 8
    spatial_stride: int = 8


WAN21_14B = ModelDims("Wan 2.1 14B", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
WAN22_5B = ModelDims("Wan 2.2 TI2V 5B", dim=3072, ffn_dim=14336, num_heads=24, num_layers=30,
                     latent_channels=48, in_dim=48)
WAN21_480P = Geometry("480p", 480, 832, 81)
WAN21_720P = Geometry("720p", 720, 1280, 81)
WAN22_704P = Geometry("704p", 704, 1280, 121, vae_stride=(4, 16, 16))

#: (model, geometry) pairs priced by `report`.
PRESETS: tuple[tuple[ModelDims, Geometry], ...] = (
    (WAN21_14B, WAN21_480P), (WAN21_14B, WAN21_720P), (WAN22_5B, WAN22_704P))


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------

def memory_frames(geometry: Geometry, shot: int) -> int:
    """Latent frames in the memory bank when shot ``shot`` (1-based) is generated."""
    if shot < 1:
        raise ValueError(f"shot={shot} must be >= 1 (1-based)")
    return (shot - 1) * geometry.latent[0]


def method_budget(method: str) -> float | None:
    return {"onestory_b1": 1.0, "onestory_b2": 2.0, "onestory_b3": 3.0}.get(method)


def context_frames_and_tiers(method: str, geometry: Geometry, shot: int, *, k: int = DEFAULT_K,
                             kernels: Sequence[Kernel] = DEFAULT_KERNELS) -> list[int]:
    """Tier (index into ``kernels``) of every memory frame that becomes context tokens."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {METHODS}")
    f = memory_frames(geometry, shot)
    _, h, w = geometry.latent
    if method == "none" or f == 0:
        return []
    budget = method_budget(method)
    if budget is not None:
        return solve_budget(min(k, f), kernels, h, w, budget)
    n = {"storymem10": min(10, f), "full_history": f, "last_frame": 1}[method]
    return [0] * n  # kernels[0] is the backbone patch (1,2,2)


def context_tokens(method: str, geometry: Geometry, shot: int, *, k: int = DEFAULT_K,
                   kernels: Sequence[Kernel] = DEFAULT_KERNELS, mode: str = "solver") -> int:
    """Context tokens of ``method`` at ``shot``. ``mode="bound"``: OneStory counts its budget
    bound ``floor(budget × tokens_per_frame)`` instead of the solver's actual total."""
    if mode not in ("solver", "bound"):
        raise ValueError(f"mode={mode!r}: 'solver' or 'bound'")
    _, h, w = geometry.latent
    budget = method_budget(method)
    if mode == "bound" and budget is not None:
        return budget_tokens(budget, h, w) if memory_frames(geometry, shot) else 0
    tiers = context_frames_and_tiers(method, geometry, shot, k=k, kernels=kernels)
    return sum(tokens_per_frame(kernels[t], h, w) for t in tiers)


def noise_tokens(model: ModelDims, geometry: Geometry) -> int:
    t, h, w = geometry.latent
    pt, ph, pw = model.patch
    return math.ceil(t / pt) * math.ceil(h / ph) * math.ceil(w / pw)


# ---------------------------------------------------------------------------------------------
# FLOPs and memory
# ---------------------------------------------------------------------------------------------

def forward_flops(model: ModelDims, n_noise: int, n_ctx: int = 0, batch: int = 1) -> dict[str, float]:
    """Matmul FLOPs of one DiT forward with ``n_noise`` noisy and ``n_ctx`` context tokens."""
    d, f, L = model.dim, model.ffn_dim, model.text_len
    n = n_noise + n_ctx
    per_layer = {
        "self_attn_proj": 8.0 * n * d * d,         # q, k, v, o
        "self_attn_sdpa": 4.0 * n * n * d,         # QKᵀ and AV over all heads
        "cross_attn": 4.0 * n * d * d + 4.0 * L * d * d + 4.0 * n * L * d,   # q, o | k, v | QKᵀ, AV
        "ffn": 4.0 * n * d * f,
    }
    out = {key: batch * model.num_layers * v for key, v in per_layer.items()}
    pt, ph, pw = model.patch
    out["embed_head"] = batch * (
        2.0 * n_noise * model.in_dim * pt * ph * pw * d              # patch embedding
        + 2.0 * L * (model.text_dim * d + d * d)                   # text embedding
        + 2.0 * (model.freq_dim * d + d * d + 6 * d * d)           # time embedding + projection
        + 2.0 * n_noise * d * pt * ph * pw * model.latent_channels)  # head
    out["total"] = sum(out.values())
    return out


def activation_bytes(model: ModelDims, n_tokens: int, batch: int = 2, bytes_per_element: int = 2,
                     attention: str = "flash") -> int:
    """Rough peak activation memory of one forward (inference, no autograd), weights excluded.

    Peak of a block = the larger of its self-attention phase (residual, modulated input, q, k, v,
    their RoPE-rotated copies, output: ~8·N·D) and its FFN phase (residual, modulated input,
    output: 3·N·D, plus hidden and GELU output: 2·N·F). ``attention="math"`` adds the H·N² score
    and softmax matrices of a non-fused attention. Useful for ratios between methods; absolute
    values depend on the implementation (allocator, dtype promotions, fused kernels).
    """
    n, d, f = n_tokens, model.dim, model.ffn_dim
    elems = max(8 * n * d, 3 * n * d + 2 * n * f)
    if attention == "math":
        elems += 2 * model.num_heads * n * n
    elif attention != "flash":
        raise ValueError("attention must be 'flash' or 'math'")
    return int(batch * elems * bytes_per_element)


def selector_flops(model: ModelDims, selector: SelectorDims, frames: int, h: int, w: int) -> float:
    """One ``FrameSelector`` forward over ``frames`` memory frames of h×w (batch 1)."""
    W, M, s, L = selector.width, selector.num_queries, selector.spatial_stride, model.text_len
    ns = math.ceil(h / s) * math.ceil(w / s)           # φ_V tokens per frame
    mem = frames * ns
    text = 2.0 * L * model.text_dim * W + 2.0 * M * W * W * 2 + 4.0 * L * W * W + 4.0 * M * L * W
    phi_v = 2.0 * mem * model.latent_channels * s * s * W
    memory_attn = 2.0 * M * W * W * 2 + 4.0 * mem * W * W + 4.0 * M * mem * W
    scoring = 2.0 * frames * W * W + 2.0 * frames * M * W
    return text + phi_v + memory_attn + scoring


def conditioner_flops(model: ModelDims, tiers: Iterable[int], h: int, w: int,
                      kernels: Sequence[Kernel] = DEFAULT_KERNELS) -> float:
    """The per-tier Conv3d patchifiers C -> D over the (padded) kept frames."""
    total = 0.0
    for t in tiers:
        kt, kh, kw = kernels[t]
        total += 2.0 * tokens_per_frame(kernels[t], h, w) * model.latent_channels * kt * kh * kw * model.dim
    return total


# ---------------------------------------------------------------------------------------------
# step time on a measured machine
# ---------------------------------------------------------------------------------------------

def flop_classes(model: ModelDims, n_noise: int, n_ctx: int = 0, batch: int = 1) -> dict[str, float]:
    """`forward_flops` split by how the work grows with the tokens N = n_noise + n_ctx.

    ``attention``: QKᵀ and AV of the self-attention (∝ N²); ``token``: projections, FFN, the
    cross-attention's queries, scores and outputs, patch embedding and head (∝ tokens);
    ``fixed``: the caption's cross-attention keys/values and the text and time embeddings (no
    tokens involved). The three sum to ``forward_flops(...)["total"]``.
    """
    d, L = model.dim, model.text_len
    flops = forward_flops(model, n_noise, n_ctx, batch)
    fixed = batch * (model.num_layers * 4.0 * L * d * d
                     + 2.0 * L * (model.text_dim * d + d * d)
                     + 2.0 * (model.freq_dim * d + d * d + 6 * d * d))
    attention = flops["self_attn_sdpa"]
    return {"attention": attention, "token": flops["total"] - attention - fixed, "fixed": fixed}


@dataclass(frozen=True)
class StepTimeModel:
    """Time of one DiT forward on one machine:
    ``fixed_seconds + token FLOPs / token_flops_per_second + attention FLOPs / attention_flops_per_second``
    with the FLOP classes of `flop_classes`.

    Counting FLOPs alone (`forward_flops`) prices every FLOP the same. On a CPU they are not:
    the self-attention kernel runs at its own rate; the rate of the token-proportional work
    also carries the element-wise work that grows with the tokens (norms, RoPE, modulation,
    GELU: no FLOPs in `forward_flops`, a third of a step at the scaled benchmark config); and a
    per-step cost (embeddings, caption keys/values, Python and op dispatch) does not grow at all.
    The three constants are not derived from the hardware: `calibrate` fits them to two
    measured steps, so a model describes the machine, build and load it was calibrated on.
    """

    fixed_seconds: float
    token_flops_per_second: float
    attention_flops_per_second: float

    def seconds(self, model: ModelDims, n_noise: int, n_ctx: int = 0, batch: int = 2) -> float:
        c = flop_classes(model, n_noise, n_ctx, batch)
        return (self.fixed_seconds + c["token"] / self.token_flops_per_second
                + c["attention"] / self.attention_flops_per_second)

    @staticmethod
    def calibrate(model: ModelDims, n_noise: int, points: Sequence[tuple[int, float, float]],
                  batch: int = 2) -> "StepTimeModel":
        """Fit to two measured steps ``(n_ctx, step_seconds, attention_seconds)`` of different
        token counts; ``attention_seconds`` is the part of the step spent in the self-attention
        kernel (timed inside the step). The attention rate pools both points; the token rate
        and the fixed time then solve the two steps' remaining time exactly."""
        if len(points) != 2:
            raise ValueError(f"calibrate needs exactly two measured steps, got {len(points)}")
        (n0, t0, a0), (n1, t1, a1) = points
        c0, c1 = flop_classes(model, n_noise, n0, batch), flop_classes(model, n_noise, n1, batch)
        if not (0 < a0 < t0 and 0 < a1 < t1):
            raise ValueError(f"attention time must be positive and below the step time: "
                             f"({a0}, {t0}), ({a1}, {t1})")
        attention_rate = (c0["attention"] + c1["attention"]) / (a0 + a1)
        d_flops, d_rest = c1["token"] - c0["token"], (t1 - a1) - (t0 - a0)
        if d_flops == 0 or d_rest / d_flops <= 0:
            raise ValueError(f"the two steps ({n0} and {n1} context tokens) must differ in tokens, "
                             "and the one with more tokens must take longer outside attention")
        token_rate = d_flops / d_rest
        return StepTimeModel(fixed_seconds=(t0 - a0) - c0["token"] / token_rate,
                             token_flops_per_second=token_rate, attention_flops_per_second=attention_rate)


# ---------------------------------------------------------------------------------------------
# per-step, per-shot summaries
# ---------------------------------------------------------------------------------------------

def step_cost(model: ModelDims, geometry: Geometry, method: str, shot: int, *, k: int = DEFAULT_K,
              cfg_batch: int = 2, mode: str = "solver", bytes_per_element: int = 2) -> dict:
    """Tokens, FLOPs and activation bytes of one denoising step of shot ``shot``."""
    nx = noise_tokens(model, geometry)
    nc = context_tokens(method, geometry, shot, k=k, mode=mode)
    flops = forward_flops(model, nx, nc, batch=cfg_batch)
    return {
        "method": method, "shot": shot, "noise_tokens": nx, "context_tokens": nc,
        "token_overhead": nc / nx, "flops": flops["total"], "flops_breakdown": flops,
        "activation_bytes_flash": activation_bytes(model, nx + nc, cfg_batch, bytes_per_element, "flash"),
        "activation_bytes_math": activation_bytes(model, nx + nc, cfg_batch, bytes_per_element, "math"),
    }


def selection_cost(model: ModelDims, geometry: Geometry, shot: int, *, selector: SelectorDims = SelectorDims(),
                   k: int = DEFAULT_K, budget: float = 1.0, steps: int = 50, cfg_batch: int = 2) -> dict:
    """Selector + conditioner FLOPs of one OneStory shot, vs one step and vs a shot of ``steps``."""
    f = memory_frames(geometry, shot)
    _, h, w = geometry.latent
    tiers = solve_budget(min(k, f), DEFAULT_KERNELS, h, w, budget) if f else []
    sel = selector_flops(model, selector, f, h, w) if f else 0.0
    cond = conditioner_flops(model, tiers, h, w)
    nx = noise_tokens(model, geometry)
    nc = sum(tokens_per_frame(DEFAULT_KERNELS[t], h, w) for t in tiers)
    step = forward_flops(model, nx, nc, batch=cfg_batch)["total"]
    return {"shot": shot, "memory_frames": f, "selector_flops": sel, "conditioner_flops": cond,
            "step_flops": step, "fraction_of_step": (sel + cond) / step,
            "fraction_of_shot": (sel + cond) / (steps * step + sel + cond), "steps": steps}


def analyze(model: ModelDims, geometry: Geometry, *, shots: Sequence[int] = tuple(range(2, 11)),
            k: int = DEFAULT_K, selector: SelectorDims = SelectorDims(), steps: int = 50,
            cfg_batch: int = 2, bytes_per_element: int = 2) -> dict:
    """Everything the cost model says about one (model, geometry): per method and shot."""
    t, h, w = geometry.latent
    nx = noise_tokens(model, geometry)
    base = forward_flops(model, nx, 0, batch=cfg_batch)["total"]
    base_act = activation_bytes(model, nx, cfg_batch, bytes_per_element)
    methods = {}
    for m in METHODS:
        rows = []
        for s in shots:
            c = step_cost(model, geometry, m, s, k=k, cfg_batch=cfg_batch, bytes_per_element=bytes_per_element)
            rows.append({"shot": s, "context_tokens": c["context_tokens"],
                         "token_overhead": c["token_overhead"],
                         "context_tokens_bound": context_tokens(m, geometry, s, k=k, mode="bound"),
                         "step_flops": c["flops"], "step_ratio": c["flops"] / base,
                         "activation_bytes": c["activation_bytes_flash"],
                         "activation_ratio": c["activation_bytes_flash"] / base_act,
                         "activation_bytes_math_attention": c["activation_bytes_math"]})
        methods[m] = {"label": METHOD_LABELS[m], "shots": rows,
                      "flatness_ratio": rows[-1]["step_flops"] / rows[0]["step_flops"]}
    sel = [selection_cost(model, geometry, s, selector=selector, k=k, steps=steps, cfg_batch=cfg_batch)
           for s in shots]
    return {"model": asdict(model), "geometry": asdict(geometry), "latent": [t, h, w],
            "tokens_per_latent_frame": tokens_per_frame(model.patch, h, w), "noise_tokens": nx,
            "step_flops_no_memory": base, "cfg_batch": cfg_batch, "k": k, "selector": asdict(selector),
            "methods": methods, "selector_conditioner": sel,
            "selector_conditioner_fraction_max": max(r["fraction_of_step"] for r in sel)}


def report(shots: Sequence[int] = tuple(range(2, 11)), *, k: int = DEFAULT_K) -> dict:
    """`analyze` for every preset, keyed "model @ geometry"."""
    return {f"{m.name} @ {g.name}": analyze(m, g, shots=shots, k=k) for m, g in PRESETS}


def scaled(model: ModelDims, **changes) -> ModelDims:
    return replace(model, **changes)


def _main() -> None:  # pragma: no cover - convenience printout
    for key, a in report().items():
        print(f"== {key}: latent {a['latent']}, {a['tokens_per_latent_frame']} tokens/latent frame, "
              f"{a['noise_tokens']} noise tokens, {a['step_flops_no_memory'] / 1e15:.2f} PFLOP/step")
        for m, r in a["methods"].items():
            s2, s10 = r["shots"][0], r["shots"][-1]
            print(f"  {r['label']:28s} tokens +{100 * s2['token_overhead']:6.2f}% (shot 2) "
                  f"+{100 * s10['token_overhead']:7.2f}% (shot 10)  step x{s2['step_ratio']:.3f} / "
                  f"x{s10['step_ratio']:.3f}")
        print(f"  selector+conditioner <= {100 * a['selector_conditioner_fraction_max']:.4f}% of a step")


if __name__ == "__main__":  # pragma: no cover
    _main()
