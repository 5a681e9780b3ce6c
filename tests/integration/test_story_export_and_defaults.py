"""What an artist hits in a fresh ComfyUI (real CPU server, tiny models, shipped example workflows):

* the exported video is the shots, frame for frame, each decoded as it was generated;
* re-queuing after changing shot 3 re-runs shots 3..N only, with the nodes' default seed control;
* the examples' Load Image files come with the pack (no upload);
* list / budget / size / adapter / story-file mistakes stop with an error naming the input and the fix.
"""
from __future__ import annotations

import copy
import json
import random

import torch

from client import error_message
from test_comfy_workflows import executed, ids_of, load
from test_node_inputs import complete, run_error, run_ok, still_serving, story_wf

FRAMES = 5          # tiny.TINY["length"]: 5 frames = 2 latent frames per shot


def _new_id(wf: dict) -> str:
    return str(max(map(int, wf)) + 1)


def _digests(entry: dict, node: str) -> dict:
    return entry["outputs"][node]["frames"][0]


def _webp_frames(comfy, image: dict) -> int:
    from PIL import Image

    path = comfy.base / image.get("type", "output") / image["subfolder"] / image["filename"]
    with Image.open(path) as im:
        return getattr(im, "n_frames", 1)


# --- issue 19.5: the example images ship with the pack -----------------------------------------------

def test_example_images_are_installed_into_a_fresh_input_folder(comfy):
    names = {"onestory_start.png", "onestory_keyframe.png"}
    assert names <= {p.name for p in (comfy.base / "input").iterdir()}
    options = comfy.get("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"]
    listed = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert names <= set(listed), listed


# --- issue 19.1: the exported video is the shots -----------------------------------------------------

def test_six_shot_story_video_is_the_shots_frame_for_frame(comfy):
    wf = load("onestory_wan21_i2v_story")
    shots = ids_of(wf, "OneStoryNextShot")
    assert len(shots) == 6
    decode = ids_of(wf, "OneStoryDecodeStory")[0]
    vae = ids_of(wf, "VAELoader")[0]
    story = wf[decode]["inputs"]["story"]
    probe = _new_id(wf)
    wf[probe] = {"class_type": "OneStoryTestFrameDigests", "inputs": {"images": [decode, 0]}}
    per_shot = []
    for i in range(len(shots)):                 # each shot alone through the stock VAE Decode
        lat, img, dig = (str(int(_new_id(wf)) + j) for j in range(3))
        wf[lat] = {"class_type": "OneStoryStoryToLatent", "inputs": {"story": story, "include_reference": False,
                                                                     "shot": i}}
        wf[img] = {"class_type": "VAEDecode", "inputs": {"samples": [lat, 0], "vae": [vae, 0]}}
        wf[dig] = {"class_type": "OneStoryTestFrameDigests", "inputs": {"images": [img, 0]}}
        per_shot.append(dig)
    lat, img, stock = (str(int(_new_id(wf)) + j) for j in range(3))     # the concatenation, for contrast
    wf[lat] = {"class_type": "OneStoryStoryToLatent", "inputs": {"story": story, "include_reference": False}}
    wf[img] = {"class_type": "VAEDecode", "inputs": {"samples": [lat, 0], "vae": [vae, 0]}}
    wf[stock] = {"class_type": "OneStoryTestFrameDigests", "inputs": {"images": [img, 0]}}

    entry = comfy.run(wf)
    assert entry.get("status", {}).get("status_str") == "success", (entry.get("rejected"), error_message(entry))
    video = _digests(entry, probe)
    shot_frames = [_digests(entry, d) for d in per_shot]
    print(f"\n[export] Decode Story: {video['count']} frames; shots: {[s['count'] for s in shot_frames]}; "
          f"VAE Decode of the concatenation: {_digests(entry, stock)['count']} frames")
    assert video["count"] == 6 * FRAMES
    assert [s["count"] for s in shot_frames] == [FRAMES] * 6
    assert video["digests"] == [d for s in shot_frames for d in s["digests"]]     # frame for frame
    counts = entry["outputs"][decode]["onestory_frame_counts"][0]
    assert counts == {"frame_counts": [FRAMES] * 6, "total": 6 * FRAMES}
    webp = ids_of(wf, "SaveAnimatedWEBP")[0]
    assert _webp_frames(comfy, entry["outputs"][webp]["images"][0]) == 6 * FRAMES
    # The stock path this replaces: one clip of 12 latent frames = 1 + 11*4 = 45 frames.
    assert _digests(entry, stock)["count"] == 1 + (6 * 2 - 1) * 4


# --- issue 19.2: re-queue after an edit re-runs only the later shots -----------------------------------

def _after_generate(wf: dict, info: dict, rng: random.Random) -> dict:
    """What the frontend does to the widgets after a queue, per each input's control_after_generate
    mode (a seed named 'seed' gets 'randomize' when the node does not say)."""
    out = copy.deepcopy(wf)
    for node in out.values():
        spec = info[node["class_type"]]["input"].get("required", {})
        for name, s in spec.items():
            opts = s[1] if len(s) > 1 and isinstance(s[1], dict) else {}
            mode = opts.get("control_after_generate", name in ("seed", "noise_seed") or None)
            if not mode or name not in node["inputs"] or isinstance(node["inputs"][name], list):
                continue
            mode = mode if isinstance(mode, str) else "randomize"
            v = node["inputs"][name]
            node["inputs"][name] = {"fixed": v, "increment": v + 1, "decrement": v - 1,
                                    "randomize": rng.randrange(2 ** 32)}[mode]
    return out


def test_seed_control_defaults_to_fixed(comfy):
    info = comfy.get("/object_info")
    for node in ("OneStoryNextShot", "OneStoryNextShots"):
        seed = info[node]["input"]["required"]["seed"]
        assert seed[1]["control_after_generate"] == "fixed", seed


def test_requeue_after_changing_shot_3_reruns_shots_3_to_n(comfy):
    info = comfy.get("/object_info")
    wf = load("onestory_wan21_t2v_story")
    shots = ids_of(wf, "OneStoryNextShot")
    first = comfy.run(wf)
    assert first["status"]["status_str"] == "success", error_message(first)
    wf2 = _after_generate(wf, info, random.Random(0))
    third = shots[2]
    text = wf2[third]["inputs"]["positive"][0]
    wf2[text]["inputs"]["text"] = wf2[third]["inputs"]["caption"] = "the barista, now in a green apron"
    second = comfy.run(wf2)
    assert second["status"]["status_str"] == "success", error_message(second)
    ran = set(executed(second, wf2))
    print(f"\n[requeue] shots {shots}: executed {sorted(ran & set(shots), key=int)}")
    assert set(shots[2:]) <= ran and not set(shots[:2]) & ran, ran


# --- issue 19.3, 19.4, 19.6, 19.7: mistakes give errors naming the input and the fix -----------------

def _caption_list(n_text: int | None = None, n_caption: int | None = None) -> dict:
    """The caption-list example with `n_text` captions encoded and `n_caption` as the caption list."""
    wf = load("onestory_caption_list")
    shots = ids_of(wf, "OneStoryNextShots")[0]
    lst = ids_of(wf, "CreateList")[0]
    enc = wf[shots]["inputs"]["positive"][0]
    if n_text == 1:
        wf[enc]["inputs"]["text"] = "one caption for all"
    if n_caption is not None:
        short = _new_id(wf)
        items = {k: v for k, v in wf[lst]["inputs"].items() if k.startswith("inputs.")}
        wf[short] = {"class_type": "CreateList", "inputs": dict(list(items.items())[:n_caption])}
        wf[shots]["inputs"]["caption"] = [short, 0]
    return wf


def test_next_shots_list_length_mismatches_are_errors(comfy):
    msg = run_error(comfy, _caption_list(n_text=1))
    assert "positive has 1 entry" in msg and "caption has 4" in msg and "same caption list" in msg, msg
    msg = run_error(comfy, _caption_list(n_caption=2))
    assert "positive has 4 entries" in msg and "caption has 2" in msg, msg
    still_serving(comfy)


def test_budget_zero_is_refused_and_k_zero_is_visible_no_memory(comfy):
    msg = run_error(comfy, story_wf(second={"budget": 0.0}))
    assert "OneStoryNextShot" in msg and "budget 0" in msg and "k to 0" in msg, msg
    entry = run_ok(comfy, story_wf(second={"budget": 0.0, "k": 0}))
    payload = entry["outputs"]["9"]["onestory_selection"][0]
    assert payload["kept"] == [] and payload["context_tokens"] == 0, payload
    wf = load("onestory_training_free")
    wf[ids_of(wf, "OneStoryAdaptiveConditioner")[0]]["inputs"]["budget"] = 0.0
    msg = run_error(comfy, wf)
    assert "OneStoryAdaptiveConditioner" in msg and "budget 0" in msg and "k to 0" in msg, msg


def test_size_mismatch_names_width_and_height(comfy):
    msg = run_error(comfy, story_wf(second={"width": 128}))
    assert "width 128 and height 64 pixels give latent frames of width 16 and height 8" in msg, msg
    assert "Set width 64 and height 64" in msg, msg


def test_training_free_adapter_from_another_model_says_connect_the_same_model(comfy):
    wf = story_wf()
    wf["11"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "onestory_tiny_wan21_i2v.safetensors",
                                                       "weight_dtype": "default"}}
    wf["4"]["inputs"]["model"] = ["11", 0]
    msg = run_error(comfy, wf)
    assert "'training-free'" in msg and "connect the same MODEL to the Adapter Loader and to the 'model' input" in msg, msg
    assert "wan2.1-i2v" in msg and "wan2.1-t2v" in msg, msg


def test_story_file_with_overwritten_bytes_is_refused(comfy):
    from onestory.memory import MemoryBank

    folder = comfy.base / "input" / "stories"
    folder.mkdir(exist_ok=True)
    path = folder / "tampered.safetensors"
    MemoryBank.empty().add_shot(torch.randn(16, 2, 8, 8), "shot").save(path)
    data = bytearray(path.read_bytes())
    data[8 + int.from_bytes(data[:8], "little") + 2] ^= 0x10    # a finite value, same size, header intact
    path.write_bytes(bytes(data))
    msg = run_error(comfy, story_wf(story={"class_type": "OneStoryLoadStory", "inputs": {"name": "stories/tampered"}}))
    assert "OneStoryLoadStory" in msg and "sha256 digest" in msg and "backup" in msg, msg
    still_serving(comfy)


def test_version_1_story_file_still_loads_and_continues(comfy):
    from safetensors.torch import save as st_save

    from onestory.memory import MANIFEST_KEY, MemoryBank

    bank = MemoryBank.empty().add_shot(torch.randn(16, 2, 8, 8), "shot from an older OneStory")
    manifest = {**bank._manifest(), "version": 1}
    folder = comfy.base / "input" / "stories"
    folder.mkdir(exist_ok=True)
    (folder / "v1.safetensors").write_bytes(st_save({"frames": bank.frames},
                                                    metadata={MANIFEST_KEY: json.dumps(manifest)}))
    entry = run_ok(comfy, story_wf(story={"class_type": "OneStoryLoadStory", "inputs": {"name": "stories/v1"}}))
    assert entry["outputs"]["10"]["onestory_story"][0]["num_shots"] == 3
