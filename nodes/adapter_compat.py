"""Builds the live modules of a trained adapter file for a ComfyUI MODEL.

`onestory.adapter.load_adapter` returns (meta, selector_state, conditioner_state) after checking
every metadata field against `expect`; this turns that into an AdapterBundle.
"""
from __future__ import annotations

from types import SimpleNamespace

from ..onestory.adapter import BackboneInfo
from .types import AdapterBundle


def expectation(backbone) -> BackboneInfo:
    """The core's BackboneInfo for a ComfyUI Wan MODEL (same family rules as the core)."""
    return BackboneInfo.from_wan_config(SimpleNamespace(
        model_type=backbone.model_type, dim=backbone.model_dim, text_dim=backbone.text_dim,
        in_dim=backbone.in_dim, out_dim=backbone.latent_channels))


def bundle_from_loaded(name: str, loaded, backbone, normalization, latent_format) -> AdapterBundle:
    from ..onestory.conditioner import AdaptiveConditioner
    from ..onestory.selector import FrameSelector

    meta, selector_state, conditioner_state = loaded
    conditioner = AdaptiveConditioner(meta.latent_channels, meta.model_dim, kernels=meta.kernels)
    conditioner.load_state_dict(conditioner_state)
    selector = None
    if meta.selector is not None:
        s = meta.selector
        selector = FrameSelector(meta.latent_channels, meta.text_dim, width=s.width, num_queries=s.num_queries,
                                 heads=s.heads, spatial_stride=s.spatial_stride)
        selector.load_state_dict(selector_state)
        selector.eval()
    return AdapterBundle(name, conditioner.eval(), selector, backbone, normalization, latent_format,
                         default_k=meta.default_k, default_budget=meta.default_budget)
