"""ComfyUI contract tests that run without ComfyUI (CI).

`comfy_api.latest` cannot be imported without a ComfyUI checkout (it imports comfy.cli_args,
comfy_execution, ...), so this file installs a *recording* stub of the few V3 names the pack
uses (io.Schema, io.ComfyNode, typed Input/Output, io.Custom, ComfyExtension) plus
`folder_paths` and `comfy.samplers`, then builds every node schema for real. What the stub
cannot prove (that ComfyUI accepts the schemas) is covered by the opt-in integration tests,
which compare /object_info of a live server with these schemas.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WF = ROOT / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# ---- recording stub of comfy_api.latest -------------------------------------------------------
@dataclass
class _In:
    io_type: str
    id: str
    kw: dict = field(default_factory=dict)


def _type(io_type: str):
    class T:
        @staticmethod
        def Input(id, **kw):
            return _In(io_type, id, kw)

        @staticmethod
        def Output(**kw):
            return (io_type, kw)
    T.io_type = io_type
    return T


def _install_stubs() -> None:
    if "comfy_api.latest" in sys.modules and getattr(sys.modules["comfy_api.latest"], "_onestory_stub", False):
        return
    io = types.SimpleNamespace(
        Schema=lambda **kw: types.SimpleNamespace(**kw),
        ComfyNode=type("ComfyNode", (), {}),
        NodeOutput=lambda *a, **kw: (a, kw),
        Custom=_type,
        ControlAfterGenerate=types.SimpleNamespace(fixed="fixed", increment="increment", decrement="decrement",
                                                   randomize="randomize"),
        **{n: _type(t) for n, t in {"Int": "INT", "Float": "FLOAT", "String": "STRING", "Boolean": "BOOLEAN",
                                   "Combo": "COMBO", "Model": "MODEL", "Latent": "LATENT", "Conditioning": "CONDITIONING",
                                   "Image": "IMAGE", "Vae": "VAE", "ClipVision": "CLIP_VISION",
                                   "Mask": "MASK"}.items()})
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ui, latest._onestory_stub = io, types.SimpleNamespace(), True
    latest.ComfyExtension = type("ComfyExtension", (), {})
    sys.modules["comfy_api"] = types.ModuleType("comfy_api")
    sys.modules["comfy_api.latest"] = latest
    fp = types.ModuleType("folder_paths")
    fp.folder_names_and_paths, fp.models_dir = {}, "/nonexistent/models"
    fp.get_filename_list = lambda name: []
    sys.modules["folder_paths"] = fp
    comfy = types.ModuleType("comfy")
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler = types.SimpleNamespace(SAMPLERS=["euler", "uni_pc"], SCHEDULERS=["simple", "normal"])
    comfy.samplers = samplers
    sys.modules.setdefault("comfy", comfy)
    sys.modules.setdefault("comfy.samplers", samplers)


@pytest.fixture(scope="module")
def pack():
    _install_stubs()
    spec = importlib.util.spec_from_file_location("onestory_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["onestory_pack"] = mod
    spec.loader.exec_module(mod)
    ext = asyncio.run(mod.comfy_entrypoint())
    nodes = asyncio.run(ext.get_node_list())
    return mod, {n.define_schema().node_id: n.define_schema() for n in nodes}


def _builder():
    spec = importlib.util.spec_from_file_location("wf_build", WF / "tools" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def widgets(schema) -> list[str]:
    return [i.id for i in schema.inputs if i.io_type in WIDGET_TYPES]


# ---- registration and schemas ------------------------------------------------------------------
def test_registration_is_v3_only(pack):
    mod, schemas = pack
    assert mod.WEB_DIRECTORY == "./js"
    assert not hasattr(mod, "NODE_CLASS_MAPPINGS"), "V1 mappings would make ComfyUI skip comfy_entrypoint"
    assert len(schemas) >= 12


def test_every_node_has_prefix_description_and_tooltips(pack):
    _, schemas = pack
    for node_id, s in schemas.items():
        assert node_id.startswith("OneStory"), node_id
        assert s.description and len(s.description) > 20, node_id
        for i in s.inputs:
            assert i.kw.get("tooltip"), f"{node_id}.{i.id} has no tooltip"


def test_widget_order_matches_workflow_builder(pack):
    """Widgets are stored by position in saved workflows: the builder's table must equal the schemas."""
    _, schemas = pack
    table = _builder().WIDGETS
    for node_id, s in schemas.items():
        assert table[node_id] == widgets(s), node_id


def test_no_core_import_of_comfy():
    for path in (ROOT / "onestory").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+comfy", path.read_text(), re.M), path


# ---- example workflows -------------------------------------------------------------------------
NAMES = sorted(p.stem for p in WF.glob("*.json"))


def test_expected_examples_exist():
    assert {"onestory_wan21_i2v_story", "onestory_wan21_t2v_story", "onestory_keyframe_swap",
            "onestory_caption_list", "onestory_storymem_wan22_a14b", "onestory_training_free"} <= set(NAMES)
    for n in NAMES:
        assert (WF / f"{n}.png").is_file(), f"thumbnail {n}.png missing"
        assert (WF / "api" / f"{n}.json").is_file(), f"API twin api/{n}.json missing"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("name", NAMES)
def test_workflow_nodes_widgets_and_paths(pack, name):
    _, schemas = pack
    ui = json.loads((WF / f"{name}.json").read_text())
    seeds = {"OneStoryNextShot", "OneStoryNextShots"}
    for node in ui["nodes"]:
        t = node["type"]
        if not t.startswith("OneStory"):
            continue
        assert t in schemas, f"{name}: unknown node {t}"
        expected = len(widgets(schemas[t])) + (1 if t in seeds else 0)   # + control_after_generate
        assert len(node["widgets_values"]) == expected, f"{name}: {t} #{node['id']}"
    for s in _strings(ui) :
        assert not re.match(r"^(/|[A-Za-z]:[\\/]|\\\\)", s), f"{name}: absolute path {s!r}"
        assert ".." not in s.split("/"), f"{name}: '..' in {s!r}"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_matches_ui(name):
    b = _builder()
    ui = json.loads((WF / f"{name}.json").read_text())
    api = json.loads((WF / "api" / f"{name}.json").read_text())
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    links = {l[0]: l for l in ui["links"]}
    for node in ui["nodes"]:
        a = api[str(node["id"])]["inputs"]
        for inp in node["inputs"]:
            lk = links[inp["link"]]
            assert a[inp["name"]] == [str(lk[1]), lk[2]], f"{name}: link {node['id']}.{inp['name']}"
        values = [v for v in node["widgets_values"] if v not in ("fixed", "randomize")]
        names = [w for w in b.WIDGETS[node["type"]] if w in a or (node["type"], w) in b.API_SKIP
                 or any(i["name"] == w for i in node["inputs"])]
        for w, v in zip(names, values):
            if (node["type"], w) in b.API_SKIP or isinstance(a.get(w), list):
                continue
            assert a[w] == v, f"{name}: {node['type']}#{node['id']}.{w}"


# ---- memory_overrides widget (issue 6) ---------------------------------------------------------
STRIP_NODES = ("OneStoryFrameSelector", "OneStoryNextShot", "OneStoryPreviewMemory")


@pytest.mark.parametrize("node_id", STRIP_NODES)
def test_memory_overrides_is_last_optional_string(pack, node_id):
    _, schemas = pack
    last = schemas[node_id].inputs[-1]
    assert (last.io_type, last.id) == ("STRING", "memory_overrides")
    assert last.kw.get("optional") is True and last.kw.get("default") == "" and last.kw.get("multiline") is False
    assert "pin" in last.kw["tooltip"] and "exclude" in last.kw["tooltip"]


def test_workflows_carry_empty_overrides_widget(pack):
    for name in NAMES:
        api = json.loads((WF / "api" / f"{name}.json").read_text())
        for node in api.values():
            if node["class_type"] in STRIP_NODES:
                assert node["inputs"]["memory_overrides"] == "", name


def _ov(pack):
    return sys.modules["onestory_pack.nodes.glue.overrides"]


def _bank(shots=(3, 2, 2)):
    import torch
    from onestory.memory import MemoryBank

    bank = MemoryBank.empty()
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(shots):
        bank = bank.add_shot(torch.randn(16, t, 4, 6, generator=g), f"shot {i}")
    return bank


def test_overrides_parse(pack):
    ov = _ov(pack)
    assert ov.parse("").empty and ov.parse("  ").empty and ov.parse(None).empty and ov.parse("{}").empty
    p = ov.parse('{"pin": [[0, 2], [0, 2], 5], "exclude": [[1, 0]]}')
    assert p.pin == ((0, 2), 5) and p.exclude == ((1, 0),)   # duplicates dropped, order kept


@pytest.mark.parametrize("text,fragment", [
    ("{pin: [1]}", "not valid JSON"), ("[1, 2]", "not an object"), ('{"pins": [[0, 1]]}', "unknown key"),
    ('{"pin": [0, 1]}', None), ('{"pin": [[0, 1, 2]]}', "neither"), ('{"pin": [true]}', "not a frame"),
    ('{"pin": [[-1, 0]]}', ">= 0"), ('{"pin": [-2]}', "negative"), ('{"pin": {"a": 1}}', "must be a list"),
    ('{"pin": [[0, 1]], "exclude": [[0, 1]]}', "both pinned and excluded"),
])
def test_overrides_parse_errors_name_the_widget(pack, text, fragment):
    ov = _ov(pack)
    if fragment is None:                       # a list of two indices is valid (memory indices 0 and 1)
        assert ov.parse(text).pin == (0, 1)
        return
    with pytest.raises(ValueError) as e:
        ov.parse(text)
    assert str(e.value).startswith("memory_overrides:") and fragment in str(e.value)
    assert ov.check(text) == str(e.value)
    assert ov.check('{"pin": [[0, 0]]}') is True


def test_overrides_apply_on_a_copy_by_frame_identity(pack):
    ov = _ov(pack)
    bank = _bank().set_excluded([1])                           # story-level exclude of (0, 1)
    view, parsed = ov.apply(bank, '{"pin": [[0, 1], [2, 1]], "exclude": [3]}')
    assert view is not bank and view.fingerprint() != bank.fingerprint()
    assert bank.excluded[1] and not any(bank.pinned)           # input unchanged
    assert [i for i, p in enumerate(view.pinned) if p] == [1, 6]
    assert [i for i, e in enumerate(view.excluded) if e] == [3]
    assert ov.state_of(parsed, view, 6) == "pin" and ov.state_of(parsed, view, 3) == "exclude"
    assert ov.state_of(parsed, view, 0) is None
    same, _ = ov.apply(bank, "")
    assert same is bank
    # (shot, frame) pairs survive a change to an earlier shot's length; indices do not.
    longer = _bank((4, 2, 2))
    v2, _ = ov.apply(longer, '{"pin": [[2, 1]]}')
    assert [i for i, p in enumerate(v2.pinned) if p] == [7]


@pytest.mark.parametrize("text,fragment", [
    ('{"pin": [[3, 0]]}', "shots 0..2"), ('{"pin": [[1, 2]]}', "frames 0..1"), ('{"exclude": [7]}', "frames 0..6"),
    ('{"pin": [[0, 0]], "exclude": [0]}', "both pinned and excluded"),
])
def test_overrides_out_of_range(pack, text, fragment):
    ov = _ov(pack)
    with pytest.raises(ValueError) as e:
        ov.apply(_bank(), text)
    assert str(e.value).startswith("memory_overrides:") and fragment in str(e.value)


def test_overrides_restore_flags_after_add_shot(pack):
    import torch

    ov = _ov(pack)
    bank = _bank().set_pinned([0]).set_excluded([4])
    view, _ = ov.apply(bank, '{"pin": [4, 5], "exclude": [0, 2]}')
    shot = torch.zeros(16, 2, 4, 6)
    restored = ov.restore_flags(bank, view.add_shot(shot, "next"))
    assert restored.fingerprint() == bank.add_shot(shot, "next").fingerprint()


def test_memory_frames_payload_shape(pack):
    import torch
    from onestory.conditioner import AdaptiveConditioner
    from onestory.scorers import select

    payload = sys.modules["onestory_pack.nodes.glue.payload"]
    ov = _ov(pack)
    view, parsed = ov.apply(_bank(), '{"pin": [[2, 1]], "exclude": [[0, 0]]}')
    sel = select(view, 3, "recency")
    cond = AdaptiveConditioner(16, 8)
    tiers = payload.planned_tiers(view, sel, cond, 1.0)
    frames = payload.memory_frames(view, sel, parsed, tiers)
    assert [f["index"] for f in frames] == list(range(7))
    keys = {"index", "shot", "frame", "source", "score", "kept", "rank", "tier", "pinned", "excluded", "override"}
    assert all(set(f) == keys for f in frames)
    json.dumps(frames)                                          # JSON-able (goes through the websocket)
    pinned = frames[6]
    assert (pinned["shot"], pinned["frame"], pinned["pinned"], pinned["override"], pinned["rank"]) == (2, 1, True, "pin", 0)
    assert frames[0]["excluded"] and not frames[0]["kept"] and frames[0]["override"] == "exclude"
    assert sum(f["kept"] for f in frames) == 3 and {f["rank"] for f in frames if f["kept"]} == {0, 1, 2}
    assert all(isinstance(f["score"], float) for f in frames)
    kept_tiers = [f["tier"] for f in sorted((f for f in frames if f["kept"]), key=lambda f: f["rank"])]
    assert kept_tiers[:len(tiers)] == tiers and tiers == sorted(tiers)     # finer tiers for higher ranks
    assert payload.tier_labels(cond)[0] == "1×"
    assert all(f["tier"] is None and f["score"] is None for f in payload.memory_frames(view))


def test_thumbs_one_strip_with_cells(pack):
    import torch

    payload = sys.modules["onestory_pack.nodes.glue.payload"]
    saved = []
    save = lambda im: saved.append(im) or {"filename": "x.png", "subfolder": "", "type": "temp"}  # noqa: E731
    rgb = torch.rand(5, 60, 104, 3)
    t = payload.thumbs(rgb, save, first_frame=torch.rand(1, 60, 104, 3), max_side=52)
    assert t["count"] == 6 and t["first_frame_cell"] == 5 and t["cell"] == [52, 30]
    assert saved[0].shape == (1, 30, 6 * 52, 3) and saved[0].min() >= 0 and saved[0].max() <= 1
    small = payload.thumbs(torch.rand(2, 8, 8, 3), save)
    assert small["cell"] == [8, 8] and "first_frame_cell" not in small


def test_every_node_has_a_help_page(pack):
    """The frontend fetches /extensions/<pack>/docs/<NodeId>.md (WEB_DIRECTORY = js)."""
    _, schemas = pack
    docs = ROOT / "js" / "docs"
    assert sorted(p.stem for p in docs.glob("*.md")) == sorted(schemas)
    for node_id in schemas:
        text = (docs / f"{node_id}.md").read_text()
        assert text.startswith("# OneStory ") and len(text) > 200, node_id
    assert "4n+1" in (docs / "OneStoryNextShot.md").read_text()
    assert "Decode Story" in (docs / "OneStoryStoryToLatent.md").read_text()
    assert "memory_overrides" in (docs / "OneStoryFrameSelector.md").read_text()


# ---- issue 19: what an artist hits ------------------------------------------------------------
def _mod(name: str):
    return sys.modules[f"onestory_pack.nodes.{name}"]


@pytest.mark.parametrize("node_id", ["OneStoryNextShot", "OneStoryNextShots"])
def test_seed_keeps_earlier_shots_cached_by_default(pack, node_id):
    """A seed that randomizes after every queue would re-run every shot of the story."""
    _, schemas = pack
    seed = next(i for i in schemas[node_id].inputs if i.id == "seed")
    assert seed.kw["control_after_generate"] == "fixed"


@pytest.mark.parametrize("lengths,fragment", [
    ((1, 4, 1), "positive has 1 entry (one shot each) but caption has 4"),
    ((4, 2, 1), "positive has 4 entries (one shot each) but caption has 2"),
    ((4, 4, 2), "negative has 2 entries but positive has 4"),
])
def test_next_shots_refuses_mismatched_lists(pack, lengths, fragment):
    n_pos, n_cap, n_neg = lengths
    check = _mod("next_shot_nodes").check_lists
    with pytest.raises(ValueError) as e:
        check(["p"] * n_pos, ["n"] * n_neg, ["c"] * n_cap, {"seed": [1]})
    assert fragment in str(e.value) and str(e.value).startswith("Next Shots:")


def test_next_shots_list_rules(pack):
    check = _mod("next_shot_nodes").check_lists
    assert check(["p"] * 4, ["n"], ["c"] * 4, {"seed": [1], "vae": None}) == 4      # one negative for all
    assert check(["p"] * 3, ["n"] * 3, ["c"] * 3, {"seed": [1]}) == 3               # one negative per shot
    with pytest.raises(ValueError, match="seed has 2 values but takes one for all 3 shots"):
        check(["p"] * 3, ["n"], ["c"] * 3, {"seed": [1, 2]})


def test_budget_that_fits_no_frame_is_refused_unless_memory_is_off(pack):
    from onestory.conditioner import AdaptiveConditioner

    check = sys.modules["onestory_pack.nodes.glue.selection"].check_budget
    adapter = types.SimpleNamespace(conditioner=AdaptiveConditioner(16, 8))
    with pytest.raises(ValueError) as e:
        check(60, 104, adapter, 0.0, "Next Shot", memory_wanted=True)
    msg = str(e.value)
    assert msg.startswith("Next Shot: budget 0 gives 0 context tokens") and "k to 0" in msg
    assert "at least 0.018" in msg                  # 28 tokens (coarsest tier, 60x104) / 1560 per frame
    check(60, 104, adapter, 0.0, "Next Shot", memory_wanted=False)      # k = 0: no memory, said by the selection
    check(60, 104, adapter, 0.25, "Next Shot", memory_wanted=True)


class _CausalVAE:
    """Wan's frame arithmetic: t latent frames -> 4(t-1)+1 images, each image = its latent frame's mean."""
    latent_channels = 16

    def __init__(self):
        self.calls = []

    def decode(self, latent):
        import torch

        self.calls.append(tuple(latent.shape))
        t = latent.shape[2]
        means = latent.mean(dim=(1, 3, 4))[0]                        # "t"
        frames = torch.cat([means[:1], means[1:].repeat_interleave(4)]) if t > 1 else means
        return frames[None, :, None, None, None].expand(1, len(frames), 2, 2, 3).clone()


def test_decode_story_decodes_each_shot_on_its_own(pack):
    import torch
    from onestory.memory import MemoryBank

    node = _mod("story_nodes").DecodeStory
    bank = MemoryBank.empty().add_shot(torch.randn(16, 2, 2, 2), "ref", source="reference")
    for i in range(6):
        bank = bank.add_shot(torch.full((16, 2, 2, 2), float(i)), f"shot {i}")
    vae = _CausalVAE()
    (images, counts), kw = node.execute(bank, vae, False)
    assert images.shape[0] == 6 * 5 and counts == ",".join(["5"] * 6)     # 6 shots of 5 frames, no extras
    assert vae.calls == [(1, 16, 2, 2, 2)] * 6                             # one clip per shot
    assert [float(images[5 * i, 0, 0, 0]) for i in range(6)] == [float(i) for i in range(6)]
    assert kw["ui"]["onestory_frame_counts"][0]["total"] == 30
    (with_ref, counts), _ = node.execute(bank, _CausalVAE(), True)
    assert counts.split(",")[0] == "2" and with_ref.shape[0] == 32          # one frame per reference image
    with pytest.raises(ValueError, match="16-channel latents but the VAE uses 48"):
        node.execute(bank, types.SimpleNamespace(latent_channels=48), False)


def test_story_to_latent_single_shot(pack):
    import torch
    from onestory.memory import MemoryBank

    node = _mod("story_nodes").StoryToLatent
    bank = MemoryBank.empty().add_shot(torch.zeros(16, 2, 2, 2), "a").add_shot(torch.ones(16, 3, 2, 2), "b")
    (latent,), _ = node.execute(bank, False, 1)
    assert latent["samples"].shape == (1, 16, 3, 2, 2) and float(latent["samples"].min()) == 1.0
    (latent,), _ = node.execute(bank, False, -1)
    assert latent["samples"].shape[2] == 5
    with pytest.raises(ValueError, match="shot 2 does not exist; this story has shots 0..1"):
        node.execute(bank, False, 2)


def test_example_images_ship_and_install_without_overwriting(pack, tmp_path):
    import importlib

    ex = importlib.import_module("onestory_pack.nodes.glue.example_inputs")
    named = set()
    for name in NAMES:
        for node in json.loads((WF / "api" / f"{name}.json").read_text()).values():
            if node["class_type"] == "LoadImage":
                named.add(node["inputs"]["image"])
    assert named and all((WF / "input" / n).is_file() for n in named), named
    (tmp_path / "onestory_start.png").write_bytes(b"the user's own image")
    copied = ex.install(str(tmp_path))
    assert set(copied) == named - {"onestory_start.png"}
    assert (tmp_path / "onestory_start.png").read_bytes() == b"the user's own image"
    assert ex.install(str(tmp_path)) == []
