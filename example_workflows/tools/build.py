"""Generates every example workflow in both formats from one spec, so they cannot drift.

    python example_workflows/tools/build.py      # rewrites example_workflows/*.json, api/*.json, *.png,
                                                 # and the example input images in input/

UI format = what the frontend saves (nodes/links/widgets_values, positional widgets); API format =
what POST /prompt takes. Widget order for OneStory nodes comes from WIDGETS below, which
tests/test_nodes_contract.py checks against the node schemas. Model names are those of the
Comfy-Org repackaged Wan releases (see docs/nodes.md). The images the workflows load
(example_workflows/input/*.png) are drawn here too; the pack copies them into ComfyUI's input
folder when it loads (nodes/glue/example_inputs.py), so every example runs without an upload.
"""
from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NEXT = ["caption", "width", "height", "length", "seed", "steps", "cfg", "sampler_name", "scheduler", "k",
        "budget", "scorer", "route", "context_in_negative", "switch_at"]
# Widget names in schema order (core nodes: as in ComfyUI 0.33.0 /object_info).
WIDGETS = {
    "UNETLoader": ["unet_name", "weight_dtype"], "VAELoader": ["vae_name"], "CLIPLoader": ["clip_name", "type", "device"],
    "CLIPTextEncode": ["text"], "LoadImage": ["image", "upload"], "VAEDecode": [],
    "SaveAnimatedWEBP": ["filename_prefix", "fps", "lossless", "quality", "method"],
    "ModelSamplingSD3": ["shift"], "CLIPVisionLoader": ["clip_name"], "CLIPVisionEncode": ["crop"],
    "KSampler": ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "EmptyHunyuanLatentVideo": ["width", "height", "length", "batch_size"],
    "CreateList": [], "PrimitiveStringMultiline": ["value"],
    "OneStoryAdapterLoader": ["adapter_name"], "OneStoryNewStory": ["reference_caption", "latent_width", "latent_height"],
    "OneStoryAddShot": ["caption", "source"], "OneStoryEditMemory": ["action", "shot", "frame"],
    "OneStoryFrameSelector": ["k", "scorer", "memory_overrides"], "OneStoryAdaptiveConditioner": ["budget"],
    "OneStoryApplyContext": ["context_in_negative"], "OneStoryNextShot": NEXT + ["memory_overrides"],
    "OneStoryNextShots": NEXT, "OneStorySaveStory": ["name"], "OneStoryLoadStory": ["name"],
    "OneStoryPreviewMemory": ["columns", "memory_overrides"],
    "OneStoryStoryToLatent": ["include_reference", "shot"], "OneStoryDecodeStory": ["include_reference"],
    "OneStoryEvalModelLoader": ["model_name", "person_threshold"],
    "OneStoryStoryScore": ["story_annotation", "shot_lengths", "fps"],
}
SEED_WIDGETS = {("KSampler", "seed"), ("OneStoryNextShot", "seed"), ("OneStoryNextShots", "seed")}
OUTPUTS = {
    "UNETLoader": ["MODEL"], "VAELoader": ["VAE"], "CLIPLoader": ["CLIP"], "CLIPTextEncode": ["CONDITIONING"],
    "LoadImage": ["IMAGE", "MASK"], "VAEDecode": ["IMAGE"], "SaveAnimatedWEBP": [], "ModelSamplingSD3": ["MODEL"],
    "CLIPVisionLoader": ["CLIP_VISION"], "CLIPVisionEncode": ["CLIP_VISION_OUTPUT"], "KSampler": ["LATENT"],
    "EmptyHunyuanLatentVideo": ["LATENT"], "CreateList": ["*"], "PrimitiveStringMultiline": ["STRING"],
    "OneStoryAdapterLoader": ["ONESTORY_ADAPTER"], "OneStoryNewStory": ["ONESTORY_STORY"],
    "OneStoryAddShot": ["ONESTORY_STORY"], "OneStoryEditMemory": ["ONESTORY_STORY"],
    "OneStoryFrameSelector": ["ONESTORY_SELECTION"], "OneStoryAdaptiveConditioner": ["ONESTORY_CONTEXT"],
    "OneStoryApplyContext": ["MODEL", "MODEL"], "OneStoryNextShot": ["LATENT", "ONESTORY_STORY", "ONESTORY_SELECTION"],
    "OneStoryNextShots": ["LATENT", "ONESTORY_STORY"], "OneStorySaveStory": [], "OneStoryLoadStory": ["ONESTORY_STORY"],
    "OneStoryPreviewMemory": ["IMAGE"], "OneStoryStoryToLatent": ["LATENT"], "OneStoryDecodeStory": ["IMAGE", "STRING"],
    "OneStoryEvalModelLoader": ["ONESTORY_EVAL_MODEL"], "OneStoryStoryScore": ["STRING"] + ["FLOAT"] * 9 + ["IMAGE"],
}
API_SKIP = {("LoadImage", "upload")}   # frontend-only widget


class Graph:
    def __init__(self, title: str) -> None:
        self.title, self.nodes, self.links = title, [], []

    def add(self, type_: str, widgets: dict | None = None, links: dict | None = None, col: int = 0, row: int = 0) -> int:
        nid = len(self.nodes) + 1
        self.nodes.append({"id": nid, "type": type_, "widgets": dict(widgets or {}), "links": dict(links or {}),
                           "pos": [40 + col * 360, 40 + row * 260]})
        return nid

    def api(self) -> dict:
        out = {}
        for n in self.nodes:
            inputs = {k: v for k, v in n["widgets"].items() if (n["type"], k) not in API_SKIP}
            inputs.update({k: [str(src), slot] for k, (src, slot) in n["links"].items()})
            out[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n["type"]}}
        return out

    def ui(self) -> dict:
        links, nodes = [], []
        outs = {n["id"]: [[] for _ in OUTPUTS[n["type"]]] for n in self.nodes}
        for n in self.nodes:
            for slot_in, (name, (src, slot)) in enumerate(n["links"].items()):
                lid = len(links) + 1
                src_type = OUTPUTS[self.nodes[src - 1]["type"]][slot]
                links.append([lid, src, slot, n["id"], slot_in, src_type])
                outs[src][slot].append(lid)
        for order, n in enumerate(self.nodes):
            t = n["type"]
            inputs = []
            for name, (src, slot) in n["links"].items():
                lid = next(l[0] for l in links if l[3] == n["id"] and l[1] == src and l[2] == slot
                           and l[4] == list(n["links"]).index(name))
                entry = {"name": name, "type": OUTPUTS[self.nodes[src - 1]["type"]][slot], "link": lid}
                if name in WIDGETS[t]:
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            values = []
            for w in WIDGETS[t]:
                if w in n["widgets"]:
                    values.append(n["widgets"][w])
                elif w in n["links"]:
                    values.append("")
                else:
                    continue
                if (t, w) in SEED_WIDGETS:
                    values.append("fixed")
            nodes.append({"id": n["id"], "type": t, "pos": n["pos"], "size": [320, 200], "flags": {}, "order": order,
                          "mode": 0, "inputs": inputs,
                          "outputs": [{"name": ty, "type": ty, "links": outs[n["id"]][i], "slot_index": i}
                                      for i, ty in enumerate(OUTPUTS[t])],
                          "properties": {"Node name for S&R": t}, "widgets_values": values})
        return {"last_node_id": len(self.nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": {"onestory_title": self.title}, "version": 0.4}


NEG = "blurry, low quality, distorted, static, watermark, text"


def loaders(g: Graph, unet: str, clip_vision: bool = False) -> dict:
    ids = {"unet": g.add("UNETLoader", {"unet_name": unet, "weight_dtype": "default"}, row=0),
           "clip": g.add("CLIPLoader", {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan",
                                        "device": "default"}, row=1),
           "vae": g.add("VAELoader", {"vae_name": "wan_2.1_vae.safetensors"}, row=2)}
    ids["model"] = g.add("ModelSamplingSD3", {"shift": 8.0}, {"model": (ids["unet"], 0)}, row=3)
    ids["neg"] = g.add("CLIPTextEncode", {"text": NEG}, {"clip": (ids["clip"], 0)}, row=4)
    ids["adapter"] = g.add("OneStoryAdapterLoader", {"adapter_name": "training-free"}, {"model": (ids["model"], 0)}, row=5)
    if clip_vision:
        ids["cv"] = g.add("CLIPVisionLoader", {"clip_name": "clip_vision_h.safetensors"}, row=6)
    return ids


def shot_widgets(caption: str, seed: int, **over) -> dict:
    w = {"caption": caption, "width": 832, "height": 480, "length": 33, "seed": seed, "steps": 20, "cfg": 5.0,
         "sampler_name": "uni_pc", "scheduler": "simple", "k": 8, "budget": 1.0, "scorer": "auto",
         "route": "onestory", "context_in_negative": True, "switch_at": 0.5}
    w.update(over)
    return w


def chain(g: Graph, ids: dict, story: tuple, captions: list[str], seed: int, col0: int = 1, model_low=None,
          first_extra: dict | None = None, **over) -> tuple:
    for i, cap in enumerate(captions):
        pos = g.add("CLIPTextEncode", {"text": cap}, {"clip": (ids["clip"], 0)}, col=col0 + i, row=0)
        links = {"model": (ids["model"], 0), "positive": (pos, 0), "negative": (ids["neg"], 0), "story": story,
                 "adapter": (ids["adapter"], 0), "vae": (ids["vae"], 0)}
        if model_low is not None:
            links["model_low"] = (model_low, 0)
        if i == 0 and first_extra:
            links.update(first_extra)
        node = g.add("OneStoryNextShot", {**shot_widgets(cap, seed + i, **over), "memory_overrides": ""}, links,
                     col=col0 + i, row=1)
        story = (node, 1)   # Next Shot outputs (latent, story, selection)
    return story


def finish(g: Graph, ids: dict, story: tuple, name: str, col: int) -> None:
    # Each shot decoded on its own: VAE Decode on the concatenated latent would add 3 frames per cut.
    img = g.add("OneStoryDecodeStory", {"include_reference": False}, {"story": story, "vae": (ids["vae"], 0)},
                col=col, row=3)
    g.add("SaveAnimatedWEBP", {"filename_prefix": f"onestory/{name}", "fps": 16.0, "lossless": False, "quality": 90,
                               "method": "default"}, {"images": (img, 0)}, col=col, row=4)
    g.add("OneStorySaveStory", {"name": f"stories/{name}"}, {"story": story}, col=col, row=5)
    g.add("OneStoryPreviewMemory", {"columns": 8, "memory_overrides": ""}, {"story": story, "model": (ids["model"], 0)}, col=col, row=6)


CAFE = ["a woman in a red coat enters a small cafe, camera follows her",
        "the same woman orders a coffee at the counter, close-up of her face",
        "a barista with a grey beard prepares the coffee",
        "the woman in the red coat sits by the window with her coffee",
        "the barista brings a croissant to her table, both smile",
        "the same woman walks outside into the rain, red coat glistening"]


def i2v_story() -> Graph:
    g = Graph("Wan 2.1 I2V — six-shot story from a start image (I2MSV)")
    ids = loaders(g, "wan2.1_i2v_480p_14B_fp16.safetensors")
    image = g.add("LoadImage", {"image": START_IMAGE, "upload": "image"}, row=6)
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=7)
    last = chain(g, ids, (story, 0), CAFE, 1000, first_extra={"start_image": (image, 0)})
    finish(g, ids, last, "i2v_story", len(CAFE) + 1)
    return g


def t2v_story() -> Graph:
    g = Graph("Wan 2.1 T2V 1.3B — four-shot story from captions only (T2MSV)")
    ids = loaders(g, "wan2.1_t2v_1.3B_fp16.safetensors")
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=6)
    last = chain(g, ids, (story, 0), CAFE[:4], 2000)
    finish(g, ids, last, "t2v_story", 5)
    return g


def keyframe_swap() -> Graph:
    g = Graph("Swap a keyframe mid-story — only the shots after the edit re-run")
    ids = loaders(g, "wan2.1_t2v_1.3B_fp16.safetensors")
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=6)
    before = chain(g, ids, (story, 0), CAFE[:3], 3000)
    image = g.add("LoadImage", {"image": KEYFRAME_IMAGE, "upload": "image"}, col=4, row=3)
    edited = g.add("OneStoryEditMemory", {"action": "swap_keyframe", "shot": 1, "frame": 0},
                   {"story": before, "image": (image, 0), "vae": (ids["vae"], 0)}, col=4, row=2)
    pinned = g.add("OneStoryEditMemory", {"action": "pin", "shot": 1, "frame": 0}, {"story": (edited, 0)}, col=4, row=4)
    last = chain(g, ids, (pinned, 0), CAFE[3:5], 3003, col0=5)
    finish(g, ids, last, "keyframe_swap", 7)
    return g


def caption_list() -> Graph:
    g = Graph("Caption list — one Next Shots node over CreateList (no core loop nodes in ComfyUI 0.33)")
    ids = loaders(g, "wan2.1_t2v_1.3B_fp16.safetensors")
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=6)
    texts = [g.add("PrimitiveStringMultiline", {"value": c}, col=1, row=i) for i, c in enumerate(CAFE[:4])]
    lst = g.add("CreateList", {}, {f"inputs.input{i}": (t, 0) for i, t in enumerate(texts)}, col=2, row=0)
    pos = g.add("CLIPTextEncode", {}, {"clip": (ids["clip"], 0), "text": (lst, 0)}, col=3, row=0)
    links = {"model": (ids["model"], 0), "positive": (pos, 0), "negative": (ids["neg"], 0), "story": (story, 0),
             "adapter": (ids["adapter"], 0), "caption": (lst, 0), "vae": (ids["vae"], 0)}
    w = shot_widgets("", 4000)
    del w["caption"]
    shots = g.add("OneStoryNextShots", w, links, col=4, row=1)
    finish(g, ids, (shots, 1), "caption_list", 5)
    return g


def storymem_a14b() -> Graph:
    g = Graph("StoryMem route on Wan 2.2 I2V A14B (high- and low-noise experts)")
    ids = loaders(g, "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors")
    low_unet = g.add("UNETLoader", {"unet_name": "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
                                    "weight_dtype": "default"}, row=7)
    low = g.add("ModelSamplingSD3", {"shift": 8.0}, {"model": (low_unet, 0)}, row=8)
    image = g.add("LoadImage", {"image": START_IMAGE, "upload": "image"}, row=9)
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=10)
    last = chain(g, ids, (story, 0), CAFE[:4], 5000, model_low=low, first_extra={"start_image": (image, 0)},
                 route="storymem", k=3, cfg=3.5)
    finish(g, ids, last, "storymem_a14b", 5)
    return g


def training_free() -> Graph:
    g = Graph("Training-free OneStory with the stock KSampler (Frame Selector → Adaptive Conditioner → Apply Context)")
    ids = loaders(g, "wan2.1_t2v_1.3B_fp16.safetensors")
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=6)
    empty = g.add("EmptyHunyuanLatentVideo", {"width": 832, "height": 480, "length": 33, "batch_size": 1}, row=7)
    p1 = g.add("CLIPTextEncode", {"text": CAFE[0]}, {"clip": (ids["clip"], 0)}, col=1, row=0)
    ks1 = g.add("KSampler", {"seed": 6000, "steps": 20, "cfg": 5.0, "sampler_name": "uni_pc", "scheduler": "simple",
                             "denoise": 1.0}, {"model": (ids["model"], 0), "positive": (p1, 0), "negative": (ids["neg"], 0),
                                               "latent_image": (empty, 0)}, col=1, row=1)
    s1 = g.add("OneStoryAddShot", {"caption": CAFE[0], "source": "generated"}, {"story": (story, 0), "latent": (ks1, 0)},
               col=1, row=2)
    p2 = g.add("CLIPTextEncode", {"text": CAFE[1]}, {"clip": (ids["clip"], 0)}, col=2, row=0)
    sel = g.add("OneStoryFrameSelector", {"k": 4, "scorer": "sink_recent", "memory_overrides": ""},
                {"story": (s1, 0), "positive": (p2, 0), "adapter": (ids["adapter"], 0)}, col=2, row=1)
    ctx = g.add("OneStoryAdaptiveConditioner", {"budget": 1.0},
                {"story": (s1, 0), "selection": (sel, 0), "adapter": (ids["adapter"], 0)}, col=2, row=2)
    patched = g.add("OneStoryApplyContext", {"context_in_negative": True}, {"model": (ids["model"], 0), "context": (ctx, 0)},
                    col=2, row=3)
    ks2 = g.add("KSampler", {"seed": 6001, "steps": 20, "cfg": 5.0, "sampler_name": "uni_pc", "scheduler": "simple",
                             "denoise": 1.0}, {"model": (patched, 0), "positive": (p2, 0), "negative": (ids["neg"], 0),
                                               "latent_image": (empty, 0)}, col=3, row=1)
    s2 = g.add("OneStoryAddShot", {"caption": CAFE[1], "source": "generated"}, {"story": (s1, 0), "latent": (ks2, 0)},
               col=3, row=2)
    finish(g, ids, (s2, 0), "training_free", 4)
    return g


def story_score() -> Graph:
    g = Graph("Score a four-shot story: C-Cons / E-Cons / S-Align / VBench (Story Score)")
    ids = loaders(g, "wan2.1_t2v_1.3B_fp16.safetensors")
    story = g.add("OneStoryNewStory", {"reference_caption": "reference", "latent_width": 104, "latent_height": 60}, row=6)
    last = chain(g, ids, (story, 0), CAFE[:4], 7000)
    finish(g, ids, last, "story_score", 5)
    img = max(n["id"] for n in g.nodes if n["type"] == "OneStoryDecodeStory")   # frames + per-shot frame counts
    dino = g.add("OneStoryEvalModelLoader", {"model_name": "dinov2-base", "person_threshold": 0.5}, col=6, row=2)
    persons = g.add("OneStoryEvalModelLoader", {"model_name": "rtdetr_r50vd", "person_threshold": 0.5}, col=6, row=3)
    text = g.add("OneStoryEvalModelLoader", {"model_name": "siglip-base-patch16-224", "person_threshold": 0.5},
                 col=6, row=4)
    vision = g.add("CLIPVisionLoader", {"clip_name": "clip_vision_vit_l14.safetensors"}, col=6, row=5)
    head = g.add("OneStoryEvalModelLoader", {"model_name": "sa_0_4_vit_l_14_linear.safetensors",
                                             "person_threshold": 0.5}, col=6, row=6)
    # the cafe story: the woman (A) in shots 1, 2, 4; the barista (B) in shot 3; all in the cafe
    g.add("OneStoryStoryScore", {"story_annotation": "[A @cafe]\n[A @cafe]\n[B @cafe]\n[A @cafe]\n", "fps": 16.0},
          {"images": (img, 0), "shot_lengths": (img, 1), "dino": (dino, 0), "story": last, "persons": (persons, 0), "text": (text, 0),
           "clip_vision": (vision, 0), "aesthetic": (head, 0)}, col=7, row=1)
    return g


WORKFLOWS = {
    "onestory_wan21_i2v_story": i2v_story, "onestory_wan21_t2v_story": t2v_story,
    "onestory_keyframe_swap": keyframe_swap, "onestory_caption_list": caption_list,
    "onestory_storymem_wan22_a14b": storymem_a14b, "onestory_training_free": training_free,
    "onestory_story_score": story_score,
}


START_IMAGE, KEYFRAME_IMAGE = "onestory_start.png", "onestory_keyframe.png"


def example_image(kind: str):
    """A small drawn still (832x480, the workflows' size) for the Load Image nodes: a cafe with a
    woman in a red coat (start image) or the same woman in close-up (replacement keyframe)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (832, 480), (92, 70, 58))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 330, 831, 479], fill=(120, 96, 76))                    # floor
    d.rectangle([520, 60, 790, 280], fill=(168, 196, 214), outline=(60, 44, 36), width=8)   # window
    d.line([655, 60, 655, 280], fill=(60, 44, 36), width=6)
    d.rectangle([40, 250, 400, 340], fill=(70, 50, 40))                      # counter
    if kind == "start":
        d.ellipse([250, 120, 310, 180], fill=(232, 196, 170))               # head
        d.polygon([(240, 185), (320, 185), (345, 420), (215, 420)], fill=(196, 32, 40))   # red coat
        d.ellipse([244, 110, 316, 150], fill=(60, 36, 24))                  # hair
    else:
        d.ellipse([300, 60, 530, 300], fill=(232, 196, 170))
        d.ellipse([290, 40, 540, 170], fill=(60, 36, 24))
        d.polygon([(250, 300), (580, 300), (640, 479), (190, 479)], fill=(196, 32, 40))
        d.ellipse([360, 170, 385, 190], fill=(40, 30, 30))
        d.ellipse([445, 170, 470, 190], fill=(40, 30, 30))
    return img


def thumbnail(path: str, g: Graph) -> None:
    """A small card: title plus the node chain (no render of real output: models are not shipped)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (512, 288), (24, 26, 33))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 511, 36], fill=(196, 64, 64))
    d.text((12, 12), "OneStory", fill=(255, 255, 255))
    words, line, y = g.title.split(), "", 52
    for w in words:
        if len(line) + len(w) > 60:
            d.text((12, y), line, fill=(235, 235, 235)); y, line = y + 18, ""
        line += w + " "
    d.text((12, y), line, fill=(235, 235, 235))
    shots = [n for n in g.nodes if n["type"] in ("OneStoryNextShot", "OneStoryNextShots", "KSampler")]
    for i, _ in enumerate(shots[:8]):
        x = 12 + i * 62
        d.rectangle([x, 200, x + 54, 260], outline=(120, 180, 255), width=2)
        d.text((x + 18, 222), str(i + 1), fill=(120, 180, 255))
    img.save(path)


def main() -> None:
    for name, make in WORKFLOWS.items():
        g = make()
        with open(os.path.join(ROOT, f"{name}.json"), "w") as f:
            json.dump(g.ui(), f, indent=1)
        with open(os.path.join(ROOT, "api", f"{name}.json"), "w") as f:
            json.dump(g.api(), f, indent=1)
        thumbnail(os.path.join(ROOT, f"{name}.png"), g)
        print("wrote", name)
    os.makedirs(os.path.join(ROOT, "input"), exist_ok=True)
    for name, kind in ((START_IMAGE, "start"), (KEYFRAME_IMAGE, "keyframe")):
        example_image(kind).save(os.path.join(ROOT, "input", name), optimize=True)
        print("wrote input/" + name)


if __name__ == "__main__":
    main()
