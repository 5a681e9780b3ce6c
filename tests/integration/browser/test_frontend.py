"""Memory strip + story timeline in a real browser against a real ComfyUI (tiny CPU models).

Loads the T2V example (its API twin, rewritten for the tiny models by tests/integration/tiny.py)
into the real frontend, queues it, reads the memory strip of the 2nd Next Shot, clicks a thumbnail
to pin it, re-queues, and checks through /history that only that shot and its downstream nodes ran
and that the saved workflow JSON carries the override. Screenshots go to ONESTORY_BROWSER_OUT
(default: the test's tmp folder)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tiny import tinyfy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
EXAMPLE = "onestory_wan21_t2v_story"


def descendants(wf: dict, start: str) -> set[str]:
    out, frontier = {start}, [start]
    while frontier:
        cur = frontier.pop()
        for nid, node in wf.items():
            if nid not in out and any(isinstance(v, list) and v and v[0] == cur for v in node["inputs"].values()):
                out.add(nid)
                frontier.append(nid)
    return out


def ran(entry: dict, wf: dict) -> set[str]:
    cached = set()
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_cached":
            cached.update(data["nodes"])
    return set(wf) - cached


def test_strip_pin_requeue_and_saved_workflow(comfy, tmp_path):
    assert Path("/usr/bin/chromium").exists(), "apt-get install -y chromium"
    assert (HERE / "node_modules" / "playwright-core").is_dir(), "run `npm ci` in tests/integration/browser"
    out = Path(os.environ.get("ONESTORY_BROWSER_OUT", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    wf = tinyfy(json.loads((ROOT / "example_workflows" / "api" / f"{EXAMPLE}.json").read_text()))
    shots = sorted((k for k, v in wf.items() if v["class_type"] == "OneStoryNextShot"), key=int)
    target = shots[1]                                   # 2nd shot: its memory is shot 0's frames
    (out / "workflow_api.json").write_text(json.dumps(wf))
    proc = subprocess.run([shutil.which("node") or "node", str(HERE / "drive.mjs"), comfy.url,
                           str(out / "workflow_api.json"), target, str(out)],
                          cwd=HERE, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    (out / "result.json").write_text(json.dumps(r, indent=1))
    assert set(r["extensions"]) == {"OneStory.MemoryStrip", "OneStory.StoryTimeline"}

    # Run 1: the strip shows the server's payload (thumbnails loaded, one bar per scored frame).
    h1 = comfy.get(f"/history/{r['prompt1']}")[r["prompt1"]]
    payload = h1["outputs"][target]["onestory_selection"][0]
    frames = payload["memory_frames"]
    assert len(frames) >= 2 and r["strip1"]["loaded"] == "1"
    assert [c["index"] for c in r["strip1"]["cells"]] == [str(f["index"]) for f in frames]
    assert all(c["bar"] and c["bg"].startswith('url("') and "/view?" in c["bg"] for c in r["strip1"]["cells"])
    assert [c["kept"] for c in r["strip1"]["cells"]] == [str(f["kept"]).lower() for f in frames]
    assert all(c["tier"] for c, f in zip(r["strip1"]["cells"], frames) if f["tier"] is not None)

    # The click pinned the clicked frame by (shot, frame) in the widget.
    shot, frame = int(r["clicked"]["shot"]), int(r["clicked"]["frame"])
    assert json.loads(r["widget_after_click"]) == {"pin": [[shot, frame]]}
    assert r["cell_after_click"]["override"] == "pin"
    if r.get("timeline_before_requeue") is not None:
        status = {row["node"]: row["status"] for row in r["timeline_before_requeue"]}
        assert [status[s] for s in shots] == ["done", "stale", "stale", "stale"], status

    # Run 2: only the pinned shot and what depends on it executed.
    h2 = comfy.get(f"/history/{r['prompt2']}")[r["prompt2"]]
    assert h2["status"]["status_str"] == "success"
    executed = ran(h2, wf)
    assert executed == descendants(wf, target), (sorted(executed, key=int), sorted(descendants(wf, target), key=int))
    assert shots[0] not in executed
    sent = h2["prompt"][2][target]["inputs"]["memory_overrides"]
    assert json.loads(sent) == {"pin": [[shot, frame]]}
    new = {(f["shot"], f["frame"]): f for f in h2["outputs"][target]["onestory_selection"][0]["memory_frames"]}
    assert new[(shot, frame)]["pinned"] and new[(shot, frame)]["override"] == "pin" and new[(shot, frame)]["rank"] == 0
    assert [c["override"] for c in r["strip2"]["cells"] if (int(c["shot"]), int(c["frame"])) == (shot, frame)] == ["pin"]

    # The workflow the frontend saves, and the one stored with the prompt, carry the override.
    for workflow in (json.loads(Path(r["saved_workflow"]).read_text()), h2["prompt"][3]["extra_pnginfo"]["workflow"]):
        node = next(n for n in workflow["nodes"] if str(n["id"]) == target)
        assert node["widgets_values"][-1] == sent, node["widgets_values"]
    if r.get("timeline_after_requeue") is not None:
        status = {row["node"]: row["status"] for row in r["timeline_after_requeue"]}
        assert status[shots[0]] == "cached" and all(status[s] == "done" for s in shots[1:]), status
        assert r["selected_after_timeline_click"] == [shots[0]]
    assert not [e for e in r["console_errors"] if "onestory" in e.lower()], r["console_errors"]
    print(json.dumps({"times": r["times"], "executed_after_pin": sorted(executed, key=int),
                      "classes": {n: wf[n]["class_type"] for n in sorted(executed, key=int)}, "out": str(out)}))
