"""`python -m onestory_lab bench --out DIR [--quick]` (or `python -m onestory_lab.bench.run ...`).

Writes DIR/results.json, DIR/results.md and DIR/*.png (plots only if matplotlib is installed:
`pip install "onestory-lab[bench]"`). See docs/performance.md for what is measured and how.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

SCHEMA_VERSION = 1


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _subprocess_json(cmd: list[str], env: dict, timeout: float) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(cfg_name: str, shots: Sequence[int], threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", ONESTORY_BENCH_THREADS=str(threads),
               )
    return _subprocess_json([sys.executable, "-m", "onestory_lab.bench.memory_probe", cfg_name, *map(str, shots)], env, 3600)


def measure_hook(quick: bool, threads: int, clock: str = "cpu") -> dict:
    comfy_dir = os.environ.get("ONESTORY_COMFYUI_DIR")
    if not comfy_dir:
        return {"status": "skipped", "reason": "ONESTORY_COMFYUI_DIR not set (opt-in)"}
    if not (Path(comfy_dir).expanduser() / "comfy").is_dir():
        return {"status": "failed", "reason": f"ONESTORY_COMFYUI_DIR={comfy_dir} is not a ComfyUI checkout (no "
                "comfy/ package in it): point it at the directory that holds ComfyUI's main.py"}
    python = os.environ.get("ONESTORY_COMFYUI_PYTHON") or str(
        Path(comfy_dir).expanduser().resolve().parent / "venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    # ComfyUI is a checkout, not a package: its Python finds it through PYTHONPATH (first, so
    # that its top-level modules win over same-named ones later on the path)
    path = [str(Path(comfy_dir).expanduser().resolve())] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    cmd = [python, "-m", "onestory_lab.bench.hook_bench", "--threads", str(threads), "--clock", clock] + (["--quick"] if quick else [])
    try:
        out = _subprocess_json(cmd, env, 3600)
    except Exception as exc:  # report, don't fake
        return {"status": "failed", "reason": str(exc)[-2000:]}
    out["status"] = "ok"
    out["python"] = python
    return out


def run(out_dir: str, quick: bool = False, threads: int = 1, hook: bool = True,
        memory: bool = True, clock: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(threads)
    from onestory_lab.bench import costmodel as cm

    from . import report
    from .common import QUICK, SCALED, Story, as_dict, machine_info, set_clock

    set_clock(clock)
    from . import realscale
    from .steps import analytic_check, measure_selection, measure_steps, paired_ratio, pipeline_check

    cfg = QUICK if quick else SCALED
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    _log(f"[bench] config {cfg.name}: dim {cfg.dim}, {cfg.num_layers} layers, latent "
         f"{cfg.frames}x{cfg.height}x{cfg.width}, shots {list(cfg.shots)}, {cfg.repeats} rounds, {threads} thread(s)")
    story = Story(cfg)
    _log("[bench] part 1: step time per method and shot")
    steps = measure_steps(story, cfg, _log, full_history_repeats=5)
    _log("[bench] part 2: selector + conditioner, scaled config")
    selection = measure_selection(story, cfg, _log)
    pipeline = pipeline_check(story, cfg, steps=2 if quick else 3)
    mem = None
    if memory:
        _log("[bench] part 3: peak memory (subprocess)")
        mem_shots = [cfg.shots[0]] if quick else [cfg.shots[0], cfg.shots[len(cfg.shots) // 2], cfg.shots[-1]]
        try:
            mem = measure_memory(cfg.name, mem_shots, threads)
        except Exception as exc:
            mem = {"status": "failed", "reason": str(exc)[-2000:]}
    hook_res = {"status": "skipped", "reason": "disabled (--no-hook)"}
    if hook:
        _log("[bench] part 4: ComfyUI hook")
        hook_res = measure_hook(quick, threads, clock)
    _log("[bench] part 5: analytic cost model")
    check = analytic_check(cfg, steps)
    analytic = cm.report(shots=tuple(range(2, 11)))
    shots = list(cfg.shots)
    first, last = str(shots[0]), str(shots[-1])
    b1 = steps["step_seconds"]["onestory_b1"]
    _log("[bench] part 6: selector + conditioner at Wan 2.1 14B 480p sizes, step priced")
    real = realscale.run(realscale.QUICK if quick else realscale.RealScale(shots=tuple(range(2, 11))),
                         _log, scaled=(cfg, b1[first]))
    results = {
        "schema_version": SCHEMA_VERSION,
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "loadavg_start": load,
                    "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "config": as_dict(cfg),
        "clock": clock,
        "flatness_ratio": b1[last] / b1[first],
        "flatness_ratio_paired": _paired_shots(steps["samples"]["onestory_b1"], first, last),
        "budget1_step_ratio": paired_ratio(steps["samples"], "onestory_b1", "none", shots),
        "step_ratio_vs_none": {m: {str(s): paired_ratio(steps["samples"], m, "none", [s]) for s in shots}
                               for m in steps["step_seconds"]},
        "steps": steps,
        "memory": mem,
        "selector_conditioner_fraction": [r["fraction_of_step"] for r in selection["per_shot"]],
        "selector_conditioner": selection,
        "real_scale": real,
        "pipeline_check": pipeline,
        "hook": hook_res,
        "analytic_check": check,
        "analytic": analytic,
        "elapsed_seconds": None,
    }
    if hook_res.get("status") == "ok":
        results["hook_overhead_ratio"] = hook_res["hook_overhead_ratio"]
    results["targets"] = targets(results)
    results["elapsed_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "results.md").write_text(report.markdown(results))
    results["plots"] = report.plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    _log(f"[bench] wrote {out / 'results.json'} and results.md in {results['elapsed_seconds']:.0f} s")
    return results


def _paired_shots(samples: dict, first: str, last: str) -> float:
    from .common import median

    return median([b / a for a, b in zip(samples[first], samples[last])])


def targets(r: dict) -> dict:
    """The performance targets: value, limit, met."""
    a14 = r["analytic"]["Wan 2.1 14B @ 480p"]["selector_conditioner_fraction_max"]
    rows = {
        "flatness_ratio": (r["flatness_ratio"], 1.05),
        "budget1_step_ratio": (r["budget1_step_ratio"], 1.10),
        "selector_conditioner_fraction_real_scale": (r["real_scale"]["max_fraction_of_step"], 0.01),
        "selector_conditioner_fraction_analytic_wan14b": (a14, 0.01),
        "analytic_vs_measured_max_relative_error": (r["analytic_check"]["max_relative_error"], 0.15),
    }
    if "hook_overhead_ratio" in r:
        rows["hook_overhead_ratio"] = (r["hook_overhead_ratio"], 1.01)
    return {k: {"value": v, "limit": lim, "met": bool(v <= lim)} for k, (v, lim) in rows.items()}


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--quick", action="store_true", help="tiny config, 1 round: checks the output format only")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable ratios on a shared machine)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="cpu: process CPU time (default; robust on a shared machine), wall: perf_counter")
    p.add_argument("--no-hook", action="store_true", help="skip the ComfyUI hook part even if ONESTORY_COMFYUI_DIR is set")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    run(a.out, quick=a.quick, threads=a.threads, hook=not a.no_hook, memory=not a.no_memory, clock=a.clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
