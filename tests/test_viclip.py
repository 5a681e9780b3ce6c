"""ViCLIP port (lab/onestory_lab/multishot/viclip*.py, clip_tokenizer.py): parity with the official code,
strict loading, and its place as `onestory evaluate`'s S-Align model."""
from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from onestory.errors import ShapeError
from onestory.metrics.encoders import CLIP_MEAN, CLIP_STD, MissingModel
from onestory_lab.multishot import clip_tokenizer, viclip_parity
from onestory_lab.multishot.models import load_models
from onestory_lab.multishot.viclip import ViCLIP, ViCLIPConfig, config_from_state, from_state_dict
from onestory_lab.multishot.viclip_encoder import PREPROCESS, ViCLIPEncoder, load_viclip, prepare

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURE = Path(__file__).parent / "data" / "viclip_parity.safetensors"

# A tiny BPE vocabulary in bpe_simple_vocab_16e6.txt.gz's format, and the ids that the official
# simple_tokenizer.py (InternVid's copy of OpenAI CLIP's, with ftfy and regex installed) gives for
# TEXTS with it: 256 byte symbols, 256 end-of-word byte symbols, the merges, then the two specials.
MERGES = ["t h", "th e</w>", "m a", "ma n</w>", "o l", "ol d</w>", "w a", "l k", "wa lk", "walk s</w>", "i n",
          "t o</w>", "in to</w>", "c a", "f Ã", "fÃ ©</w>", "l i", "b r", "li br", "a r", "ar y</w>", "libr ary</w>",
          "' s</w>", "r e", "re d</w>", "e s", "es t</w>"]
OFFICIAL_IDS = {
    "The old man walks into the library.": [513, 517, 515, 521, 524, 513, 533, 269],
    "the man's café — it's   RED!!": [513, 515, 534, 525, 527, 158, 222, 498, 72, 339, 534, 536, 0, 256],
    "  42 men,\tbest 3.5 cafés ": [275, 273, 76, 68, 333, 267, 65, 538, 274, 269, 276, 525, 526, 102, 338],
    "don’t <|endoftext|> x": [67, 78, 333, 6, 339, 540, 343],
    "ﬁne ＡＢＣ": [69, 522, 324, 64, 65, 322],
    "&amp;lt;b&amp;gt; naïve Ω 五": [283, 321, 285, 77, 64, 127, 107, 85, 324, 139, 487, 160, 118, 498],
}
SYNTH_VOCAB = 256 * 2 + len(MERGES) + 2


def write_vocab(path: Path) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(("#version: 0.2\n" + "\n".join(MERGES)).encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    return write_vocab(tmp_path_factory.mktemp("vocab") / "bpe.txt.gz")


@pytest.mark.parametrize("ftfy", ["as installed", "absent"])
def test_tokenizer_gives_the_official_ids(vocab, ftfy, monkeypatch):
    if ftfy == "absent":   # the fallback must give the same ids on curly quotes, ligatures, full width
        monkeypatch.setitem(sys.modules, "ftfy", None)
    tok = clip_tokenizer.Tokenizer(vocab)
    assert len(tok.encoder) == SYNTH_VOCAB
    for text, ids in OFFICIAL_IDS.items():
        assert tok.encode(text) == ids, text


def test_tokenizer_pads_and_truncates_like_clip(vocab):
    tok = clip_tokenizer.Tokenizer(vocab)
    text = "The old man walks into the library."
    ids = tok([text, "man"], context_length=6)
    body = OFFICIAL_IDS[text]
    assert ids.tolist()[0] == [tok.sot] + body[:4] + [tok.eot]        # cut, last id replaced by the end id
    assert ids.tolist()[1] == [tok.sot, 515, tok.eot, 0, 0, 0]
    with pytest.raises(ValueError, match="context length 6"):
        tok([text], context_length=6, truncate=False)
    assert tok.decode(body) == "the old man walks into the library . "


def test_pieces_equal_the_original_pattern():
    regex = pytest.importorskip("regex")   # the original's pattern needs it; installed with transformers
    pat = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                        regex.IGNORECASE)
    rng = random.Random(0)
    alphabet = [chr(c) for c in list(range(32, 127)) * 6 + list(range(0xA0, 0x250)) + list(range(0x370, 0x3D0))
                + list(range(0x2000, 0x2070)) + list(range(0x4E00, 0x4E20)) + [0x1C, 0x1F, 0x3000, 0x1F3AC, 0x2160]]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(500)]
    texts += ["it's we'll <|startoftext|>x<|endoftext|>", "x\x1cy\u3000z", "Ⅻ½²五٣"]
    for t in texts:
        assert clip_tokenizer.pieces(t.lower()) == pat.findall(t.lower()), repr(t)


def test_port_matches_the_official_embeddings():
    """tests/data/viclip_parity.safetensors: the official code's embeddings of a tiny ViCLIP with
    `seeded_state` weights (PYTHONPATH=PARENT python -m onestory_lab.multishot.viclip_parity --out FILE)."""
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    ref = load_file(str(FIXTURE))
    assert meta["weights"] == viclip_parity.WEIGHT_RULE and int(meta["seed"]) == viclip_parity.SEED
    assert json.loads(meta["config"]) == viclip_parity.TINY.__dict__
    model = viclip_parity.tiny_port()
    with torch.no_grad():
        v = model.encode_video(ref["video"])
        t = model.encode_ids(ref["ids"].long())
    assert v.shape == ref["video_features"].shape and t.shape == ref["text_features"].shape
    torch.testing.assert_close(v, ref["video_features"], atol=1e-4, rtol=0)
    torch.testing.assert_close(t, ref["text_features"], atol=1e-4, rtol=0)
    # the frames' order matters (temporal position embedding), so the check sees it
    assert (model.encode_video(ref["video"].flip(1)) - ref["video_features"]).abs().max() > 1e-3


def tiny_state(vocab_size: int = SYNTH_VOCAB) -> dict[str, torch.Tensor]:
    cfg = ViCLIPConfig(image_size=16, patch_size=8, frames=8, vision_width=64, vision_layers=1, embed_dim=32,
                       text_width=64, text_layers=1, context_length=32, vocab_size=vocab_size)
    return viclip_parity.seeded_state({k: v.shape for k, v in ViCLIP(cfg).state_dict().items()}, seed=3)


def write_viclip(folder: Path, state: dict[str, torch.Tensor] | None = None, vocab: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tiny_state() if state is None else state, str(folder / "viclip.safetensors"))
    if vocab:
        write_vocab(folder / "bpe_simple_vocab_16e6.txt.gz")
    return folder


def test_sizes_are_read_off_the_weights_and_loading_is_strict():
    state = tiny_state()
    cfg = config_from_state(state)
    assert (cfg.image_size, cfg.patch_size, cfg.frames, cfg.vision_layers, cfg.embed_dim, cfg.vocab_size) == (
        16, 8, 8, 1, 32, SYNTH_VOCAB)
    assert torch.equal(from_state_dict({f"module.{k}": v for k, v in state.items()}).temp, state["temp"])
    with pytest.raises(ValueError, match="unexpected keys 1: vision_encoder.extra"):
        from_state_dict({**state, "vision_encoder.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing keys 1: vision_encoder.ln_post.bias"):
        from_state_dict({k: v for k, v in state.items() if k != "vision_encoder.ln_post.bias"})
    with pytest.raises(ValueError, match=r"misshapen keys 1: text_encoder.ln_final.bias \(63,\) != \(64,\)"):
        from_state_dict({**state, "text_encoder.ln_final.bias": torch.zeros(63)})


def test_load_viclip_names_what_is_wrong(tmp_path):
    with pytest.raises(MissingModel, match="lacks viclip.safetensors and bpe_simple_vocab_16e6.txt.gz.*OpenGVLab/ViCLIP"):
        load_viclip(tmp_path / "none")
    with pytest.raises(MissingModel, match="lacks bpe_simple_vocab_16e6.txt.gz"):
        load_viclip(write_viclip(tmp_path / "partial", vocab=False))
    wrong = write_viclip(tmp_path / "wrong", state={"embeddings.weight": torch.zeros(2, 2)})
    with pytest.raises(MissingModel, match=r"not a ViCLIP state dict \(no vision_encoder.conv1.weight among its 1 keys"):
        load_viclip(wrong)
    extra = write_viclip(tmp_path / "extra", state={**tiny_state(), "text_encoder.extra": torch.zeros(1)})
    with pytest.raises(MissingModel, match="not a ViCLIP state dict .unexpected keys 1: text_encoder.extra"):
        load_viclip(extra)
    other_vocab = write_viclip(tmp_path / "vocab", state=tiny_state(vocab_size=SYNTH_VOCAB + 1))
    with pytest.raises(MissingModel, match=f"gives {SYNTH_VOCAB} token ids but the text tower has {SYNTH_VOCAB + 1}"):
        load_viclip(other_vocab)


def test_preprocessing_crops_the_centre_and_normalises():
    frames = torch.full((1, 3, 16, 32), 0.5)
    frames[..., :8] = 1.0     # left and right quarters differ from the centre
    frames[..., 24:] = 0.0
    x = prepare(frames, 16, PREPROCESS["vbench"])
    assert x.shape == (1, 3, 16, 16)
    expected = (0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x[0, :, :, 4:12].mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)
    squeezed = prepare(frames, 16, PREPROCESS["internvid"])   # whole frame kept: both bands visible
    assert squeezed.shape == (1, 3, 16, 16) and squeezed[0, 0, :, 0].mean() > squeezed[0, 0, :, -1].mean() + 1


def test_encoder_embeds_clips_and_captions(tmp_path):
    enc = load_viclip(write_viclip(tmp_path / "viclip"))
    assert enc.frames == 8 and enc.name.startswith("ViCLIP")
    clips = torch.rand(2, 8, 3, 20, 28)
    v = enc.encode_videos(clips)
    t = enc.encode_texts(["The old man walks into the library.", "the man's café"])
    assert v.shape == (2, 32) and t.shape == (2, 32)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(enc.encode_videos(clips[1:]), v[1:], atol=1e-5, rtol=0)
    with pytest.raises(ShapeError, match="expected 'n 8 3 h w'"):
        enc.encode_videos(torch.rand(1, 4, 3, 16, 16))
    with pytest.raises(ValueError, match="preprocess must be one of"):
        ViCLIPEncoder(enc.model, enc.tokenizer, preprocess="clip")


def test_load_models_prefers_viclip_and_falls_back(tmp_path):
    pytest.importorskip("transformers")   # the s-align folder is a transformers CLIP
    from media import tiny_image_folders  # tests/media.py

    root = tmp_path / "models"
    write_viclip(root / "viclip")
    models = load_models(root)
    assert isinstance(models.text, ViCLIPEncoder) and "text" not in dict(models.missing) and not models.notes
    assert "flow" in dict(models.missing)          # the other roles are loaded (or reported) as before

    tiny_image_folders(root, kinds=("clip",))["clip"].rename(root / "s-align")
    both = load_models(root)
    assert isinstance(both.text, ViCLIPEncoder)
    assert f"S-Align: {both.text.name} from {root / 'viclip'}; {root / 's-align'} is not used" in dict(both.notes)["text"]

    (root / "viclip" / "bpe_simple_vocab_16e6.txt.gz").unlink()   # a partial ViCLIP folder
    fallback = load_models(root)
    assert fallback.text is not None and not isinstance(fallback.text, ViCLIPEncoder)
    assert "text" not in dict(fallback.missing)
    assert "lacks bpe_simple_vocab_16e6.txt.gz" in dict(fallback.notes)["text"]
    assert "image-text model in" in dict(fallback.notes)["text"]

    (root / "s-align").rename(tmp_path / "elsewhere")
    none = load_models(root)
    assert none.text is None and "lacks bpe_simple_vocab_16e6.txt.gz" in none.why_missing("text")
    empty = load_models(tmp_path / "empty")
    assert "neither" in empty.why_missing("text") and "viclip" in empty.why_missing("text")


def test_evaluate_scores_s_align_with_viclip(tmp_path, capsys):
    from onestory_lab.cli import main
    from onestory_lab.multishot.videos import write_story

    stories = {"format": "onestory-multishot-bench", "version": 1, "name": "tiny", "task": "t2msv", "seed": 0,
               "stories": [{"id": "s1", "pattern": "consistency", "characters": {"A": "an old man"},
                            "places": {"P": "a library"}, "reference": None,
                            "shots": [{"caption": "The old man walks into the library.", "characters": ["A"],
                                       "place": "P"},
                                      {"caption": "the man's café", "characters": ["A"], "place": "P"}]}]}
    (tmp_path / "stories.json").write_text(json.dumps(stories))
    g = torch.Generator().manual_seed(0)
    write_story(tmp_path / "run", "s1", [torch.rand(10, 3, 24, 32, generator=g), torch.rand(5, 3, 24, 32, generator=g)])
    write_viclip(tmp_path / "models" / "viclip")
    (tmp_path / "models" / "s-align").mkdir()    # present but not used: the run says so
    assert main(["evaluate", "--stories", str(tmp_path / "stories.json"), "--videos", f"mine={tmp_path / 'run'}",
                 "--models", str(tmp_path / "models"), "--out", str(tmp_path / "report"), "--no-heatmaps"]) == 0
    err = capsys.readouterr().err
    assert "text:" not in err                      # S-Align is not among the missing
    assert "note: S-Align: ViCLIP" in err and "s-align is not used" in err
    res = json.loads((tmp_path / "report" / "results.json").read_text())["runs"]["mine"]
    name = load_viclip(tmp_path / "models" / "viclip").name
    assert res["aggregate"]["models"]["s_align"] == f"{name} (video-text)"
    per_shot = res["stories"][0]["per_shot"]["s_align"]
    assert len(per_shot) == 2 and all(-1 <= v <= 1 for v in per_shot) and per_shot[0] != per_shot[1]
    assert f"mine / s_align: {name} (video-text)" in (tmp_path / "report" / "results.md").read_text()
