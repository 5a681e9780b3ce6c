"""Test-only ComfyUI nodes that stand in for the full-size Wan text / CLIP-vision encoders.

The stock CLIPLoader and CLIPVisionLoader always build the full umT5-XXL / ViT-H configs, so
the integration tests rewrite those two nodes of each example workflow into these:
* OneStoryTestTextEncode — text → CONDITIONING "1 77 4096", seeded by the text's sha256
  (different captions → different features, identical captions → identical ones);
* OneStoryTestClipVisionEncode — IMAGE → a ClipVisionOutput with 257×1280 penultimate states.
And one probe: OneStoryTestFrameDigests — IMAGE → the frame count and a sha256 per frame in the
node's UI output (/history), so tests compare decoded videos frame by frame.
Everything else in the workflows (UNETLoader, VAELoader, samplers, OneStory nodes) is real.
"""
import hashlib

import torch
from comfy_api.latest import ComfyExtension, io


def _seeded(text: str, shape: tuple[int, ...]) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class TestTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="OneStoryTestTextEncode", category="OneStory/testing",
                         inputs=[io.String.Input("text", multiline=True)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, text):
        return io.NodeOutput([[_seeded(text, (1, 77, 4096)), {}]])


class TestClipVisionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="OneStoryTestClipVisionEncode", category="OneStory/testing",
                         inputs=[io.Image.Input("image")], outputs=[io.ClipVisionOutput.Output()])

    @classmethod
    def execute(cls, image):
        import comfy.clip_vision

        out = comfy.clip_vision.Output()
        out["penultimate_hidden_states"] = _seeded(str(float(image.mean())), (1, 257, 1280))
        return io.NodeOutput(out)


class TestFrameDigests(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="OneStoryTestFrameDigests", category="OneStory/testing",
                         inputs=[io.Image.Input("images")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, images):
        frames = images.detach().float().cpu().contiguous()
        digests = [hashlib.sha256(f.numpy().tobytes()).hexdigest()[:16] for f in frames]
        return io.NodeOutput(ui={"frames": [{"count": len(digests), "shape": list(frames.shape),
                                             "digests": digests}]})


class TestExtension(ComfyExtension):
    async def get_node_list(self):
        return [TestTextEncode, TestClipVisionEncode, TestFrameDigests]


async def comfy_entrypoint():
    return TestExtension()
