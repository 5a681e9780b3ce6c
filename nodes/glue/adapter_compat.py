"""A trained OneStory adapter file bound to a ComfyUI MODEL.

Everything about the file (format, version, metadata, strict weight loading, building the
selector / conditioner with the metadata's hyper-parameters *including* `time_gap`, and the
backbone check) is the core's `onestory.adapter.OneStoryAdapter.load`; this module only turns
a ComfyUI MODEL into the core's `BackboneInfo` and the result into an `AdapterBundle`.
"""
from __future__ import annotations

from types import SimpleNamespace

from .core import AdapterMeta, AdapterMismatch, BackboneInfo, OneStoryAdapter, check_compatible
from .types import AdapterBundle


def expectation(backbone) -> BackboneInfo:
    """The core's BackboneInfo for a ComfyUI Wan MODEL (same family rules as the core)."""
    return BackboneInfo.from_wan_config(SimpleNamespace(
        model_type=backbone.model_type, dim=backbone.model_dim, text_dim=backbone.text_dim,
        in_dim=backbone.in_dim, out_dim=backbone.latent_channels))


def bundle_from_file(name: str, path, backbone, normalization, latent_format) -> AdapterBundle:
    """Load `path` strictly for this backbone (AdapterMismatch lists every differing field)."""
    adapter = OneStoryAdapter.load(path, expect=expectation(backbone))
    return AdapterBundle(name, adapter.conditioner.eval(), adapter.selector, backbone, normalization,
                         latent_format, default_budget=adapter.meta.default_budget)


def check_bundle(adapter: AdapterBundle, backbone, which: str) -> None:
    """An adapter bound to one MODEL used with another (e.g. model_low): the core's check.

    A bundle is bound to the backbone it was loaded for (trained files were already checked
    against it), so that backbone stands for the adapter's metadata here. A mismatch therefore
    always means the Adapter Loader got another MODEL than `which`; the advice says so (for the
    training-free adapter, which is derived from the loader's MODEL, that is the only fix).
    """
    own, got = expectation(adapter.backbone), expectation(backbone)
    meta = AdapterMeta(backbone=own.family, model_dim=own.model_dim, text_dim=own.text_dim,
                       latent_channels=own.latent_channels)
    try:
        check_compatible(meta, got, name=f"adapter {adapter.name!r} (connected with the {which})")
    except AdapterMismatch:
        pairs = [("backbone family", own.family, got.family), ("model_dim", own.model_dim, got.model_dim),
                 ("text_dim", own.text_dim, got.text_dim),
                 ("latent_channels", own.latent_channels, got.latent_channels)]
        diff = "; ".join(f"{f}: adapter {a!r} vs {which} {m!r}" for f, a, m in pairs if a != m)
        socket = "model" if which == "MODEL" else which
        if which == "model_low":
            fix = ("model_low must be the low-noise expert of the same Wan model as model (the Wan 2.2 A14B "
                   "high- and low-noise experts match).")
        elif adapter.trained:
            fix = (f"Connect the same MODEL to the Adapter Loader and to the {socket!r} input of this node, or "
                   f"load an adapter trained for the {got.family} model.")
        else:
            fix = ("The training-free adapter is derived from the MODEL connected to the Adapter Loader: "
                   f"connect the same MODEL to the Adapter Loader and to the {socket!r} input of this node.")
        raise AdapterMismatch(f"adapter {adapter.name!r} was loaded for a {own.family} MODEL (dim {own.model_dim}) "
                              f"but the {which} is a {got.family} MODEL (dim {got.model_dim}): {diff}. {fix}") from None
