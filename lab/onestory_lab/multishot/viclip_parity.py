"""Parity of the ViCLIP port with the official code; writes the regression fixture of the tests.

    PYTHONPATH=PARENT python -m onestory_lab.multishot.viclip_parity [--out tests/data/viclip_parity.safetensors]

PARENT holds a folder `viclip` with the official `viclip.py`, `viclip_vision.py`, `viclip_text.py`,
`simple_tokenizer.py` and `bpe_simple_vocab_16e6.txt.gz` (OpenGVLab/InternVideo's `Data/InternVid/viclip/`,
so PARENT = `Data/InternVid`; or the files of the Hugging Face repo OpenGVLab/ViCLIP put in a folder so
named). Its `ftfy` and `regex` imports must be installed; its imports for training and for reading video
files (`timm`, `pkg_resources`, `cv2`) are stubbed when absent.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import types
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_tokenizer import Tokenizer
from .viclip import ViCLIP, ViCLIPConfig

TINY = ViCLIPConfig(image_size=16, patch_size=4, frames=8, vision_width=128, vision_layers=2, embed_dim=64,
                    text_width=128, text_layers=2, context_length=32, vocab_size=49408)
SEED = 0
CAPTIONS = (
    "Wide shot, an old man in a red hoodie walks into a quiet library.",
    "Close-up: the same man's hands turn a page; he doesn't look up, it's 3 a.m.",
    "A very long caption that keeps going well past the thirty-two token context of ViCLIP so that the "
    "tokenizer has to cut it and put the end token last, as the original does.",
)
WEIGHT_RULE = ("one torch.Generator seeded with SEED; for each key in sorted order randn(shape) * std, std = "
               "prod(shape[1:]) ** -0.5 for tensors of 2 or more dims, 0.1 otherwise; keys containing 'ln_' "
               "and ending '.weight' get + 1")


def seeded_state(shapes: Mapping[str, torch.Size], seed: int = SEED) -> dict[str, Tensor]:
    """Deterministic weights for every key (`WEIGHT_RULE`)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        std = math.prod(shape[1:]) ** -0.5 if len(shape) >= 2 else 0.1
        v = torch.randn(shape, generator=g) * std
        out[k] = v + 1 if "ln_" in k and k.endswith(".weight") else v
    return out


def seeded_video(seed: int = SEED, cfg: ViCLIPConfig = TINY) -> Tensor:
    """Normalised frames "2 t 3 h w" (what the vision tower takes)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(2, cfg.frames, 3, cfg.image_size, cfg.image_size, generator=g)


def tiny_port(seed: int = SEED) -> ViCLIP:
    model = ViCLIP(TINY)
    model.load_state_dict(seeded_state({k: v.shape for k, v in model.state_dict().items()}, seed), strict=True)
    return model.eval()


def _stub_unused_imports() -> None:
    """The official files import timm (DropPath, register_model), pkg_resources and cv2 at module
    level for training and video reading; none of it runs here."""
    try:
        import timm  # noqa: F401
    except ImportError:
        class DropPath(nn.Module):
            def __init__(self, p: float = 0.0):
                super().__init__()
                self.p = p

            def forward(self, x: Tensor) -> Tensor:
                if self.training and self.p > 0:
                    raise RuntimeError("stub DropPath: training mode is not supported")
                return x

        timm = types.ModuleType("timm")
        models = types.ModuleType("timm.models")
        layers = types.ModuleType("timm.models.layers")
        registry = types.ModuleType("timm.models.registry")
        layers.DropPath = DropPath
        registry.register_model = lambda f: f
        timm.models, models.layers, models.registry = models, layers, registry
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                            "timm.models.registry": registry})
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version
        stub = types.ModuleType("pkg_resources")
        stub.packaging = packaging
        sys.modules["pkg_resources"] = stub
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")


def official_tiny(seed: int = SEED) -> tuple[nn.Module, types.ModuleType]:
    """The official ViCLIP class (package `viclip` on PYTHONPATH), its two builders swapped for TINY
    sizes, with `seeded_state` weights; and the official simple_tokenizer module."""
    _stub_unused_imports()
    try:
        from viclip import simple_tokenizer
        from viclip import viclip as vc
        from viclip import viclip_text as vt
        from viclip import viclip_vision as vv
    except ImportError as e:
        raise SystemExit(f"the official ViCLIP files are not importable as package 'viclip' ({e}); run with "
                         "PYTHONPATH=PARENT, PARENT holding the folder viclip/ (InternVideo's Data/InternVid)") from None
    c = TINY

    def vision(**kw):
        return vv.VisionTransformer(input_resolution=c.image_size, patch_size=c.patch_size, width=c.vision_width,
                                    layers=c.vision_layers, heads=c.vision_heads, output_dim=c.embed_dim,
                                    kernel_size=kw["kernel_size"], num_frames=kw["num_frames"],
                                    drop_path=kw["drop_path"], checkpoint_num=kw["checkpoint_num"]).eval()

    def text(**kw):
        return vt.CLIP_TEXT(c.embed_dim, kw["context_length"], kw["vocab_size"], c.text_width, c.text_heads,
                            c.text_layers, kw["checkpoint_num"]).eval()

    vc.clip_joint_l14, vc.clip_text_l14 = vision, text
    model = vc.ViCLIP(size="l", pretrain=None)
    model.load_state_dict(seeded_state({k: v.shape for k, v in model.state_dict().items()}, seed), strict=True)
    return model.eval(), simple_tokenizer


def tokenizer_texts(seed: int = SEED, n: int = 3000) -> list[str]:
    """The benchmark captions (t2msv, i2msv) and `n` seeded random strings of ASCII, Latin, Greek,
    punctuation, CJK and emoji characters."""
    from .benchmark import make_benchmark

    texts = [sh.caption for task in ("t2msv", "i2msv") for st in make_benchmark(task).stories for sh in st.shots]
    rng = random.Random(seed)
    alphabet = [chr(c) for c in list(range(32, 127)) * 8 + list(range(0xA0, 0x2FF)) + list(range(0x370, 0x3FF))
                + list(range(0x2000, 0x2070)) + list(range(0x4E00, 0x4E40)) + [0x1F600, 0x1F3AC, 0xFB01, 0xFF21]]
    return texts + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def tokenizer_agreement(simple_tokenizer: types.ModuleType) -> dict[str, str]:
    """Share of texts with identical ids, official tokenizer vs the port, with and without ftfy."""
    official = simple_tokenizer.SimpleTokenizer()
    port = Tokenizer(simple_tokenizer.default_bpe())
    texts = tokenizer_texts()
    captions = len(texts) - 3000
    out = {}
    for ftfy in ("installed", "absent"):
        saved = sys.modules.get("ftfy")
        if ftfy == "absent":
            sys.modules["ftfy"] = None   # the port falls back; the official module keeps its own import
        port.cache = {k: v for k, v in port.cache.items() if k.startswith("<|")}
        try:
            same = [official.encode(t) == port.encode(t) for t in texts]
        finally:
            if saved is not None:
                sys.modules["ftfy"] = saved
            else:
                sys.modules.pop("ftfy", None)
        out[f"tokenizer, ftfy {ftfy}"] = (f"{sum(same[:captions])}/{captions} benchmark captions, "
                                          f"{sum(same[captions:])}/{len(texts) - captions} random strings identical")
    return out


def run(out: Path | None) -> dict:
    torch.set_num_threads(1)
    ref, simple_tokenizer = official_tiny()
    port = tiny_port()
    if sorted(ref.state_dict()) != sorted(port.state_dict()):
        raise SystemExit("key sets differ: " + str(set(ref.state_dict()) ^ set(port.state_dict())))
    video = seeded_video()
    tok = Tokenizer(simple_tokenizer.default_bpe())
    with torch.no_grad():
        ref_ids = ref.text_encoder.tokenize(list(CAPTIONS), context_length=ref.max_txt_l)
        ref_v = ref.encode_vision(video, test=True).float()
        ref_t = ref.encode_text(list(CAPTIONS)).float()
        ref_vn = ref.get_vid_features(video)
        ref_tn = torch.cat([ref.get_text_features(c, None, {}) for c in CAPTIONS])
        ids = tok(list(CAPTIONS), TINY.context_length)
        v, t = port.encode_video(video), port.encode_ids(ids)
    report = {
        "token ids equal": bool(torch.equal(ids, ref_ids.long())),
        "video max abs diff (raw)": (v - ref_v).abs().max().item(),
        "text max abs diff (raw)": (t - ref_t).abs().max().item(),
        "video max abs diff (normalised)": (F.normalize(v, dim=-1) - ref_vn).abs().max().item(),
        "text max abs diff (normalised)": (F.normalize(t, dim=-1) - ref_tn).abs().max().item(),
        "video embedding max abs": ref_v.abs().max().item(),
        "text embedding max abs": ref_t.abs().max().item(),
        **tokenizer_agreement(simple_tokenizer),
    }
    if out is not None:
        from safetensors.torch import save_file
        meta = {"what": "official ViCLIP outputs for the tiny config; weights regenerated by seeded_state",
                "config": json.dumps(TINY.__dict__), "seed": str(SEED), "weights": WEIGHT_RULE,
                "captions": json.dumps(CAPTIONS), "torch": torch.__version__,
                "command": "PYTHONPATH=PARENT python -m onestory_lab.multishot.viclip_parity --out FILE"}
        save_file({"video": video.contiguous(), "ids": ref_ids.to(torch.int32).contiguous(),
                   "video_features": ref_v.contiguous(), "text_features": ref_t.contiguous()}, str(out), metadata=meta)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the test fixture here")
    args = ap.parse_args(argv)
    for k, v in run(args.out).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
