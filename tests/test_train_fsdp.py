"""Training at scale on the CPU: torchrun with 2 gloo processes, FSDP2 (fully_shard per DiT
block + root), a ComfyUI-format tiny Wan backbone, the real-data latent cache, DCP resume."""
import json
import os
import socket
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from onestory.adapter import OneStoryAdapter
from onestory.wan import WanConfig, WanModel
from onestory_lab.train.latent_cache import write_cache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_backbone_and_cache(root, samples=4, text_dim=32):
    """A tiny random Wan T2V in ComfyUI's format (bf16, num_heads in the metadata, a
    `model.diffusion_model.` prefix as some exports have) and a latent cache of `samples` items."""
    torch.manual_seed(0)
    m = WanModel(WanConfig.tiny("t2v", dim=64, num_heads=1, num_layers=2, text_dim=text_dim)).init_weights()
    torch.nn.init.normal_(m.head.head.weight, std=0.02)
    sd = {"model.diffusion_model." + k: v.to(torch.bfloat16).contiguous() for k, v in m.state_dict().items()}
    save_file(sd, str(root / "wan.safetensors"), metadata={"config": json.dumps({"transformer": {"num_heads": 1}})})
    g = torch.Generator().manual_seed(1)
    items = [{"id": f"clip{i}", "latents": [torch.randn(16, 1, 8, 8, generator=g) for _ in range(3)],
              "text": torch.randn(5 + i, text_dim, generator=g), "text_mask": torch.ones(5 + i, dtype=torch.bool),
              "labels": torch.rand(2, generator=g), "synthetic": torch.tensor([False, i % 2 == 1])}
             for i in range(samples)]
    write_cache(root / "cache", items, text_dim=text_dim)
    return root / "wan.safetensors", root / "cache"


def _torchrun(tmp_path, out, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "onestory_lab", "train", "--out", str(out), "--strategy", "fsdp", "--batch-size", "2",
           "--sel-width", "16", "--sel-queries", "2", "--sel-heads", "1", "--threads", "1", "--k", "2",
           "--text-len", "8", "--warmup-lr-steps", "0", "--log-every", "1", "--progress", "false", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-4000:]
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_fsdp_lora_resume_reproduces_the_uninterrupted_run(tmp_path):
    """LoRA + bf16 mixed precision + activation checkpointing under FSDP2: a run stopped at step 2
    and resumed from its DCP checkpoint ends with the same losses and bit-identical weights as
    the uninterrupted 4-step run; the adapter and the ComfyUI LoRA are written."""
    backbone, cache = make_backbone_and_cache(tmp_path)
    run = ["--steps", "4", "--backbone", str(backbone), "--data", str(cache), "--dit", "lora", "--lora-rank", "4",
           "--lora-alpha", "8", "--precision", "bf16", "--checkpointing", "true", "--decoupled-steps", "2"]
    straight = _torchrun(tmp_path, tmp_path / "a", *run)
    _torchrun(tmp_path, tmp_path / "b", *run, "--stop-at", "2")
    assert sorted(os.listdir(tmp_path / "b" / "checkpoint" / "dcp")) == [   # one shard file per rank
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]
    resumed = _torchrun(tmp_path, tmp_path / "b", *run, "--resume")
    assert [r["step"] for r in straight] == [1, 2, 3, 4] and [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["policy"] for r in straight] == ["uniform", "uniform", "both", "both"]
    assert [(r["loss"], r["l_sel"]) for r in straight] == [(r["loss"], r["l_sel"]) for r in resumed]
    for name in ("lora.safetensors", "adapter.safetensors"):
        a, b = load_file(str(tmp_path / "a" / "checkpoint" / name)), load_file(str(tmp_path / "b" / "checkpoint" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    ck = tmp_path / "a" / "checkpoint"
    lora = load_file(str(ck / "lora.safetensors"))
    # 2 blocks x (self q,k,v,o + cross q,k,v,o + ffn.0, ffn.2) x (down, up, alpha)
    assert len(lora) == 2 * 10 * 3
    assert lora["diffusion_model.blocks.1.ffn.2.lora_down.weight"].shape == (4, 128)
    assert lora["diffusion_model.blocks.0.self_attn.q.alpha"].item() == 8.0
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))   # it trained
    with safe_open(str(ck / "lora.safetensors"), "pt") as f:
        assert f.metadata()["backbone"] == "wan2.1-t2v"
    adapter = OneStoryAdapter.load(ck / "adapter.safetensors")
    assert adapter.meta.backbone == "wan2.1-t2v" and adapter.meta.model_dim == 64 and adapter.selector is not None
    assert adapter.meta.text_dim == 32 and adapter.meta.default_k == 2


def test_fsdp_full_dit_overfits_a_tiny_set(tmp_path):
    """Full fine-tune of the backbone under FSDP2 on 2 cached samples: L_shot falls; the DiT is
    exported in Wan keys and loads as a Wan model."""
    backbone, cache = make_backbone_and_cache(tmp_path)
    logs = _torchrun(tmp_path, tmp_path / "full", "--steps", "30", "--backbone", str(backbone), "--data", str(cache),
                     "--data-size", "2", "--dit", "full", "--lr", "3e-3", "--decoupled-steps", "5",
                     "--text-dropout", "0", "--ckpt-every", "100")
    shot = [r["l_shot"] for r in logs]
    assert all(torch.isfinite(torch.tensor(shot)))
    assert sum(shot[-5:]) / 5 < 0.9 * sum(shot[:5]) / 5, shot
    sd = load_file(str(tmp_path / "full" / "checkpoint" / "dit.safetensors"))
    assert "blocks.0.self_attn.q.weight" in sd and not any("lora" in k for k in sd)
    with safe_open(str(tmp_path / "full" / "checkpoint" / "dit.safetensors"), "pt") as f:
        dit = WanModel.from_state_dict(sd, metadata=f.metadata())
    base = load_file(str(backbone))
    assert not torch.equal(dit.blocks[0].ffn[0].weight, base["model.diffusion_model.blocks.0.ffn.0.weight"].float())
