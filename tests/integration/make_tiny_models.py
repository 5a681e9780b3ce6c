"""Write tiny random Wan 2.1 checkpoints that ComfyUI's stock loaders accept.

Run with the ComfyUI venv and the ComfyUI checkout on sys.path (ComfyUI's own classes are
instantiated, so keys and shapes always match the checkout under test):

    python make_tiny_models.py --comfy /path/to/ComfyUI --out /tmp/models

Writes <out>/diffusion_models/{onestory_tiny_wan21_i2v,onestory_tiny_wan21_t2v,
onestory_tiny_wan22_ti2v}.safetensors (dim 128, one 128-wide head, 2 blocks; the TI2V one has
48-channel latents like Wan 2.2 TI2V-5B), onestory_tiny_flux_not_wan.safetensors (a non-Wan
MODEL for error tests) and <out>/vae/onestory_tiny_wan21_vae.safetensors
(WanVAE dim 8). Weights are seeded, so every run writes identical files.
"""
from __future__ import annotations

import argparse
import json
import math
import os

DIM, HEADS, LAYERS, FFN = 128, 1, 2, 256


def seeded_init(module, seed: int) -> None:
    """Norms 1, biases 0, weights N(0, 1/fan_in): finite, O(1) activations through the stack."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("bias", "beta")):
                p.zero_()
            elif name.endswith("gamma") or (p.ndim == 1 and "norm" in name):
                p.fill_(1.0)
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(math.prod(p.shape[1:])))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def write(module, path: str, metadata: dict | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sd = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
    save_file(sd, path, metadata=metadata)
    print(f"{path}: {sum(v.numel() for v in sd.values()) / 1e6:.2f} M params")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True, help="ComfyUI checkout (also on PYTHONPATH: ComfyUI is not a package)")
    ap.add_argument("--out", required=True, help="models directory to write into")
    a = ap.parse_args()
    import torch
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no CUDA probing
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    from comfy.ldm.wan.vae import WanVAE

    # dim // 128 would give 1 head anyway; the override documents the intent for other sizes.
    meta = {"config": json.dumps({"transformer": {"num_heads": HEADS}})}
    # Wan 2.2 TI2V-5B layout: t2v, 48-channel latents in and out (ComfyUI detects WAN22_T2V by out_dim 48).
    for kind, in_dim, out_dim, seed, name in (("i2v", 36, 16, 1, "wan21_i2v"), ("t2v", 16, 16, 2, "wan21_t2v"),
                                              ("t2v", 48, 48, 4, "wan22_ti2v")):
        m = WanModel(model_type=kind, patch_size=(1, 2, 2), text_len=512, in_dim=in_dim, dim=DIM, ffn_dim=FFN,
                     freq_dim=256, text_dim=4096, out_dim=out_dim, num_heads=HEADS, num_layers=LAYERS,
                     window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6, device="cpu",
                     dtype=torch.float32, operations=comfy.ops.disable_weight_init)
        seeded_init(m, seed)
        write(m, os.path.join(a.out, "diffusion_models", f"onestory_tiny_{name}.safetensors"), meta)
    # A non-Wan diffusion model (Flux layout, ComfyUI detects it from the keys) for the "not a Wan MODEL" errors.
    from comfy.ldm.flux.model import Flux

    flux = Flux(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                hidden_size=DIM, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False, txt_ids_dims=[], device="cpu",
                dtype=torch.float32, operations=comfy.ops.disable_weight_init)
    seeded_init(flux, 5)
    write(flux, os.path.join(a.out, "diffusion_models", "onestory_tiny_flux_not_wan.safetensors"))
    vae = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], image_channels=3, conv_out_channels=3, dropout=0.0)
    seeded_init(vae, 3)
    write(vae, os.path.join(a.out, "vae", "onestory_tiny_wan21_vae.safetensors"))
    eval_models(os.path.join(a.out, "onestory_eval"))


def eval_models(root: str) -> None:
    """Tiny random metric models for Story Score (transformers folders, as users have them)."""
    import torch
    import transformers
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                       mlp_ratio=2, patch_size=8, image_size=32)
                             ).save_pretrained(os.path.join(root, "onestory_tiny_dinov2"))
    tc = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=64,
              max_position_embeddings=32, bos_token_id=0, pad_token_id=1, eos_token_id=2)
    vc = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
              patch_size=8)
    clip = os.path.join(root, "onestory_tiny_clip")
    transformers.CLIPModel(transformers.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=16)).save_pretrained(clip)
    words = ["[BOS]", "[PAD]", "[EOS]", "[UNK]"] + "a the woman man in red coat cafe coffee barista".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(clip)
    det = os.path.join(root, "onestory_tiny_detector")
    transformers.YolosForObjectDetection(transformers.YolosConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=[32, 32],
        patch_size=8, num_detection_tokens=5, id2label={0: "N/A", 1: "person"}, label2id={"N/A": 0, "person": 1})
    ).save_pretrained(det)
    transformers.YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}).save_pretrained(det)
    save_file({"weight": torch.randn(1, 16), "bias": torch.zeros(1)}, os.path.join(root, "onestory_tiny_aesthetic.safetensors"))
    print(f"{root}: tiny DINOv2, CLIP, YOLOS person detector, aesthetic head")


if __name__ == "__main__":
    main()
