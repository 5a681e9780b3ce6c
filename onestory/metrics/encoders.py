"""Loaders of the metric models from LOCAL files (nothing is downloaded).

The core never imports transformers or torchvision: the caller passes the library in (`tf`: the
transformers module; `build_raft`: a RAFT-Large builder with torchvision's state-dict keys, the lab's
port or torchvision's `raft_large`), so the lab and the ComfyUI glue share one loader each and only
they depend on those packages.

Formats users have:
* a transformers folder (config.json + model.safetensors [+ tokenizer / preprocessor files]), as
  saved by `save_pretrained` or copied from a model page;
* for DINOv2, a single transformers-style `.safetensors` file (the config is read off the
  tensor shapes);
* the LAION aesthetic head as `.safetensors` with `weight` "1 768" and `bias` "1";
* RAFT as `.safetensors` of torchvision's `raft_large` state dict.

Every failure raises `MissingModel` naming the file to get and where to put it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OneStoryError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# what to get for each role (named in errors and docs/evaluation.md)
WHERE = {
    "dino": "a DINOv2 transformers folder or model.safetensors (e.g. facebook/dinov2-base)",
    "subject": "a DINO ViT-B/16 transformers folder (VBench subject consistency: facebook/dino-vitb16)",
    "clip": "a CLIP transformers folder (VBench background consistency: openai/clip-vit-base-patch32)",
    "aesthetic_clip": "a CLIP ViT-L/14 transformers folder (openai/clip-vit-large-patch14)",
    "aesthetic": "the LAION aesthetic head sa_0_4_vit_l_14_linear converted to .safetensors",
    "text": "a CLIP or SigLIP transformers folder with its tokenizer (e.g. google/siglip-base-patch16-224)",
    "persons": "a transformers object-detection folder with a 'person' class (e.g. PekingU/rtdetr_r50vd)",
    "flow": "torchvision's raft_large weights (Raft_Large_Weights.C_T_V1) converted to .safetensors",
}


class MissingModel(OneStoryError):
    """A metric model file is absent or unreadable; the message says what to get."""


def _need(path: Path, role: str) -> Path:
    if not path.exists():
        raise MissingModel(f"{role}: {path} does not exist; get {WHERE.get(role, role)} and put it there")
    return path


def _prep(images: Tensor, size: int | tuple[int, int], mean, std) -> Tensor:
    hw = (size, size) if isinstance(size, int) else size
    x = F.interpolate(images.float(), size=hw, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _preprocessor(folder: Path, default_mean, default_std) -> tuple[tuple, tuple]:
    p = folder / "preprocessor_config.json"
    if p.is_file():
        cfg = json.loads(p.read_text())
        return tuple(cfg.get("image_mean", default_mean)), tuple(cfg.get("image_std", default_std))
    return default_mean, default_std


class DinoEncoder:
    """DINO / DINOv2 image embedding: the CLS token after the final layer norm (Dinov2Model's
    pooler_output; ViTModel's pooler is an extra dense layer, so the CLS row is read directly)."""

    def __init__(self, model, name: str, size: int = 224):
        self.model, self.name, self.size = model.eval(), name, size

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = _prep(images, self.size, IMAGENET_MEAN, IMAGENET_STD)
        return self.model(pixel_values=x.to(self.model.dtype)).last_hidden_state[:, 0].float()


def _dinov2_config_from_state(state: dict, transformers):
    pe = state["embeddings.patch_embeddings.projection.weight"]
    hidden, patch = pe.shape[0], pe.shape[-1]
    grid = round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    swiglu = any(".mlp.weights_in." in k for k in state)
    # SwiGLU (giant) derives its width from mlp_ratio 4; the plain MLP states it in fc1
    ratio = 4 if swiglu else round(state["encoder.layer.0.mlp.fc1.weight"].shape[0] / hidden)
    # every released DINOv2 uses 64-dim heads
    return transformers.Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                     patch_size=patch, mlp_ratio=ratio, use_swiglu_ffn=swiglu,
                                     image_size=grid * patch)


def load_dinov2(path: str | Path, tf, size: int = 224, role: str = "dino") -> DinoEncoder:
    """A DINOv2 (or DINO ViT) transformers folder, or a single DINOv2 transformers-style .safetensors."""
    p = _need(Path(path), role)
    if p.is_dir():
        try:
            model = tf.AutoModel.from_pretrained(str(p), local_files_only=True)
        except Exception as e:
            raise MissingModel(f"dino: {p} is not a loadable transformers folder ({e})") from None
        return DinoEncoder(model, p.name, size)
    from safetensors.torch import load_file
    state = {k.removeprefix("dinov2."): v for k, v in load_file(str(p)).items()}
    if "embeddings.patch_embeddings.projection.weight" not in state:
        raise MissingModel(f"dino: {p} has no 'embeddings.patch_embeddings.projection.weight'; use the "
                           "transformers (Hugging Face) DINOv2 model.safetensors, not the original "
                           "facebookresearch checkpoint")
    model = tf.Dinov2Model(_dinov2_config_from_state(state, tf))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if "mask_token" not in k] or unexpected:
        raise MissingModel(f"dino: {p} does not match a DINOv2 model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")
    return DinoEncoder(model, p.stem, size)


class ImageText:
    """A CLIP / SigLIP model from a transformers folder: image tower, text tower, or both."""

    def __init__(self, model, tokenizer, name: str, size: int, mean, std):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.size, self.mean, self.std = size, mean, std
        self.siglip = "siglip" in type(model).__name__.lower()

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        out = self.model.get_image_features(pixel_values=_prep(images, self.size, self.mean, self.std))
        return (out.pooler_output if hasattr(out, "pooler_output") else out).float()

    __call__ = encode_images

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        if self.tokenizer is None:
            raise MissingModel(f"text: {self.name} has no tokenizer files; use a folder with its tokenizer")
        pad = "max_length" if self.siglip else True
        tok = self.tokenizer(list(texts), padding=pad, truncation=True, return_tensors="pt",
                             max_length=getattr(self.model.config.text_config, "max_position_embeddings", 77))
        out = self.model.get_text_features(**{k: v for k, v in tok.items()
                                              if k in ("input_ids", "attention_mask")})
        return (out.pooler_output if hasattr(out, "pooler_output") else out).float()


def load_image_text(path: str | Path, tf, role: str = "text") -> ImageText:
    p = _need(Path(path), role)
    if not p.is_dir():
        raise MissingModel(f"{role}: {p} is a file; CLIP / SigLIP load from a transformers folder "
                           "(config.json + model.safetensors + tokenizer files)")
    try:
        model = tf.AutoModel.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        raise MissingModel(f"{role}: {p} is not a loadable transformers folder ({e})") from None
    if not hasattr(model, "get_image_features"):
        raise MissingModel(f"{role}: {p} holds a {type(model).__name__}, not a CLIP / SigLIP image-text model")
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception:
        tokenizer = None
    siglip = "siglip" in type(model).__name__.lower()
    mean, std = _preprocessor(p, (0.5, 0.5, 0.5) if siglip else CLIP_MEAN, (0.5, 0.5, 0.5) if siglip else CLIP_STD)
    return ImageText(model, tokenizer, p.name, int(model.config.vision_config.image_size), mean, std)


class LaionAesthetic:
    """LAION aesthetic predictor: a linear head on L2-normalised CLIP ViT-L/14 image embeddings."""

    def __init__(self, clip: ImageText, weight: Tensor, bias: Tensor, name: str):
        self.clip, self.weight, self.bias, self.name = clip, weight.float(), bias.float(), name

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        e = F.normalize(self.clip.encode_images(images), dim=-1)
        return (e @ self.weight.T + self.bias)[:, 0]


def load_aesthetic_head(head: str | Path) -> tuple[Tensor, Tensor]:
    """The LAION head's (weight "1 d", bias "1") from a .safetensors."""
    from safetensors.torch import load_file
    h = _need(Path(head), "aesthetic")
    state = load_file(str(h))
    w = state.get("weight", state.get("linear.weight"))
    b = state.get("bias", state.get("linear.bias"))
    if w is None or b is None or w.ndim != 2 or w.shape[0] != 1 or b.numel() != 1:
        raise MissingModel(f"aesthetic: {h} must hold 'weight' (1, d) and 'bias' (1); got "
                           f"{({k: tuple(v.shape) for k, v in state.items()})}")
    return w, b.reshape(1)


def aesthetic_on(clip, weight: Tensor, bias: Tensor, name: str = "") -> LaionAesthetic:
    """The head on any image tower with `encode_images` (checks the embedding width)."""
    d = clip.encode_images(torch.zeros(1, 3, 32, 32)).shape[-1]
    if weight.shape[1] != d:
        raise MissingModel(f"aesthetic: the head takes {weight.shape[1]}-dim embeddings but {clip.name} gives {d}; "
                           "the LAION head needs CLIP ViT-L/14 (768)")
    return LaionAesthetic(clip, weight, bias, name or f"laion-aesthetic[{clip.name}]")


def load_aesthetic(head: str | Path, clip_l14: str | Path, tf) -> LaionAesthetic:
    w, b = load_aesthetic_head(head)
    return aesthetic_on(load_image_text(clip_l14, tf, role="aesthetic_clip"), w, b)


class DetectorPersons:
    """Person masks from a transformers object detector (boxes -> filled box masks)."""

    def __init__(self, model, processor, person_ids: list[int], name: str, threshold: float):
        self.model, self.processor, self.ids, self.name, self.threshold = model.eval(), processor, person_ids, name, threshold

    @torch.no_grad()
    def __call__(self, images: Tensor) -> list[Tensor]:
        h, w = images.shape[-2:]
        arrays = [(im.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy() for im in images]
        inputs = self.processor(images=arrays, return_tensors="pt")
        out = self.model(pixel_values=inputs["pixel_values"])
        res = self.processor.post_process_object_detection(out, threshold=self.threshold,
                                                           target_sizes=[(h, w)] * len(arrays))
        masks = []
        for r in res:
            keep = [i for i, lab in enumerate(r["labels"].tolist()) if lab in self.ids]
            m = torch.zeros(len(keep), h, w, dtype=torch.bool)
            for j, i in enumerate(keep):
                x0, y0, x1, y1 = [float(v) for v in r["boxes"][i]]
                x0, y0 = max(0, int(x0)), max(0, int(y0))
                x1, y1 = min(w, max(x0 + 1, round(x1))), min(h, max(y0 + 1, round(y1)))
                m[j, y0:y1, x0:x1] = True
            masks.append(m)
        return masks


def load_person_detector(path: str | Path, tf, threshold: float = 0.5) -> DetectorPersons:
    p = _need(Path(path), "persons")
    try:
        model = tf.AutoModelForObjectDetection.from_pretrained(str(p), local_files_only=True)
        processor = tf.AutoImageProcessor.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        raise MissingModel(f"persons: {p} is not a loadable transformers object-detection folder ({e})") from None
    ids = [int(i) for i, lab in model.config.id2label.items() if str(lab).lower() == "person"]
    if not ids:
        raise MissingModel(f"persons: {p} has no 'person' class in config.json id2label")
    return DetectorPersons(model, processor, ids, p.name, threshold)


RAFT_MIN_SIZE = 128   # RAFT-Large's 4-level correlation pyramid needs 16 feature cells (h / 8) per side


class RaftFlow:
    """`FlowModel` from a RAFT-Large (torchvision's `raft_large` interface); 20 flow updates as VBench
    runs RAFT. Frames are replicate-padded to multiples of 8 and to at least RAFT_MIN_SIZE per side,
    and the flow is cropped back, so it stays in the frame's pixels."""

    def __init__(self, model, name: str, updates: int = 20):
        self.model, self.name, self.updates = model.eval(), name, updates

    @torch.no_grad()
    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b "n 3 h w" in [0, 1] -> flow "n 2 h w" (dx, dy) in pixels."""
        h, w = a.shape[-2:]
        ph = max(RAFT_MIN_SIZE, h + (-h) % 8) - h
        pw = max(RAFT_MIN_SIZE, w + (-w) % 8) - w
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        x1 = F.pad(a.float() * 2 - 1, pad, mode="replicate")
        x2 = F.pad(b.float() * 2 - 1, pad, mode="replicate")
        flow = self.model(x1, x2, num_flow_updates=self.updates)[-1]
        return flow[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]


def load_raft(path: str | Path, build_raft) -> RaftFlow:
    """`build_raft()` -> an unloaded RAFT-Large with torchvision's `raft_large` keys (the lab's
    `onestory_lab.multishot.raft.raft_large`, or torchvision's); the file must match it exactly."""
    p = _need(Path(path), "flow")
    from safetensors.torch import load_file
    model = build_raft()
    try:
        state = load_file(str(p))
    except Exception as e:
        raise MissingModel(f"flow: {p} is not a readable .safetensors file ({e}); get {WHERE['flow']}") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(ks)} {what} (e.g. {', '.join(ks[:3])})"
                 for what, ks in (("keys missing", missing), ("unexpected keys", unexpected),
                                  ("keys of another shape", wrong)) if ks]
        raise MissingModel(f"flow: {p} is not a torchvision raft_large state dict: {'; '.join(parts)}; get "
                           f"{WHERE['flow']}")
    model.load_state_dict(state, strict=True)
    return RaftFlow(model, p.stem)


def optional(loader, *args, **kw):
    """(model, None) or (None, reason) - a missing model must not stop the other metrics."""
    try:
        return loader(*args, **kw), None
    except MissingModel as e:
        return None, str(e)


__all__ = ["MissingModel", "load_dinov2", "load_image_text", "load_aesthetic", "load_person_detector",
           "load_raft", "optional", "WHERE"]
