"""The metric models of `onestory evaluate`, from one local folder (`--models DIR`).

    DIR/dinov2/ or DIR/dinov2.safetensors   C-Cons / E-Cons (and subject consistency if no DINO)
    DIR/dino-vitb16/                         VBench subject consistency (DINO ViT-B/16)
    DIR/clip-vit-b-32/                       VBench background consistency (CLIP ViT-B/32)
    DIR/clip-vit-l-14/ + DIR/aesthetic.safetensors   VBench aesthetic quality (LAION head)
    DIR/s-align/                             S-Align: a CLIP or SigLIP folder with its tokenizer
    DIR/person-detector/                     person boxes: transformers object detection (RT-DETR)
    DIR/raft_large.safetensors               VBench dynamic degree (torchvision RAFT)

Each missing entry is reported with the file to get; the metrics it feeds are skipped and the
others still run. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from onestory.metrics import encoders as enc
from onestory.metrics.interfaces import Models


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise enc.MissingModel("loading the metric models needs transformers: pip install 'onestory-lab[eval]'") from None
    return transformers


def raft_builder():
    """torchvision's raft_large, or MissingModel when torchvision is absent or built for another torch
    (its C ops then fail to register on import)."""
    try:
        from torchvision.models.optical_flow import raft_large
    except Exception as e:
        raise enc.MissingModel(f"flow: torchvision's RAFT cannot be imported here ({type(e).__name__}: {e}); install "
                               "the torchvision that matches your torch, or pass any FlowModel") from None
    return raft_large

NAMES = {"dino": ("dinov2", "dinov2.safetensors"), "subject": ("dino-vitb16",), "clip": ("clip-vit-b-32",),
         "aesthetic_clip": ("clip-vit-l-14",), "aesthetic": ("aesthetic.safetensors",), "text": ("s-align",),
         "persons": ("person-detector",), "flow": ("raft_large.safetensors",)}


def _find(root: Path, role: str) -> Path:
    for name in NAMES[role]:
        if (root / name).exists():
            return root / name
    return root / NAMES[role][0]


def load_models(root: Optional[str | Path], person_threshold: float = 0.5) -> Models:
    if root is None:
        return Models(missing=tuple((k, f"{k}: no --models folder given") for k in
                                    ("dino", "subject", "clip", "aesthetic", "text", "persons", "flow")))
    r = Path(root)
    missing: list[tuple[str, str]] = []
    try:
        tf = transformers_module()
    except enc.MissingModel as e:
        return Models(missing=tuple((k, str(e)) for k in ("dino", "subject", "clip", "aesthetic", "text", "persons",
                                                           "flow")))

    def get(key: str, loader, *args, **kw):
        model, why = enc.optional(loader, *args, **kw)
        if why:
            missing.append((key, why))
        return model

    dino = get("dino", enc.load_dinov2, _find(r, "dino"), tf)
    subject = None
    if (r / "dino-vitb16").exists():
        subject = get("subject", enc.load_dinov2, r / "dino-vitb16", tf, role="subject")
    else:
        subject = dino   # reported under DINOv2's name
        if dino is None:
            missing.append(("subject", f"subject: neither {r / 'dino-vitb16'} nor a DINOv2 model is there; get "
                                       f"{enc.WHERE['subject']}"))
    clip = get("clip", enc.load_image_text, _find(r, "clip"), tf, role="clip")
    aesthetic = None
    head = _find(r, "aesthetic")
    if head.exists():
        aesthetic = get("aesthetic", enc.load_aesthetic, head, _find(r, "aesthetic_clip"), tf)
    else:
        missing.append(("aesthetic", f"aesthetic: {head} does not exist; get {enc.WHERE['aesthetic']} and "
                                     f"{enc.WHERE['aesthetic_clip']} as {r / 'clip-vit-l-14'}"))
    text = get("text", enc.load_image_text, _find(r, "text"), tf)
    persons = get("persons", enc.load_person_detector, _find(r, "persons"), tf, threshold=person_threshold)
    flow = None
    if not _find(r, "flow").exists():
        missing.append(("flow", f"flow: {_find(r, 'flow')} does not exist; get {enc.WHERE['flow']} and put it there"))
    else:
        try:
            flow = get("flow", enc.load_raft, _find(r, "flow"), raft_builder())
        except enc.MissingModel as e:
            missing.append(("flow", str(e)))
    return Models(dino=dino, subject=subject, clip=clip, aesthetic=aesthetic, text=text, persons=persons,
                  flow=flow, missing=tuple(missing))
