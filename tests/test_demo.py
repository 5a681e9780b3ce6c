"""The README's main job: `python -m onestory_lab demo` with the bundled story-world checkpoint."""
import json

import pytest

from onestory_lab.cli import main
from onestory_lab.demo import ADAPTER, DIT, HEADLINE
from onestory_lab.storyworld.splits import STUDY_OFFSET
from onestory_lab.train.checkpoint import load_model


def test_bundled_checkpoint_is_small():
    assert DIT.exists() and ADAPTER.exists()
    assert DIT.stat().st_size + ADAPTER.stat().st_size <= 20 * 2**20


def test_demo_writes_files_and_prints_metrics(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--stories", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("story.gif", "contact_sheet.png", "story.safetensors", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "character recall" in out and "environment recall" in out and "memory kept" in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("character_recall", "environment_recall", "caption_alignment"):
        assert 0.0 <= m["story"][key] <= 1.0
        assert 0.0 <= m["held_out"][key] <= 1.0
    assert m["held_out"]["stories"] == 2
    # the story is chosen by rule: the first insert-and-recall story of the study's fresh range
    assert m["seed"] == STUDY_OFFSET
    if HEADLINE.exists():      # the bundled checkpoint prints the study's headline beside its own story
        assert HEADLINE.read_text().splitlines()[0] in out
    from PIL import Image
    gif = Image.open(tmp_path / "story.gif")   # PIL merges identical consecutive frames: count time
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    assert gif.n_frames >= 6 and total == 6 * load_model(DIT, ADAPTER).cfg.pixel_frames * 110
