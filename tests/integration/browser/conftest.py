"""Opt-in browser tests (ONESTORY_COMFYUI_DIR, like the rest of tests/integration, whose conftest
skips them without it and provides the real ComfyUI server fixture `comfy`). Needs Debian chromium
(/usr/bin/chromium) and `npm ci` in this folder (playwright-core); with ONESTORY_COMFYUI_DIR set,
missing pieces FAIL the test instead of skipping it."""
