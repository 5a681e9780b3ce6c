"""Story Score / Eval Model Loader nodes without ComfyUI (the contract tests' recording stub),
with tiny random-weight models written to a temporary models/onestory_eval."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from test_nodes_contract import pack  # noqa: F401  (fixture: stubbed comfy_api + the pack)

transformers = pytest.importorskip("transformers")
H = W = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, pack):  # noqa: F811
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                    patch_size=8, image_size=32)
    transformers.Dinov2Model(cfg).save_pretrained(root / "onestory_eval" / "tiny-dinov2")
    from safetensors.torch import save_file
    save_file({"weight": torch.randn(1, 16), "bias": torch.zeros(1)}, str(root / "onestory_eval" / "head.safetensors"))
    fp = sys.modules["folder_paths"]
    fp.models_dir = str(root)
    fp.folder_names_and_paths.pop("onestory_eval", None)
    return root


def frames(place, person, n=4):
    f = torch.zeros(n, H, W, 3)
    f[..., :] = torch.tensor(place)
    f[:, 8:26, 10:20, :] = torch.tensor(person)
    return f


def glue():
    return sys.modules["onestory_pack.nodes.glue.story_score"]


def test_loader_lists_and_detects_kinds(pack, eval_dir):  # noqa: F811
    g = glue()
    assert g.list_models() == ["head.safetensors", "tiny-dinov2"]
    assert g.load_eval_model("tiny-dinov2").kind == "dino"
    assert g.load_eval_model("head.safetensors").kind == "aesthetic"
    with pytest.raises(Exception, match="nothing.safetensors"):
        g.load_eval_model("nothing.safetensors")


def test_story_score_node_scores_and_draws(pack, eval_dir):  # noqa: F811
    _, schemas = pack
    assert {"OneStoryEvalModelLoader", "OneStoryStoryScore"} <= set(schemas)
    mod = sys.modules["onestory_pack.nodes.story_score_nodes"]
    (dino,), _ = mod.EvalModelLoader.execute("tiny-dinov2", 0.5)
    red, blue, room, hall = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9), (0.8, 0.8, 0.6), (0.3, 0.6, 0.3)
    images = torch.cat([frames(room, red), frames(hall, blue), frames(room, red)])
    masks = torch.zeros(12, H, W)
    masks[:, 8:26, 10:20] = 1
    ann = "[A @room] a man in red in a room\n[B @hall] a woman in blue in a hall\n[A @room] the same man, back in the room\n"
    out, kw = mod.StoryScore.execute(images, ann, "", 16.0, dino, person_masks=masks)
    js, floats, heat = out[0], out[1:10], out[10]
    res = json.loads(js)
    assert res["matrices"]["character_pairs"] == [[0, 2]] and res["matrices"]["place_pairs"] == [[0, 2]]
    assert floats[0] == pytest.approx(1.0, abs=1e-5) and floats[1] == pytest.approx(1.0, abs=1e-5)  # shots 1 and 3 equal
    assert math.isnan(floats[3]) and "s_align" in res["missing"]     # no text model connected
    assert heat.ndim == 4 and heat.shape[0] == 1 and heat.shape[-1] == 3 and float(heat.max()) <= 1.0
    # the wrong number of shots names the story
    with pytest.raises(ValueError, match="annotated with 3 shots but shot_lengths gives 2"):
        mod.StoryScore.execute(images, ann, "6,6", 16.0, dino, person_masks=masks)
    with pytest.raises(ValueError, match="needs a dino model|got a aesthetic model"):
        (head,), _ = mod.EvalModelLoader.execute("head.safetensors", 0.5)
        mod.StoryScore.execute(images, ann, "", 16.0, head, person_masks=masks)


def test_story_gives_shot_lengths_and_captions(pack):  # noqa: F811
    g = glue()
    from onestory.memory import MemoryBank
    bank = MemoryBank.empty().add_shot(torch.zeros(16, 3, 4, 4), "first caption").add_shot(torch.zeros(16, 2, 4, 4), "second")
    lengths, captions = g.story_shots(bank, 9 + 5)       # Decode Story: each shot on its own, 4n-3
    assert lengths == [9, 5] and captions == ["first caption", "second"]
    assert g.story_shots(bank, 9 + 8)[0] == [9, 8]       # VAE Decode of the joined latent: 4n after the first
    with pytest.raises(ValueError, match="12 frames.*14 \\(Decode Story\\) or 17"):
        g.story_shots(bank, 12)
    a = g.parse_annotation("[A @P]\n[A @P]\n", captions)
    assert a.captions == ("first caption", "second")
