"""ComfyUI imported into the test process, for the opt-in parity tests.

`import_comfy` skips the calling module unless ONESTORY_COMFYUI_DIR names a ComfyUI checkout;
otherwise it puts that checkout on sys.path and forces CPU mode before anything imports
comfy.model_management (which would otherwise probe for a GPU).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def import_comfy(purpose: str) -> Path:
    comfy_dir = os.environ.get("ONESTORY_COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip(f"set ONESTORY_COMFYUI_DIR to a ComfyUI checkout to run {purpose}", allow_module_level=True)
    path = Path(comfy_dir).expanduser().resolve()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.cli_args  # parses no argv unless comfy.options enables it

    comfy.cli_args.args.cpu = True
    return path
