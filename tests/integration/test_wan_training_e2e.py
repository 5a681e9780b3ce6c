"""Issue #16's whole chain on tiny models, CPU: videos -> data pipeline -> FSDP LoRA training ->
the trained adapter + LoRA in a running ComfyUI -> a three-shot OneStory story.

1. Three short videos with hard cuts (PyAV), one caption per shot.
2. `python -m onestory_lab data shots` (PySceneDetect), `plan` (tiny random CLIP + DINOv2
   folders), `cache` (the tiny Wan 2.1 VAE the server loads, a tiny umT5 file whose features are
   4096 wide like umT5-XXL, so they fit the tiny Wan DiT's text embedding).
3. `torchrun --nproc_per_node 2 -m onestory_lab train --strategy fsdp --dit lora` on the tiny
   Wan 2.1 T2V file the server loads (make_tiny_models.py), a few steps on gloo.
4. adapter.safetensors -> models/onestory, lora.safetensors -> models/loras of the server.
5. UNETLoader -> LoraLoaderModelOnly -> OneStory Adapter Loader -> three OneStory Next Shot
   (route onestory), through POST /prompt.

Opt-in (needs the [data] extra's av, scenedetect, transformers, sentencepiece in ComfyUI's venv):
    PYTHONPATH=~/comfyui-harness/ComfyUI:.:lab ONESTORY_COMFYUI_DIR=~/comfyui-harness/ComfyUI \
        ~/comfyui-harness/venv/bin/python -m pytest tests/integration/test_wan_training_e2e.py -q
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

av = pytest.importorskip("av", reason="install onestory-lab[data] into ComfyUI's venv")
pytest.importorskip("scenedetect", reason="install onestory-lab[data] into ComfyUI's venv")
transformers = pytest.importorskip("transformers", reason="install onestory-lab[data] into ComfyUI's venv")
spm = pytest.importorskip("sentencepiece", reason="install onestory-lab[data] into ComfyUI's venv")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from client import error_message  # noqa: E402
from media import tiny_image_folders, tiny_umt5, write_video  # noqa: E402

W, H = 64, 48
SHOT = 16                          # frames per shot: above PySceneDetect's min_scene_len (15)
VIDEOS = {"three": 3, "two_a": 2, "two_b": 2}          # name -> shots
T2V = "onestory_tiny_wan21_t2v.safetensors"
VAE = "onestory_tiny_wan21_vae.safetensors"
ADAPTER, LORA = "e2e_trained_adapter.safetensors", "e2e_trained_lora.safetensors"
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, f"{' '.join(args[:4])} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def trained(comfy, tmp_path_factory):
    """Videos -> data shots/plan/cache -> torchrun FSDP LoRA training; -> (work dir, checkpoint dir)."""
    root = tmp_path_factory.mktemp("e2e")
    vids = root / "videos"
    vids.mkdir()
    for seed, (name, shots) in enumerate(VIDEOS.items()):
        write_video(vids / f"{name}.mp4", [SHOT] * shots, seed, W, H, speed=3)
    (root / "captions.jsonl").write_text("".join(
        json.dumps({"video": f"{name}.mp4", "shot": i, "caption": f"a man walks on the {name} street shot {i}"}) + "\n"
        for name, shots in VIDEOS.items() for i in range(shots)))
    folders = tiny_image_folders(root / "models", kinds=("clip", "dinov2"), vision_layers=1)
    clip, dino = folders["clip"], folders["dinov2"]
    # 4096 wide like umT5-XXL, so its features fit the tiny Wan DiT's text embedding
    tiny_umt5(root / "umt5_xxl_fp16.safetensors", d_model=4096, layers=1, d_ff=32, extra_words=["shot"])
    work, cache = root / "work", root / "cache"
    data = ["-m", "onestory_lab", "data"]
    _run([*data, "shots", str(vids), "--out", str(work), "--detector", "scenedetect", "--min-shot-frames", "9",
          "--quiet"], root)
    _run([*data, "plan", "--out", str(work), "--captions", str(root / "captions.jsonl"), "--clip", str(clip),
          "--dino", str(dino), "--frames", "9", "--width", "32", "--height", "32",
          "--min-related", "-1", "--max-duplicate", "1.01", "--quiet"], root)      # random encoders: keep all
    _run([*data, "cache", "--out", str(work), "--cache", str(cache), "--vae", str(comfy.base / "models" / "vae" / VAE),
          "--text-encoder", str(root / "umt5_xxl_fp16.safetensors"), "--shard-size", "2", "--quiet"], root)
    out = root / "run"
    _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          "-m", "onestory_lab", "train", "--out", str(out), "--strategy", "fsdp",
          "--backbone", str(comfy.base / "models" / "diffusion_models" / T2V), "--data", str(cache),
          "--dit", "lora", "--lora-rank", "4", "--lora-alpha", "8", "--steps", str(STEPS), "--batch-size", "1",
          "--decoupled-steps", "2", "--sel-width", "16", "--sel-queries", "2", "--sel-heads", "1", "--k", "2",
          "--text-len", "8", "--threads", "1", "--warmup-lr-steps", "0", "--log-every", "1", "--progress", "false"],
         root, timeout=900)
    return root, work, cache, out


def test_data_stages_write_shots_samples_and_a_4096_wide_cache(trained):
    root, work, cache, _ = trained
    shots = {Path(o["video"]).stem: o for o in map(json.loads, (work / "shots.jsonl").read_text().splitlines())}
    for name, n in VIDEOS.items():     # every hard cut found: n shots of SHOT frames each
        want = [(SHOT * i, SHOT * (i + 1)) for i in range(n)]
        assert [(s["start"], s["end"]) for s in shots[name]["shots"]] == want, shots[name]
    report = json.loads(_run(["-m", "onestory_lab", "data", "inspect", str(cache), "--check"], root))
    assert report["manifest"]["text_dim"] == 4096 and report["manifest"]["latent_channels"] == 16
    # "three" -> one real triplet; each two-shot video -> one inflated triplet
    print("\n[e2e] cache:", report["samples"], report["kinds"])
    assert report["samples"] == report["checked"] == 3 and report["kinds"].get("real3") == 1, report


def test_fsdp_lora_training_writes_a_trained_adapter_for_the_tiny_t2v(trained):
    _, _, _, out = trained
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, STEPS + 1))
    print("\n[e2e] losses:", [round(r["loss"], 4) for r in logs])
    assert all(math.isfinite(r["loss"]) for r in logs)
    ck = out / "checkpoint"
    lora = load_file(str(ck / "lora.safetensors"))
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))   # it trained
    with safe_open(str(ck / "adapter.safetensors"), "pt") as f:
        meta = f.metadata()
    from onestory.adapter import OneStoryAdapter

    adapter = OneStoryAdapter.load(ck / "adapter.safetensors")
    assert adapter.meta.backbone == "wan2.1-t2v" and adapter.meta.model_dim == 128 and adapter.meta.text_dim == 4096
    assert adapter.selector is not None, meta


def _story_workflow(k: int) -> dict:
    nodes: dict = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": T2V, "weight_dtype": "default"}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA,
                                                              "strength_model": 1.0}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"shift": 8.0, "model": ["2", 0]}},
        "5": {"class_type": "OneStoryTestTextEncode", "inputs": {"text": "blurry, low quality"}},
        "6": {"class_type": "OneStoryAdapterLoader", "inputs": {"adapter_name": ADAPTER, "model": ["4", 0]}},
        "7": {"class_type": "OneStoryNewStory", "inputs": {"reference_caption": "reference", "latent_width": 8,
                                                           "latent_height": 8}},
    }
    captions = ["a man walks on the street", "the same man turns on the beach", "a dog runs on the street"]
    story = ["7", 0]
    for i, caption in enumerate(captions):
        enc, shot = str(10 + 2 * i), str(11 + 2 * i)
        nodes[enc] = {"class_type": "OneStoryTestTextEncode", "inputs": {"text": caption}}
        nodes[shot] = {"class_type": "OneStoryNextShot", "inputs": {
            "caption": caption, "width": 64, "height": 64, "length": 5, "seed": 100 + i, "steps": 2, "cfg": 5.0,
            "sampler_name": "uni_pc", "scheduler": "simple", "k": k, "budget": 1.0, "scorer": "auto",
            "route": "onestory", "context_in_negative": True, "switch_at": 0.5, "memory_overrides": "",
            "model": ["4", 0], "positive": [enc, 0], "negative": ["5", 0], "story": story, "adapter": ["6", 0],
            "vae": ["3", 0]}}
        story = [shot, 1]
    nodes["20"] = {"class_type": "OneStoryPreviewMemory", "inputs": {"columns": 8, "memory_overrides": "",
                                                                     "story": story, "model": ["4", 0]}}
    return nodes


def test_trained_adapter_and_lora_run_a_three_shot_story_in_comfyui(comfy, trained):
    _, _, _, out = trained
    for folder, src, name in (("onestory", "adapter.safetensors", ADAPTER), ("loras", "lora.safetensors", LORA)):
        (comfy.base / "models" / folder).mkdir(exist_ok=True)
        shutil.copyfile(out / "checkpoint" / src, comfy.base / "models" / folder / name)
    info = comfy.get("/object_info/OneStoryAdapterLoader")["OneStoryAdapterLoader"]
    assert ADAPTER in json.dumps(info["input"]["required"]["adapter_name"]), "the copied adapter is not offered"
    wf = _story_workflow(k=2)
    log_start = comfy.log.stat().st_size
    entry = comfy.run(wf)
    assert "rejected" not in entry, entry.get("rejected")
    assert entry["status"]["status_str"] == "success", error_message(entry)
    log = comfy.log.read_text()[log_start:]
    assert "lora key not loaded" not in log, log[-3000:]
    outs = entry["outputs"]
    assert outs["20"]["onestory_story"][0]["num_shots"] == 3
    shots = [outs[str(11 + 2 * i)]["onestory_selection"][0] for i in range(3)]
    assert [s["shot"] for s in shots] == [0, 1, 2] and all(s["route"] == "onestory" for s in shots)
    # shots 1 and 2 selected memory with the adapter's trained Frame Selector ("auto" -> "learned";
    # the training-free adapter has no selector and would rank with a heuristic) and got context tokens
    print("\n[e2e] selections:", [(s.get("scorer"), s.get("kept"), s["context_tokens"]) for s in shots])
    for s in shots[1:]:
        assert s["scorer"] == "learned", s
        assert len(s["kept"]) == 2 and s["context_tokens"] > 0, s
