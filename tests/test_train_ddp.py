"""Training under torchrun: two gloo processes on the CPU, with the story-prefix L_sel items
(the selector is used twice per step: DDP must see it as one use)."""
import json
import os
import socket
import subprocess
import sys

from onestory_lab.train.checkpoint import load_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()),
           "-m", "onestory_lab", "train", "--out", str(out), "--steps", "3", "--batch-size", "2",
           "--dim", "64", "--layers", "1", "--heads", "1", "--ffn-dim", "64", "--sel-width", "16",
           "--sel-queries", "2", "--sel-heads", "1", "--pixel-frames", "1", "--threads", "1",
           "--decoupled-steps", "1", "--warmup-lr-steps", "0", "--log-every", "1", "--progress", "false",
           "--sel-shots", "8", "--sel-story-batch", "3", "--sel-story-pool", "6"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in logs] == [1, 2, 3]
    assert all(rec["world"] == 2 and "l_sel_story" in rec for rec in logs)
    model = load_model(out / "checkpoint" / "dit.safetensors", out / "checkpoint" / "adapter.safetensors")
    assert model.selector.max_shots == 8
    assert model.selector.shot_tokens.weight.abs().max() > 0     # the order embedding trained
