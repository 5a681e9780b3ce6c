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
        **{n: _type(t) for n, t in {"Int": "INT", "Float": "FLOAT", "String": "STRING", "Boolean": "BOOLEAN",
                                   "Combo": "COMBO", "Model": "MODEL", "Latent": "LATENT", "Conditioning": "CONDITIONING",
                                   "Image": "IMAGE", "Vae": "VAE", "ClipVision": "CLIP_VISION"}.items()})
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
