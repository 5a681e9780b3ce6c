"""Rewrite an example API workflow to run on the tiny random models on CPU.

Only the parts that need full-size weights change: model file names, the umT5 / CLIP-vision
encoders (→ the test-only nodes in test_pack/), and sizes / step counts. The OneStory nodes,
samplers, VAE, graph structure and Load Image file names (the images the pack copies into
ComfyUI's input folder when it loads) are exactly those of the shipped workflow.
"""
from __future__ import annotations

import copy

TINY = {"width": 64, "height": 64, "length": 5, "steps": 2}
# Story Score's models -> the tiny ones make_tiny_models.py writes to models/onestory_eval
EVAL = {"dinov2-base": "onestory_tiny_dinov2", "rtdetr_r50vd": "onestory_tiny_detector",
        "siglip-base-patch16-224": "onestory_tiny_clip", "sa_0_4_vit_l_14_linear.safetensors":
        "onestory_tiny_aesthetic.safetensors"}
LATENT = {"latent_width": 8, "latent_height": 8}


def tinyfy(api: dict) -> dict:
    wf = copy.deepcopy(api)
    for nid, node in list(wf.items()):
        t, inputs = node["class_type"], node["inputs"]
        if t == "UNETLoader":
            kind = "i2v" if "i2v" in inputs["unet_name"] else "t2v"
            inputs["unet_name"] = f"onestory_tiny_wan21_{kind}.safetensors"
        elif t == "VAELoader":
            inputs["vae_name"] = "onestory_tiny_wan21_vae.safetensors"
        elif t in ("CLIPLoader", "CLIPVisionLoader"):
            del wf[nid]
        elif t == "OneStoryEvalModelLoader":
            inputs["model_name"] = EVAL[inputs["model_name"]]
            inputs["person_threshold"] = 0.0
        elif t == "CLIPTextEncode":
            node["class_type"] = "OneStoryTestTextEncode"
            inputs.pop("clip")
        elif t == "CLIPVisionEncode":
            node["class_type"] = "OneStoryTestClipVisionEncode"
            inputs.pop("clip_vision"), inputs.pop("crop", None)
        for k, v in TINY.items():
            if k in inputs and not isinstance(inputs[k], list):
                inputs[k] = v
        if t == "OneStoryNewStory":
            inputs.update(LATENT)
        if t in ("OneStoryNextShot", "OneStoryNextShots", "OneStoryStoryScore"):
            inputs.pop("clip_vision", None)
    return wf
