"""The ComfyUI context hook (nodes/hook.py) inside real ComfyUI, in-process, on CPU.

Opt-in: ONESTORY_COMFYUI_DIR=~/comfyui-harness/ComfyUI \
    ~/comfyui-harness/venv/bin/python -m pytest tests/integration/test_hook_parity.py -s
(-s prints the measured differences).

The MODELs are real ComfyUI ModelPatchers made by `comfy.sd.load_diffusion_model_state_dict`
(what UNETLoader calls) from the state dict of a random `onestory.wan.WanModel`, so the
standalone model and ComfyUI's hold the same weights. The patched model is called as sampling
calls it: the patcher's `transformer_options` with its wrappers merged in (what
`comfy.sampler_helpers.prepare_model_patcher` does), then `diffusion_model(...)`. One test also
goes through `comfy.sample.sample` end to end.

(a) empty context -> bit-identical to the unpatched MODEL (torch.equal);
(b) non-empty context -> ComfyUI's patched WanModel == onestory.wan.WanModel(ctx_tokens,
    ctx_positions) to <= 1e-5 (T2V, T2V per-frame t, I2V + CLIP, Wan 2.2 TI2V with per-frame t);
(c) a ("double_block", i) replace installed earlier by another pack still runs;
(d) patching a patched MODEL replaces the context instead of stacking it.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from comfy_inprocess import import_comfy

pytestmark = pytest.mark.integration

COMFY_DIR = str(import_comfy("the hook parity tests"))
import comfy.patcher_extension  # noqa: E402
import comfy.sd  # noqa: E402

from onestory.conditioner import AdaptiveConditioner, Context  # noqa: E402
from onestory.memory import MemoryBank  # noqa: E402
from onestory.scorers import select  # noqa: E402
from onestory.wan import WanConfig, WanModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5
DIFFS: dict[str, float] = {}


def load_pack():
    """The pack as ComfyUI imports it (a package; `nodes` would clash with ComfyUI's nodes.py)."""
    if "onestory_pack" not in sys.modules:
        spec = importlib.util.spec_from_file_location("onestory_pack", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["onestory_pack"] = mod
        spec.loader.exec_module(mod)
    import onestory_pack.nodes.glue.hook as hook

    return hook


hook = load_pack()

# name -> (WanConfig, per-frame timesteps, clip features)
CONFIGS = {
    "t2v": (WanConfig.tiny("t2v", dim=256, num_heads=2, num_layers=3, text_dim=4096), False, False),
    "t2v-per-frame-t": (WanConfig.tiny("t2v", dim=256, num_heads=2, num_layers=3, text_dim=4096), True, False),
    "i2v-clip": (WanConfig.tiny("i2v", dim=256, num_heads=2, num_layers=3, text_dim=4096), False, True),
    "i2v-clip-per-frame-t": (WanConfig.tiny("i2v", dim=256, num_heads=2, num_layers=3, text_dim=4096), True, True),
    "ti2v-per-frame-t": (WanConfig.tiny("t2v", dim=256, num_heads=2, num_layers=3, text_dim=4096,
                                        latent_channels=48), True, False),
}
_CACHE: dict = {}


def models(cfg: WanConfig, seed: int = 0):
    """(onestory WanModel, ComfyUI ModelPatcher) holding the same random weights."""
    key = (cfg, seed)
    if key not in _CACHE:
        torch.manual_seed(seed)
        ours = WanModel(cfg).eval()
        with torch.no_grad():   # make the modulation / biases matter
            for name, p in ours.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.05)
        sd = {k: v.clone() for k, v in ours.state_dict().items()}
        patcher = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float32})
        dm = patcher.get_model_object("diffusion_model")
        assert type(dm).__name__ == "WanModel" and dm.num_heads == cfg.num_heads
        theirs = {k: v for k, v in dm.state_dict().items()}
        assert set(theirs) == set(ours.state_dict())
        assert all(torch.equal(theirs[k].float(), v) for k, v in ours.state_dict().items())
        _CACHE[key] = (ours, patcher)
    return _CACHE[key]


def inputs(cfg: WanConfig, per_frame: bool, clip: bool, f=3, h=6, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_dim, f, h, w, generator=g)
    t = torch.rand(2, f, generator=g) * 1000 if per_frame else torch.tensor([870.0, 35.0])
    text = torch.randn(2, 16, cfg.text_dim, generator=g)
    clip_fea = torch.randn(2, 257, 1280, generator=g) if clip else None
    return x, t, text, clip_fea


def context_for(cfg: WanConfig, patcher, h=6, w=8, seed=2, time_gap=0.5, budget=2.0) -> Context:
    """Real context tokens: a random story, a recency selection and the inflated conditioner."""
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank.empty()
    for shot in range(2):
        bank = bank.add_shot(torch.randn(cfg.latent_channels, 2, h, w, generator=g), f"shot {shot}")
    selection = select(bank, 3, "recency")
    pe = patcher.get_model_object("diffusion_model").patch_embedding
    cond = AdaptiveConditioner.from_patch_embedding(pe.weight.detach().float(), pe.bias.detach().float(),
                                                    cfg.latent_channels, time_gap=time_gap)
    with torch.no_grad():
        ctx = cond.build(bank, selection, budget)
    assert len(ctx) > 0 and (ctx.positions[:, 0] < 0).all()
    assert (ctx.positions[:, 1:] % 1 != 0).any(), "want fractional (coarse-tier) positions in the test"
    return ctx


def call(patcher, x, t, text, clip_fea=None, cond_or_uncond=None):
    """The diffusion model as a sampler reaches it (wrappers merged as prepare_model_patcher does)."""
    to = copy.copy(patcher.model_options["transformer_options"])
    to["wrappers"] = {}
    comfy.patcher_extension.merge_nested_dicts(to["wrappers"], patcher.wrappers, copy_dict1=False)
    if cond_or_uncond is not None:
        to["cond_or_uncond"] = cond_or_uncond
    with torch.no_grad():
        return patcher.get_model_object("diffusion_model")(x, t, text, clip_fea=clip_fea, transformer_options=to)


def ours_call(ours, x, t, text, clip_fea=None, ctx: Context | None = None):
    with torch.no_grad():
        if ctx is None:
            return ours(x, t, text, clip_fea)
        return ours(x, t, text, clip_fea, ctx_tokens=ctx.tokens, ctx_positions=ctx.positions)


def report(label: str, diff: float, ref) -> float:
    DIFFS[label] = diff
    print(f"\n[hook parity] {label}: max|diff|={diff:.3e} (max|out|={ref.abs().max().item():.3f})")
    return diff


# (a) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_empty_context_is_bit_identical_to_unpatched(name):
    cfg, per_frame, clip = CONFIGS[name]
    _, p = models(cfg)
    empty = Context.empty(cfg.dim)
    patched = hook.apply_context(p, empty.tokens, empty.positions)
    # nothing is installed: the clone runs ComfyUI's unpatched path (no per-block replace cost);
    # the replace path without a context state is exercised by the in_negative=False uncond row
    replaces = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    assert not any(isinstance(r, hook.ContextBlock) for r in replaces.values())
    assert patched is not p
    args = inputs(cfg, per_frame, clip)
    a, b = call(p, *args), call(patched, *args)
    assert torch.equal(a, b), (a - b).abs().max()
    report(f"empty context {name}", (a - b).abs().max().item(), a)


def test_empty_context_through_comfy_sample_is_bit_identical():
    """Same through the real sampling path (KSampler's comfy.sample.sample), 2 Euler steps."""
    import comfy.sample

    cfg, _, _ = CONFIGS["t2v"]
    _, p = models(cfg)
    g = torch.Generator().manual_seed(5)
    latent = torch.zeros(1, 16, 2, 6, 8)
    noise = torch.randn(latent.shape, generator=g)
    pos = [[torch.randn(1, 16, 4096, generator=g), {}]]
    neg = [[torch.randn(1, 16, 4096, generator=g), {}]]

    def run(model):
        return comfy.sample.sample(model, noise, 2, 4.0, "euler", "simple", pos, neg, latent, denoise=1.0,
                                   disable_pbar=True, seed=0)

    empty = Context.empty(cfg.dim)
    base = run(p)
    same = run(hook.apply_context(p, empty.tokens, empty.positions))
    assert torch.equal(base, same)
    ctx = context_for(cfg, p)
    moved = run(hook.apply_context(p, ctx.tokens, ctx.positions))
    d = (moved - base).abs().max().item()
    print(f"\n[hook parity] comfy.sample: empty context torch.equal; with {len(ctx)} context tokens the "
          f"sample moves by max|diff|={d:.3e}")
    assert d > 1e-3   # the hook is active in real sampling


# (b) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_context_matches_standalone_wan(name):
    cfg, per_frame, clip = CONFIGS[name]
    ours, p = models(cfg)
    ctx = context_for(cfg, p)
    args = inputs(cfg, per_frame, clip)
    theirs = call(hook.apply_context(p, ctx.tokens, ctx.positions), *args)
    mine = ours_call(ours, *args, ctx=ctx)
    plain = ours_call(ours, *args)
    diff = report(f"context {name} ({len(ctx)} tokens)", (theirs - mine).abs().max().item(), mine)
    effect = (mine - plain).abs().max().item()
    print(f"[hook parity]   effect of the context on the output: max|diff|={effect:.3e}")
    assert effect > 100 * TOL, "the context must change the output for this comparison to mean anything"
    assert diff <= TOL


def test_ti2v_context_uses_frame_zero_modulation():
    """Control for (b): the standalone model gives context the first frame's modulation; with the
    hook's expansion changed to use the last frame, the parity breaks (so (b) can detect it)."""
    cfg, per_frame, clip = CONFIGS["ti2v-per-frame-t"]
    ours, p = models(cfg)
    ctx = context_for(cfg, p)
    args = inputs(cfg, per_frame, clip)
    mine = ours_call(ours, *args, ctx=ctx)
    original = hook.expand_vec

    def last_frame(vec, n_ctx, n_img):
        out = original(vec, n_ctx, n_img)
        return torch.cat([vec[:, -1:].expand(-1, n_ctx, -1, -1), out[:, n_ctx:]], dim=1)

    hook.expand_vec = last_frame
    try:
        wrong = call(hook.apply_context(p, ctx.tokens, ctx.positions), *args)
    finally:
        hook.expand_vec = original
    d = report("ti2v control: context with the LAST frame's modulation", (wrong - mine).abs().max().item(), mine)
    assert d > 100 * TOL


def test_context_kept_out_of_the_negative_rows():
    """context_in_negative=False with a mixed [cond, uncond] batch: row 0 sees the context, row 1 not."""
    cfg, per_frame, clip = CONFIGS["t2v"]
    ours, p = models(cfg)
    ctx = context_for(cfg, p)
    x, t, text, clip_fea = inputs(cfg, per_frame, clip)
    theirs = call(hook.apply_context(p, ctx.tokens, ctx.positions, in_negative=False), x, t, text, clip_fea,
                  cond_or_uncond=[0, 1])
    with_ctx = ours_call(ours, x, t, text, clip_fea, ctx=ctx)
    without = ours_call(ours, x, t, text, clip_fea)
    d0 = report("in_negative=False cond row", (theirs[0] - with_ctx[0]).abs().max().item(), with_ctx)
    d1 = report("in_negative=False uncond row", (theirs[1] - without[1]).abs().max().item(), without)
    assert d0 <= TOL and d1 <= TOL


def test_rope_options_shift_moves_context_with_the_video():
    """A MODEL with ModelPatcher.set_model_rope_options(shift_t=...) shifts the video's RoPE t; the hook
    shifts the context by the same map, so relative positions (all RoPE attention sees) are unchanged."""
    cfg, per_frame, clip = CONFIGS["t2v"]
    _, p = models(cfg)
    ctx = context_for(cfg, p)
    args = inputs(cfg, per_frame, clip)
    ref = call(hook.apply_context(p, ctx.tokens, ctx.positions), *args)
    shifted = p.clone()
    shifted.set_model_rope_options(1.0, 0.0, 1.0, 0.0, 1.0, 7.0)
    same = call(hook.apply_context(shifted, ctx.tokens, ctx.positions), *args)
    d = report("rope_options shift_t=7 vs none", (same - ref).abs().max().item(), ref)
    assert d <= 1e-4
    # control: context positions that ignore the shift (= shifted back by 7) change the output
    unshifted = ctx.positions.clone()
    unshifted[:, 0] -= 7.0
    wrong = call(hook.apply_context(shifted, ctx.tokens, unshifted), *args)
    dw = report("control: context not shifted with the video", (wrong - ref).abs().max().item(), ref)
    assert dw > 100 * d + 1e-4


def test_context_positions_keep_float32_precision_for_bf16_inputs():
    """Fractional context positions must not be rounded to the model input's dtype (bf16 cannot hold
    80.75): the installed RoPE equals the model's embedder at the float32 positions."""
    cfg, _, _ = CONFIGS["t2v"]
    _, p = models(cfg)
    dm = p.get_model_object("diffusion_model")
    positions = torch.tensor([[-1.0, 80.75, 101.25], [-2.5, 0.25, 3.75]])
    seen = {}

    class Executor:
        class_obj = dm

        def __call__(self, *args, **kw):
            seen.update(args[5][hook.STATE_KEY])

    hook.ContextWrapper(torch.randn(2, cfg.dim), positions)(
        Executor(), torch.zeros(1, 16, 1, 2, 2, dtype=torch.bfloat16), torch.zeros(1), torch.zeros(1, 4, 4096),
        transformer_options={})
    expected = dm.rope_embedder(positions[None]).movedim(1, 2)
    rounded = dm.rope_embedder(positions.bfloat16().float()[None]).movedim(1, 2)
    assert not torch.equal(expected, rounded)          # the positions above do round in bf16
    assert torch.equal(seen["pe"], expected)


# (c) ---------------------------------------------------------------------------------------------

def comfy_pe():
    import comfy.patcher_extension as pe
    return pe


class SkipBlock:
    """Another pack's replace set earlier (like SkipLayerGuidanceDiT): skips the block, counts calls."""

    def __init__(self):
        self.calls = 0
        self.lengths = []

    def __call__(self, args, extra):
        self.calls += 1
        self.lengths.append(args["img"].shape[1])
        return {"img": args["img"]}


def test_earlier_double_block_replace_still_runs():
    cfg, per_frame, clip = CONFIGS["t2v-per-frame-t"]
    ours, p = models(cfg)
    ctx = context_for(cfg, p)
    args = inputs(cfg, per_frame, clip)
    other = p.clone()
    skip = SkipBlock()
    other.set_model_patch_replace(skip, "dit", "double_block", 1)
    patched = hook.apply_context(other, ctx.tokens, ctx.positions)
    assert patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 1)].prev is skip
    theirs = call(patched, *args)
    assert skip.calls == 1
    n_video = 3 * 3 * 4
    assert skip.lengths == [len(ctx) + n_video], "the earlier replace must see the joint (context + video) sequence"
    # expected: the standalone model without block 1
    skipped = copy.deepcopy(ours)
    skipped.blocks = torch.nn.ModuleList([ours.blocks[0], ours.blocks[2]])
    mine = ours_call(skipped, *args, ctx=ctx)
    d = report("chained earlier replace (block 1 skipped)", (theirs - mine).abs().max().item(), mine)
    assert d <= TOL
    full = ours_call(ours, *args, ctx=ctx)
    assert (full - mine).abs().max().item() > 100 * TOL   # skipping block 1 matters
    # and with an empty context the other pack's replace behaves as without OneStory
    empty = Context.empty(cfg.dim)
    a = call(other, *args)
    b = call(hook.apply_context(other, empty.tokens, empty.positions), *args)
    assert torch.equal(a, b) and skip.calls == 3
    # an empty context on a MODEL that carries ours removes ours and restores the other pack's
    cleared = hook.apply_context(patched, empty.tokens, empty.positions)
    dit = cleared.model_options["transformer_options"]["patches_replace"]["dit"]
    assert dit == {("double_block", 1): skip}
    assert not cleared.get_wrappers(comfy_pe().WrappersMP.DIFFUSION_MODEL, hook.WRAPPER_KEY)
    assert torch.equal(call(cleared, *args), a)
    assert isinstance(patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)],
                      hook.ContextBlock), "the input MODEL must keep its context"


# (d) ---------------------------------------------------------------------------------------------

def test_repatching_replaces_instead_of_stacking():
    cfg, per_frame, clip = CONFIGS["i2v-clip"]
    ours, p = models(cfg)
    a_ctx = context_for(cfg, p, seed=11)
    b_ctx = context_for(cfg, p, seed=12, budget=1.0)
    args = inputs(cfg, per_frame, clip)
    once = hook.apply_context(p, b_ctx.tokens, b_ctx.positions)
    twice = hook.apply_context(hook.apply_context(p, a_ctx.tokens, a_ctx.positions), b_ctx.tokens, b_ctx.positions)
    assert len(twice.wrappers[comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL][hook.WRAPPER_KEY]) == 1
    reps = twice.model_options["transformer_options"]["patches_replace"]["dit"]
    assert all(reps[("double_block", i)].prev is None for i in range(cfg.num_layers))
    assert "patches_replace" not in p.model_options["transformer_options"], "the input MODEL was modified"
    x1, x2 = call(once, *args), call(twice, *args)
    assert torch.equal(x1, x2)
    mine = ours_call(ours, *args, ctx=b_ctx)
    report("re-patched == patched once == standalone(ctx B)", (x2 - mine).abs().max().item(), mine)
    assert (x2 - mine).abs().max().item() <= TOL
    # with another pack's replace underneath: kept exactly once
    other = p.clone()
    skip = SkipBlock()
    other.set_model_patch_replace(skip, "dit", "double_block", 2)
    twice = hook.apply_context(hook.apply_context(other, a_ctx.tokens, a_ctx.positions), b_ctx.tokens,
                               b_ctx.positions)
    assert twice.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 2)].prev is skip
    y2 = call(twice, *args)
    y1 = call(hook.apply_context(other, b_ctx.tokens, b_ctx.positions), *args)
    assert torch.equal(y1, y2) and skip.calls == 2


def test_non_wan_model_is_refused_by_apply_context_node():
    """OneStory Apply Context with a MODEL whose diffusion model is not a WanModel (a ModelPatcher around
    a plain module, called through the node's execute()): a clear error, nothing patched."""
    import comfy.model_patcher
    import onestory_pack.nodes.select_nodes as select_nodes

    class NotWan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(4, 4)

    patcher = comfy.model_patcher.ModelPatcher(NotWan(), torch.device("cpu"), torch.device("cpu"))
    ctx = Context(torch.randn(3, 256), torch.zeros(3, 3) - 1, torch.zeros(3, dtype=torch.long),
                  torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError) as e:
        select_nodes.ApplyContext.execute(patcher, ctx, True)
    msg = str(e.value)
    print(f"\n[hook parity] non-Wan MODEL: {msg}")
    assert "Wan" in msg and "Linear" in msg and "Load Diffusion Model" in msg
