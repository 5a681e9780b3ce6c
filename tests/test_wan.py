import json
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file

from onestory.errors import OneStoryError, ShapeError
from onestory.rope import apply_rope, axes_dims, grid_positions, rope_for
from onestory.wan import WanConfig, WanModel, sinusoidal_embedding

B, F_, H, W = 2, 3, 4, 6   # latent video "b c f h w"; grid (3, 2, 3) at patch (1, 2, 2)


def make(model_type="t2v", seed=0, **kw):
    torch.manual_seed(seed)
    return WanModel(WanConfig.tiny(model_type, **kw)).eval()


def inputs(model, seed=1, per_frame=False, clip=True, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    x = torch.randn(B, c.in_dim, F_, h, w, generator=g)
    t = torch.rand(B, F_, generator=g) * 1000 if per_frame else torch.tensor([900.0, 150.0])
    text = torch.randn(B, 7, c.text_dim, generator=g)
    clip_fea = torch.randn(B, 257, 1280, generator=g) if c.model_type == "i2v" and clip else None
    return x, t, text, clip_fea


def context(model, n=5, seed=2):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, model.config.dim, generator=g)
    positions = torch.stack([-(torch.arange(n) % 2 + 1.0) - 0.25,            # before the shot, fractional
                             torch.rand(n, generator=g) * 2 - 0.5,
                             torch.rand(n, generator=g) * 3 - 0.5], dim=1)
    return tokens, positions


CASES = [("t2v", False, True), ("t2v", True, True), ("i2v", False, True), ("i2v", True, True), ("i2v", False, False)]
CASE_IDS = ["t2v", "t2v-per-frame-t", "i2v", "i2v-per-frame-t", "i2v-no-clip"]


# --- context injection -------------------------------------------------------------------------

@pytest.mark.parametrize("model_type,per_frame,clip", CASES, ids=CASE_IDS)
@torch.no_grad()
def test_empty_context_is_bit_identical(model_type, per_frame, clip):
    model = make(model_type)
    args = inputs(model, per_frame=per_frame, clip=clip)
    plain = model(*args)
    d = model.config.dim
    empty_pos = torch.zeros(0, 3)
    assert torch.equal(model(*args, ctx_tokens=None, ctx_positions=None), plain)
    assert torch.equal(model(*args, ctx_tokens=torch.zeros(0, d), ctx_positions=empty_pos), plain)
    assert torch.equal(model(*args, ctx_tokens=torch.zeros(B, 0, d), ctx_positions=empty_pos), plain)


@pytest.mark.parametrize("model_type,per_frame,clip", CASES, ids=CASE_IDS)
@torch.no_grad()
def test_context_changes_output_not_shape(model_type, per_frame, clip):
    model = make(model_type)
    args = inputs(model, per_frame=per_frame, clip=clip)
    tokens, pos = context(model)
    plain = model(*args)
    out = model(*args, ctx_tokens=tokens, ctx_positions=pos)
    assert out.shape == plain.shape == (B, model.config.out_dim, F_, H, W)
    assert (out - plain).abs().max() > 1e-3
    # "n d" is broadcast over the batch
    batched = model(*args, ctx_tokens=tokens[None].expand(B, -1, -1), ctx_positions=pos)
    assert torch.equal(out, batched)
    # a different memory gives a different result
    other = model(*args, ctx_tokens=tokens.flip(0), ctx_positions=pos)
    assert (other - out).abs().max() > 1e-4


@torch.no_grad()
def test_context_tokens_are_a_set_tied_to_their_positions():
    model = make("t2v")
    args = inputs(model)
    tokens, pos = context(model, n=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = model(*args, ctx_tokens=tokens, ctx_positions=pos)
    assert torch.allclose(model(*args, ctx_tokens=tokens[perm], ctx_positions=pos[perm]), out, atol=1e-6)
    moved = pos.clone()
    moved[:, 0] -= 3.0
    assert (model(*args, ctx_tokens=tokens, ctx_positions=moved) - out).abs().max() > 1e-4


def reference_forward(model, x, t, text, clip_fea, ctx_tokens, ctx_positions):
    """Concatenate the context after patch_embedding, run the blocks one by one with per-token
    modulation built here, slice before the head."""
    c = model.config
    b, _, f, h, w = x.shape
    tokens = rearrange(model.patch_embedding(x), "b d f h w -> b (f h w) d")
    hw = (h // 2) * (w // 2)
    n = ctx_tokens.shape[0]
    tokens = torch.cat([ctx_tokens.expand(b, -1, -1), tokens], dim=1)
    t_frames = t[:, None].expand(b, f) if t.ndim == 1 else t                     # "b f"
    t_tokens = torch.cat([t_frames[:, :1].expand(b, n), t_frames.repeat_interleave(hw, dim=1)], dim=1)
    e = model.time_embedding(sinusoidal_embedding(t_tokens.flatten(), c.freq_dim)).view(b, -1, c.dim)
    e0 = model.time_projection(e).view(b, -1, 6, c.dim)
    pos = torch.cat([ctx_positions, torch.tensor([[i, j, k] for i in range(f) for j in range(h // 2)
                                                 for k in range(w // 2)], dtype=torch.float32)])
    freqs = rope_for(pos, c.head_dim)
    ctx = model.text_embedding(text)
    img_len = None
    if clip_fea is not None:
        ctx = torch.cat([model.img_emb(clip_fea), ctx], dim=1)
        img_len = clip_fea.shape[1]
    for block in model.blocks:
        tokens = block(tokens, e0, freqs, ctx, img_len)
    out = model.head(tokens[:, n:], e[:, n:])
    return rearrange(out, "b (f h w) (p q r c) -> b c (f p) (h q) (w r)", f=f, h=h // 2, w=w // 2, p=1, q=2, r=2)


@pytest.mark.parametrize("model_type,per_frame,clip", CASES, ids=CASE_IDS)
@torch.no_grad()
def test_joint_attention_matches_concat_reference(model_type, per_frame, clip):
    model = make(model_type)
    args = inputs(model, per_frame=per_frame, clip=clip)
    tokens, pos = context(model)
    out = model(*args, ctx_tokens=tokens, ctx_positions=pos)
    ref = reference_forward(model, *args, tokens, pos)
    assert (out - ref).abs().max() <= 1e-6
    # and without context the same reference reproduces the plain model
    plain_ref = reference_forward(model, *args, tokens[:0], pos[:0])
    assert (model(*args) - plain_ref).abs().max() <= 1e-6


@torch.no_grad()
def test_constant_per_frame_t_equals_scalar_t():
    model = make("t2v")
    x, _, text, _ = inputs(model)
    tokens, pos = context(model)
    t = torch.tensor([640.0, 80.0])
    for kw in ({}, dict(ctx_tokens=tokens, ctx_positions=pos)):
        scalar = model(x, t, text, **kw)
        frames = model(x, t[:, None].expand(B, F_), text, **kw)
        assert torch.allclose(scalar, frames, atol=1e-6)


def test_block_matches_functional_reference():
    """One block, written out with explicit softmax and complex-number RoPE (no shared helpers)."""
    torch.manual_seed(3)
    cfg = WanConfig.tiny("i2v", dim=48, num_heads=2)
    block = WanModel(cfg).blocks[0].eval()
    b, l, s, img, d, nh = 2, 10, 6, 4, cfg.dim, cfg.num_heads
    x, ctx, e = torch.randn(b, l, d), torch.randn(b, img + s, d), torch.randn(b, l, 6, d) * 0.3
    pos = torch.randn(l, 3) * 3
    with torch.no_grad():
        out = block(x, e, rope_for(pos, cfg.head_dim), ctx, img)

    p = dict(block.named_parameters())
    lin = lambda a, name: a @ p[name + ".weight"].T + p[name + ".bias"]  # noqa: E731
    rms = lambda a, name: a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + cfg.eps) * p[name + ".weight"]  # noqa: E731
    ln = lambda a: (a - a.mean(-1, keepdim=True)) / torch.sqrt(a.var(-1, unbiased=False, keepdim=True) + cfg.eps)  # noqa: E731

    def attn(q, k, v):
        q, k, v = (a.view(b, a.shape[1], nh, -1).transpose(1, 2) for a in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return (w @ v).transpose(1, 2).reshape(b, -1, d)

    def rope(a):
        hd, (dt, dh, dw) = cfg.head_dim, axes_dims(cfg.head_dim)
        inv = [10000.0 ** (-2 * j / n) for n in (dt, dh, dw) for j in range(n // 2)]
        axis = [i for i, n in enumerate((dt, dh, dw)) for _ in range(n // 2)]
        angle = torch.stack([pos[:, axis[j]].double() * inv[j] for j in range(hd // 2)], dim=-1)  # "l (hd/2)"
        z = torch.view_as_complex(a.double().view(b, l, nh, hd // 2, 2).contiguous())
        return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)[None, :, None]).reshape(b, l, d).float()

    mod = p["modulation"][None] + e
    m = [mod[:, :, i] for i in range(6)]
    with torch.no_grad():
        y = ln(x) * (1 + m[1]) + m[0]
        q, k = rope(rms(lin(y, "self_attn.q"), "self_attn.norm_q")), rope(rms(lin(y, "self_attn.k"), "self_attn.norm_k"))
        x1 = x + lin(attn(q, k, lin(y, "self_attn.v")), "self_attn.o") * m[2]
        y = ln(x1) * p["norm3.weight"] + p["norm3.bias"]
        cq = rms(lin(y, "cross_attn.q"), "cross_attn.norm_q")
        ci, ct = ctx[:, :img], ctx[:, img:]
        ca = attn(cq, rms(lin(ct, "cross_attn.k"), "cross_attn.norm_k"), lin(ct, "cross_attn.v"))
        ca = ca + attn(cq, rms(lin(ci, "cross_attn.k_img"), "cross_attn.norm_k_img"), lin(ci, "cross_attn.v_img"))
        x2 = x1 + lin(ca, "cross_attn.o")
        y = ln(x2) * (1 + m[4]) + m[3]
        hmid = F.gelu(lin(y, "ffn.0"), approximate="tanh")
        ref = x2 + lin(hmid, "ffn.2") * m[5]
    assert (out - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_i2v_without_clip_uses_the_image_branch_on_the_text():
    """ComfyUI behaviour: clip_fea=None -> k_img / v_img attend to the whole text context."""
    model = make("i2v")
    args = inputs(model, clip=False)
    out = model(*args)
    for blk in model.blocks:
        blk.cross_attn.v_img.weight.mul_(0)
        blk.cross_attn.v_img.bias.mul_(0)
    assert (model(*args) - out).abs().max() > 1e-4


@torch.no_grad()
def test_t2v_ignores_clip_fea_and_odd_sizes_are_cropped():
    model = make("t2v")
    x, t, text, _ = inputs(model, h=5, w=7)
    out = model(x, t, text)
    assert out.shape == (B, 16, F_, 5, 7)
    assert torch.equal(model(x, t, text, torch.randn(B, 257, 1280)), out)


def test_bad_shapes_are_rejected_with_the_fix():
    model = make("t2v")
    x, t, text, _ = inputs(model)
    tokens, pos = context(model)
    with pytest.raises(ShapeError, match="ctx_positions"):
        model(x, t, text, ctx_tokens=tokens, ctx_positions=None)
    with pytest.raises(ShapeError, match="ctx_tokens"):
        model(x, t, text, ctx_tokens=tokens[:, :-1], ctx_positions=pos)
    with pytest.raises(ShapeError, match="latent frames"):
        model(x, torch.rand(B, F_ + 1), text)


# --- RoPE --------------------------------------------------------------------------------------

def test_rope_integer_positions_match_reference_table():
    head_dim = 128                                      # real Wan heads: axes (44, 42, 42)
    assert axes_dims(head_dim) == (44, 42, 42)
    pos = grid_positions(3, 2, 4)
    assert pos.tolist()[:5] == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 1, 0]]
    assert pos.tolist()[-1] == [2, 1, 3]
    freqs = rope_for(pos, head_dim)
    assert freqs.shape == (1, 24, 1, 64, 2, 2) and freqs.dtype == torch.float32
    table = torch.empty(24, 64, 2, 2, dtype=torch.float64)
    for n, p in enumerate(pos.tolist()):
        j = 0
        for axis, dim in enumerate((44, 42, 42)):
            for i in range(dim // 2):
                a = p[axis] * 10000.0 ** (-2.0 * i / dim)
                table[n, j] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                j += 1
    assert (freqs[0, :, 0].double() - table).abs().max() <= 1e-6


def test_apply_rope_is_complex_rotation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 24, generator=g)
    pos = torch.randn(5, 3, generator=g) * 4
    out = apply_rope(x, rope_for(pos, 24))
    dt, dh, dw = axes_dims(24)
    angles = torch.cat([pos[:, a:a + 1].double() * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
                        for a, d in enumerate((dt, dh, dw))], dim=1)                  # "l 12"
    z = torch.view_as_complex(x.double().view(2, 5, 3, 12, 2)) * torch.polar(torch.ones_like(angles), angles)[None, :, None]
    assert torch.allclose(out.double(), torch.view_as_real(z).view(2, 5, 3, 24), atol=1e-5)


def test_rope_scores_depend_only_on_relative_fractional_positions():
    g = torch.Generator().manual_seed(0)
    hd = 64
    q, k = torch.randn(1, 6, 2, hd, generator=g), torch.randn(1, 9, 2, hd, generator=g)
    pq = torch.randn(6, 3, generator=g) * 5
    pk = torch.cat([torch.randn(9, 1, generator=g) * 3 - 4, torch.rand(9, 2, generator=g) * 8], dim=1)

    def scores(pq, pk):
        return torch.einsum("blhd,bmhd->bhlm", apply_rope(q, rope_for(pq, hd)), apply_rope(k, rope_for(pk, hd)))

    base = scores(pq, pk)
    shift = torch.tensor([[-3.25, 0.5, 1.75]])
    assert torch.allclose(scores(pq + shift, pk + shift), base, atol=1e-4)
    assert (scores(pq + shift, pk) - base).abs().max() > 1e-2         # absolute moves of one side do matter


def test_fractional_rope_composes_like_rotations():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 24, generator=g)
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.5 - 1
    twice = apply_rope(apply_rope(x, rope_for(a, 24)), rope_for(b, 24))
    assert torch.allclose(twice, apply_rope(x, rope_for(a + b, 24)), atol=1e-5)
    # half a step twice is one step; the norm of every rotated pair is preserved
    half = apply_rope(apply_rope(x, rope_for(torch.full((4, 3), 0.5), 24)), rope_for(torch.full((4, 3), 0.5), 24))
    assert torch.allclose(half, apply_rope(x, rope_for(torch.ones(4, 3), 24)), atol=1e-5)
    pairs = lambda y: y.view(1, 4, 2, 12, 2).norm(dim=-1)  # noqa: E731
    assert torch.allclose(pairs(apply_rope(x, rope_for(a * 7.3, 24))), pairs(x), atol=1e-5)


# --- keys and detection -----------------------------------------------------------------------

def wan_keys(model_type, layers):
    lin = lambda n: [f"{n}.weight", f"{n}.bias"]  # noqa: E731
    keys = lin("patch_embedding") + lin("text_embedding.0") + lin("text_embedding.2") + lin("time_embedding.0")
    keys += lin("time_embedding.2") + lin("time_projection.1") + lin("head.head") + ["head.modulation"]
    for i in range(layers):
        p = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for n in "qkvo":
                keys += lin(p + f"{attn}.{n}")
            keys += [p + f"{attn}.norm_q.weight", p + f"{attn}.norm_k.weight"]
        if model_type == "i2v":
            keys += lin(p + "cross_attn.k_img") + lin(p + "cross_attn.v_img") + [p + "cross_attn.norm_k_img.weight"]
        keys += lin(p + "norm3") + lin(p + "ffn.0") + lin(p + "ffn.2") + [p + "modulation"]
    if model_type == "i2v":
        for n in (0, 1, 3, 4):
            keys += lin(f"img_emb.proj.{n}")
    return set(keys)


@pytest.mark.parametrize("model_type", ["t2v", "i2v"])
def test_state_dict_has_original_wan_keys_and_round_trips(model_type, tmp_path):
    model = make(model_type, seed=0)
    sd = model.state_dict()
    assert set(sd) == wan_keys(model_type, 2)
    assert sd["blocks.1.modulation"].shape == (1, 6, 64) and sd["head.modulation"].shape == (1, 2, 64)
    assert sd["head.head.weight"].shape == (16 * 4, 64)
    path = tmp_path / "wan.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"config": json.dumps({"transformer": {"num_heads": 2}})})
    other = make(model_type, seed=5)
    args = inputs(model)
    with torch.no_grad():
        assert not torch.equal(other(*args), model(*args))
        other.load_state_dict(load_file(str(path)), strict=True)
        assert torch.equal(other(*args), model(*args))


@pytest.mark.parametrize("model_type", ["t2v", "i2v"])
def test_from_state_dict_recovers_config(model_type):
    cfg = WanConfig.tiny(model_type, dim=64, num_heads=4, num_layers=3, text_dim=40, ffn_dim=96)
    sd = WanModel(cfg).state_dict()
    assert WanConfig.from_state_dict(sd, num_heads=4) == cfg
    meta = {"config": json.dumps({"transformer": {"num_heads": 4, "unknown_field": 1}})}
    assert WanConfig.from_state_dict(sd, metadata=meta) == cfg
    assert WanConfig.from_state_dict(sd, metadata=meta, num_heads=2).num_heads == 2   # explicit override wins
    with pytest.raises(OneStoryError, match="num_heads"):
        WanConfig.from_state_dict(sd)                                                  # 64 // 128 == 0
    prefixed = {"model.diffusion_model." + k: v for k, v in sd.items()}
    assert WanConfig.from_state_dict(prefixed, num_heads=4) == cfg
    loaded = WanModel.from_state_dict(prefixed, num_heads=4)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in sd.items())


def test_from_state_dict_follows_comfyui_rules():
    cfg = WanConfig.tiny("t2v", dim=256, num_heads=2, num_layers=1)
    sd = WanModel(cfg).state_dict()
    assert WanConfig.from_state_dict(sd) == cfg                       # num_heads = dim // 128
    flf = WanConfig.tiny("i2v", dim=256, num_heads=2, num_layers=1)
    flf = WanConfig(**{**flf.__dict__, "flf_pos_embed_token_number": 514})
    sd_flf = WanModel(flf).state_dict()
    assert sd_flf["img_emb.emb_pos"].shape == (1, 514, 1280)
    assert WanConfig.from_state_dict(sd_flf) == flf
    with pytest.raises(OneStoryError, match="VACE"):
        WanConfig.from_state_dict({**sd, "vace_patch_embedding.weight": torch.zeros(1, 96, 1, 2, 2)})
    with pytest.raises(OneStoryError, match="head.modulation"):
        WanConfig.from_state_dict({"x.weight": torch.zeros(1)})


def test_config_properties_and_validation():
    cfg = WanConfig()
    assert (cfg.head_dim, cfg.latent_channels) == (128, 16)
    assert WanConfig.tiny("i2v").in_dim == 36
    with pytest.raises(OneStoryError):
        WanConfig(dim=64, num_heads=3)
    with pytest.raises(OneStoryError):
        WanConfig(model_type="vace")
