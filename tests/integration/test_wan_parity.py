"""Parity of onestory.wan.WanModel with ComfyUI's comfy.ldm.wan.model.WanModel (fp32, CPU).

Opt-in: ONESTORY_COMFYUI_DIR=~/comfyui-harness/ComfyUI \
    ~/comfyui-harness/venv/bin/python -m pytest tests/integration/test_wan_parity.py -s
(-s prints the measured max abs differences).
"""
import os
import sys
from pathlib import Path

import pytest
import torch
from comfy_inprocess import import_comfy

pytestmark = pytest.mark.integration

COMFY_DIR = str(import_comfy("the Wan parity tests"))
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.ldm.wan.model as comfy_wan  # noqa: E402
import comfy.ops  # noqa: E402

from onestory.wan import WanConfig, WanModel  # noqa: E402

TOL = 1e-5
TINY_DIR = Path(COMFY_DIR) / "models" / "diffusion_models"


def pytorch_sdpa(func, *args, **kwargs):
    """`optimized_attention_override`: force ComfyUI's SDPA path instead of its CPU default."""
    return comfy_attention.attention_pytorch(*args, **kwargs)


ATTENTION = {"default": None, "pytorch": pytorch_sdpa}


def comfy_model(cfg: WanConfig):
    return comfy_wan.WanModel(model_type=cfg.model_type, patch_size=cfg.patch_size, in_dim=cfg.in_dim, dim=cfg.dim,
                              ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=cfg.out_dim,
                              num_heads=cfg.num_heads, num_layers=cfg.num_layers, eps=cfg.eps,
                              flf_pos_embed_token_number=cfg.flf_pos_embed_token_number,
                              operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu").eval()


def pair(cfg: WanConfig, seed: int = 0):
    """ComfyUI's model with random weights, and ours with those weights copied in (strict both ways)."""
    torch.manual_seed(seed)
    theirs = comfy_model(cfg)
    theirs.load_state_dict(WanModel(cfg).state_dict(), strict=True)   # disable_weight_init leaves them empty
    ours = WanModel(cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def compare(ours, theirs, x, t, text, clip_fea, attention, label):
    opts = {} if ATTENTION[attention] is None else {"optimized_attention_override": ATTENTION[attention]}
    with torch.no_grad():
        a = ours(x, t, text, clip_fea)
        b = theirs(x, t, text, clip_fea, transformer_options=dict(opts))
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    print(f"\n[wan parity] {label} attention={attention}: max|diff|={diff:.3e} (max|out|={b.abs().max().item():.3f})")
    assert diff <= TOL
    return diff


def random_inputs(cfg, per_frame, clip, f=3, h=6, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_dim, f, h, w, generator=g)
    t = torch.rand(2, f, generator=g) * 1000 if per_frame else torch.tensor([870.0, 35.0])
    text = torch.randn(2, 16, cfg.text_dim, generator=g)
    clip_fea = torch.randn(2, 257, 1280, generator=g) if clip else None
    return x, t, text, clip_fea


CASES = [
    ("t2v", False, False), ("t2v", True, False),
    ("i2v", False, True), ("i2v", True, True), ("i2v", False, False),
]


def test_comfy_cpu_attention_dispatch_is_known():
    # On CPU without flags ComfyUI picks sub-quadratic attention; the "pytorch" cases force SDPA.
    print(f"\n[wan parity] ComfyUI default attention: {comfy_attention.optimized_attention.__name__}")
    assert comfy_attention.optimized_attention.__name__ in ("attention_sub_quad", "attention_pytorch",
                                                             "attention_split", "attention_basic")


@pytest.mark.parametrize("attention", list(ATTENTION))
@pytest.mark.parametrize("model_type,per_frame,clip", CASES,
                         ids=["t2v", "t2v-per-frame-t", "i2v-clip", "i2v-clip-per-frame-t", "i2v-no-clip"])
def test_random_weights_match_comfyui(model_type, per_frame, clip, attention):
    cfg = WanConfig.tiny(model_type, dim=128, num_heads=2, text_dim=64)
    ours, theirs = pair(cfg)
    compare(ours, theirs, *random_inputs(cfg, per_frame, clip), attention,
            f"{model_type} per_frame_t={per_frame} clip={clip}")


def test_odd_latent_sizes_match_comfyui():
    cfg = WanConfig.tiny("t2v", dim=128, num_heads=2, text_dim=64)
    ours, theirs = pair(cfg)
    compare(ours, theirs, *random_inputs(cfg, False, False, f=2, h=5, w=7), "default", "t2v odd h/w (padding)")


def test_flf2v_matches_comfyui():
    cfg = WanConfig(**{**WanConfig.tiny("i2v", dim=128, num_heads=2, text_dim=64).__dict__,
                       "flf_pos_embed_token_number": 514})
    ours, theirs = pair(cfg)
    with torch.no_grad():   # emb_pos is zero-initialised on our side; make it matter
        theirs.img_emb.emb_pos.normal_()
        ours.img_emb.emb_pos.copy_(theirs.img_emb.emb_pos)
    x, t, text, _ = random_inputs(cfg, False, False)
    clip = torch.randn(2, 514, 1280, generator=torch.Generator().manual_seed(4))
    compare(ours, theirs, x, t, text, clip, "default", "flf2v (514 clip tokens, emb_pos)")


@pytest.mark.parametrize("name", ["tiny_wan21_t2v", "tiny_wan21_i2v"])
def test_harness_checkpoint_matches_comfyui(name):
    path = TINY_DIR / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"{path} not present")
    from safetensors.torch import load_file

    sd = load_file(str(path))
    ours = WanModel.from_state_dict(sd).eval()          # dim 256 -> num_heads 2 by ComfyUI's dim // 128
    cfg = ours.config
    theirs = comfy_model(cfg)
    theirs.load_state_dict(sd, strict=True)
    assert set(ours.state_dict()) == set(sd)
    for per_frame in (False, True):
        compare(ours, theirs, *random_inputs(cfg, per_frame, cfg.model_type == "i2v"), "default",
                f"{name}.safetensors per_frame_t={per_frame}")


def test_rope_for_matches_comfyui_embedder_on_fractional_positions():
    """What the ComfyUI hook relies on: our freqs can be concatenated with ComfyUI's `pe`."""
    from comfy.ldm.flux.math import apply_rope1

    from onestory.rope import apply_rope, rope_for

    cfg = WanConfig.tiny("t2v", dim=256, num_heads=2, num_layers=1)     # head_dim 128, the real split
    theirs = comfy_model(cfg)
    g = torch.Generator().manual_seed(0)
    pos = torch.cat([torch.randn(40, 1, generator=g) * 4 - 6, torch.rand(40, 2, generator=g) * 30 - 0.5], dim=1)
    ours_f = rope_for(pos, cfg.head_dim)
    theirs_f = theirs.rope_embedder(pos[None]).movedim(1, 2)
    assert ours_f.shape == theirs_f.shape
    diff_f = (ours_f - theirs_f).abs().max().item()
    grid = theirs.rope_encode(3, 6, 8, device="cpu", dtype=torch.float32)   # latent t, h, w -> patch grid 3x3x4
    from onestory.rope import grid_positions
    diff_g = (rope_for(grid_positions(3, 3, 4), cfg.head_dim) - grid).abs().max().item()
    q = torch.randn(2, 40, 2, cfg.head_dim, generator=g)
    diff_a = (apply_rope(q, ours_f) - apply_rope1(q, theirs_f)).abs().max().item()
    print(f"\n[wan parity] rope freqs fractional max|diff|={diff_f:.3e}, grid={diff_g:.3e}, apply={diff_a:.3e}")
    assert diff_f <= 1e-6 and diff_g <= 1e-6 and diff_a <= 1e-5
