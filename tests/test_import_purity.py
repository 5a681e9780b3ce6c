"""The core package must never pull in ComfyUI (it has to run standalone and under test)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, pkgutil, sys
import onestory
names = ["onestory"] + [m.name for m in pkgutil.walk_packages(onestory.__path__, "onestory.")
                        if m.name != "onestory.__main__"]
for name in names:
    __import__(name)
banned = sorted(m for m in sys.modules
                if m.split(".")[0].startswith("comfy") or m.split(".")[0] in ("folder_paths", "node_helpers"))
print(json.dumps({"imported": names, "banned": banned}))
"""


def test_onestory_imports_no_comfyui_module():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"onestory", "onestory.wan", "onestory.rope"} <= set(report["imported"])
    assert report["banned"] == [], f"onestory imported ComfyUI modules: {report['banned']}"
