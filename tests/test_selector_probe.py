"""bench/selector_probe.py: the top-1 hit rate of a scorer against the story world's ground truth."""

import numpy as np
import torch


from onestory_lab.experiments.selector_probe import probe
from onestory_lab.storyworld.world import relevance
from onestory_lab.train.config import TrainConfig
from onestory_lab.train.model import StoryModel

TINY = dict(dim=64, layers=1, heads=1, ffn_dim=128, text_dim=128, sel_width=32, sel_queries=2, sel_heads=1,
            pixel_frames=1)


def _model():
    torch.manual_seed(0)
    return StoryModel(TrainConfig(out="unused", policy="both", **TINY)).eval()


def test_oracle_scores_hit_every_time_and_newest_first_matches_its_column():
    model = _model()
    oracle = probe(model, stories=6, score_fn=lambda st, s, *_: relevance(st.shots[:s], st.shots[s]))
    assert oracle["all_shots"]["selector"] == 1.0
    newest = probe(model, stories=6, score_fn=lambda st, s, memory, *_: np.arange(memory.shape[1]))
    for row in newest["per_shot"].values():
        assert row["selector"] == row["newest"]
    # the anti-oracle never hits where some frame is strictly less relevant than the best
    anti = probe(model, stories=6, score_fn=lambda st, s, *_: -relevance(st.shots[:s], st.shots[s]))
    assert anti["all_shots"]["selector"] < oracle["all_shots"]["selector"]
    # the reference columns depend on the ground truth only, not on the scorer
    for key in ("newest", "random"):
        assert oracle["all_shots"][key] == anti["all_shots"][key] == newest["all_shots"][key]
    assert 0.0 < oracle["all_shots"]["random"] < 1.0


def test_the_model_selector_runs_on_ground_truth_memory():
    res = probe(_model(), stories=3)
    assert set(res["per_shot"]) <= {"2", "3", "4", "5", "6"} and res["per_shot"]
    for row in res["per_shot"].values():
        assert row["n"] > 0 and all(0.0 <= row[k] <= 1.0 for k in ("selector", "newest", "random"))
