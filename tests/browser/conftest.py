"""Opt-in browser tests (ONESTORY_COMFYUI_DIR, like tests/integration): the real ComfyUI server
fixture of tests/integration is imported, not copied. Needs Debian chromium (/usr/bin/chromium) and
`npm ci` in this folder (playwright-core); with ONESTORY_COMFYUI_DIR set, missing pieces FAIL the
test instead of skipping it."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"
COMFY = os.environ.get("ONESTORY_COMFYUI_DIR")

sys.path.insert(0, str(INTEGRATION))      # client.py, tiny.py
_spec = importlib.util.spec_from_file_location("onestory_integration_conftest", INTEGRATION / "conftest.py")
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)
comfy = _integration.comfy                # the session-scoped real server fixture


def pytest_collection_modifyitems(config, items):
    if COMFY:
        return
    skip = pytest.mark.skip(reason="set ONESTORY_COMFYUI_DIR to run the browser tests")
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)
