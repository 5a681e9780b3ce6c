"""Minimal HTTP client for a loopback ComfyUI server (POST /prompt, poll /history)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class Comfy:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict | None = None):
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}") | {"http_status": e.code}

    def queue(self, prompt: dict) -> dict:
        return self.post("/prompt", {"prompt": prompt})

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                return h[prompt_id]
            if prompt_id in h and h[prompt_id].get("status", {}).get("status_str") in ("error", "success"):
                return h[prompt_id]
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        r = self.queue(prompt)
        if "prompt_id" not in r:
            return {"rejected": r}
        # A prompt whose bad nodes feed only some outputs is still queued (the others run);
        # /prompt reports the dropped ones in node_errors, which /history does not repeat.
        return self.wait(r["prompt_id"], timeout) | {"node_errors": r.get("node_errors") or {}}


def executed_nodes(entry: dict) -> list[str]:
    """Node ids that actually executed (not served from cache), from the history messages."""
    cached, started = set(), []
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_cached":
            cached.update(data.get("nodes", []))
        elif kind == "execution_start":
            pass
    outputs_run = [n for n in entry.get("meta", {})]  # meta lists nodes with outputs only
    del outputs_run
    return sorted(cached)


def error_message(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return ""
