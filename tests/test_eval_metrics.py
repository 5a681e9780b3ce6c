"""Evaluation metrics are exact on ground truth and drop when memory-dependent content is wrong."""
import torch

from onestory.data.dataset import eval_stories
from onestory.data.latent import LatentCodec, frames_to_tensor
from onestory.eval.metrics import aggregate, story_metrics


def _latents(story):
    codec = LatentCodec()
    return [codec.encode(frames_to_tensor(story.render_shot(k))) for k in range(len(story.shots))]


def test_ground_truth_scores_one():
    stories = eval_stories("insert_recall", 2)
    agg = aggregate(story_metrics(s, _latents(s)) for s in stories)
    assert agg["character_recall"] == 1.0 and agg["environment_recall"] == 1.0
    assert agg["caption_alignment"] == 1.0 and agg["shape_acc"] == 1.0
    assert agg["recurring_character_frames"] > 0


def test_wrong_recall_shot_is_penalised():
    story = eval_stories("insert_recall", 1)[0]
    lat = _latents(story)
    wrong = lat[:5] + [lat[0]]        # shot 6 should revisit the inserted character; show shot 1 instead
    agg = aggregate([story_metrics(story, wrong)])
    assert agg["shot6_character_recall"] == 0.0
    assert agg["character_recall"] < 1.0 and agg["environment_recall"] < 1.0
