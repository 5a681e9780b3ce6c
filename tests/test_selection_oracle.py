"""bench/selection_oracle.py: generation with a replaced scorer keeps the frames that scorer ranks
first (ground truth, its negation), and the script runs end to end on a tiny checkpoint."""
import json

import torch


from onestory_lab.experiments.selection_oracle import main, truth_scores
from onestory_lab.storyworld.dataset import eval_stories
from onestory_lab.storyworld.world import relevance
from onestory_lab.eval.generate import GenParams, generate_batch
from onestory_lab.train.checkpoint import save_checkpoint
from onestory_lab.train.config import TrainConfig
from onestory_lab.train.loop import make_optimizer
from onestory_lab.train.model import StoryModel

TINY = dict(dim=64, layers=1, heads=1, ffn_dim=128, text_dim=128, sel_width=32, sel_queries=2, sel_heads=1,
            pixel_frames=1, policy="both", k=1, budget=1.0)


def _model():
    torch.manual_seed(0)
    return StoryModel(TrainConfig(out="unused", **TINY)).eval()


def test_truth_and_worst_keep_the_most_and_least_relevant_frame():
    model = _model()
    stories = eval_stories("insert_recall", 3, pixel_frames=1)
    params = GenParams.for_model(model, steps=1, cfg=1.0)
    for sign in (1.0, -1.0):
        runs = generate_batch(model, stories, params, score_fn=truth_scores(sign))
        for run in runs:
            for s in range(1, 6):
                rel = sign * relevance(run.story.shots[:s], run.story.shots[s])
                kept = run.selections[s]["kept"][0]
                assert rel[kept] == rel.max()
                assert kept == max(i for i in range(len(rel)) if rel[i] == rel.max())   # ties: newer


def test_script_writes_every_ranking(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "run" / "checkpoint", model, make_optimizer(model.cfg, model), 0)
    out = tmp_path / "oracle.json"
    assert main(["--run", str(tmp_path / "run"), "--stories", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert list(res["rankings"]) == ["recency", "learned", "oracle", "worst"]
    assert all(r["stories"] == 2 and r["k"] == 1 for r in res["rankings"].values())
