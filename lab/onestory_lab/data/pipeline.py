"""The three resumable stages behind `python -m onestory_lab data ...`.

shots  videos -> OUT/shots.jsonl     one line per video: its shots, or why it was skipped
plan   shots + captions -> OUT/plan.jsonl    filters, optional caption rewrite, pseudo-labels
cache  plan -> CACHE/ (cache.py)     three-shot samples, VAE latents, text features

Every stage appends one fsynced line per finished video (or one shard at a time) and skips what
its output already holds, so an interrupted run continues where it stopped. Bad input (an
unreadable video, a shot without a caption, a clip too short) is skipped with its reason written
to the stage's output and counted in the summary; it never stops the run.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .captions import CaptionRewriter, CaptionTable, RewriteRequest
from .features import ImageEncoder
from .plan import ClipSpec, Thresholds, VideoPlan, cosine_labels, make_samples, shot_embedding
from .records import Clip, Shot, append_jsonl, read_jsonl, truncate_torn_tail, write_atomic
from .shots import ShotDetector
from .video import VideoError, read_frames, read_small

log = logging.getLogger("onestory_lab.data")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")


def _bar(total: int, desc: str, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


def find_videos(inputs: Sequence[str]) -> list[str]:
    """Files as given; directories searched recursively for video suffixes (sorted)."""
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(str(p))
    return out


@dataclass
class Summary:
    stage: str
    done: int = 0
    resumed: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str, what: str, n: int = 1) -> None:
        self.skipped[reason] += n
        log.warning("%s: skipped %s", self.stage, what)

    def text(self) -> str:
        parts = [f"{self.stage}: {self.done} done ({self.resumed} from an earlier run)"]
        parts += [f"  skipped {n}: {reason}" for reason, n in sorted(self.skipped.items())]
        return "\n".join(parts)


def _reason_key(reason: str) -> str:
    """Counting key of a skip reason: its text before the first ':' (details follow it)."""
    return reason.split(":")[0]


# ---------------------------------------------------------------- shots

def run_shots(videos: Sequence[str], out: str | Path, detector: ShotDetector, min_shot_frames: int,
              min_shots: int = 2, quiet: bool = False) -> Summary:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "shots.jsonl"
    truncate_torn_tail(path)
    seen = {obj["video"]: obj for _, obj in read_jsonl(path)}
    summary = Summary("shots")
    bar = _bar(len(videos), "shots", quiet)
    for video in videos:
        obj = seen.get(video)
        if obj is None:
            obj = _detect(video, detector, min_shot_frames, min_shots)
            append_jsonl(path, obj)
        else:
            summary.resumed += 1
        if obj["status"] == "ok":
            summary.done += 1
            if obj.get("short"):
                summary.skip("shot shorter than --min-shot-frames", video, len(obj["short"]))
        else:
            summary.skip(_reason_key(obj["reason"]), f"{video} ({obj['reason']})")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ok=summary.done, skipped=sum(summary.skipped.values()))
    if bar is not None:
        bar.close()
    return summary


def _detect(video: str, detector: ShotDetector, min_shot_frames: int, min_shots: int) -> dict:
    try:
        small, info = read_small(video)
        ranges = detector.detect(video, small)
    except VideoError as e:
        return {"video": video, "status": "skipped", "reason": f"unreadable video: {e}"}
    shots = [{"index": i, "start": s, "end": e} for i, (s, e) in enumerate(ranges) if e - s >= min_shot_frames]
    short = [i for i, (s, e) in enumerate(ranges) if e - s < min_shot_frames]
    base = {"video": video, "detector": detector.name, "frames": info.frames, "fps": info.fps,
            "width": info.width, "height": info.height, "detected": len(ranges), "short": short}
    if len(shots) < min_shots:
        return {**base, "status": "skipped",
                "reason": f"too few shots: {len(shots)} of >= {min_shot_frames} frames (need {min_shots})"}
    return {**base, "status": "ok", "shots": shots}


# ---------------------------------------------------------------- plan

@dataclass
class PlanConfig:
    spec: ClipSpec
    thresholds: Thresholds = Thresholds()


def run_plan(shots_path: str | Path, out: str | Path, captions: CaptionTable, clip_encoder: ImageEncoder,
             dino_encoder: ImageEncoder, cfg: PlanConfig, rewriter: CaptionRewriter | None = None,
             quiet: bool = False) -> Summary:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_plan_config(out, cfg)
    path = out / "plan.jsonl"
    truncate_torn_tail(path)
    seen = {obj["video"]: obj for _, obj in read_jsonl(path)}
    videos = [obj for _, obj in read_jsonl(shots_path) if obj["status"] == "ok"]
    summary = Summary("plan")
    bar = _bar(len(videos), "plan", quiet)
    for entry in videos:
        obj = seen.get(entry["video"])
        if obj is None:
            obj = _plan_video(entry, captions, clip_encoder, dino_encoder, cfg, rewriter)
            append_jsonl(path, obj)
        else:
            summary.resumed += 1
        if obj["status"] == "ok":
            summary.done += 1
            for d in obj["dropped"]:
                summary.skip(_reason_key(d["reason"]), f"{obj['video']} shot {d['shot']} ({d['reason']})")
            if not any(len(s) >= 2 for s in obj["segments"]):
                summary.skip("no two consecutive usable shots", f"{obj['video']} (no two consecutive usable shots)")
        else:
            summary.skip(_reason_key(obj["reason"]), f"{obj['video']} ({obj['reason']})")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ok=summary.done, skipped=sum(summary.skipped.values()))
    if bar is not None:
        bar.close()
    return summary


def write_plan_config(out: Path, cfg: PlanConfig) -> None:
    """plan-config.json fixes the clip geometry for the cache stage; a resumed plan must keep it."""
    from dataclasses import asdict

    new = {"clip": asdict(cfg.spec), "thresholds": asdict(cfg.thresholds)}
    path = out / "plan-config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != new:
            raise ValueError(f"{out} was planned with {old}, not {new}; use another --out to plan differently")
        return
    write_atomic(path, (json.dumps(new, indent=2) + "\n").encode())


def read_plan_config(out: str | Path) -> PlanConfig:
    path = Path(out) / "plan-config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `data plan --out {out}` first")
    obj = json.loads(path.read_text())
    return PlanConfig(ClipSpec(**obj["clip"]), Thresholds(**obj["thresholds"]))


def _plan_video(entry: dict, captions: CaptionTable, clip_encoder: ImageEncoder, dino_encoder: ImageEncoder,
                cfg: PlanConfig, rewriter: CaptionRewriter | None) -> dict:
    video, spec, th = entry["video"], cfg.spec, cfg.thresholds
    plan = VideoPlan(video)
    usable: list[tuple[Shot, str, Clip]] = []
    for s in entry["shots"]:
        shot = Shot(video, s["index"], s["start"], s["end"], entry["fps"])
        text = captions.lookup(shot)
        if text is None:
            plan.dropped.append({"shot": shot.index, "reason": "no caption"})
        elif shot.frames < spec.span:
            plan.dropped.append({"shot": shot.index, "reason": f"clip too short: {shot.frames} frames < {spec.span}"})
        else:
            usable.append((shot, text, spec.clip(shot)))
    if not usable:
        return plan.to_json()
    try:
        frames = read_frames(video, [i for _, _, c in usable for i in spec.label_frames(c)], spec.width, spec.height)
    except VideoError as e:
        return {"video": video, "status": "skipped", "reason": f"unreadable video: {e}"}
    emb = {}
    for shot, _, clip in usable:
        px = np.stack([frames[i] for i in spec.label_frames(clip)])
        emb[shot.index] = (dino_encoder.embed(px), clip_encoder.embed(px), px)

    segment: list[dict] = []
    prev: tuple[Shot, str] | None = None   # the last kept shot and its (final) caption
    for shot, text, clip in usable:
        dino, sem, px = emb[shot.index]
        if prev is not None:
            pd, ps, ppx = emb[prev[0].index]
            adjacent = _adjacent(prev[0].index, shot.index, plan)
            if adjacent:
                dup = float(shot_embedding(dino) @ shot_embedding(pd))
                if dup > th.max_duplicate:
                    plan.dropped.append({"shot": shot.index, "reason": f"near-duplicate: DINOv2 cosine {dup:.3f} "
                                                                       f"> {th.max_duplicate} with shot {prev[0].index}"})
                    continue
                related = float(shot_embedding(sem) @ shot_embedding(ps))
                if related < th.min_related:
                    plan.dropped.append({"shot": shot.index, "pair": True,
                                         "reason": f"unrelated pair: CLIP cosine {related:.3f} < {th.min_related} "
                                                   f"with shot {prev[0].index}"})
                    adjacent = False
            if not adjacent:
                plan.segments.append(segment)
                segment = []
            elif rewriter is not None:
                text = rewriter.rewrite(RewriteRequest(prev[1], ppx, text, px))
        segment.append({**shot.to_json(), "caption": text, "clip": clip.to_json()})
        prev = (shot, text)
    plan.segments.append(segment)
    plan.segments = [s for s in plan.segments if s]
    for seg in plan.segments:
        for j, target in enumerate(seg):
            for i in range(max(0, j - 2), j):
                mem = seg[i]
                y = cosine_labels(emb[mem["index"]][0], emb[target["index"]][0],
                                  emb[mem["index"]][1], emb[target["index"]][1])
                plan.labels[f"{mem['index']}>{target['index']}"] = [round(float(v), 6) for v in y]
    return plan.to_json()


def _adjacent(a: int, b: int, plan: VideoPlan) -> bool:
    """Shots a < b follow each other in the source: nothing between them but shots dropped as
    near-duplicates (which repeat a, so b still follows what the viewer saw)."""
    between = set(range(a + 1, b))
    dups = {d["shot"] for d in plan.dropped if d["reason"].startswith("near-duplicate")}
    return between <= dups


# ---------------------------------------------------------------- cache

def run_cache(plan_dir: str | Path, cache_dir: str | Path, vae, text_encoder, spec: ClipSpec, shard_size: int = 64,
              cross_share: float = 0.5, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
              quiet: bool = False) -> Summary:
    """Three-shot samples of plan_dir/plan.jsonl -> the cache (cache.py), shard_size samples per shard."""
    from dataclasses import asdict

    from ..storyworld.inflation import augment
    from .cache import CacheWriter
    from .encoders import encoder_manifest

    plans = [obj for _, obj in read_jsonl(Path(plan_dir) / "plan.jsonl") if obj["status"] == "ok"]
    samples = list({s["id"]: s for s in make_samples(plans, cross_share, seed)}.values())
    manifest = {"encoders": {"vae": encoder_manifest(vae), "text": encoder_manifest(text_encoder)},
                "latent_channels": vae.channels, "text_dim": text_encoder.dim, "clip": asdict(spec),
                "dtype": str(dtype).removeprefix("torch.")}
    writer = CacheWriter(cache_dir, manifest, shard_size)
    pending = [s for s in samples if s["id"] not in writer.done]
    summary = Summary("cache", resumed=len(samples) - len(pending))
    summary.done = summary.resumed
    bar = _bar(len(pending), "cache", quiet)
    for lo in range(0, len(pending), shard_size):
        chunk = pending[lo:lo + shard_size]
        need: dict[str, set[int]] = {}
        for s in chunk:
            for c in s["clips"]:
                need.setdefault(c["video"], set()).update(spec.frame_indices(Clip(**c)))
        pixels, bad = {}, {}
        for video, idx in need.items():
            try:
                pixels[video] = read_frames(video, idx, spec.width, spec.height)
            except VideoError as e:
                bad[video] = str(e)
        records, tensors, latents = [], {}, {}
        for s in chunk:
            broken = sorted({c["video"] for c in s["clips"]} & bad.keys())
            if broken:
                summary.skip("unreadable video", f"sample {s['id']} ({bad[broken[0]]})")
                continue
            lat, kinds = [], []
            for c, kind in zip(s["clips"], s["inflation"]):
                key = (tuple(sorted(c.items())), kind)
                if key not in latents:
                    px = np.stack([pixels[c["video"]][i] for i in spec.frame_indices(Clip(**c))])
                    name = ""
                    if kind.startswith("augment"):
                        px, name = augment(px, np.random.default_rng(int(kind.split(":")[1])))
                    latents[key] = (vae.encode(px).to(dtype), f"augment:{name}" if name else kind)
                lat.append(latents[key][0])
                kinds.append(latents[key][1])
            text, mask = text_encoder.encode(s["captions"][2])
            synthetic = torch.tensor([kinds[0] != ""] * lat[0].shape[1] + [kinds[1] != ""] * lat[1].shape[1])
            labels = torch.tensor(s["labels"], dtype=torch.float32)
            if labels.shape != synthetic.shape:
                raise RuntimeError(f"sample {s['id']}: {labels.numel()} labels for {synthetic.numel()} latent frames")
            sid = s["id"]
            tensors.update({f"{sid}.latent.{i}": x for i, x in enumerate(lat)})
            tensors.update({f"{sid}.text": text.to(dtype), f"{sid}.text_mask": mask, f"{sid}.labels": labels,
                            f"{sid}.synthetic": synthetic})
            records.append({"id": sid, "kind": s["kind"], "clips": s["clips"], "captions": s["captions"],
                            "inflation": kinds})
        if records:
            writer.write_shard(records, tensors)
            summary.done += len(records)
        if bar is not None:
            bar.update(len(chunk))
            bar.set_postfix(samples=summary.done, skipped=sum(summary.skipped.values()))
    if bar is not None:
        bar.close()
    return summary
