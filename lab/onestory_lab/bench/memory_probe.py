"""Peak memory of one denoising step per method and shot (run as a subprocess).

Method: the process runs with MALLOC_MMAP_THRESHOLD_=65536, so glibc serves every tensor buffer
>= 64 kB with its own mmap and returns it to the OS on free: the resident set then follows the
live tensors. Before each step we reset the kernel's peak-RSS mark (`echo 5 >
/proc/self/clear_refs`, Linux >= 4.0), run the step, and report VmHWM - VmRSS(before): the
transient peak the step added on top of what was already resident (model, memory bank,
context). Limits: page granularity (4 kB); small (< 64 kB) allocations come from the heap and
may be reused; thread stacks / oneDNN scratch count too; everything is CPU float32.

Usage: python -m onestory_lab.bench.memory_probe CONFIG SHOTS... (prints one JSON object on stdout)
"""
from __future__ import annotations

import gc
import json
import os
import re
import sys


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        m = re.search(key + r":\s+(\d+) kB", fh.read())
    return int(m.group(1)) * 1024 if m else -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(int(os.environ.get("ONESTORY_BENCH_THREADS", "1")))
    from onestory_lab.bench import costmodel as cm

    from .common import METHODS, Story, config_by_name

    cfg = config_by_name(argv[0])
    shots = [int(s) for s in argv[1:]] or [cfg.shots[0], cfg.shots[-1]]
    story = Story(cfg)
    dims = cfg.model_dims()
    nx = cm.noise_tokens(dims, cfg.geometry())
    out = {"method": "VmHWM - VmRSS around one CFG step (batch 2), MALLOC_MMAP_THRESHOLD_="
                     + os.environ.get("MALLOC_MMAP_THRESHOLD_", "unset"),
           "peak_reset_supported": True, "bytes": {}, "analytic_activation_bytes_fp32": {}}
    with torch.no_grad():
        for m in METHODS:
            out["bytes"][m], out["analytic_activation_bytes_fp32"][m] = {}, {}
            for s in shots:
                ctx = story.context(m, s)
                v = story.velocity(ctx)
                x, sigma = story.step_inputs()
                v(x, sigma)  # warm-up outside the measured window
                gc.collect()
                ok = _reset_peak()
                out["peak_reset_supported"] &= ok
                before = _status("VmRSS")
                v(x, sigma)
                peak = _status("VmHWM")
                out["bytes"][m][str(s)] = max(0, peak - before)
                out["analytic_activation_bytes_fp32"][m][str(s)] = cm.activation_bytes(
                    dims, nx + len(ctx), batch=2, bytes_per_element=4)
                del v, ctx
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
