"""Adapter Loader: a trained OneStory adapter from models/onestory, or the training-free one."""
from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from .glue.bridge import backbone_of, normalization_of, patch_embedding_of
from .glue.types import Adapter, AdapterBundle

TRAINING_FREE = "training-free"
FOLDER = "onestory"


def register_folder() -> None:
    """models/onestory, like every other model folder (extra_model_paths.yaml can add more)."""
    import os

    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})


def training_free(model) -> AdapterBundle:
    """Untrained conditioner by kernel inflation of the MODEL's own patch embedding.

    The inflated patchifiers already map memory latents into the backbone's token space, so
    the DiT can attend to them without any training; frames are ranked by a heuristic scorer.
    """
    from .glue.core import AdaptiveConditioner

    backbone = backbone_of(model)
    weight, bias = patch_embedding_of(model)
    conditioner = AdaptiveConditioner.from_patch_embedding(weight, bias, backbone.latent_channels).eval()
    return AdapterBundle(TRAINING_FREE, conditioner, None, backbone, normalization_of(model),
                         model.get_model_object("latent_format"))


def from_file(model, name: str) -> AdapterBundle:
    """A trained adapter; the core builds it from its metadata and checks it against this MODEL."""
    from .glue.adapter_compat import bundle_from_file

    return bundle_from_file(name, folder_paths.get_full_path_or_raise(FOLDER, name), backbone_of(model),
                            normalization_of(model), model.get_model_object("latent_format"))


class AdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        register_folder()
        return io.Schema(
            node_id="OneStoryAdapterLoader",
            display_name="OneStory Adapter Loader",
            category="OneStory",
            description="Loads a OneStory adapter (frame selector + adaptive conditioner) for a Wan MODEL from "
                        "models/onestory, or builds the training-free one from the MODEL's own patch embedding.",
            inputs=[
                io.Model.Input("model", tooltip="The Wan MODEL the adapter will be used with; its shape is checked "
                                                "and the training-free conditioner is derived from it."),
                io.Combo.Input("adapter_name", options=[TRAINING_FREE] + folder_paths.get_filename_list(FOLDER),
                               tooltip="A file in models/onestory, or 'training-free' (no download; heuristic "
                                       "frame ranking and inflated patch-embedding patchifiers)."),
            ],
            outputs=[Adapter.Output(display_name="adapter")],
        )

    @classmethod
    def execute(cls, model, adapter_name: str) -> io.NodeOutput:
        if adapter_name == TRAINING_FREE:
            return io.NodeOutput(training_free(model))
        return io.NodeOutput(from_file(model, adapter_name))
