"""`python -m onestory_lab bench-stories`: every benchmark story through ComfyUI servers.

    python -m onestory_lab bench-stories --workflow W.json --servers http://127.0.0.1:8188,http://127.0.0.1:8189 \
        --stories lab/onestory_lab/multishot/benchmarks/t2msv.json --out runs/onestory

The workflow is an API-format JSON (ComfyUI: "Export (API)") with placeholders in its string inputs:

    {{shot1}} ... {{shotN}}    the story's captions        {{captions}}  all captions, one per line
    {{story_id}}               the story id                {{reference_prompt}}  i2msv: the reference prompt
    "{{seed}}"                 (a whole input) an integer seed: --seed + the story's index

Per-shot frames are the images of output nodes whose `filename_prefix` contains `shot_NN` (e.g. a
SaveImage with prefix "bench/{{story_id}}/shot_01" after each shot's VAE Decode, or a
SaveAnimatedWEBP per shot); other output images are kept under `outputs/`. A finished story is

    OUT/<story id>/shot_01/00000.png ... | shot_01.webp, outputs/, workflow.json (the exact prompt run),
    bench.json (server, prompt id, seconds)

written to a temporary folder and renamed into place when complete, so a crash never leaves half a
story. A rerun skips every story that has bench.json. Each server gets its own worker; a server that
stops answering gets its story back into the queue (another server takes it) and is retried every
--retry seconds.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from onestory.metrics.annotation import Benchmark, StoryAnnotation, load_benchmark

PLACEHOLDER = re.compile(r"\{\{(shot(\d+)|captions|story_id|reference_prompt)\}\}")
SHOT_PREFIX = re.compile(r"shot_(\d+)")


class ServerDown(Exception):
    """The server did not answer (connection refused, reset, timeout)."""


class StoryFailed(Exception):
    """The server ran the prompt and reported an error, or returned no frames for a shot."""


def fill(workflow: dict, story: StoryAnnotation, seed: int) -> dict:
    """The workflow with this story's captions / id / seed in place of the placeholders."""
    used: set[int] = set()

    def sub(m: re.Match) -> str:
        if m.group(2):
            k = int(m.group(2))
            if not 1 <= k <= len(story.shots):
                raise ValueError(f"story {story.id!r} has {len(story.shots)} shots; the workflow asks for {{{{shot{k}}}}}")
            used.add(k)
            return story.shots[k - 1].caption
        return {"captions": "\n".join(story.captions), "story_id": story.id,
                "reference_prompt": (story.reference or {}).get("prompt", "")}[m.group(1)]

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return seed if v == "{{seed}}" else PLACEHOLDER.sub(sub, v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    out = walk(workflow)
    caption_nodes = "{{captions}}" in json.dumps(workflow)
    if not caption_nodes and used != set(range(1, len(story.shots) + 1)):
        missing = sorted(set(range(1, len(story.shots) + 1)) - used)
        raise ValueError(f"story {story.id!r}: the workflow has no placeholder for shot(s) {missing} "
                         "(use {{shotN}} or {{captions}})")
    return out


def shot_nodes(prompt: dict) -> dict[str, int]:
    """Output node id -> shot number, from `filename_prefix` inputs containing shot_NN."""
    out = {}
    for nid, node in prompt.items():
        prefix = node.get("inputs", {}).get("filename_prefix")
        if isinstance(prefix, str) and (m := SHOT_PREFIX.search(prefix)):
            out[nid] = int(m.group(1))
    return out


class Server:
    def __init__(self, url: str, timeout: float = 30):
        self.url, self.timeout = url.rstrip("/"), timeout

    def _open(self, req):
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as e:
            raise ServerDown(f"{self.url}: {e}") from None

    def get_json(self, path: str):
        with self._open(self.url + path) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with self._open(self.url + path) as r:
            return r.read()

    def alive(self) -> bool:
        try:
            self.get_json("/system_stats")
            return True
        except (ServerDown, urllib.error.HTTPError):
            return False

    def queue(self, prompt: dict, client_id: str) -> str:
        body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with self._open(req) as r:
                res = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise StoryFailed(f"{self.url} refused the prompt: {e.read().decode(errors='replace')[:2000]}") from None
        if "prompt_id" not in res:
            raise StoryFailed(f"{self.url} refused the prompt: {res}")
        return res["prompt_id"]

    def wait(self, prompt_id: str, timeout: float, poll: float = 0.5) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            h = self.get_json(f"/history/{prompt_id}")
            entry = h.get(prompt_id)
            if entry:
                status = entry.get("status", {})
                if status.get("status_str") == "error":
                    msg = next((f"{d.get('node_type')}: {d.get('exception_message')}"
                                for k, d in status.get("messages", []) if k == "execution_error"), "error")
                    raise StoryFailed(f"{self.url}: {msg}")
                if status.get("completed"):
                    return entry
            time.sleep(poll)
        raise ServerDown(f"{self.url}: prompt {prompt_id} did not finish in {timeout:.0f} s")


def download(server: Server, entry: dict, prompt: dict, story: StoryAnnotation, dest: Path) -> None:
    shots = shot_nodes(prompt)
    got = {k: 0 for k in range(1, len(story.shots) + 1)}
    for nid, out in entry.get("outputs", {}).items():
        images = out.get("images") or []
        animated = any(out.get("animated") or [])
        for j, im in enumerate(images):
            q = urllib.parse.urlencode({"filename": im["filename"], "subfolder": im.get("subfolder", ""),
                                        "type": im.get("type", "output")})
            data = server.get_bytes(f"/view?{q}")
            ext = Path(im["filename"]).suffix or ".png"
            if nid in shots:
                k = shots[nid]
                if animated:
                    (dest / f"shot_{k:02d}{ext}").write_bytes(data)
                else:
                    d = dest / f"shot_{k:02d}"
                    d.mkdir(exist_ok=True)
                    (d / f"{got[k]:05d}{ext}").write_bytes(data)
                got[k] += 1
            else:
                d = dest / "outputs"
                d.mkdir(exist_ok=True)
                (d / f"{nid}_{j:03d}_{Path(im['filename']).name}").write_bytes(data)
    empty = [k for k, n in got.items() if n == 0]
    if empty:
        raise StoryFailed(f"story {story.id!r}: no frames for shot(s) {empty}; save each shot with a filename_prefix "
                          "containing shot_NN (e.g. '{{story_id}}/shot_01')")


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.perf_counter)

    def report(self, msg: str) -> None:
        with self.lock:
            print(f"[{self.done}/{self.total} done, {len(self.failed)} failed, {time.perf_counter() - self.t0:.0f} s] {msg}",
                  file=sys.stderr, flush=True)


def finished(out: Path, story_id: str) -> bool:
    return (out / story_id / "bench.json").is_file()


def run_story(server: Server, story: StoryAnnotation, prompt: dict, out: Path, timeout: float) -> dict:
    t0 = time.perf_counter()
    pid = server.queue(prompt, client_id=f"onestory-bench-{uuid.uuid4().hex[:8]}")
    entry = server.wait(pid, timeout)
    tmp = out / ".partial" / f"{story.id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        download(server, entry, prompt, story, tmp)
        (tmp / "workflow.json").write_text(json.dumps(prompt, indent=1))
        info = {"server": server.url, "prompt_id": pid, "seconds": round(time.perf_counter() - t0, 2)}
        (tmp / "bench.json").write_text(json.dumps(info))
        final = out / story.id
        if final.exists():            # an unfinished leftover (no bench.json): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        return info
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def worker(server: Server, todo: "queue.Queue", prompts: dict, stories: dict, out: Path, prog: Progress,
           attempts: dict, max_attempts: int, timeout: float, retry: float, stop: threading.Event,
           inflight: list) -> None:
    down = False
    while not stop.is_set():
        with prog.lock:
            if inflight[0] == 0 and todo.empty():
                return
        if not server.alive():
            if not down:
                prog.report(f"{server.url} is not answering; retrying every {retry:g} s")
            down = True
            stop.wait(retry)
            continue
        if down:
            prog.report(f"{server.url} answers again")
            down = False
        with prog.lock:   # taking a story and counting it in flight is one step: no worker sees neither
            try:
                sid = todo.get_nowait()
                inflight[0] += 1
            except queue.Empty:
                sid = None
        if sid is None:
            stop.wait(0.5)
            continue
        try:
            info = run_story(server, stories[sid], prompts[sid], out, timeout)
            with prog.lock:
                prog.done += 1
            prog.report(f"{sid} on {server.url} ({info['seconds']} s)")
        except ServerDown as e:
            todo.put(sid)                 # back in the queue: another server (or this one later) takes it
            prog.report(f"{sid}: {e}; story queued again")
        except StoryFailed as e:
            attempts[sid] = attempts.get(sid, 0) + 1
            if attempts[sid] < max_attempts:
                todo.put(sid)
                prog.report(f"{sid}: {e}; attempt {attempts[sid] + 1} of {max_attempts} queued")
            else:
                with prog.lock:
                    prog.failed[sid] = str(e)
                prog.report(f"{sid} FAILED: {e}")
        finally:
            with prog.lock:
                inflight[0] -= 1


def bench_stories(workflow: str | Path, servers: Sequence[str], out: str | Path, stories: str | Path,
                  seed: int = 0, limit: int = 0, timeout: float = 3600, retry: float = 5.0, attempts: int = 2,
                  give_up: float = 600) -> dict:
    wf_path = Path(workflow)
    wf = json.loads(wf_path.read_text())
    if not isinstance(wf, dict) or not all(isinstance(v, dict) and "class_type" in v for v in wf.values()):
        raise SystemExit(f"{wf_path}: not an API-format workflow (ComfyUI: Workflow > Export (API))")
    bench: Benchmark = load_benchmark(stories)
    chosen = list(bench.stories[:limit] if limit else bench.stories)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / ".partial", ignore_errors=True)
    prompts = {s.id: fill(wf, s, seed + i) for i, s in enumerate(chosen)}   # placeholder errors before any queueing
    if not any(shot_nodes(p) for p in prompts.values()):
        raise SystemExit(f"{wf_path}: no output node has a filename_prefix with shot_NN; per-shot frames cannot be told "
                         "apart (see `onestory bench-stories --help`)")
    todo: queue.Queue = queue.Queue()
    pending = [s.id for s in chosen if not finished(out, s.id)]
    for sid in pending:
        todo.put(sid)
    prog = Progress(total=len(chosen), done=len(chosen) - len(pending))
    prog.report(f"{len(pending)} stories to run on {len(servers)} server(s); {prog.done} already done")
    stop = threading.Event()
    inflight = [0]
    tries: dict = {}
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(Server(u), todo, prompts, {s.id: s for s in chosen}, out, prog, tries, attempts,
                                      timeout, retry, stop, inflight)) for u in servers]
    for t in threads:
        t.start()
    last_progress, last_done = time.time(), prog.done
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            with prog.lock:
                if prog.done != last_done or inflight[0]:
                    last_progress, last_done = time.time(), prog.done
            if time.time() - last_progress > give_up:
                prog.report(f"no server made progress for {give_up:.0f} s; stopping (rerun to resume)")
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=timeout)
    remaining = [s.id for s in chosen if not finished(out, s.id) and s.id not in prog.failed]
    summary = {"total": len(chosen), "done": sum(finished(out, s.id) for s in chosen), "failed": prog.failed,
               "remaining": remaining, "workflow": str(wf_path)}
    (out / "bench_stories.json").write_text(json.dumps(summary, indent=1))
    return summary
