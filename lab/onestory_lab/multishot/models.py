"""The metric models of `onestory evaluate`, from one local folder (`--models DIR`).

    DIR/dinov2/ or DIR/dinov2.safetensors   C-Cons / E-Cons (and subject consistency if no DINO)
    DIR/dino-vitb16/                         VBench subject consistency (DINO ViT-B/16)
    DIR/clip-vit-b-32/                       VBench background consistency (CLIP ViT-B/32)
    DIR/clip-vit-l-14/ + DIR/aesthetic.safetensors   VBench aesthetic quality (LAION head)
    DIR/viclip/                              S-Align: ViCLIP (the paper's model; viclip.safetensors +
                                             bpe_simple_vocab_16e6.txt.gz), preferred when present
    DIR/s-align/                             S-Align without ViCLIP: a CLIP or SigLIP folder + tokenizer
    DIR/person-detector/                     person boxes: transformers object detection (RT-DETR)
    DIR/raft_large.safetensors               VBench dynamic degree (RAFT-Large, torchvision's weights)

Each missing entry is reported with the file to get; the metrics it feeds are skipped and the
others still run. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from onestory.metrics import encoders as enc
from onestory.metrics.interfaces import Models

from .raft import raft_large
from .viclip_encoder import WHERE as VICLIP_WHERE
from .viclip_encoder import load_viclip


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise enc.MissingModel("loading the metric models needs transformers: pip install 'onestory-lab[eval]'") from None
    return transformers


def raft_builder():
    """The RAFT-Large of `load_raft`: the plain-PyTorch port of torchvision's `raft_large` (same
    state-dict keys, no torchvision needed)."""
    return raft_large

NAMES = {"dino": ("dinov2", "dinov2.safetensors"), "subject": ("dino-vitb16",), "clip": ("clip-vit-b-32",),
         "aesthetic_clip": ("clip-vit-l-14",), "aesthetic": ("aesthetic.safetensors",), "viclip": ("viclip",),
         "text": ("s-align",), "persons": ("person-detector",), "flow": ("raft_large.safetensors",)}


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
    notes: list[tuple[str, str]] = []
    try:
        tf = transformers_module()
    except enc.MissingModel as e:
        # ViCLIP and RAFT need no transformers
        text, why, note = _s_align(r, None)
        flow, why_flow = _flow(r)
        return Models(text=text, flow=flow, notes=((("text", note),) if note else ()),
                      missing=tuple((k, str(e)) for k in ("dino", "subject", "clip", "aesthetic", "persons"))
                      + ((("text", why),) if why else ()) + ((("flow", why_flow),) if why_flow else ()))

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
    text, why, note = _s_align(r, tf)
    if why:
        missing.append(("text", why))
    if note:
        notes.append(("text", note))
    persons = get("persons", enc.load_person_detector, _find(r, "persons"), tf, threshold=person_threshold)
    flow, why = _flow(r)
    if why:
        missing.append(("flow", why))
    return Models(dino=dino, subject=subject, clip=clip, aesthetic=aesthetic, text=text, persons=persons,
                  flow=flow, missing=tuple(missing), notes=tuple(notes))


def _flow(root: Path) -> tuple[object, Optional[str]]:
    """(RAFT flow model, None) or (None, why missing)."""
    return enc.optional(enc.load_raft, _find(root, "flow"), raft_builder())


def _s_align(root: Path, tf) -> tuple[object, Optional[str], Optional[str]]:
    """(model, why missing, note): ViCLIP from root/viclip/ when it loads, else the image-text model from
    root/s-align/ (tf: the transformers module, None when it is not installed)."""
    vdir, idir = _find(root, "viclip"), _find(root, "text")
    why_v = None
    if vdir.exists():
        model, why_v = enc.optional(load_viclip, vdir)
        if model is not None:
            return model, None, (f"S-Align: {model.name} from {vdir}; {idir} is not used" if idir.exists() else None)
    if not idir.exists():
        return None, why_v or (f"text: neither {vdir} (ViCLIP, the paper's S-Align model: {VICLIP_WHERE}) nor "
                               f"{idir} ({enc.WHERE['text']}) exists"), None
    if tf is None:
        model, why_i = None, f"text: {idir} needs transformers: pip install 'onestory-lab[eval]'"
    else:
        model, why_i = enc.optional(enc.load_image_text, idir, tf)
    if model is None:
        return None, "; ".join(w for w in (why_v, why_i) if w), None
    return model, None, (f"{why_v}; S-Align uses the image-text model in {idir} instead" if why_v else None)
