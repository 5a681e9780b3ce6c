"""The OneStory adapter file: selector + conditioner weights and the facts needed to use them.

One safetensors file: tensors `selector.*` (absent when no trained selector) and
`conditioner.*`; metadata key `onestory.adapter` = JSON of `AdapterMeta`. Loading checks
every field against the backbone it will be applied to and lists every mismatch at once, so
the user fixes the workflow in one go instead of one error per queue.

The file functions only read and write state dicts. `OneStoryAdapter` is a convenience holder
that builds the FrameSelector / AdaptiveConditioner described by the metadata (imported
lazily, so reading or validating a file never touches those modules).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from torch import Tensor

from . import defaults
from .errors import AdapterMismatch, FileFormatError, OneStoryError
from .paths import atomic_write_bytes, read_onestory_file

if TYPE_CHECKING:   # imported lazily at run time: reading a file must not build modules
    from .conditioner import AdaptiveConditioner
    from .frame_selector import FrameSelector

ADAPTER_FORMAT = "onestory-adapter"
ADAPTER_VERSION = 1
META_KEY = "onestory.adapter"
DEFAULT_KERNELS = defaults.KERNELS
DEFAULT_K = defaults.K
Kernel = defaults.Kernel


def _pos_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OneStoryError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class SelectorMeta:
    """FrameSelector hyper-parameters (its constructor arguments besides channels/text_dim)."""

    width: int
    num_queries: int
    heads: int
    spatial_stride: int
    max_shots: int = 0      # shot-order embedding slots; 0 (files before it existed) = none

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "max_shots":
                if isinstance(self.max_shots, bool) or not isinstance(self.max_shots, int) \
                        or self.max_shots < 0:
                    raise OneStoryError(f"selector.max_shots must be an integer >= 0, "
                                        f"got {self.max_shots!r}")
                continue
            _pos_int(getattr(self, f.name), f"selector.{f.name}")
        if self.width % self.heads:
            raise OneStoryError(f"selector.width {self.width} is not divisible by "
                                f"selector.heads {self.heads}")


@dataclass(frozen=True, kw_only=True)
class AdapterMeta:
    backbone: str                       # BackboneInfo.family, e.g. "wan2.1-i2v"
    model_dim: int                      # DiT width D (context tokens are D wide)
    text_dim: int                       # caption feature width (umT5: 4096)
    latent_channels: int                # C of the VAE latents
    kernels: tuple[Kernel, ...] = DEFAULT_KERNELS
    default_budget: float = defaults.BUDGET   # latent-frame equivalents (paper default: 1)
    default_k: int = DEFAULT_K          # frames kept by the selector (onestory.defaults)
    selector: SelectorMeta | None = None
    # Extra RoPE time offset of context frames (AdaptiveConditioner.time_gap). It is not a
    # weight, so it must travel in the metadata or a trained adapter would load with other
    # positions than it was trained with.
    time_gap: float = 0.0
    format: str = ADAPTER_FORMAT
    version: int = ADAPTER_VERSION

    def __post_init__(self) -> None:
        if self.format != ADAPTER_FORMAT:
            raise OneStoryError(f"adapter format {self.format!r}, expected {ADAPTER_FORMAT!r}")
        if self.version != ADAPTER_VERSION:
            raise OneStoryError(f"adapter version {self.version!r}; this OneStory supports "
                                f"version {ADAPTER_VERSION} only")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise OneStoryError(f"backbone must be a non-empty string, got {self.backbone!r}")
        for name in ("model_dim", "text_dim", "latent_channels", "default_k"):
            _pos_int(getattr(self, name), name)
        b = self.default_budget
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0 or b == float("inf"):
            raise OneStoryError(f"default_budget must be a positive number, got {b!r}")
        object.__setattr__(self, "default_budget", float(b))
        g = self.time_gap
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g < float("inf"):
            raise OneStoryError(f"time_gap must be a finite number >= 0, got {g!r}")
        object.__setattr__(self, "time_gap", float(g))
        # Accept lists (from JSON) but store tuples so the meta stays immutable and hashable.
        try:
            kernels = tuple(tuple(k) for k in self.kernels)
        except TypeError:
            raise OneStoryError(f"kernels must be a list of 3-tuples, got {self.kernels!r}") from None
        if not kernels or any(len(k) != 3 for k in kernels):
            raise OneStoryError(f"kernels must be a non-empty list of 3-tuples, got {self.kernels!r}")
        for k in kernels:
            for v in k:
                _pos_int(v, f"kernel {k} entry")
        object.__setattr__(self, "kernels", kernels)
        if isinstance(self.selector, Mapping):
            object.__setattr__(self, "selector", SelectorMeta(**self.selector))
        elif self.selector is not None and not isinstance(self.selector, SelectorMeta):
            raise OneStoryError(f"selector must be SelectorMeta, a dict or None, got {self.selector!r}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["kernels"] = [list(k) for k in self.kernels]
        if d["selector"] is not None and not d["selector"]["max_shots"]:
            del d["selector"]["max_shots"]   # order-free files stay readable by older versions
        return d

    @staticmethod
    def from_json(d: Mapping) -> "AdapterMeta":
        names = {f.name for f in fields(AdapterMeta)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise OneStoryError(f"unknown adapter metadata fields {unknown}")
        sel = d.get("selector")
        if isinstance(sel, Mapping):
            extra = sorted(set(sel) - {f.name for f in fields(SelectorMeta)})
            if extra:
                raise OneStoryError(f"unknown selector metadata fields {extra}")
        return AdapterMeta(**d)


@dataclass(frozen=True)
class BackboneInfo:
    """What an adapter must match about the model it is applied to."""

    family: str             # "wan2.1-t2v" | "wan2.1-i2v" | "wan2.2-ti2v" | ...
    model_dim: int
    text_dim: int
    latent_channels: int

    @staticmethod
    def from_wan_config(cfg: Any) -> "BackboneInfo":
        """From anything with `model_type, dim, text_dim, out_dim, in_dim` (onestory.wan.WanConfig
        or an equivalent built from a ComfyUI model). The family is decided by the latent
        channel layout, which is what the conditioner's patchifiers depend on: Wan 2.2 A14B
        I2V (in_dim 36, no CLIP) therefore counts as "wan2.1-i2v", like Wan 2.1 I2V-14B."""
        try:
            in_dim, out_dim = int(cfg.in_dim), int(cfg.out_dim)
            dim, text_dim = int(cfg.dim), int(cfg.text_dim)
        except AttributeError as e:
            raise OneStoryError(f"backbone config lacks a field ({e}); expected a Wan config with "
                                "model_type, dim, text_dim, in_dim, out_dim") from None
        if out_dim == 48:
            family = "wan2.2-ti2v"
        elif in_dim == out_dim:
            family = "wan2.1-t2v"
        elif in_dim == 2 * out_dim + 4:
            family = "wan2.1-i2v"
        else:
            raise OneStoryError(
                f"unrecognised Wan backbone (model_type={getattr(cfg, 'model_type', None)!r}, "
                f"in_dim={in_dim}, out_dim={out_dim}); OneStory knows T2V (in_dim = out_dim), "
                "I2V (in_dim = 2*out_dim + 4) and Wan 2.2 TI2V (out_dim = 48)")
        return BackboneInfo(family, dim, text_dim, out_dim)


def check_compatible(meta: AdapterMeta, info: BackboneInfo, name: str = "adapter") -> None:
    """Raise AdapterMismatch listing every field where `meta` and `info` disagree."""
    pairs = [("backbone family", meta.backbone, info.family),
             ("model_dim", meta.model_dim, info.model_dim),
             ("text_dim", meta.text_dim, info.text_dim),
             ("latent_channels", meta.latent_channels, info.latent_channels)]
    bad = [f"{field_}: adapter {a!r} vs model {m!r}" for field_, a, m in pairs if a != m]
    if bad:
        raise AdapterMismatch(
            f"{name} was made for a {meta.backbone} backbone (dim {meta.model_dim}) and does not "
            f"fit this {info.family} model (dim {info.model_dim}): " + "; ".join(bad) +
            ". Load an adapter trained for this model, or use the model the adapter was trained for.")


def _prefixed(prefix: str, state: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise OneStoryError(f"{what} must map str -> Tensor; entry {k!r} is {type(v).__name__}")
        # Fresh contiguous CPU copies: safetensors refuses shared/non-contiguous storage, and
        # the file must not alias the caller's live parameters.
        out[prefix + k] = v.detach().to("cpu", copy=True).contiguous()
    return out


def save_adapter(path: str | os.PathLike, selector_state: Mapping[str, Tensor] | None,
                 conditioner_state: Mapping[str, Tensor], meta: AdapterMeta) -> None:
    """Write an adapter file atomically. `selector_state` must be given iff `meta.selector`."""
    from safetensors.torch import save as st_save

    if not isinstance(meta, AdapterMeta):
        raise OneStoryError(f"meta must be an AdapterMeta, got {type(meta).__name__}")
    has_sel = bool(selector_state)
    if has_sel != (meta.selector is not None):
        raise OneStoryError(
            "selector_state and meta.selector disagree: pass both (a trained selector) or "
            f"neither (got selector_state with {len(selector_state or {})} tensors, "
            f"meta.selector={meta.selector})")
    if not conditioner_state:
        raise OneStoryError("conditioner_state is empty; pass AdaptiveConditioner.state_dict()")
    tensors = _prefixed("selector.", selector_state or {}, "selector_state")
    tensors.update(_prefixed("conditioner.", conditioner_state, "conditioner_state"))
    data = st_save(tensors, metadata={META_KEY: json.dumps(meta.to_json(), sort_keys=True)})
    atomic_write_bytes(path, data)


def load_adapter(path: str | os.PathLike, expect: BackboneInfo | None = None
                 ) -> tuple[AdapterMeta, dict[str, Tensor] | None, dict[str, Tensor]]:
    """Read an adapter file -> (meta, selector_state or None, conditioner_state).

    Validates format, version and keys (FileFormatError) and, with `expect`, every field
    against the backbone (AdapterMismatch). Never unpickles.
    """
    p = os.fspath(path)
    d, tensors = read_onestory_file(p, "adapter file", META_KEY, ADAPTER_FORMAT, ADAPTER_VERSION,
                                    "put OneStory adapters in models/onestory")
    try:
        meta = AdapterMeta.from_json(d)
    except (OneStoryError, TypeError) as e:
        raise FileFormatError(f"adapter file {p!r} has invalid metadata: {e}") from None
    sel = {k[len("selector."):]: v for k, v in tensors.items() if k.startswith("selector.")}
    cond = {k[len("conditioner."):]: v for k, v in tensors.items() if k.startswith("conditioner.")}
    stray = sorted(k for k in tensors if not k.startswith(("selector.", "conditioner.")))
    if stray:
        raise FileFormatError(f"adapter file {p!r} has unexpected tensors {stray[:5]}; "
                              "expected only selector.* and conditioner.* keys")
    if not cond:
        raise FileFormatError(f"adapter file {p!r} has no conditioner.* tensors")
    if bool(sel) != (meta.selector is not None):
        raise FileFormatError(f"adapter file {p!r}: metadata says selector={meta.selector} but the "
                              f"file has {len(sel)} selector.* tensors")
    if expect is not None:
        check_compatible(meta, expect, name=f"adapter {os.path.basename(p)!r}")
    return meta, (sel or None), cond


@dataclass(frozen=True, eq=False)
class OneStoryAdapter:
    """The live modules of an adapter plus its metadata.

    `build(meta)` makes freshly initialised modules (e.g. to train); `load(path)` builds them
    and loads the file's weights strictly (missing / unexpected / mis-shaped keys ->
    FileFormatError); `save(path)` writes the current weights. Modules are float32 on the CPU
    after `build` / `load`; move them with `.to()` as usual.
    """

    meta: AdapterMeta
    conditioner: "AdaptiveConditioner"
    selector: "FrameSelector | None" = None

    @staticmethod
    def build(meta: AdapterMeta) -> "OneStoryAdapter":
        from .conditioner import AdaptiveConditioner
        from .frame_selector import FrameSelector

        conditioner = AdaptiveConditioner(meta.latent_channels, meta.model_dim,
                                          kernels=meta.kernels, time_gap=meta.time_gap)
        selector = None
        if meta.selector is not None:
            s = meta.selector
            selector = FrameSelector(meta.latent_channels, meta.text_dim, width=s.width,
                                     num_queries=s.num_queries, heads=s.heads,
                                     spatial_stride=s.spatial_stride, max_shots=s.max_shots)
        return OneStoryAdapter(meta, conditioner, selector)

    @staticmethod
    def from_modules(conditioner: "AdaptiveConditioner", selector: "FrameSelector | None", *,
                     backbone: str, text_dim: int, default_budget: float = defaults.BUDGET,
                     default_k: int = DEFAULT_K) -> "OneStoryAdapter":
        """Wrap trained modules, deriving the metadata from their configuration."""
        if tuple(conditioner.patch) != (1, 2, 2):
            # The v1 format assumes the Wan patch; budgets are counted in its tokens.
            raise OneStoryError(f"conditioner patch {conditioner.patch} cannot be stored in adapter "
                                "format version 1 (only (1, 2, 2), the Wan patch)")
        sel_meta = None
        if selector is not None:
            cfg = selector.config()
            if (cfg["latent_channels"], cfg["text_dim"]) != (conditioner.latent_channels, text_dim):
                raise OneStoryError(
                    f"selector expects {cfg['latent_channels']} latent channels and text_dim "
                    f"{cfg['text_dim']}, but the conditioner has {conditioner.latent_channels} "
                    f"channels and text_dim is {text_dim}; build both for the same backbone")
            sel_meta = SelectorMeta(cfg["width"], cfg["num_queries"], cfg["heads"],
                                    cfg["spatial_stride"], cfg["max_shots"])
        meta = AdapterMeta(backbone=backbone, model_dim=conditioner.dim, text_dim=text_dim,
                           latent_channels=conditioner.latent_channels, kernels=conditioner.kernels,
                           default_budget=default_budget, default_k=default_k, selector=sel_meta,
                           time_gap=conditioner.time_gap)
        return OneStoryAdapter(meta, conditioner, selector)

    @staticmethod
    def load(path: str | os.PathLike, expect: BackboneInfo | None = None) -> "OneStoryAdapter":
        meta, sel_state, cond_state = load_adapter(path, expect)
        adapter = OneStoryAdapter.build(meta)
        _load_strict(adapter.conditioner, cond_state, "conditioner", path)
        if adapter.selector is not None:
            _load_strict(adapter.selector, sel_state or {}, "selector", path)
            adapter.selector.eval()
        adapter.conditioner.eval()
        return adapter

    def save(self, path: str | os.PathLike) -> None:
        save_adapter(path, None if self.selector is None else self.selector.state_dict(),
                     self.conditioner.state_dict(), self.meta)


def _load_strict(module: Any, state: dict[str, Tensor], what: str, path: Any) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs module {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise FileFormatError(
            f"adapter file {os.fspath(path)!r}: {what} weights do not fit the {what} its metadata "
            f"describes (missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:5]}); the file was written inconsistently — re-export it")
    module.load_state_dict(state, strict=True)
