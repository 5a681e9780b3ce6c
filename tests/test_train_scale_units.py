"""Pieces of the scale trainer without torchrun: backbone reading, LoRA, latent cache, sampler."""
import json

import pytest
import torch
from safetensors.torch import save_file

from onestory.wan import WanConfig, WanModel
from onestory_lab.train import lora
from onestory_lab.train.backbone import Backbone, BackboneError
from onestory_lab.train.latent_cache import CacheError, LatentCacheDataset, write_cache
from onestory_lab.train.loop import _Batches


def _tiny(seed=0):
    torch.manual_seed(seed)
    return WanModel(WanConfig.tiny("t2v", dim=64, num_heads=1, num_layers=2, text_dim=32)).eval()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([500.0]), torch.randn(1, 6, 32, generator=g)


def test_backbone_detects_config_and_upcasts_scaled_fp8(tmp_path):
    m = _tiny()
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    meta = {"config": json.dumps({"transformer": {"num_heads": 1}})}
    # ComfyUI "scaled fp8": weight in e4m3fn, real weight = weight * scale_weight
    fp8 = dict(sd)
    w = sd["blocks.0.ffn.0.weight"]
    scale = w.abs().max() / 448.0
    fp8["blocks.0.ffn.0.weight"] = (w / scale).to(torch.float8_e4m3fn)
    fp8["blocks.0.ffn.0.scale_weight"] = scale.reshape(())
    fp8["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(fp8, str(tmp_path / "fp8.safetensors"), metadata=meta)
    bb = Backbone.open(tmp_path / "fp8.safetensors")
    assert (bb.config.dim, bb.config.num_layers, bb.config.num_heads, bb.config.text_dim) == (64, 2, 1, 32)
    assert bb.family == "wan2.1-t2v" and set(bb.keys) == set(sd)
    up = bb.tensor("blocks.0.ffn.0.weight")
    assert up.dtype == torch.float32
    torch.testing.assert_close(up, w, rtol=0.07, atol=1e-3 * float(w.abs().max()))   # e4m3: 3 mantissa bits
    assert not torch.equal(up, fp8["blocks.0.ffn.0.weight"].float())                 # the scale was applied
    # block-wise scales and packed integer weights are refused, naming the key
    bad = dict(fp8, **{"blocks.0.ffn.0.scale_weight": torch.ones(w.shape[0])})
    save_file(bad, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(BackboneError, match="blocks.0.ffn.0"):
        Backbone.open(tmp_path / "bad.safetensors").tensor("blocks.0.ffn.0.weight")
    packed = dict(sd, **{"blocks.0.ffn.2.weight": torch.zeros(64, 64, dtype=torch.uint8)})
    save_file(packed, str(tmp_path / "int.safetensors"), metadata=meta)
    with pytest.raises(BackboneError, match="blocks.0.ffn.2.weight"):
        Backbone.open(tmp_path / "int.safetensors")
    with pytest.raises(BackboneError, match="safetensors"):
        Backbone.open(tmp_path / "model.pt")


def test_lora_keeps_wan_keys_and_merging_the_comfy_file_gives_the_same_model():
    base = _tiny()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    model = _tiny()
    names = lora.inject(model, rank=3, alpha=6.0, targets="q,k,v,o,ffn.0,ffn.2")
    assert len(names) == 2 * 10
    assert model.load_state_dict(state, strict=False).missing_keys == [
        k for k in model.state_dict() if ".lora_" in k]                   # base keys load by Wan names
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())
    x, t, ctx = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, ctx), base(x, t, ctx))    # lora_up = 0: the base model
        for n, p in model.named_parameters():
            if ".lora_" in n:
                p.copy_(torch.randn(p.shape) * 0.3)
        trained = model(x, t, ctx)
    file = lora.comfy_lora({k: v for k, v in model.state_dict().items()}, alpha=6.0)
    assert "diffusion_model.blocks.0.cross_attn.o.lora_up.weight" in file and "diffusion_model.blocks.1.ffn.0.alpha" in file
    merged = WanModel(base.config).eval()
    merged.load_state_dict(lora.merge(state, file))
    with torch.no_grad():
        out = merged(x, t, ctx)
    assert (out - base(x, t, ctx)).abs().max() > 1e-2
    torch.testing.assert_close(out, trained, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="match no linear"):
        lora.inject(_tiny(), 2, 2.0, "nonexistent")


def _cache_items(n, text_dim=8):
    g = torch.Generator().manual_seed(0)
    return [{"id": f"v{i}", "latents": [torch.randn(16, t, 4, 6, generator=g) for t in (2, 1, 2)],
             "text": torch.randn(3, text_dim, generator=g), "text_mask": torch.tensor([True, True, False]),
             "labels": torch.rand(3, generator=g), "synthetic": torch.tensor([False, False, True])} for i in range(n)]


def test_latent_cache_items_and_errors(tmp_path):
    items = _cache_items(3)
    root = write_cache(tmp_path / "c", items, text_dim=8)
    ds = LatentCacheDataset(root, text_len=5)
    assert len(ds) == 3
    it = ds[2]
    assert torch.equal(it["shot1"], items[2]["latents"][0]) and torch.equal(it["shot3"], items[2]["latents"][2])
    assert it["text"].shape == (5, 8) and it["text_mask"].tolist() == [True, True, False, False, False]
    assert torch.equal(it["text"][:2], items[2]["text"][:2]) and not it["text"][2:].any()   # masked token zeroed
    assert it["frame_synthetic"].tolist() == [0, 0, 1] and torch.equal(it["relevance"], items[2]["labels"])
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["shot1"].shape == (2, 16, 2, 4, 6)
    # wrong label count -> an error naming the sample
    bad = _cache_items(1)
    bad[0]["labels"] = torch.rand(4)
    with pytest.raises(CacheError, match="'v0'.*one entry per memory latent frame"):
        LatentCacheDataset(write_cache(tmp_path / "bad", bad, text_dim=8))[0]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "x", "version": 1}))
    with pytest.raises(CacheError, match="onestory-latent-cache"):
        LatentCacheDataset(tmp_path / "other")


def test_sampler_order_is_a_function_of_the_step():
    """Resume at step 3 yields exactly the batches an uninterrupted run sees from step 3 on;
    ranks are disjoint within an epoch; every epoch is a permutation."""
    def batches(start, rank, world=2):
        return list(_Batches(start, 6, 2, rank, world, length=10, seed=5))

    full = batches(0, 0)
    assert batches(3, 0) == full[3:]
    flat = [i for s in range(2) for r in range(2) for i in batches(0, r)[s]]
    assert len(set(flat)) == 8
    epoch = [i for s in range(5) for r in range(2) for i in list(_Batches(0, 5, 1, r, 2, length=10, seed=5))[s]]
    assert sorted(epoch) == list(range(10))
    assert list(_Batches(0, 2, 3, 0, 1)) == [[0, 1, 2], [3, 4, 5]]     # the unbounded story world: in order


def test_plan_counts_are_the_real_architectures():
    """Exact counts on the meta device: the 14B LoRA matches the hand count of
    research/training-eval.md (119,808 r per block), the tokens of 480p x 81 frames are 21x30x52."""
    from onestory_lab.train.plan import WAN, counts, tokens

    c14 = counts(WAN["Wan2.1-T2V-14B"], rank=32)
    assert c14.lora == 40 * 119_808 * 32
    assert c14.total == c14.root + 40 * c14.block and 14.0e9 < c14.total < 14.5e9
    c1 = counts(WAN["Wan2.1-T2V-1.3B"], rank=32)
    assert c1.lora == 30 * 32 * (8 * 2 * 1536 + 2 * (1536 + 8960)) and 1.3e9 < c1.total < 1.5e9
    assert tokens(WAN["Wan2.1-T2V-14B"])["noise"] == 21 * 30 * 52 == 32_760
