"""The recall study's table and headline (experiments/recall_study.py) from result JSON files."""
import json

import pytest

from onestory_lab.experiments import recall_study as rs


def _write(folder, run, variant, char, env, stories=200):
    pats = {"insert_recall": {"stories": stories, "character_recall": char, "environment_recall": env,
                              "shot6_character_recall": char / 2, "caption_alignment": 0.9}}
    (folder / f"{run}__{variant}.json").write_text(json.dumps(
        {"run": run, "variant": variant, "story_offset": 7, "seed_range": "fresh", "patterns": pats}))


def test_table_pools_seeds_per_configuration_and_states_the_gap(tmp_path):
    for seed, (c, e) in enumerate([(0.30, 0.60), (0.34, 0.62), (0.32, 0.64)]):
        _write(tmp_path, f"both_s{seed}", "method", c, e)
    for seed, (c, e) in enumerate([(0.02, 0.10), (0.04, 0.12), (0.03, 0.08)]):
        _write(tmp_path, f"last_frame_s{seed}", "last_frame", c, e)
    _write(tmp_path, "both_s0", "budget1", 0.10, 0.20)
    text = rs.report(tmp_path)
    method = next(line for line in text.splitlines() if line.startswith("| selector + conditioner"))
    assert "0.320 ± 0.020" in method and "0.620 ± 0.020" in method and method.endswith("| 3 |")
    budget1 = next(line for line in text.splitlines() if line.startswith("| budget 1"))
    assert "0.100" in budget1 and budget1.endswith("| 1 |")
    # gap = 0.32 - 0.03 = 0.29, larger seed std = 0.02 -> 14.5 x std
    assert "0.320 − 0.030 = 0.290" in text and "14.5 × std" in text
    assert "eval indices from 7 (fresh range)" in text
    head = rs.headline(tmp_path)
    assert "character recall 0.320 ± 0.020" in head and "character recall 0.030 ± 0.010" in head


def test_headline_needs_both_configurations(tmp_path):
    _write(tmp_path, "both_s0", "method", 0.3, 0.6)
    with pytest.raises(SystemExit, match="last_frame"):
        rs.headline(tmp_path)
