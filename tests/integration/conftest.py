"""Opt-in integration: a real ComfyUI server on CPU with tiny random Wan models.

Set ONESTORY_COMFYUI_DIR=/path/to/ComfyUI (and run with a Python that has ComfyUI's
requirements, e.g. its venv). A temporary --base-directory holds the models written by
make_tiny_models.py, the input image, and custom_nodes/ with this pack and test_pack symlinked.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMFY = os.environ.get("ONESTORY_COMFYUI_DIR")


def pytest_collection_modifyitems(config, items):
    if COMFY:
        return
    skip = pytest.mark.skip(reason="set ONESTORY_COMFYUI_DIR to run the ComfyUI integration tests")
    for item in items:
        if "integration" in str(item.fspath) and "test_wan_parity" not in str(item.fspath):
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    from client import Comfy   # tests/integration is on sys.path as this conftest's folder (pytest)

    base = tmp_path_factory.mktemp("comfy_base")
    for d in ("models", "custom_nodes", "input", "output", "user", "temp"):
        (base / d).mkdir()
    subprocess.run([sys.executable, str(HERE / "make_tiny_models.py"), "--comfy", COMFY, "--out", str(base / "models")],
                   check=True, cwd=COMFY, env=dict(os.environ, PYTHONPATH=COMFY))
    (base / "custom_nodes" / "onestory").symlink_to(ROOT)
    (base / "custom_nodes" / "onestory_test_pack").symlink_to(HERE / "test_pack")
    # input/ stays empty: the example images must come from the pack itself (copied when it loads).
    port = _free_port()
    log = open(base / "server.log", "w")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--disable-auto-launch", "--base-directory", str(base)], cwd=COMFY, stdout=log,
                            stderr=subprocess.STDOUT)
    client = Comfy(f"http://127.0.0.1:{port}")
    try:
        while True:
            try:
                client.get("/system_stats")
                break
            except OSError:
                if proc.poll() is not None or time.time() - t0 > 120:
                    raise RuntimeError(f"ComfyUI did not start; see {base / 'server.log'}")
                time.sleep(0.5)
        client.base, client.startup_s, client.log = base, time.time() - t0, base / "server.log"
        yield client
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
