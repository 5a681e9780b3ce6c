"""The adapter file format: AdapterMeta, BackboneInfo, save_adapter / load_adapter."""
from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

from onestory.adapter import (META_KEY, AdapterMeta, BackboneInfo, SelectorMeta, check_compatible,
                              load_adapter, save_adapter)
from onestory.errors import AdapterMismatch, FileFormatError, OneStoryError
from onestory.memory import MemoryBank


def meta(**kw) -> AdapterMeta:
    base = dict(backbone="wan2.1-i2v", model_dim=64, text_dim=32, latent_channels=16,
                kernels=[(1, 2, 2), (1, 4, 4)], default_budget=2, default_k=5,
                selector={"width": 32, "num_queries": 4, "heads": 4, "spatial_stride": 8})
    base.update(kw)
    return AdapterMeta(**base)


def states(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    sel = {"queries": torch.randn(4, 32, generator=g).to(dtype),
           "proj.weight": torch.randn(32, 16, 1, 8, 8, generator=g).to(dtype)}
    cond = {"patchifiers.0.weight": torch.randn(64, 16, 1, 2, 2, generator=g).to(dtype),
            "patchifiers.0.bias": torch.randn(64, generator=g).to(dtype)}
    return sel, cond


def assert_state_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_roundtrip_with_selector(tmp_path, dtype):
    m = meta(time_gap=0.5)
    sel, cond = states(dtype)
    path = tmp_path / "a.safetensors"
    save_adapter(path, sel, cond, m)
    m2, sel2, cond2 = load_adapter(path, expect=BackboneInfo("wan2.1-i2v", 64, 32, 16))
    assert m2 == m and m2.kernels == ((1, 2, 2), (1, 4, 4)) and m2.default_budget == 2.0
    assert m2.time_gap == 0.5
    assert m2.selector == SelectorMeta(32, 4, 4, 8)
    assert_state_equal(sel2, sel)
    assert_state_equal(cond2, cond)
    assert os.listdir(tmp_path) == ["a.safetensors"]


def test_roundtrip_without_selector(tmp_path):
    m = meta(selector=None)
    _, cond = states()
    path = tmp_path / "a.safetensors"
    save_adapter(path, None, cond, m)
    m2, sel2, cond2 = load_adapter(path)
    assert m2 == m and sel2 is None
    assert_state_equal(cond2, cond)


def test_metadata_layout_matches_contract(tmp_path):
    from safetensors import safe_open
    path = tmp_path / "a.safetensors"
    save_adapter(path, *states(), meta())
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        d = json.loads(f.metadata()[META_KEY])
    assert keys == {"selector.queries", "selector.proj.weight",
                    "conditioner.patchifiers.0.weight", "conditioner.patchifiers.0.bias"}
    assert d["format"] == "onestory-adapter" and d["version"] == 1
    assert d["kernels"] == [[1, 2, 2], [1, 4, 4]]
    assert d["selector"] == {"width": 32, "num_queries": 4, "heads": 4, "spatial_stride": 8}


def test_meta_is_frozen_and_validated():
    m = meta()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.model_dim = 1  # type: ignore[misc]
    with pytest.raises(OneStoryError, match="3-tuples"):
        meta(kernels=[(2, 2)])
    with pytest.raises(OneStoryError, match="model_dim"):
        meta(model_dim=0)
    with pytest.raises(OneStoryError, match="default_budget"):
        meta(default_budget=float("nan"))
    with pytest.raises(OneStoryError, match="time_gap"):
        meta(time_gap=-1.0)
    with pytest.raises(OneStoryError, match="divisible"):
        meta(selector={"width": 30, "num_queries": 4, "heads": 4, "spatial_stride": 8})
    assert hash(m) == hash(meta())


def test_mismatch_lists_every_field_with_both_values():
    m = meta()
    with pytest.raises(AdapterMismatch) as e:
        check_compatible(m, BackboneInfo("wan2.2-ti2v", 3072, 4096, 48))
    msg = str(e.value)
    for part in ("'wan2.1-i2v'", "'wan2.2-ti2v'", "model_dim: adapter 64 vs model 3072",
                 "text_dim: adapter 32 vs model 4096", "latent_channels: adapter 16 vs model 48"):
        assert part in msg, part
    assert "Load an adapter trained for this model" in msg
    with pytest.raises(AdapterMismatch) as e:
        check_compatible(m, BackboneInfo("wan2.1-i2v", 64, 32, 48))
    assert "latent_channels" in str(e.value) and "model_dim:" not in str(e.value)
    check_compatible(m, BackboneInfo("wan2.1-i2v", 64, 32, 16))    # no error


def test_load_with_expect_raises_mismatch(tmp_path):
    path = tmp_path / "a.safetensors"
    save_adapter(path, *states(), meta())
    with pytest.raises(AdapterMismatch, match="text_dim: adapter 32 vs model 4096"):
        load_adapter(path, expect=BackboneInfo("wan2.1-i2v", 64, 4096, 16))


@pytest.mark.parametrize("cfg,family", [
    (dict(model_type="t2v", dim=1536, text_dim=4096, in_dim=16, out_dim=16), "wan2.1-t2v"),
    (dict(model_type="i2v", dim=5120, text_dim=4096, in_dim=36, out_dim=16), "wan2.1-i2v"),
    (dict(model_type="t2v", dim=3072, text_dim=4096, in_dim=48, out_dim=48), "wan2.2-ti2v"),
])
def test_backbone_from_wan_config(cfg, family):
    info = BackboneInfo.from_wan_config(SimpleNamespace(**cfg))
    assert info == BackboneInfo(family, cfg["dim"], cfg["text_dim"], cfg["out_dim"])


def test_backbone_from_unknown_config():
    with pytest.raises(OneStoryError, match="in_dim=20"):
        BackboneInfo.from_wan_config(SimpleNamespace(model_type="x", dim=8, text_dim=8, in_dim=20, out_dim=16))
    with pytest.raises(OneStoryError, match="lacks"):
        BackboneInfo.from_wan_config(SimpleNamespace(dim=8))


def test_save_validates_inputs(tmp_path):
    sel, cond = states()
    path = tmp_path / "a.safetensors"
    with pytest.raises(OneStoryError, match="disagree"):
        save_adapter(path, sel, cond, meta(selector=None))
    with pytest.raises(OneStoryError, match="disagree"):
        save_adapter(path, None, cond, meta())
    with pytest.raises(OneStoryError, match="conditioner_state is empty"):
        save_adapter(path, sel, {}, meta())
    with pytest.raises(OneStoryError, match="str -> Tensor"):
        save_adapter(path, sel, {"w": [1.0]}, meta())
    assert not path.exists()


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save_adapter(path, *states(), meta())
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("simulated")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_adapter(path, None, states()[1], meta(selector=None))
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["a.safetensors"]


def _write(path, tensors, metadata) -> None:
    path.write_bytes(st_save(tensors, metadata=metadata))


def test_foreign_truncated_and_versioned_files_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"lora_up.weight": torch.zeros(2)}, str(path))
    with pytest.raises(FileFormatError, match="without OneStory adapter metadata"):
        load_adapter(path)

    MemoryBank.empty().add_shot(torch.zeros(1, 4, 1, 2, 2), "a").save(path)
    with pytest.raises(FileFormatError, match="story"):
        load_adapter(path)

    save_adapter(path, *states(), meta())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(FileFormatError, match="truncated"):
        load_adapter(path)

    sel, cond = states()
    tensors = {**{"selector." + k: v for k, v in sel.items()},
               **{"conditioner." + k: v for k, v in cond.items()}}
    d = meta().to_json()
    _write(path, tensors, {META_KEY: json.dumps({**d, "version": 3})})
    with pytest.raises(FileFormatError, match=r"version 3.*version 1 only"):
        load_adapter(path)
    _write(path, tensors, {META_KEY: json.dumps({**d, "format": "other"})})
    with pytest.raises(FileFormatError, match="onestory-adapter"):
        load_adapter(path)
    _write(path, tensors, {META_KEY: json.dumps({**d, "model_dim": "big"})})
    with pytest.raises(FileFormatError, match="model_dim"):
        load_adapter(path)
    _write(path, {**tensors, "lora.x": torch.zeros(1)}, {META_KEY: json.dumps(d)})
    with pytest.raises(FileFormatError, match="lora.x"):
        load_adapter(path)
    _write(path, {k: v for k, v in tensors.items() if k.startswith("conditioner.")},
           {META_KEY: json.dumps(d)})
    with pytest.raises(FileFormatError, match="selector"):
        load_adapter(path)


# ------------------------------------------------------------------ OneStoryAdapter (modules)


def test_defaults_come_from_one_module():
    from onestory import adapter, conditioner, defaults
    assert adapter.DEFAULT_KERNELS is conditioner.DEFAULT_KERNELS is defaults.KERNELS
    assert adapter.DEFAULT_K == defaults.K and AdapterMeta.default_budget == defaults.BUDGET


def _tiny_meta(**kw) -> AdapterMeta:
    base = dict(backbone="wan2.1-t2v", model_dim=24, text_dim=12, latent_channels=4,
                kernels=[(1, 2, 2), (1, 4, 4)], time_gap=1.0,
                selector={"width": 16, "num_queries": 3, "heads": 2, "spatial_stride": 2})
    base.update(kw)
    return AdapterMeta(**base)


def test_onestory_adapter_roundtrip(tmp_path):
    from onestory.adapter import OneStoryAdapter
    torch.manual_seed(0)
    a = OneStoryAdapter.build(_tiny_meta())
    with torch.no_grad():                      # make sure no value equals a default init
        for p in list(a.conditioner.parameters()) + list(a.selector.parameters()):
            p.add_(torch.randn_like(p))
    path = tmp_path / "tiny.safetensors"
    a.save(path)
    b = OneStoryAdapter.load(path, expect=BackboneInfo("wan2.1-t2v", 24, 12, 4))
    assert b.meta == a.meta and b.conditioner.time_gap == 1.0 and b.conditioner.kernels == a.conditioner.kernels
    assert_state_equal(b.conditioner.state_dict(), a.conditioner.state_dict())
    assert_state_equal(b.selector.state_dict(), a.selector.state_dict())
    mem, text = torch.randn(1, 3, 4, 6, 6), torch.randn(1, 5, 12)
    a.selector.eval()
    with torch.no_grad():
        assert torch.equal(a.selector(mem, text), b.selector(mem, text))


def test_onestory_adapter_from_modules_without_selector(tmp_path):
    from onestory.adapter import OneStoryAdapter
    from onestory.conditioner import AdaptiveConditioner
    cond = AdaptiveConditioner.from_patch_embedding(torch.randn(24, 4 * 2 + 4, 1, 2, 2), torch.randn(24),
                                                    latent_channels=4, kernels=[(1, 2, 2), (1, 8, 8)])
    a = OneStoryAdapter.from_modules(cond, None, backbone="wan2.1-i2v", text_dim=12, default_k=3)
    assert a.meta.model_dim == 24 and a.meta.kernels == ((1, 2, 2), (1, 8, 8)) and a.meta.selector is None
    path = tmp_path / "a.safetensors"
    a.save(path)
    b = OneStoryAdapter.load(path)
    assert b.selector is None and b.meta == a.meta
    assert_state_equal(b.conditioner.state_dict(), cond.state_dict())


def test_onestory_adapter_refuses_weights_that_do_not_fit(tmp_path):
    from onestory.adapter import OneStoryAdapter
    real = OneStoryAdapter.build(_tiny_meta(selector=None))
    path = tmp_path / "bad.safetensors"
    # Metadata claims model_dim 32 but the weights are 24 wide.
    save_adapter(path, None, real.conditioner.state_dict(), _tiny_meta(selector=None, model_dim=32))
    with pytest.raises(FileFormatError, match=r"shape mismatches.*\(24, 4, 1, 2, 2\) vs module \(32, 4, 1, 2, 2\)"):
        OneStoryAdapter.load(path)
