"""Story Score: OneStory's Table 1 metrics of one generated story, inside ComfyUI.

Eval Model Loader: a metric model (DINOv2, CLIP / SigLIP, person detector, LAION aesthetic head,
RAFT) from models/onestory_eval, read from local files only.
"""
from __future__ import annotations

from comfy_api.latest import io

from .glue import story_score as glue
from .glue.types import Story

EvalModel = io.Custom("ONESTORY_EVAL_MODEL")   # glue.story_score.EvalModel
CATEGORY = "OneStory/eval"


class EvalModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        glue.register_folder()
        return io.Schema(
            node_id="OneStoryEvalModelLoader",
            display_name="OneStory Eval Model Loader",
            category=CATEGORY,
            description="Loads a metric model for Story Score from models/onestory_eval (local files only): a DINOv2 "
                        "folder or .safetensors, a CLIP / SigLIP folder, a transformers person detector folder, the "
                        "LAION aesthetic head .safetensors or RAFT weights. The kind is read from the file.",
            inputs=[
                io.Combo.Input("model_name", options=glue.list_models(), tooltip=
                               "A .safetensors file or a transformers folder (with config.json) in "
                               "models/onestory_eval."),
                io.Float.Input("person_threshold", default=0.5, min=0.0, max=1.0, step=0.05, tooltip=
                               "Person detectors only: the detection score a box needs to count as a person."),
            ],
            outputs=[EvalModel.Output(display_name="eval_model")],
        )

    @classmethod
    def execute(cls, model_name: str, person_threshold: float) -> io.NodeOutput:
        return io.NodeOutput(glue.load_eval_model(model_name, person_threshold))


class StoryScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryStoryScore",
            display_name="OneStory Story Score",
            category=CATEGORY,
            description="Scores a multi-shot story as the OneStory paper does: C-Cons / E-Cons (DINOv2 similarity of "
                        "the recurring character and of the place between the shots the annotation says share "
                        "them), S-Align per shot, VBench subject / background consistency, aesthetic quality and "
                        "dynamic degree. Metrics whose model is not connected are NaN and named in the JSON.",
            inputs=[
                io.Image.Input("images", tooltip="All frames of the story in order (e.g. Decode Story's images)."),
                io.String.Input("story_annotation", multiline=True, default="[A @P1] \n[A @P1] \n", tooltip=
                                "Which characters and place each shot shows, one line per shot: '[A,B @P1] caption'. "
                                "Without a caption the connected story's caption is used. A story JSON "
                                "(docs/evaluation.md) works too."),
                io.String.Input("shot_lengths", default="", tooltip=
                                "Frames per shot, comma-separated (e.g. '33,33,33'; Decode Story's frame_counts). "
                                "Empty: from the connected story, else an even split."),
                io.Float.Input("fps", default=16.0, min=1.0, max=120.0, step=1.0, tooltip=
                               "Frame rate of the images (dynamic degree looks at ~8 fps)."),
                EvalModel.Input("dino", tooltip="DINOv2 from OneStory Eval Model Loader (C-Cons, E-Cons, subject "
                                                "consistency)."),
                Story.Input("story", optional=True, tooltip="The story the images come from: gives shot lengths and "
                                                            "captions."),
                EvalModel.Input("persons", optional=True, tooltip="A person detector (Eval Model Loader); or use "
                                                                  "person_masks."),
                io.Mask.Input("person_masks", optional=True, tooltip="Person masks, one per frame (any segmentation "
                                                                      "node); used instead of a detector."),
                EvalModel.Input("text", optional=True, tooltip="CLIP or SigLIP with its tokenizer (Eval Model Loader) "
                                                               "for S-Align."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model: background consistency "
                                                                          "(VBench: ViT-B/32) and the aesthetic head's "
                                                                          "encoder (ViT-L/14)."),
                EvalModel.Input("aesthetic", optional=True, tooltip="LAION aesthetic head .safetensors (needs a ViT-L/14 "
                                                                    "clip_vision)."),
                EvalModel.Input("flow", optional=True, tooltip="RAFT weights for dynamic degree (needs torchvision)."),
            ],
            outputs=[io.String.Output(display_name="scores_json")]
                    + [io.Float.Output(display_name=k) for k in glue.FLOAT_KEYS]
                    + [io.Image.Output(display_name="heatmap")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, story_annotation: str, shot_lengths: str, fps: float, dino, story=None, persons=None,
                person_masks=None, text=None, clip_vision=None, aesthetic=None, flow=None) -> io.NodeOutput:
        captions = None
        lengths_text = shot_lengths
        if story is not None:
            lengths, captions = glue.story_shots(story, images.shape[0])
            if not shot_lengths.strip():
                lengths_text = ",".join(map(str, lengths))
        annotation = glue.parse_annotation(story_annotation, captions)
        lengths = glue.parse_lengths(lengths_text, images.shape[0], len(annotation.shots))
        models = glue.build_models(dino, persons, text, clip_vision, aesthetic, flow)
        result = glue.score(images, lengths, annotation, models, fps, person_masks)
        js, floats = glue.outputs(result)
        return io.NodeOutput(js, *floats, glue.heatmap(result), ui={"text": [js]})
