"""World versions (storyworld/spec.py) and seed ranges (storyworld/splits.py)."""
from __future__ import annotations

import numpy as np
import pytest

from onestory_lab.storyworld import (Tokenizer, eval_stories, make_story, make_triplet, read_frame, score,
                                     story_seed)
from onestory_lab.storyworld.grammar import vocabulary
from onestory_lab.storyworld.render import framing_size
from onestory_lab.storyworld.spec import WORLDS, world_spec
from onestory_lab.storyworld.splits import FRESH_OFFSET, offset_of, range_of
from onestory_lab.storyworld.world import PATTERN_NAMES


def test_eval_offset_draws_other_stories_and_default_is_unchanged():
    base = eval_stories("insert_recall", 3)
    assert [s.seed for s in base] == [story_seed("eval", i) for i in range(3)]
    assert eval_stories("insert_recall", 3, offset=0) == base
    shifted = eval_stories("insert_recall", 2, offset=FRESH_OFFSET)
    assert [s.seed for s in shifted] == [story_seed("eval", FRESH_OFFSET + i) for i in range(2)]
    assert shifted[0] != base[0]
    with pytest.raises(ValueError, match="offset"):
        eval_stories("insert_recall", 1, offset=-1)


def test_seed_ranges_are_named_and_do_not_straddle():
    assert range_of(0, 200) == "tuning" and range_of(FRESH_OFFSET, 200) == "fresh"
    assert offset_of("fresh") == FRESH_OFFSET
    with pytest.raises(ValueError, match="story-offset"):
        range_of(FRESH_OFFSET - 10, 20)
    with pytest.raises(ValueError, match="tuning"):
        offset_of("test")


def test_v1_token_ids_do_not_move_when_words_are_added():
    vocab = vocabulary()
    assert vocab[-1] == "spotted"          # later worlds' words come last
    tok = Tokenizer()
    ids, _ = tok.encode("wide shot , a red dotted circle stands still in a blue bare room with a window .")
    assert "<unk>" not in tok.decode(ids).split()


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_world_uses_only_its_attributes_and_reads_exactly(world):
    spec = world_spec(world)
    stories = [make_story(story_seed("eval", i), p, pixel_frames=1, world=world)
               for p in PATTERN_NAMES for i in range(12)]
    exact = 0
    frames = 0
    for st in stories:
        assert st.world == world
        for ch in st.characters:
            assert ch.shape in spec.shapes and ch.pattern in spec.patterns
        for k, shot in enumerate(st.shots):
            for places in shot.states:
                for p in places:
                    size = p.size
                    assert size % 2 == 1
                    if spec.even_positions:
                        assert p.x % 2 == 0 and p.y % 2 == 0
            rd = read_frame(st.render_shot(k)[0], world=world)
            truth = st.truth(k, 0)
            frames += 1
            exact += score(rd, truth).exact
    assert exact / frames >= 0.99


def test_v2_differs_from_v1_and_v1_is_the_default():
    a, b = make_story(5, "composition", pixel_frames=1), make_story(5, "composition", pixel_frames=1, world="v2")
    assert a.world == "v1" and b.world == "v2"
    for st in (a, b):
        spec = world_spec(st.world)
        for shot in st.shots:
            want = framing_size(shot.framing, 32, spec.scale(shot.framing))
            assert all(p.size == want for p in shot.states[0])
    assert framing_size("wide", 32, world_spec("v2").scale("wide")) == 13 == framing_size("medium", 32)
    t = make_triplet(0, 3, pixel_frames=1, world="v2")
    assert t.story.world == "v2"
    with pytest.raises(ValueError, match="unknown world"):
        make_story(5, "composition", world="v9")


def test_reader_world_restricts_candidates():
    st = make_story(story_seed("eval", 1), "consistency", pixel_frames=1, world="v2")
    rd = read_frame(st.render_shot(0)[0], world="v2")
    assert all(r.character.shape in world_spec("v2").shapes for r in rd.characters)
    assert np.isfinite(rd.environment_fit)


def test_config_and_cli_take_world_and_offset():
    from onestory_lab.cli import build_parser
    from onestory_lab.storyworld.dataset import TripletDataset
    from onestory_lab.train.config import TrainConfig

    with pytest.raises(ValueError, match="unknown world"):
        TrainConfig(world="v9")
    item = TripletDataset(4, pixel_frames=1, world="v2", standalone_captions=True)[1]
    assert "circle" not in item["caption"].split() and "dotted" not in item["caption"].split()
    p = build_parser()
    assert p.parse_args(["eval", "--run", "r"]).story_offset == 0
    assert p.parse_args(["eval", "--run", "r", "--story-offset", str(FRESH_OFFSET)]).story_offset == FRESH_OFFSET
    assert p.parse_args(["train", "--world", "v2"]).world == "v2"
