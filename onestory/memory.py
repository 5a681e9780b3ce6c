"""The memory bank: VAE latents of every earlier shot, plus one record per frame.

Immutability is the central rule (ComfyUI caches node outputs by reference and hands the same
object to several downstream nodes): every operation returns a new `MemoryBank`, never changes
its inputs, and never keeps a reference to a tensor the caller still owns.

`frames` is exposed without copying (copies of a long story cost tens of MB per access).
Treat it as read-only: banks share it between each other (e.g. `set_pinned` reuses it), and
the fingerprint is cached, so an in-place change would silently corrupt every bank sharing it.
Use `swap_frame` to change a frame.
"""
from __future__ import annotations

import hashlib
import json
import operator
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor

from .errors import FileFormatError, OneStoryError, ShapeError
from .paths import atomic_write_bytes, read_onestory_file, sha256_of

Source = Literal["generated", "user", "reference"]
SOURCES: tuple[str, ...] = ("generated", "user", "reference")

STORY_FORMAT = "onestory-story"
# Version 2 adds "digests" (sha256 of each tensor's bytes), checked on load; version 1 files
# (no digests) still load, with the checks version 1 had.
STORY_VERSION = 2
OLDER_STORY_VERSIONS: tuple[int, ...] = (1,)
MANIFEST_KEY = "onestory.story"   # safetensors metadata key holding the JSON manifest

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16",
                  "float": "float32"}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def storage_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype or its name ("float16", "bf16", ...) -> one of the three storage dtypes."""
    if isinstance(dtype, str):
        key = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
        if key in _DTYPES:
            return _DTYPES[key]
    elif dtype in _DTYPES.values():
        return dtype
    raise OneStoryError(f"memory dtype {dtype!r} is not supported; use float32, float16 or bfloat16")


def _index(value: Any, what: str) -> int:
    # bool is an int subclass; True as an index is always a bug in the caller.
    if isinstance(value, bool):
        raise OneStoryError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise OneStoryError(f"{what} must be an integer, got {type(value).__name__}") from None


def _canonical_json(value: Any) -> str:
    # One spelling per value, so equal content hashes equally in every process.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class FrameRecord:
    """Where one memory frame came from. `pinned` and `excluded` are mutually exclusive."""

    shot: int            # 0-based shot index
    frame: int           # latent-frame index inside its shot
    source: str          # Source
    pinned: bool = False
    excluded: bool = False

    def __post_init__(self) -> None:
        for name in ("shot", "frame"):
            v = _index(getattr(self, name), f"FrameRecord.{name}")
            if v < 0:
                raise OneStoryError(f"FrameRecord.{name} must be >= 0, got {v}")
            object.__setattr__(self, name, v)
        if self.source not in SOURCES:
            raise OneStoryError(f"frame source {self.source!r} is unknown; use one of {SOURCES}")
        if not isinstance(self.pinned, bool) or not isinstance(self.excluded, bool):
            raise OneStoryError("FrameRecord.pinned / excluded must be True or False")
        if self.pinned and self.excluded:
            raise OneStoryError(f"frame {self.frame} of shot {self.shot} is both pinned and "
                                "excluded; a frame can be one or the other")

    def to_json(self) -> dict:
        return {"shot": self.shot, "frame": self.frame, "source": self.source,
                "pinned": self.pinned, "excluded": self.excluded}

    @staticmethod
    def from_json(d: Mapping) -> "FrameRecord":
        return FrameRecord(d["shot"], d["frame"], d["source"], d["pinned"], d["excluded"])


@dataclass(frozen=True)
class ShotRecord:
    """Per-shot facts. `selection` is stored as a frozen JSON value (dicts become read-only
    mappings, lists become tuples) so nobody can change a bank through it; `selection_dict()`
    returns a plain, freshly built dict."""

    caption: str
    source: str                   # Source of the shot as added
    seed: int | None = None
    selection: Mapping | None = None   # JSON-able summary of the Selection used to make it

    def __post_init__(self) -> None:
        if not isinstance(self.caption, str):
            raise OneStoryError(f"shot caption must be a string, got {type(self.caption).__name__}")
        if self.source not in SOURCES:
            raise OneStoryError(f"shot source {self.source!r} is unknown; use one of {SOURCES}")
        if self.seed is not None:
            object.__setattr__(self, "seed", _index(self.seed, "shot seed"))
        if self.selection is not None:
            sel = _thaw(self.selection)
            if not isinstance(sel, dict):
                raise OneStoryError(f"shot selection must be a dict (Selection.to_json()), "
                                    f"got {type(self.selection).__name__}")
            try:
                # Round trip through JSON: detaches from the caller's objects, rejects NaN and
                # non-JSON values, and makes the value equal to what a loaded file yields.
                sel = json.loads(_canonical_json(sel))
            except (TypeError, ValueError) as e:
                raise OneStoryError(f"shot selection is not JSON-serialisable without NaN/inf "
                                    f"({e}); pass Selection.to_json()") from None
            object.__setattr__(self, "selection", _freeze(sel))

    def __hash__(self) -> int:
        return hash(_canonical_json(self.to_json()))

    def __reduce__(self):
        # mappingproxy cannot be pickled/deep-copied; rebuild from the plain JSON value.
        return (ShotRecord, (self.caption, self.source, self.seed, self.selection_dict()))

    def selection_dict(self) -> dict | None:
        return None if self.selection is None else _thaw(self.selection)

    def to_json(self) -> dict:
        return {"caption": self.caption, "source": self.source, "seed": self.seed,
                "selection": self.selection_dict()}

    @staticmethod
    def from_json(d: Mapping) -> "ShotRecord":
        return ShotRecord(d["caption"], d["source"], d["seed"], d["selection"])


# ----------------------------------------------------------------------------- validation


def _check_finite(x: Tensor, what: str, fix: str) -> None:
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise OneStoryError(f"{what} contains {n_nan} NaN and {n_inf} inf values; {fix}")


def _check_tensor(x: Any, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise OneStoryError(f"{what} must be a torch.Tensor (a LATENT's 'samples'), "
                            f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise OneStoryError(f"{what} has dtype {x.dtype}; latents must be floating point "
                            "(VAE Encode output)")
    if x.numel() == 0:
        raise ShapeError(f"{what} has shape {tuple(x.shape)} with no elements; it holds no frames")
    return x


def _to_storage(x: Tensor, dtype: torch.dtype, what: str) -> Tensor:
    """Copy `x` (frames "t c h w") to a fresh contiguous CPU tensor in the storage dtype."""
    _check_finite(x, what, "the sampler or VAE diverged; regenerate this shot")
    out = x.detach().to(device="cpu", dtype=dtype, copy=True, memory_format=torch.contiguous_format)
    if dtype != torch.float32 and x.dtype != dtype:
        _check_finite(out, f"{what} cast to {_dtype_name(dtype)}",
                      "its values exceed that range; use a float32 or bfloat16 memory bank")
    return out


# ----------------------------------------------------------------------------- bank

class MemoryBank:
    """Immutable memory of earlier shots: frames "f c h w" + one FrameRecord per frame.

    Frames are stored shot-major (shot 0's frames first, in time order); the constructor
    enforces this, so a frame's index in the bank is also its global time rank.
    """

    __slots__ = ("_frames", "_records", "_shots", "_fingerprint")

    def __init__(self, frames: Tensor, records: Iterable[FrameRecord],
                 shots: Iterable[ShotRecord]) -> None:
        """Build a bank from parts (validated; `frames` is copied, never aliased)."""
        if not isinstance(frames, Tensor) or frames.ndim != 4:
            raise ShapeError(f"frames must be an 'f c h w' tensor, got "
                             f"{tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__}")
        if not frames.is_floating_point():
            raise OneStoryError(f"frames has dtype {frames.dtype}; latents must be floating point")
        # float64 (or anything else) is stored as float32; the three storage dtypes are kept.
        dtype = frames.dtype if frames.dtype in _DTYPES.values() else torch.float32
        frames = _to_storage(frames, dtype, "frames")
        self._init(frames, tuple(records), tuple(shots))

    def _init(self, frames: Tensor, records: tuple[FrameRecord, ...],
              shots: tuple[ShotRecord, ...]) -> None:
        if len(records) == 0:
            # One canonical empty layout, so every empty bank of a dtype has one fingerprint.
            frames = torch.empty(0, 0, 0, 0, dtype=frames.dtype)
        _check_structure(frames, records, shots)
        object.__setattr__(self, "_frames", frames)
        object.__setattr__(self, "_records", records)
        object.__setattr__(self, "_shots", shots)
        object.__setattr__(self, "_fingerprint", None)

    @classmethod
    def _new(cls, frames: Tensor, records: tuple[FrameRecord, ...],
             shots: tuple[ShotRecord, ...]) -> "MemoryBank":
        # Internal: `frames` is already a tensor owned by banks only (no copy needed).
        bank = cls.__new__(cls)
        bank._init(frames, records, shots)
        return bank

    @staticmethod
    def empty(dtype: torch.dtype | str = torch.float32) -> "MemoryBank":
        return MemoryBank._new(torch.empty(0, 0, 0, 0, dtype=storage_dtype(dtype)), (), ())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("MemoryBank is immutable; its methods return a new bank")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("MemoryBank is immutable")

    def __reduce__(self):
        # The default slot-state protocol would go through the blocked __setattr__.
        return (MemoryBank._new, (self._frames, self._records, self._shots))

    # ------------------------------------------------------------------ properties

    @property
    def frames(self) -> Tensor:
        """"f c h w" CPU tensor in the storage dtype. READ-ONLY by convention (see module doc)."""
        return self._frames

    @property
    def records(self) -> tuple[FrameRecord, ...]:
        return self._records

    @property
    def shots(self) -> tuple[ShotRecord, ...]:
        return self._shots

    @property
    def dtype(self) -> torch.dtype:
        return self._frames.dtype

    @property
    def num_frames(self) -> int:
        return len(self._records)

    @property
    def num_shots(self) -> int:
        return len(self._shots)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def channels(self) -> int | None:
        return self._frames.shape[1] if self._records else None

    @property
    def height(self) -> int | None:
        return self._frames.shape[2] if self._records else None

    @property
    def width(self) -> int | None:
        return self._frames.shape[3] if self._records else None

    @property
    def pinned(self) -> tuple[bool, ...]:
        return tuple(r.pinned for r in self._records)

    @property
    def excluded(self) -> tuple[bool, ...]:
        return tuple(r.excluded for r in self._records)

    def __repr__(self) -> str:
        dt = _dtype_name(self.dtype)
        if not self._records:
            return f"MemoryBank(empty, {dt})"
        def n(k: int, word: str) -> str:
            return f"{k} {word}" + ("" if k == 1 else "s")
        return (f"MemoryBank({n(self.num_shots, 'shot')}, {n(self.num_frames, 'frame')}, "
                f"{self.channels}ch {self.height}x{self.width}, {dt}, "
                f"{sum(self.pinned)} pinned, {sum(self.excluded)} excluded)")

    # ------------------------------------------------------------------ operations

    def add_shot(self, latent: Tensor, caption: str, source: str = "generated",
                 seed: int | None = None, selection: Mapping | None = None) -> "MemoryBank":
        """Append a shot. `latent`: ComfyUI "b c t h w" with b == 1, or "c t h w"."""
        shot = ShotRecord(caption, source, seed, selection)   # validates the small inputs first
        x = _check_tensor(latent, "latent")
        if x.ndim == 5:
            if x.shape[0] != 1:
                raise ShapeError(
                    f"latent has batch size {x.shape[0]}; the memory bank takes one shot at a "
                    "time — pick one with a batch node (e.g. 'Latent From Batch') before adding it")
            x = x[0]
        elif x.ndim != 4:
            raise ShapeError(f"latent has shape {tuple(x.shape)}; expected 'b c t h w' "
                             "(a ComfyUI video LATENT with batch 1) or 'c t h w'")
        self._check_compatible(x.shape[0], x.shape[2], x.shape[3], "latent")
        new = _to_storage(rearrange(x, "c t h w -> t c h w"), self.dtype, "latent")
        index = self.num_shots
        records = self._records + tuple(FrameRecord(index, i, source) for i in range(new.shape[0]))
        frames = torch.cat([self._frames, new]) if self._records else new
        return MemoryBank._new(frames, records, self._shots + (shot,))

    def swap_frame(self, index: int, latent: Tensor, source: str = "user") -> "MemoryBank":
        """Replace frame `index` with `latent` ("c h w", or "1 c 1 h w" = a one-image LATENT).
        The frame keeps its pinned / excluded flags; its source becomes `source`."""
        index = self._check_index(index)
        if source not in SOURCES:
            raise OneStoryError(f"frame source {source!r} is unknown; use one of {SOURCES}")
        x = _check_tensor(latent, "latent")
        if x.ndim == 5 and x.shape[0] == 1 and x.shape[2] == 1:
            x = x[0, :, 0]
        elif x.ndim != 3:
            raise ShapeError(f"latent has shape {tuple(x.shape)}; a swapped frame must be 'c h w' "
                             "or a one-image LATENT '1 c 1 h w' (encode a single image)")
        self._check_compatible(x.shape[0], x.shape[1], x.shape[2], "latent")
        new = _to_storage(x, self.dtype, "latent")
        frames = self._frames.clone()
        frames[index] = new
        old = self._records[index]
        rec = FrameRecord(old.shot, old.frame, source, old.pinned, old.excluded)
        records = self._records[:index] + (rec,) + self._records[index + 1:]
        return MemoryBank._new(frames, records, self._shots)

    def set_pinned(self, indices: int | Iterable[int], pinned: bool = True) -> "MemoryBank":
        """Pin (always keep) or unpin frames. Pinning a frame clears its `excluded` flag."""
        return self._set_flags(indices, pinned, "pinned")

    def set_excluded(self, indices: int | Iterable[int], excluded: bool = True) -> "MemoryBank":
        """Exclude (never keep) or re-include frames. Excluding a frame clears its `pinned` flag."""
        return self._set_flags(indices, excluded, "excluded")

    def drop_shot(self, shot: int) -> "MemoryBank":
        """Remove one shot and its frames; later shots move down by one."""
        shot = self._check_shot(shot)
        keep = [i for i, r in enumerate(self._records) if r.shot != shot]
        records = tuple(r if r.shot < shot else FrameRecord(r.shot - 1, r.frame, r.source,
                                                            r.pinned, r.excluded)
                        for r in self._records if r.shot != shot)
        frames = self._frames[torch.tensor(keep, dtype=torch.long)] if keep else self._frames[:0]
        return MemoryBank._new(frames, records, self._shots[:shot] + self._shots[shot + 1:])

    def truncate(self, num_shots: int) -> "MemoryBank":
        """Keep shots [0, num_shots) — e.g. before re-generating shot `num_shots`."""
        n = _index(num_shots, "num_shots")
        if not 0 <= n <= self.num_shots:
            raise OneStoryError(f"num_shots={n} is out of range; the bank has {self.num_shots} "
                                f"shots, so keep between 0 and {self.num_shots}")
        f = sum(1 for r in self._records if r.shot < n)
        # clone: a slice would keep the dropped frames' memory alive.
        frames = self._frames if f == self.num_frames else self._frames[:f].clone()
        return MemoryBank._new(frames, self._records[:f], self._shots[:n])

    def shot_frames(self, shot: int) -> Tensor:
        """Frames of one shot as "c t h w" (a fresh copy, storage dtype)."""
        shot = self._check_shot(shot)
        idx = [i for i, r in enumerate(self._records) if r.shot == shot]
        x = self._frames[idx[0]: idx[-1] + 1]   # contiguous run: storage is shot-major
        return rearrange(x, "t c h w -> c t h w").clone(memory_format=torch.contiguous_format)

    def frame_times(self) -> Tensor:
        """"f" float32 global time rank (shot-major), used to order context frames for RoPE."""
        return torch.arange(self.num_frames, dtype=torch.float32)

    def frame_times_of(self, indices: Sequence[int]) -> list[float]:
        """``frame_times()[indices]`` as Python floats, without building the whole tensor."""
        f = self.num_frames
        if any(not -f <= i < f for i in indices):
            raise IndexError(f"frame indices {list(indices)} out of range for {f} frames")
        return [float(i % f) for i in indices]

    # ------------------------------------------------------------------ identity

    def _manifest(self) -> dict:
        return {"format": STORY_FORMAT, "version": STORY_VERSION,
                "dtype": _dtype_name(self.dtype), "shape": list(self._frames.shape),
                "records": [r.to_json() for r in self._records],
                "shots": [s.to_json() for s in self._shots]}

    def fingerprint(self) -> str:
        """sha256 hex of dtype, shape, raw frame bytes and all records; cached (immutable)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            meta = _canonical_json(self._manifest()).encode("ascii")
            h.update(struct.pack("<Q", len(meta)))   # length prefix: unambiguous framing
            h.update(meta)
            # uint8 view works for every dtype incl. bfloat16 (numpy has no bf16).
            h.update(self._frames.reshape(-1).view(torch.uint8).numpy())
            object.__setattr__(self, "_fingerprint", h.hexdigest())
        return self._fingerprint

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write ONE safetensors file: tensor "frames" + JSON manifest in metadata, atomically.

        The manifest carries the sha256 of the frames' bytes so that `load` notices bytes
        changed after saving (a value overwritten in place keeps the size and header intact).
        """
        from safetensors.torch import save as st_save

        manifest = {**self._manifest(), "digests": {"frames": sha256_of(self._frames)}}
        data = st_save({"frames": self._frames}, metadata={MANIFEST_KEY: _canonical_json(manifest)})
        atomic_write_bytes(path, data)

    @staticmethod
    def load(path: str | os.PathLike) -> "MemoryBank":
        """Read a story file written by `save`. Never unpickles; bit-exact."""
        p = os.fspath(path)
        m, tensors = read_onestory_file(p, "story file", MANIFEST_KEY, STORY_FORMAT, STORY_VERSION,
                                        "choose a file saved by Save Story", older=OLDER_STORY_VERSIONS)
        if set(tensors) != {"frames"}:
            raise FileFormatError(f"story file {p!r} holds tensors {sorted(tensors)}, "
                                  "expected exactly ['frames']")
        frames = tensors["frames"]
        try:
            if m["dtype"] not in _DTYPES or frames.dtype != _DTYPES[m["dtype"]]:
                raise FileFormatError(f"story file {p!r}: manifest dtype {m['dtype']!r} but "
                                      f"tensor dtype {_dtype_name(frames.dtype)}")
            if list(frames.shape) != list(m["shape"]):
                raise FileFormatError(f"story file {p!r}: manifest shape {m['shape']} but tensor "
                                      f"shape {list(frames.shape)}; the file is inconsistent")
            if m["version"] >= 2:
                _check_digest(p, m, "frames", frames)
            records = tuple(FrameRecord.from_json(r) for r in m["records"])
            shots = tuple(ShotRecord.from_json(s) for s in m["shots"])
            if not bool(torch.isfinite(frames).all()):
                raise FileFormatError(f"story file {p!r} contains NaN/inf latents; it is corrupt")
            return MemoryBank._new(frames.contiguous(), records, shots)
        except FileFormatError:
            raise
        except (OneStoryError, KeyError, TypeError, AttributeError) as e:
            raise FileFormatError(f"story file {p!r} has an invalid manifest: {e}") from None

    # ------------------------------------------------------------------ helpers

    def _check_compatible(self, c: int, h: int, w: int, what: str) -> None:
        if not self._records:
            return
        C, H, W = self._frames.shape[1:]
        problems = []
        if c != C:
            problems.append(f"{c} channels but the memory bank has {C}")
        if (h, w) != (H, W):
            problems.append(f"latent frames of height {h} and width {w} but the memory bank's "
                            f"have height {H} and width {W}")
        if problems:
            raise ShapeError(
                f"{what} has " + " and ".join(problems) + ": it comes from a different VAE/model "
                "family or a different resolution than the earlier shots. Use the same model and "
                "resolution for every shot, or start a new story.")

    def _check_index(self, index: Any) -> int:
        i = _index(index, "frame index")
        if not 0 <= i < self.num_frames:
            valid = f"valid 0..{self.num_frames - 1}" if self.num_frames else "the bank is empty"
            raise OneStoryError(f"frame index {i} is out of range: the bank has "
                                f"{self.num_frames} frames ({valid})")
        return i

    def _check_shot(self, shot: Any) -> int:
        s = _index(shot, "shot")
        if not 0 <= s < self.num_shots:
            valid = f"valid 0..{self.num_shots - 1}" if self.num_shots else "the bank is empty"
            raise OneStoryError(f"shot {s} is out of range: the bank has {self.num_shots} "
                                f"shots ({valid})")
        return s

    def _set_flags(self, indices: int | Iterable[int], value: bool, flag: str) -> "MemoryBank":
        if not isinstance(value, bool):
            raise OneStoryError(f"{flag} must be True or False, got {value!r}")
        if isinstance(indices, Tensor):
            indices = indices.tolist()
        if isinstance(indices, Iterable) and not isinstance(indices, (str, bytes)):
            idx = {self._check_index(i) for i in indices}
        else:
            idx = {self._check_index(indices)}
        records = list(self._records)
        for i in idx:
            r = records[i]
            pinned = value if flag == "pinned" else (r.pinned and not value)
            excluded = value if flag == "excluded" else (r.excluded and not value)
            records[i] = FrameRecord(r.shot, r.frame, r.source, pinned, excluded)
        # Flags only: the frames tensor is shared, not copied (it is read-only by contract).
        return MemoryBank._new(self._frames, tuple(records), self._shots)


def _check_digest(path: str, manifest: Mapping, name: str, tensor: Tensor) -> None:
    """The tensor's bytes must match the digest saved with them (story format >= 2)."""
    digests = manifest.get("digests")
    want = digests.get(name) if isinstance(digests, dict) else None
    if not isinstance(want, str):
        raise FileFormatError(f"story file {path!r} (format version {manifest['version']}) has no digest for "
                              f"tensor {name!r}; the file is damaged or was not written by Save Story — "
                              "save the story again or restore a backup")
    if sha256_of(tensor) != want:
        raise FileFormatError(f"story file {path!r}: the bytes of tensor {name!r} do not match the sha256 "
                              "digest saved with them, so the latents were changed or damaged after saving. "
                              "Restore the file from a backup or save the story again.")


def _check_structure(frames: Tensor, records: tuple[FrameRecord, ...],
                     shots: tuple[ShotRecord, ...]) -> None:
    """Invariants: shot-major order, frames 0..T-1 per shot, every shot has >= 1 frame."""
    if frames.ndim != 4 or frames.dtype not in _DTYPES.values() or frames.device.type != "cpu":
        raise ShapeError(f"frames must be a CPU 'f c h w' tensor of float32/float16/bfloat16, "
                         f"got {tuple(frames.shape)} {frames.dtype} on {frames.device}")
    if frames.shape[0] != len(records):
        raise ShapeError(f"frames has {frames.shape[0]} frames but there are {len(records)} records")
    if not all(isinstance(r, FrameRecord) for r in records) or \
            not all(isinstance(s, ShotRecord) for s in shots):
        raise OneStoryError("records must be FrameRecord and shots ShotRecord instances")
    expect_shot, expect_frame = 0, 0
    for i, r in enumerate(records):
        if r.shot == expect_shot + 1 and expect_frame > 0:
            expect_shot, expect_frame = r.shot, 0
        if (r.shot, r.frame) != (expect_shot, expect_frame):
            raise OneStoryError(f"record {i} is (shot {r.shot}, frame {r.frame}), expected "
                                f"(shot {expect_shot}, frame {expect_frame}): frames must be "
                                "stored shot-major with consecutive frame numbers")
        expect_frame += 1
    n = expect_shot + 1 if records else 0
    if n != len(shots):
        raise OneStoryError(f"records cover {n} shots but there are {len(shots)} shot records")
