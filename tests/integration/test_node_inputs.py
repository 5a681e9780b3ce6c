"""Real CPU ComfyUI server (tiny models): trained adapter files, the keyframe route, bad inputs.

Opt-in (ONESTORY_COMFYUI_DIR), shares the session server of conftest.py. The workflows are
built here (API format); any required widget a node gains later is filled with its default
from /object_info, so these tests keep testing what they name.
"""
from __future__ import annotations

import json

import pytest
import torch

from client import error_message

T2V, I2V = "onestory_tiny_wan21_t2v.safetensors", "onestory_tiny_wan21_i2v.safetensors"
TI2V = "onestory_tiny_wan22_ti2v.safetensors"   # 48-channel latents (no tiny Wan 2.2 VAE: ComfyUI fixes its width)
TINY_DIM = 128      # make_tiny_models.DIM


def complete(comfy, wf: dict) -> dict:
    info = comfy.info if hasattr(comfy, "info") else comfy.get("/object_info")
    comfy.info = info
    for node in wf.values():
        for name, spec in info[node["class_type"]]["input"].get("required", {}).items():
            if name not in node["inputs"] and len(spec) > 1 and isinstance(spec[1], dict) and "default" in spec[1]:
                node["inputs"][name] = spec[1]["default"]
    return wf


def shot(model, positive, negative, story, adapter, seed, **kw) -> dict:
    inputs = dict(width=64, height=64, length=5, seed=seed, steps=2, cfg=3.0, sampler_name="euler",
                  scheduler="simple", k=8, budget=1.0, scorer="auto", route="onestory", context_in_negative=True,
                  switch_at=0.5, caption=f"shot {seed}", model=model, positive=positive, negative=negative,
                  story=story, adapter=adapter)
    inputs.update(kw)
    return {"class_type": "OneStoryNextShot", "inputs": inputs}


def story_wf(unet=T2V, adapter_name="training-free", first=None, second=None, story=None) -> dict:
    """model, vae, adapter; shot 1 on an empty (or loaded) story; shot 2 continues; preview as output."""
    wf = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "onestory_tiny_wan21_vae.safetensors"}},
        "3": {"class_type": "OneStoryTestTextEncode", "inputs": {"text": "blurry"}},
        "4": {"class_type": "OneStoryAdapterLoader", "inputs": {"model": ["1", 0], "adapter_name": adapter_name}},
        "5": story or {"class_type": "OneStoryNewStory", "inputs": {"reference_caption": "reference"}},
        "6": {"class_type": "OneStoryTestTextEncode", "inputs": {"text": "a woman in a red coat"}},
        "7": shot(["1", 0], ["6", 0], ["3", 0], ["5", 0], ["4", 0], 10, vae=["2", 0], **(first or {})),
        "8": {"class_type": "OneStoryTestTextEncode", "inputs": {"text": "the same woman, close-up"}},
        "9": shot(["1", 0], ["8", 0], ["3", 0], ["7", 1], ["4", 0], 11, vae=["2", 0], **(second or {})),
        "10": {"class_type": "OneStoryPreviewMemory", "inputs": {"columns": 4, "story": ["9", 1], "model": ["1", 0]}},
    }
    return wf


def run_ok(comfy, wf) -> dict:
    entry = comfy.run(complete(comfy, wf))
    assert "rejected" not in entry, entry.get("rejected")
    assert entry["status"]["status_str"] == "success", error_message(entry)
    return entry


def run_error(comfy, wf) -> str:
    entry = comfy.run(complete(comfy, wf))
    assert "rejected" not in entry, entry.get("rejected")
    assert entry["status"]["status_str"] == "error", "expected a node error"
    msg = error_message(entry)
    print(f"\n[node inputs] error: {msg}")
    return msg


def still_serving(comfy):
    entry = run_ok(comfy, story_wf())
    assert entry["outputs"]["10"]["onestory_story"][0]["num_shots"] == 2


# --- trained adapter files ---------------------------------------------------------------------------

def write_adapter(comfy, name: str, dim: int, channels: int = 16, family: str = "wan2.1-t2v",
                  time_gap: float = 1.0) -> None:
    from onestory.adapter import OneStoryAdapter
    from onestory.conditioner import AdaptiveConditioner
    from onestory.frame_selector import FrameSelector

    torch.manual_seed(0)
    cond = AdaptiveConditioner(channels, dim, time_gap=time_gap)
    sel = FrameSelector(channels, 4096, width=32, num_queries=4, heads=2, spatial_stride=4)
    folder = comfy.base / "models" / "onestory"
    folder.mkdir(exist_ok=True)
    OneStoryAdapter.from_modules(cond, sel, backbone=family, text_dim=4096, default_k=3).save(folder / name)


def test_trained_adapter_file_runs_learned_scorer(comfy):
    write_adapter(comfy, "tiny_t2v_adapter.safetensors", TINY_DIM)
    wf = story_wf(adapter_name="tiny_t2v_adapter.safetensors", second={"scorer": "learned", "k": 1})
    entry = run_ok(comfy, wf)
    payload = entry["outputs"]["9"]["onestory_selection"][0]
    print(f"\n[node inputs] learned selection: kept={payload['kept']} scores={payload['scores']} "
          f"context_tokens={payload['context_tokens']}")
    assert payload["scorer"] == "learned" and len(payload["kept"]) == 1 and payload["context_tokens"] > 0
    assert len(set(payload["scores"])) == len(payload["scores"]), "learned scores should differ per frame"
    assert entry["outputs"]["10"]["onestory_story"][0]["num_shots"] == 2


def test_adapter_for_another_backbone_names_both_dims(comfy):
    write_adapter(comfy, "wide_t2v_adapter.safetensors", 256)
    msg = run_error(comfy, story_wf(adapter_name="wide_t2v_adapter.safetensors"))
    assert "OneStoryAdapterLoader" in msg and "model_dim: adapter 256 vs model 128" in msg, msg
    assert "dim 256" in msg and "dim 128" in msg, msg
    still_serving(comfy)


# --- routes --------------------------------------------------------------------------------------------

def test_keyframe_route_on_i2v(comfy):
    wf = story_wf(unet=I2V, first={"route": "keyframe"}, second={"route": "keyframe", "scorer": "recency"})
    entry = run_ok(comfy, wf)
    payload = entry["outputs"]["9"]["onestory_selection"][0]
    assert payload["route"] == "keyframe" and payload["context_tokens"] == 0
    # recency ranks shot 1's last latent frame first: that is the keyframe
    assert payload["kept"][0] == 1, payload["kept"]
    assert entry["outputs"]["10"]["onestory_story"][0]["num_frames"] == 4


def test_wan22_ti2v_story_onestory_route(comfy):
    """Wan 2.2 TI2V-5B layout (48-channel latents, 16x spatial): two shots with context, no VAE needed."""
    wf = story_wf(unet=TI2V)
    for n in ("7", "9"):
        del wf[n]["inputs"]["vae"]
    entry = run_ok(comfy, wf)
    payload = entry["outputs"]["9"]["onestory_selection"][0]
    story = entry["outputs"]["10"]["onestory_story"][0]
    print(f"\n[node inputs] TI2V: context_tokens={payload['context_tokens']} kept={payload['kept']}")
    # 64x64 px / 16 = 4x4 latents: budget 1 frame = 4 (1,2,2)-tokens. Both kept frames start at one token
    # (coarse tiers); the finest tier for the first (4) + 1 for the second exceeds 4, so 2 tokens in all.
    assert sorted(payload["kept"]) == [0, 1] and payload["context_tokens"] == 2 and story["num_shots"] == 2 and story["num_frames"] == 4


def test_keyframe_route_refuses_t2v_model(comfy):
    msg = run_error(comfy, story_wf(unet=T2V, first={"route": "keyframe"}))
    assert "image-to-video" in msg and "'keyframe'" in msg and "16" in msg, msg


# --- bad inputs ------------------------------------------------------------------------------------------

def _stories(comfy):
    d = comfy.base / "input" / "stories"
    d.mkdir(exist_ok=True)
    return d


def test_story_from_another_vae_is_refused(comfy):
    from onestory.memory import MemoryBank

    bank = MemoryBank.empty().add_shot(torch.randn(48, 2, 4, 4), "wan 2.2 shot")
    bank.save(_stories(comfy) / "c48.safetensors")
    wf = story_wf(story={"class_type": "OneStoryLoadStory", "inputs": {"name": "stories/c48"}})
    msg = run_error(comfy, wf)
    assert "48-channel" in msg and "16-channel" in msg and "another VAE" in msg, msg
    still_serving(comfy)


def test_story_of_unknown_version_is_refused(comfy):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from onestory.memory import MemoryBank

    path = _stories(comfy) / "v99.safetensors"
    MemoryBank.empty().add_shot(torch.randn(16, 2, 8, 8), "shot").save(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in meta if k.startswith("onestory"))
    manifest = json.loads(meta[key])
    manifest["version"] = 99
    save_file(tensors, str(path), metadata={**meta, key: json.dumps(manifest)})
    wf = story_wf(story={"class_type": "OneStoryLoadStory", "inputs": {"name": "stories/v99"}})
    msg = run_error(comfy, wf)
    assert "OneStoryLoadStory" in msg and "version" in msg and "99" in msg, msg
    still_serving(comfy)


def test_k_larger_than_memory_is_clamped_with_a_note(comfy):
    entry = run_ok(comfy, story_wf(second={"k": 50}))
    payload = entry["outputs"]["9"]["onestory_selection"][0]
    assert payload["note"] == "K=50 is more than the 2 selectable memory frames; all of them were kept.", payload
    assert sorted(payload["kept"]) == [0, 1]


def test_non_wan_model_is_refused(comfy):
    """A real non-Wan MODEL (tiny Flux, loaded by UNETLoader) into Adapter Loader and into Apply Context."""
    from tiny import tinyfy

    from test_comfy_workflows import WF

    msg = run_error(comfy, story_wf(unet="onestory_tiny_flux_not_wan.safetensors"))
    assert "OneStoryAdapterLoader" in msg and "needs a Wan 2.1/2.2 MODEL" in msg and "got Flux" in msg, msg
    wf = tinyfy(json.loads((WF / "onestory_training_free.json").read_text()))
    apply_id = next(k for k, v in wf.items() if v["class_type"] == "OneStoryApplyContext")
    wf["99"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "onestory_tiny_flux_not_wan.safetensors",
                                                       "weight_dtype": "default"}}
    wf[apply_id]["inputs"]["model"] = ["99", 0]
    msg = run_error(comfy, wf)
    assert "OneStoryApplyContext" in msg and "got Flux" in msg and "Load Diffusion Model" in msg, msg
    still_serving(comfy)


def test_latent_into_apply_context_model_is_dropped_by_comfyui_validation(comfy):
    """ComfyUI validates link types (execution.validate_inputs: return_type_mismatch), but only for
    nodes that feed an output, and it still queues a prompt whose *other* outputs are valid: the
    bad branch is dropped and reported only in /prompt's node_errors, the rest runs and /history says
    success. Here Frame Selector (an output node: it shows thumbnails) does not depend on Apply
    Context, so the prompt 'succeeds' without ever running Apply Context."""
    from tiny import tinyfy

    from test_comfy_workflows import WF

    wf = tinyfy(json.loads((WF / "onestory_training_free.json").read_text()))
    apply_id = next(k for k, v in wf.items() if v["class_type"] == "OneStoryApplyContext")
    latent_id = next(k for k, v in wf.items() if v["class_type"] == "EmptyHunyuanLatentVideo")
    sel_id = next(k for k, v in wf.items() if v["class_type"] == "OneStoryFrameSelector")
    wf[apply_id]["inputs"]["model"] = [latent_id, 0]
    entry = comfy.run(complete(comfy, wf))
    assert "rejected" not in entry
    assert entry["status"]["status_str"] == "success"
    errors = entry["node_errors"][apply_id]["errors"]
    print(f"\n[node inputs] LATENT into Apply Context: /prompt node_errors = {errors}")
    assert errors[0]["type"] == "return_type_mismatch" and "LATENT" in errors[0]["details"]
    assert set(entry["outputs"]) == {sel_id}, entry["outputs"].keys()   # only the selector branch ran
