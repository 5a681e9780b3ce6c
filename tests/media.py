"""Test media shared by the data-pipeline tests and the end-to-end training test: short videos
with hard cuts, and tiny random-weight encoders in the file layouts users have. Callers
`pytest.importorskip` the [data] packages first (av, transformers, sentencepiece)."""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

COLOURS = [(200, 40, 40), (40, 190, 60), (40, 60, 210), (220, 200, 40), (150, 40, 200), (30, 180, 190)]
WORDS = "a the man woman dog street beach walks runs turns same again close red green blue".split()


def write_video(path: Path, lengths: list[int], seed: int, width: int, height: int, speed: int = 4) -> list[int]:
    """Textured coloured shots of `lengths` frames (hard cuts between them) with a moving square;
    returns the cut frames."""
    import av

    rng = np.random.default_rng(seed)
    box = av.open(str(path), "w")
    stream = box.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": "18"}
    cuts, t = [], 0
    for k, n in enumerate(lengths):
        colour = np.array(COLOURS[(seed * 2 + k) % len(COLOURS)])
        for i in range(n):
            f = np.empty((height, width, 3), np.int64)
            f[:] = colour
            x = (speed * i + 7 * k) % (width - 16)
            f[12:28, x:x + 16] = 255 - colour
            f = np.clip(f + rng.integers(-10, 10, f.shape), 0, 255).astype(np.uint8)
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                box.mux(p)
        t += n
        cuts.append(t)
    for p in stream.encode():
        box.mux(p)
    box.close()
    return cuts[:-1]


def tiny_image_folders(root: Path, kinds=("clip", "siglip", "dinov2"), vision_layers: int = 2) -> dict[str, Path]:
    """CLIP / SigLIP / DINOv2 folders with random weights, as save_pretrained writes them."""
    import transformers

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=2,
                  image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                max_position_embeddings=16, bos_token_id=0, pad_token_id=1, eos_token_id=2)
    build = {
        "clip": lambda: transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                                       projection_dim=16)),
        "siglip": lambda: transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision)),
        "dinov2": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**vision)),
    }
    out = {}
    for name in kinds:
        out[name] = root / name
        build[name]().save_pretrained(out[name])
    if "dinov2" in out:
        (out["dinov2"] / "preprocessor_config.json").write_text(json.dumps(
            {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.485, 0.456, 0.406],
             "image_std": [0.229, 0.224, 0.225]}))
    return out


def tiny_umt5(path: Path, d_model: int = 32, layers: int = 2, d_ff: int = 48, extra_words=()) -> None:
    """A umT5 encoder in ComfyUI's file layout, with its sentencepiece model embedded."""
    import sentencepiece as spm
    import transformers

    words = WORDS + list(extra_words)
    rnd = random.Random(0)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([" ".join(rnd.choice(words) for _ in range(8))
                                                           for _ in range(500)]),
                                   model_writer=buf, vocab_size=60, model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_proto=buf.getvalue()).get_piece_size()
    torch.manual_seed(1)
    cfg = transformers.UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=d_ff, num_layers=layers,
                                  num_heads=4, feed_forward_proj="gated-gelu")
    sd = {k: v.contiguous() for k, v in transformers.UMT5EncoderModel(cfg).state_dict().items()
          if k != "encoder.embed_tokens.weight"}
    sd["spiece_model"] = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).clone()
    save_file(sd, str(path))
