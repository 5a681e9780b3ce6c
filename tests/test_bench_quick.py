"""`python -m onestory_lab bench --quick` writes results.json / results.md in the documented format.

Checks the FORMAT only: the quick config is tiny and runs one round, so its numbers mean nothing
(benchmarks are scripts; no timing assertions here)."""
import json
import math

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_output_format(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "onestory_lab", "bench", "--out", str(out), "--quick", "--no-hook"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# OneStory benchmark results")
    for key in ("flatness_ratio", "budget1_step_ratio"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0
    fr = r["selector_conditioner_fraction"]
    assert isinstance(fr, list) and len(fr) == len(r["config"]["shots"]) and all(x > 0 for x in fr)
    assert r["machine"]["torch_num_threads"] >= 1
    methods = ("none", "onestory_b1", "onestory_b2", "onestory_b3", "storymem10", "full_history", "last_frame")
    for m in methods:
        assert set(r["steps"]["step_seconds"][m]) == {str(s) for s in r["config"]["shots"]}
    for key in ("Wan 2.1 14B @ 480p", "Wan 2.1 14B @ 720p", "Wan 2.2 TI2V 5B @ 704p"):
        assert set(r["analytic"][key]["methods"]) == set(methods)
    assert r["analytic"]["Wan 2.1 14B @ 480p"]["tokens_per_latent_frame"] == 1560
    assert r["pipeline_check"]["context_built_once_per_shot"] is True
    assert r["analytic_check"]["token_counts_match"] is True
    ac = r["analytic_check"]
    assert [p["method"] for p in ac["calibration"]["calibration_points"]] == ["none", "full_history"]
    assert sum(row["calibration_point"] for row in ac["rows"]) == 1
    assert all({"predicted_ratio", "flop_ratio", "attention_share_measured"} <= set(row) for row in ac["rows"])
    for m in methods:
        for s, xs in r["steps"]["attention_samples"][m].items():
            assert len(xs) == len(r["steps"]["samples"][m][s])
            assert all(0 < a < t for a, t in zip(xs, r["steps"]["samples"][m][s]))
    for row in r["selector_conditioner"]["per_shot"]:
        assert row["selector_seconds"] > 0 and row["conditioner_seconds"] > 0
    rs = r["real_scale"]
    assert [row["shot"] for row in rs["per_shot"]] == [2, 3]
    for row in rs["per_shot"]:
        assert row["total_seconds"] > 0 and row["flop_fraction_of_step"] > 0
        assert math.isclose(row["fraction_of_step"], row["total_seconds"] / rs["step_seconds_priced"])
        assert row["context_tokens"] == row["context_tokens_model"]   # the cost model prices the built context
    # what an encoding cache could save: nothing at shot 2 (shot 1 had no memory), shot 2's memory at shot 3
    assert rs["per_shot"][0]["reencode_previous_seconds"] == 0 < rs["per_shot"][1]["reencode_previous_seconds"]
    assert rs["step_seconds_priced"] > 0 and rs["price_check"]["priced_over_measured"] > 0
    assert "Wan" not in rs["sizes"]["model"]["name"]                # --quick prices the tiny sizes
    assert r["hook"]["status"] == "skipped" and "hook_overhead_ratio" not in r
    assert all({"value", "limit", "met"} <= set(t) for t in r["targets"].values())
    mem = r["memory"]
    assert "bytes" in mem or mem.get("status") == "failed"
    for name in r.get("plots", []):
        assert (out / name).stat().st_size > 0
