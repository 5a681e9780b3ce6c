"""RAFT port (lab/onestory_lab/multishot/raft.py): parity with torchvision's raft_large."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from onestory_lab.multishot import raft_parity
from onestory_lab.multishot.raft import MIN_SIZE, raft_large

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURE = Path(__file__).parent / "data" / "raft_parity.safetensors"


@pytest.fixture(scope="module")
def port():
    return raft_parity.seeded_port()


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
