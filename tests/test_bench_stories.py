"""`onestory bench-stories` against in-process fake ComfyUI servers (the HTTP API subset it uses:
POST /prompt, GET /history/<id>, GET /view, GET /system_stats). The real-server test is in
tests/integration/test_bench_stories_comfy.py."""
from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

from onestory.metrics.annotation import BENCH_FORMAT
from onestory_lab.multishot.bench_stories import bench_stories, fill, shot_nodes
from onestory_lab.multishot.videos import read_story

WORKFLOW = {
    "1": {"class_type": "Text", "inputs": {"text": "{{shot1}}", "seed": "{{seed}}"}},
    "2": {"class_type": "Text", "inputs": {"text": "{{shot2}}"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench/{{story_id}}/shot_01"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench/{{story_id}}/shot_02"}},
}


class FakeComfy:
    """Runs each queued prompt in `delay` seconds; every SaveImage gives 3 PNG frames."""

    def __init__(self, delay: float = 0.3, die_on_prompt: int = 0):
        self.delay, self.history, self.queued, self.completed = delay, {}, [], []
        self.die_on_prompt = die_on_prompt     # the server dies right after accepting this prompt (1-based)
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, body: bytes, ctype="application/json"):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urlparse(self.path)
                if u.path == "/system_stats":
                    return self._send(b"{}")
                if u.path.startswith("/history/"):
                    pid = u.path.rsplit("/", 1)[1]
                    with outer.lock:
                        e = outer.history.get(pid)
                    return self._send(json.dumps({pid: e} if e else {}).encode())
                if u.path == "/view":
                    name = parse_qs(u.query)["filename"][0]
                    buf = io.BytesIO()
                    Image.new("RGB", (8, 8), (int(name.split("_")[-1].split(".")[0]) * 40 % 255, 0, 0)).save(buf, "PNG")
                    return self._send(buf.getvalue(), "image/png")
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                pid = f"p{len(outer.queued)}-{id(outer)}"
                with outer.lock:
                    outer.queued.append(body["prompt"])
                threading.Timer(outer.delay, outer._finish, (pid, body["prompt"])).start()
                self._send(json.dumps({"prompt_id": pid, "number": 0, "node_errors": {}}).encode())
                if len(outer.queued) == outer.die_on_prompt:
                    threading.Thread(target=outer.kill).start()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _finish(self, pid, prompt):
        outputs = {nid: {"images": [{"filename": f"{nid}_{j}.png", "subfolder": "", "type": "output"} for j in range(3)]}
                   for nid, n in prompt.items() if n["class_type"] == "SaveImage"}
        with self.lock:
            if self.httpd is None:      # killed: nothing finishes
                return
            self.history[pid] = {"outputs": outputs, "status": {"status_str": "success", "completed": True, "messages": []}}
            self.completed.append(prompt["1"]["inputs"]["text"])

    def kill(self):
        with self.lock:
            h, self.httpd = self.httpd, None
        if h is not None:
            h.shutdown()
            h.server_close()


def bench_file(tmp_path, n=6):
    stories = [{"id": f"s{i}", "pattern": "consistency", "characters": {"A": "a man"}, "places": {"P": "a room"},
                "shots": [{"caption": f"story {i} shot 1", "characters": ["A"], "place": "P"},
                          {"caption": f"story {i} shot 2", "characters": ["A"], "place": "P"}]} for i in range(n)]
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"format": BENCH_FORMAT, "version": 1, "task": "t2msv", "stories": stories}))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    return p, wf


def test_fill_puts_captions_seed_and_id():
    from onestory.metrics.annotation import ShotAnnotation, StoryAnnotation
    st = StoryAnnotation("x1", (ShotAnnotation("first", ("A",), "P"), ShotAnnotation("second", ("A",), "P")))
    p = fill(WORKFLOW, st, 41)
    assert p["1"]["inputs"] == {"text": "first", "seed": 41} and p["2"]["inputs"]["text"] == "second"
    assert p["3"]["inputs"]["filename_prefix"] == "bench/x1/shot_01" and shot_nodes(p) == {"3": 1, "4": 2}
    three = StoryAnnotation("x2", st.shots + (ShotAnnotation("third", ("A",), "P"),))
    with pytest.raises(ValueError, match="x2.*shot\\(s\\) \\[3\\]"):
        fill(WORKFLOW, three, 0)


def test_two_servers_one_killed_mid_run_finishes_on_the_other(tmp_path):
    stories, wf = bench_file(tmp_path, 8)
    a, b = FakeComfy(0.2, die_on_prompt=2), FakeComfy(0.2)     # a dies with its second story in flight
    out = tmp_path / "run"
    res = bench_stories(wf, [a.url, b.url], out, stories, retry=0.2, give_up=20)
    assert res["done"] == 8 and not res["failed"] and not res["remaining"]
    done_by = [json.loads((out / f"s{i}" / "bench.json").read_text())["server"] for i in range(8)]
    assert done_by.count(a.url) == 1 and done_by.count(b.url) == 7 and len(a.queued) == 2
    # every story finished exactly once across both servers, and its files are the ones read back
    finished = a.completed + b.completed
    assert sorted(finished) == sorted(f"story {i} shot 1" for i in range(8))
    for i in range(8):
        shots, _ = read_story(out, f"s{i}", 2)
        assert [s.shape[0] for s in shots] == [3, 3]
        assert json.loads((out / f"s{i}" / "workflow.json").read_text())["1"]["inputs"]["text"] == f"story {i} shot 1"
    assert not list((out / ".partial").glob("*"))
    b.kill()


def test_rerun_resumes_without_redoing_finished_stories(tmp_path):
    stories, wf = bench_file(tmp_path, 5)
    s = FakeComfy(0.05)
    out = tmp_path / "run"
    first = bench_stories(wf, [s.url], out, stories, limit=2)
    assert first["done"] == 2 and len(s.queued) == 2
    (out / "s3").mkdir()            # a leftover of a crash: no bench.json, so it is redone
    second = bench_stories(wf, [s.url], out, stories)
    assert second["done"] == 5 and len(s.queued) == 5
    assert sorted(p["1"]["inputs"]["text"] for p in s.queued[2:]) == ["story 2 shot 1", "story 3 shot 1", "story 4 shot 1"]
    s.kill()


def test_all_servers_down_stops_and_keeps_the_queue(tmp_path):
    stories, wf = bench_file(tmp_path, 2)
    dead = FakeComfy()
    dead.kill()
    t0 = time.time()
    res = bench_stories(wf, [dead.url], tmp_path / "run", stories, retry=0.1, give_up=1.0)
    assert res["done"] == 0 and res["remaining"] == ["s0", "s1"] and time.time() - t0 < 15
