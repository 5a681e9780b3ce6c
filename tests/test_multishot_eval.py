"""`onestory evaluate` and the benchmark stories (lab/onestory_lab/multishot)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from onestory.errors import ShapeError
from onestory.metrics.annotation import load_benchmark
from onestory.metrics.interfaces import Models
from onestory.metrics.score import ScoreOptions
from onestory_lab.cli import main
from onestory_lab.multishot import benchmark, storyworld
from onestory_lab.multishot.evaluate import evaluate

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_committed_benchmarks_are_the_generator_output():
    for task in ("t2msv", "i2msv"):
        assert benchmark.path(task).read_text(encoding="utf-8") == benchmark.dumps(benchmark.make_benchmark(task)), (
            f"{task}.json differs from the generator: run python -m onestory_lab.multishot.benchmark")


@pytest.mark.parametrize("task", ["t2msv", "i2msv"])
def test_benchmark_shape_and_referential_captions(task):
    b = load_benchmark(benchmark.path(task))
    assert b.task == task and len(b.stories) == 64
    assert {p: sum(s.pattern == p for s in b.stories) for p in benchmark.PATTERNS} == {
        "consistency": 22, "insert_recall": 21, "composition": 21}
    for s in b.stories:
        assert len(s.shots) == 6 and s.character_pairs() and s.place_pairs(), s.id
        assert (s.reference is not None) == (task == "i2msv"), s.id
        for cid, desc in s.characters.items():
            shown = [i for i, sh in enumerate(s.shots) if cid in sh.characters]
            # described in full exactly once: at the first appearance; referred back afterwards
            assert desc in s.shots[shown[0]].caption, (s.id, cid)
            assert all(desc not in s.shots[i].caption for i in shown[1:]), (s.id, cid)
        for pid, desc in s.places.items():
            at = [i for i, sh in enumerate(s.shots) if sh.place == pid]
            assert desc in s.shots[at[0]].caption and all(desc not in s.shots[i].caption for i in at[1:]), (s.id, pid)
        if s.pattern == "insert_recall":
            b_shots = [i for i, sh in enumerate(s.shots) if "B" in sh.characters]
            assert b_shots[-1] == 5 and s.shots[b_shots[0]].place == s.shots[5].place, s.id
        if s.pattern == "composition":
            assert s.shots[0].characters == ("A",) and s.shots[1].characters == ("B",)
            assert any(len(sh.characters) == 2 for sh in s.shots[3:]), s.id


@pytest.fixture(scope="module")
def tiny_models():
    from onestory.metrics.encoders import DinoEncoder
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                    patch_size=8, image_size=32)
    dino = DinoEncoder(transformers.Dinov2Model(cfg), "tiny-dinov2", size=32)
    return Models(dino=dino, subject=dino, clip=dino)


@pytest.fixture(scope="module")
def world_run(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("sw")
    res = storyworld.run(out, tiny_models, per_pattern=1, options=ScoreOptions(fps=8.0, region_frames=2),
                         heatmaps=False, progress=False)
    return out, res


def test_storyworld_goes_through_the_evaluate_path(world_run):
    out, res = world_run
    md = (out / "results.md").read_text()
    assert "| truth | 3 |" in md and "exact character recall" in md
    agg = res["runs"]["truth"]["aggregate"]["groups"]
    assert set(agg) == {"all", "consistency", "insert_recall", "composition"}
    extra = json.loads((out / "results.json").read_text())["extra"]["truth"]["all"]
    assert extra["exact character recall"] == 1.0 and extra["exact environment recall"] == 1.0
    assert agg["all"]["c_cons"]["mean"] > 0.9 and agg["all"]["e_cons"]["mean"] > 0.9
    assert "storyworld reader" in res["runs"]["truth"]["aggregate"]["models"]["c_cons"]
    assert "dynamic_degree" in res["runs"]["truth"]["missing"] and (out / "metrics.png").is_file()


def test_runs_side_by_side_and_a_broken_run_scores_lower(world_run, tiny_models, tmp_path):
    out, _ = world_run
    good = out / "videos" / "truth"
    bad = tmp_path / "broken"
    shutil.copytree(good, bad)
    # shot 6 of the insert-and-recall story shows the consistency story's shot 1 (other cast, room)
    target = bad / "sw-insert_recall-00" / "shot_06"
    shutil.rmtree(target)
    shutil.copytree(good / "sw-consistency-00" / "shot_01", target)
    opts = ScoreOptions(fps=8.0, region_frames=2)
    models = dataclasses.replace(tiny_models, persons=storyworld.ReaderPersons())
    res = evaluate(out / "storyworld.json", {"truth": good, "broken": bad}, models, out=tmp_path / "report",
                   options=opts, heatmaps=True, progress=False)
    g = res["runs"]["truth"]["aggregate"]["groups"]["insert_recall"]
    b = res["runs"]["broken"]["aggregate"]["groups"]["insert_recall"]
    assert b["c_cons"]["mean"] < g["c_cons"]["mean"] and b["e_cons"]["mean"] < g["e_cons"]["mean"]
    same = res["runs"]["broken"]["aggregate"]["groups"]["composition"]["c_cons"]["mean"]
    assert same == pytest.approx(res["runs"]["truth"]["aggregate"]["groups"]["composition"]["c_cons"]["mean"])
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| truth | 3 |" in md and "| broken | 3 |" in md
    assert (tmp_path / "report" / "heatmaps" / "broken" / "sw-insert_recall-00.png").is_file()
    # a story with a missing shot is named
    shutil.rmtree(bad / "sw-composition-00" / "shot_04")
    with pytest.raises(ShapeError, match="sw-composition-00.*5 shots.*annotation has 6"):
        evaluate(out / "storyworld.json", {"broken": bad}, models, options=opts, progress=False)


def test_cli_converts_a_shot_list(tmp_path, capsys):
    src = tmp_path / "mine.txt"
    src.write_text("story s1 consistency\ncharacter A: a man in a grey suit\nplace P: a harbour\n"
                   "[A @P] Wide shot, a man in a grey suit in a harbour.\n[A @P] The same man waves.\n")
    assert main(["stories-from-text", str(src), str(tmp_path / "mine.json")]) == 0
    b = load_benchmark(tmp_path / "mine.json")
    assert b.stories[0].character_pairs() == {(0, 1): ("A",)}


def test_cli_evaluate_reports_missing_models(tmp_path, world_run, capsys):
    out, _ = world_run
    assert main(["evaluate", "--stories", str(out / "storyworld.json"), "--videos", f"w={out / 'videos' / 'truth'}",
                 "--models", str(tmp_path / "empty"), "--out", str(tmp_path / "r"), "--no-heatmaps"]) == 0
    err = capsys.readouterr().err
    assert "dinov2 does not exist; get a DINOv2" in err
    md = (tmp_path / "r" / "results.md").read_text()
    assert "| w | 3 | - | - |" in md and "not computed" in md
