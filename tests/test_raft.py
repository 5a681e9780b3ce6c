"""RAFT port (lab/onestory_lab/multishot/raft.py): parity with torchvision's raft_large, strict loading,
and its place as `onestory evaluate`'s dynamic-degree flow model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from onestory.metrics import intra_shot
from onestory.metrics.encoders import MissingModel, load_raft
from onestory_lab.multishot import models as metric_models
from onestory_lab.multishot import raft_parity
from onestory_lab.multishot.raft import MIN_SIZE, raft_large

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURE = Path(__file__).parent / "data" / "raft_parity.safetensors"


@pytest.fixture(scope="module")
def port():
    return raft_parity.seeded_port()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, port) -> Path:
    d = tmp_path_factory.mktemp("models")
    save_file(port.state_dict(), str(d / "raft_large.safetensors"))
    return d


def test_port_matches_torchvision_flow(port):
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    ref = load_file(str(FIXTURE))
    assert meta["weights"] == raft_parity.WEIGHT_RULE and int(meta["seed"]) == raft_parity.SEED
    image1, image2 = raft_parity.fixture_pair(ref["image1"])
    with torch.no_grad():
        flows = port(image1, image2, num_flow_updates=int(meta["updates"]))
    assert len(flows) == int(meta["updates"]) and flows[-1].shape == ref["flow"].shape
    scale = ref["flow"].abs().max().item()
    assert scale > 1.0                                                   # the reference flow is not trivial
    assert (flows[-1] - ref["flow"]).abs().max().item() <= 1e-4 * scale


def test_state_dict_is_torchvisions(port):
    with safe_open(str(FIXTURE), "pt") as f:
        recorded = json.loads(f.metadata()["state_dict"])
    assert {k: [list(v.shape), str(v.dtype)] for k, v in port.state_dict().items()} == recorded


def test_inputs_smaller_than_the_pyramid_or_unaligned_are_refused(port):
    for h, w in ((64, 96), (MIN_SIZE, MIN_SIZE + 4)):
        x = torch.zeros(1, 3, h, w)
        with pytest.raises(ValueError, match=f"{h} x {w}"):
            port(x, x)
    with pytest.raises(ValueError, match="one shape"):
        port(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 136))


def test_strict_load_names_the_file_and_the_keys(tmp_path, port):
    state = dict(port.state_dict())
    state["extra.weight"] = state.pop("mask_predictor.conv.weight")
    bad = tmp_path / "raft_large.safetensors"
    save_file(state, str(bad))
    with pytest.raises(MissingModel, match=r"raft_large\.safetensors is not a torchvision raft_large state dict: "
                                           r"1 keys missing \(e\.g\. mask_predictor\.conv\.weight\); "
                                           r"1 unexpected keys \(e\.g\. extra\.weight\)"):
        load_raft(bad, raft_large)
    state = dict(port.state_dict())
    state["update_block.flow_head.conv2.bias"] = torch.zeros(3)
    save_file(state, str(bad))
    with pytest.raises(MissingModel, match="1 keys of another shape .*flow_head.conv2.bias"):
        load_raft(bad, raft_large)
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(MissingModel, match="raft_large.safetensors is not a readable .safetensors file"):
        load_raft(bad, raft_large)


def test_flow_loads_without_transformers(weights_dir, monkeypatch):
    def absent():
        raise MissingModel("loading the metric models needs transformers")
    monkeypatch.setattr(metric_models, "transformers_module", absent)
    models = metric_models.load_models(weights_dir)
    assert models.flow is not None and "flow" not in dict(models.missing)
    assert "needs transformers" in dict(models.missing)["dino"]


def test_dynamic_degree_runs_through_load_models(weights_dir):
    """Wiring only: seeded random weights give meaningless flow, so this checks that the converted-weights
    file loads through `load_models` and that dynamic degree runs on frames that need padding (60 x 70:
    not multiples of 8 and below RAFT's 128 px), not what it measures."""
    models = metric_models.load_models(weights_dir)
    assert models.flow is not None and models.flow.name == "raft_large"
    frames = torch.rand(3, 3, 60, 70, generator=torch.Generator().manual_seed(0))
    shapes = []

    def flow(a, b):
        out = models.flow(a, b)
        shapes.append(tuple(out.shape))
        return out

    dynamic, mags = intra_shot.dynamic_degree(frames, flow, fps=8.0)
    assert shapes == [(2, 2, 60, 70)]                       # padded for RAFT, cropped back to the frames
    assert dynamic in (0.0, 1.0) and len(mags) == 2 and all(m == m and m >= 0 for m in mags)
