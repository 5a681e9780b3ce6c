"""ComfyUI imported into the test process, for the opt-in parity tests.

`import_comfy` skips the calling module unless ONESTORY_COMFYUI_DIR names a ComfyUI checkout. That
checkout is not an installable package: run the tests with it on PYTHONPATH (the README's
integration command). CPU mode is forced before anything imports comfy.model_management (which
would otherwise probe for a GPU).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def import_comfy(purpose: str) -> Path:
    comfy_dir = os.environ.get("ONESTORY_COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip(f"set ONESTORY_COMFYUI_DIR to a ComfyUI checkout to run {purpose}", allow_module_level=True)
    path = Path(comfy_dir).expanduser().resolve()
    try:
        import comfy.cli_args  # parses no argv unless comfy.options enables it
    except ImportError:
        pytest.fail(f"{purpose} imports ComfyUI from {path}: put it on PYTHONPATH "
                    f"(PYTHONPATH={path} python -m pytest tests/integration)")
    found = Path(comfy.cli_args.__file__).resolve().parents[1]
    if found != path:
        pytest.fail(f"ComfyUI was imported from {found}, not ONESTORY_COMFYUI_DIR={path}: put {path} first on "
                    "PYTHONPATH")
    comfy.cli_args.args.cpu = True
    return path
