"""bench-stories against two real ComfyUI servers on loopback (tiny random Wan models, CPU).

One server is killed while it runs a story: the run finishes on the other, every story once.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMFY = os.environ.get("ONESTORY_COMFYUI_DIR")
SHOTS = 3


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture()
def two_servers(tmp_path):
    from PIL import Image
    models = tmp_path / "models"
    models.mkdir()
    subprocess.run([sys.executable, str(HERE / "make_tiny_models.py"), "--comfy", COMFY, "--out", str(models)],
                   check=True, cwd=COMFY, env=dict(os.environ, PYTHONPATH=COMFY))
    procs, urls = [], []
    for name in ("a", "b"):
        base = tmp_path / name
        for d in ("custom_nodes", "input", "output", "user", "temp"):
            (base / d).mkdir(parents=True)
        (base / "models").symlink_to(models)
        (base / "custom_nodes" / "onestory").symlink_to(ROOT)
        (base / "custom_nodes" / "onestory_test_pack").symlink_to(HERE / "test_pack")
        Image.new("RGB", (64, 64), (200, 60, 60)).save(base / "input" / "onestory_test.png")
        port = _port()
        log = open(base / "server.log", "w")
        procs.append(subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                       "--disable-auto-launch", "--base-directory", str(base)], cwd=COMFY, stdout=log,
                                      stderr=subprocess.STDOUT))
        urls.append(f"http://127.0.0.1:{port}")
    t0 = time.time()
    for u, p in zip(urls, procs):
        while True:
            try:
                _get(u + "/system_stats")
                break
            except OSError:
                if p.poll() is not None or time.time() - t0 > 180:
                    raise RuntimeError(f"ComfyUI at {u} did not start; see {tmp_path}")
                time.sleep(0.5)
    yield urls, procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(30)


def _workflow() -> dict:
    from tiny import tinyfy   # tests/integration is on sys.path as the conftest's folder (pytest)
    wf = tinyfy(json.loads((ROOT / "example_workflows" / "api" / "onestory_wan21_t2v_story.json").read_text()))
    shots = sorted((k for k, v in wf.items() if v["class_type"] == "OneStoryNextShot"), key=int)
    for k in shots[SHOTS:]:                          # keep SHOTS shots; drop the whole-story outputs
        del wf[k]
    for k in [k for k, v in wf.items() if v["class_type"] in ("OneStoryStoryToLatent", "VAEDecode", "SaveAnimatedWEBP",
                                                              "OneStorySaveStory", "OneStoryPreviewMemory")]:
        del wf[k]
    nxt = max(int(k) for k in wf) + 1
    for i, k in enumerate(shots[:SHOTS], 1):
        wf[k]["inputs"]["caption"] = f"{{{{shot{i}}}}}"
        wf[wf[k]["inputs"]["positive"][0]]["inputs"]["text"] = f"{{{{shot{i}}}}}"
        wf[k]["inputs"]["seed"] = "{{seed}}"
        vae = next(n for n, v in wf.items() if v["class_type"] == "VAELoader")
        wf[str(nxt)] = {"class_type": "VAEDecode", "inputs": {"samples": [k, 0], "vae": [vae, 0]}}
        wf[str(nxt + 1)] = {"class_type": "SaveImage", "inputs": {"images": [str(nxt), 0],
                                                                  "filename_prefix": f"bench/{{{{story_id}}}}/shot_{i:02d}"}}
        nxt += 2
    unused = [k for k in wf if wf[k]["class_type"] == "OneStoryTestTextEncode"
              and not any([k, 0] == v for n in wf.values() for v in n["inputs"].values())]
    for k in unused:
        del wf[k]
    return wf


def test_kill_one_server_mid_run(two_servers, tmp_path):
    from onestory.metrics.annotation import BENCH_FORMAT
    from onestory_lab.multishot.bench_stories import bench_stories
    from onestory_lab.multishot.videos import read_story

    (a, b), (pa, pb) = two_servers
    n = 6
    stories = [{"id": f"s{i}", "pattern": "consistency", "characters": {"A": "a man"}, "places": {"P": "a room"},
                "shots": [{"caption": f"story {i} shot {k}", "characters": ["A"], "place": "P"} for k in range(SHOTS)]}
               for i in range(n)]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"format": BENCH_FORMAT, "version": 1, "task": "t2msv", "stories": stories}))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_workflow()))
    out = tmp_path / "run"
    killed = {}

    def killer():
        # wait until server a has finished one story and is running another, then kill it
        end = time.time() + 600
        while time.time() < end:
            done_on_a = [p for p in out.glob("s*/bench.json") if json.loads(p.read_text())["server"] == a]
            try:
                running = _get(a + "/queue")["queue_running"]
            except OSError:
                return
            if done_on_a and running:
                killed["prompt"] = running[0][1]
                pa.kill()
                pa.wait(30)
                return
            time.sleep(0.2)

    t = threading.Thread(target=killer)
    t.start()
    res = bench_stories(wf, [a, b], out, bench, retry=1.0, give_up=300, timeout=600)
    t.join()
    assert killed, "server a was never seen running a second story"
    assert res["done"] == n and not res["failed"], res
    servers = [json.loads((out / f"s{i}" / "bench.json").read_text())["server"] for i in range(n)]
    assert a in servers and b in servers
    # b ran every story it reports once; the story a was running when killed was redone on b
    hist = _get(b + "/history")
    ran_on_b = [json.dumps(v["prompt"][2]) for v in hist.values()]
    ids_on_b = sorted(s for s in (f"s{i}" for i in range(n)) if any(f"bench/{s}/shot_01" in p for p in ran_on_b))
    assert ids_on_b == sorted(f"s{i}" for i, srv in enumerate(servers) if srv == b)
    assert len(ran_on_b) == servers.count(b)
    for i in range(n):
        shots, _ = read_story(out, f"s{i}", SHOTS)
        assert all(s.shape[0] == 5 and s.shape[-1] == 64 for s in shots)
