"""The data pipeline's encoders against ComfyUI's own (fp32, CPU, tiny random weights).

Latents of onestory_lab.data.wan_vae must equal what ComfyUI's VAE (comfy.sd.VAE, the VAEEncode
path) returns for the same file and frames; umT5 features must equal ComfyUI's CLIPTextEncode
path (tokenizer + T5 from the same file).

Opt-in: ONESTORY_COMFYUI_DIR=~/comfyui-harness/ComfyUI ~/comfyui-harness/venv/bin/python -m pytest \
    tests/integration/test_data_parity.py -s      (-s prints the measured max abs differences)
"""
from __future__ import annotations

import math

import pytest
import torch
from comfy_inprocess import import_comfy

pytestmark = pytest.mark.integration

import_comfy("the data-pipeline encoder parity tests")
import comfy.ops  # noqa: E402
import comfy.sd  # noqa: E402
from comfy.ldm.wan.vae import WanVAE  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from onestory_lab.data.encoders import UMT5TextEncoder, WanLatentEncoder  # noqa: E402

TOL = 1e-5


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(math.prod(p.shape[1:])))
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))   # gammas and biases away from 1/0
    return module


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    vae = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], image_channels=3, conv_out_channels=3, dropout=0.0)
    path = tmp_path_factory.mktemp("vae") / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in seeded(vae, 3).state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("frames,height,width", [(9, 48, 64), (17, 32, 32), (1, 40, 56), (11, 36, 52)])
def test_vae_latents_equal_comfyui(vae_file, frames, height, width):
    from comfy.utils import load_torch_file

    g = torch.Generator().manual_seed(frames * 1000 + height)
    pixels = torch.rand(frames, height, width, 3, generator=g)          # "t h w c" in [0, 1], as IMAGE
    theirs = comfy.sd.VAE(sd=load_torch_file(str(vae_file))).encode(pixels)[0].float()   # "c t h w"
    ours = WanLatentEncoder(vae_file).encode(pixels)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = (ours - theirs).abs().max().item()
    print(f"VAE {frames}x{height}x{width}: max |ours - ComfyUI| = {diff:.2e}, latent std {theirs.std():.3f}")
    assert diff <= TOL


def train_spiece(vocab: int = 300) -> bytes:
    """A tiny sentencepiece model with umT5's special ids (pad 0, eos 1, unk 2)."""
    import io
    import random

    import sentencepiece as spm

    words = ("a the man woman child dog city street beach forest walks runs looks turns red green blue "
             "same again close wide shot camera slowly smiles holds opens door car rain light night").split()
    rnd = random.Random(0)
    lines = [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) for _ in range(2000)]
    lines.append("".join(chr(c) for c in range(33, 127)))
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    return buf.getvalue()


UMT5_CFG = {"d_ff": 96, "d_kv": 16, "d_model": 64, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
            "layer_norm_epsilon": 1e-6, "model_type": "umt5", "num_heads": 4, "num_layers": 2,
            "relative_attention_num_buckets": 32}


@pytest.fixture(scope="module")
def umt5(tmp_path_factory):
    """(path, ComfyUI CLIP object) for one tiny umT5 file with an embedded tokenizer."""
    import comfy.text_encoders.sd3_clip
    import comfy.text_encoders.t5
    import comfy.text_encoders.wan
    import comfy.utils
    import sentencepiece as spm

    proto = train_spiece()
    cfg = {**UMT5_CFG, "vocab_size": spm.SentencePieceProcessor(model_proto=proto).get_piece_size()}
    model = seeded(comfy.text_encoders.t5.T5(cfg, torch.float32, "cpu", comfy.ops.manual_cast), 5)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8).clone()
    path = tmp_path_factory.mktemp("te") / "umt5_xxl_fp16.safetensors"
    save_file(sd, str(path))

    class Target:   # how ComfyUI's CLIPLoader assembles a Wan text encoder (type "wan")
        params: dict = {}
    loaded = comfy.utils.load_torch_file(str(path), safe_load=True)
    target = Target()
    target.clip = comfy.text_encoders.wan.te(**comfy.text_encoders.sd3_clip.t5_xxl_detect(loaded))
    target.tokenizer = comfy.text_encoders.wan.WanT5Tokenizer
    tokenizer_data = {"spiece_model": loaded.pop("spiece_model")}
    clip = comfy.sd.CLIP(target, tokenizer_data=tokenizer_data, parameters=comfy.utils.calculate_parameters(loaded),
                         state_dict=[loaded], model_options={"umt5xxl_model_config": cfg})
    return path, clip


@pytest.mark.parametrize("text", ["a man walks", "the same woman turns again, close shot; camera slowly opens the door",
                                  "Night. Rain on the street: 3 cars!"])
def test_umt5_features_equal_comfyui(umt5, text):
    path, clip = umt5
    theirs = clip.encode_from_tokens(clip.tokenize(text)).float()      # "1 512 d", zero rows after the tokens
    feats, mask = UMT5TextEncoder(path).encode(text)
    n = feats.shape[0]
    assert mask.all() and mask.shape == (n,)
    assert theirs.shape[1] >= n and torch.count_nonzero(theirs[0, n:]) == 0
    diff = (feats - theirs[0, :n]).abs().max().item()
    print(f"umT5 {n} tokens: max |ours - ComfyUI| = {diff:.2e}, feature std {theirs[0, :n].std():.3f}")
    assert diff <= TOL
