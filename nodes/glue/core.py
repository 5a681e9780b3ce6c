"""The ComfyUI layer's one link to the core.

In a ComfyUI checkout this pack is a folder that ComfyUI imports as a package, with the core in
its `onestory/` subfolder; installed with pip it is `comfyui_onestory`, beside the top-level core
package `onestory`. Every node and glue module takes core names from here.
"""
from __future__ import annotations

import importlib

_PACK = __name__.rsplit(".nodes.", 1)[0]
CORE_PACKAGE = "onestory" if _PACK == "comfyui_onestory" else f"{_PACK}.onestory"


def _core(module: str):
    return importlib.import_module(f"{CORE_PACKAGE}.{module}")


_adapter = _core("adapter")
_conditioner = _core("conditioner")

AdapterMeta = _adapter.AdapterMeta
AdapterMismatch = _core("errors").AdapterMismatch
BackboneInfo = _adapter.BackboneInfo
OneStoryAdapter = _adapter.OneStoryAdapter
check_compatible = _adapter.check_compatible
AdaptiveConditioner = _conditioner.AdaptiveConditioner
Context = _conditioner.Context
solve_budget = _conditioner.solve_budget
tokens_per_frame = _conditioner.tokens_per_frame
defaults = _core("defaults")
LatentNormalization = _core("latent").LatentNormalization
MemoryBank = _core("memory").MemoryBank
safe_relative_path = _core("paths").safe_relative_path
select = _core("scorers").select
_pipeline = _core("pipeline")
MemorySettings = _pipeline.MemorySettings
NextShotPipeline = _pipeline.NextShotPipeline
ShotSpec = _pipeline.ShotSpec

# multi-shot story metrics (torch-only modules; the loaders take transformers from the caller)
metric_annotation = _core("metrics.annotation")
metric_encoders = _core("metrics.encoders")
metric_frames = _core("metrics.frames")
metric_interfaces = _core("metrics.interfaces")
metric_score = _core("metrics.score")
