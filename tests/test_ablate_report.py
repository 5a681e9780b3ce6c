"""bench/ablate.py's report: the table and the done-criterion line computed from result files."""
import json
from pathlib import Path

import pytest


from onestory_lab.experiments import ablate


def _write(out: Path, name: str, seed: int, char: float) -> None:
    metrics = {m: 0.5 for m in ablate.METRICS}
    metrics["character_recall"] = char
    (out / f"{name}_s{seed}.json").write_text(json.dumps(
        {"name": name, "seed": seed, "patterns": {"insert_recall": metrics}}))


@pytest.mark.parametrize("both, last, verdict", [
    ((0.030, 0.032, 0.034), (0.010, 0.012, 0.014), "**met**"),       # gap 0.020 > 3 x 0.002
    ((0.020, 0.030, 0.040), (0.010, 0.012, 0.014), "**not met**"),   # gap 0.018 < 3 x 0.010
])
def test_report_states_the_criterion_with_its_numbers(tmp_path, both, last, verdict):
    for seed, (b, l) in enumerate(zip(both, last)):
        _write(tmp_path, "both", seed, b)
        _write(tmp_path, "last_frame", seed, l)
    text = ablate.report(tmp_path, tmp_path / "plot.png")
    line = [x for x in text.splitlines() if x.startswith("Done criterion")][0]
    assert verdict in line and "n = 3 / 3 seeds" in line
    assert f"{sum(both) / 3:.4f}" in line and f"{sum(last) / 3:.4f}" in line
    assert "| last frame only | 0.012 ± 0.002 |" in text
    assert (tmp_path / "plot.png").exists()


def test_report_needs_two_seeds_per_side(tmp_path):
    _write(tmp_path, "both", 0, 0.05)
    _write(tmp_path, "last_frame", 0, 0.01)
    assert "needs at least 2 seeds" in ablate.report(tmp_path, tmp_path / "plot.png")
