"""The trainer's LoRA file in ComfyUI's stock LoraLoaderModelOnly, in-process on CPU.

Opt-in: ONESTORY_COMFYUI_DIR=~/comfyui-harness/ComfyUI \
    ~/comfyui-harness/venv/bin/python -m pytest tests/integration/test_lora_comfy.py -s

A tiny random Wan T2V MODEL is made by ComfyUI's own loader (`load_diffusion_model_state_dict`,
what UNETLoader calls). The LoRA is produced by the trainer's code path (lab/onestory_lab/train/
lora.py: `inject` into the DiT, then `comfy_lora`, as `export` writes lora.safetensors) with
random non-zero weights. Applied by the stock node (ComfyUI's nodes.py, loaded from the
checkout), the MODEL's output equals a standalone Wan DiT whose weights have the LoRA merged in
by hand (W + alpha/r · up @ down), and every key of the file is used.
"""
from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
from comfy_inprocess import import_comfy

pytestmark = pytest.mark.integration

COMFY_DIR = import_comfy("the LoRA loader test")
import comfy.model_management  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from onestory.wan import WanConfig, WanModel  # noqa: E402
from onestory_lab.train import lora  # noqa: E402


def _stock_nodes():
    """ComfyUI's nodes.py under another module name (this repository has a `nodes` package)."""
    spec = importlib.util.spec_from_file_location("comfy_stock_nodes", COMFY_DIR / "nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stock_lora_loader_equals_merging_the_lora_by_hand(tmp_path, caplog):
    cfg = WanConfig.tiny("t2v", dim=256, num_heads=2, num_layers=2, text_dim=4096)
    torch.manual_seed(0)
    base = WanModel(cfg).eval()
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    patcher = comfy.sd.load_diffusion_model_state_dict({k: v.clone() for k, v in sd.items()},
                                                       model_options={"dtype": torch.float32})

    trained = WanModel(cfg).eval()
    trained.load_state_dict(sd)
    lora.inject(trained, rank=4, alpha=8.0, targets="q,k,v,o,ffn.0,ffn.2", seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if ".lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    file = lora.comfy_lora(trained.state_dict(), alpha=8.0)
    (tmp_path / "loras").mkdir()
    save_file(file, str(tmp_path / "loras" / "onestory_test_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))

    nodes = _stock_nodes()
    with caplog.at_level(logging.WARNING):
        (patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(patcher, "onestory_test_lora.safetensors", 1.0)
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()], caplog.text
    assert len(patched.patches) == 2 * 10      # every targeted linear of both blocks got its patch

    g = torch.Generator().manual_seed(1)
    x, t, text = torch.randn(1, 16, 3, 6, 8, generator=g), torch.tensor([620.0]), torch.randn(1, 12, 4096, generator=g)
    comfy.model_management.load_models_gpu([patched])
    with torch.no_grad():
        theirs = patched.get_model_object("diffusion_model")(x, t, text).float()
        merged = WanModel(cfg).eval()
        merged.load_state_dict(lora.merge(sd, file))
        ours_merged = merged(x, t, text)
        ours_trained = trained(x, t, text)
        plain = base(x, t, text)
    diff = (theirs - ours_merged).abs().max().item()
    print(f"\n[lora] stock loader vs merged by hand: max |diff| {diff:.2e}; LoRA effect "
          f"{(ours_merged - plain).abs().max().item():.3f}")
    assert (ours_merged - plain).abs().max() > 0.05          # the LoRA changes the output
    torch.testing.assert_close(theirs, ours_merged, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_trained, ours_merged, rtol=1e-4, atol=1e-5)   # = the training-time model
