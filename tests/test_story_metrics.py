"""Multi-shot story metrics (onestory.metrics) on frames with known answers, with tiny
random-weight encoders built from configs (no downloads)."""
from __future__ import annotations

import json

import pytest
import torch

from onestory.errors import FileFormatError, ShapeError
from onestory.metrics import annotation as ann
from onestory.metrics import inter_shot, intra_shot, stats
from onestory.metrics.interfaces import Models
from onestory.metrics.score import ScoreOptions, score_story

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")
H = W = 48
PLACES = {"P1": (0.2, 0.5, 0.9), "P2": (0.9, 0.8, 0.3)}
PEOPLE = {"A": (0.9, 0.1, 0.1), "B": (0.1, 0.8, 0.2), "C": (0.6, 0.1, 0.9)}


@pytest.fixture(scope="module")
def dino():
    from onestory.metrics.encoders import DinoEncoder
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                    patch_size=8, image_size=32)
    return DinoEncoder(transformers.Dinov2Model(cfg), "tiny-dinov2", size=32)


def frame(place: str, people: list[str], shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A frame "3 h w": a textured place and a rectangle per person; its person masks "k h w"."""
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    f = torch.tensor(PLACES[place]).view(3, 1, 1) * (0.7 + 0.3 * ((x // 6 + y // 6) % 2)).float()
    masks = []
    for k, p in enumerate(people):
        m = torch.zeros(H, W, dtype=torch.bool)
        x0 = 6 + 22 * k + shift
        m[14:40, x0:x0 + 12] = True
        f = torch.where(m, torch.tensor(PEOPLE[p]).view(3, 1, 1) * (0.6 + 0.4 * (y % 4 < 2)).float(), f)
        masks.append(m)
    return f.clamp(0, 1), torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)


def shot(place, people, t=5, move=0):
    fs, ms = zip(*(frame(place, people, shift=move * i) for i in range(t)))
    return torch.stack(fs), list(ms)


def story(shots_spec, sid="s1", pattern="consistency"):
    return ann.StoryAnnotation(sid, tuple(ann.ShotAnnotation(f"shot {i}", tuple(c), p) for i, (c, p) in enumerate(shots_spec)),
                               pattern=pattern)


def run(spec, dino, render=None, **kw):
    st = story(spec)
    rendered = [shot(p, render[i] if render else c) for i, (c, p) in enumerate(spec)]
    return score_story([r[0] for r in rendered], st, Models(dino=dino, subject=dino, clip=dino),
                       ScoreOptions(region_frames=3, crop=32), person_masks=[r[1] for r in rendered], **kw)


def test_identical_shots_score_one(dino):
    s = run([(["A"], "P1")] * 3, dino)
    assert s.metrics["c_cons"] == pytest.approx(1.0, abs=1e-5)
    assert s.metrics["e_cons"] == pytest.approx(1.0, abs=1e-5)
    assert s.metrics["subject"] == pytest.approx(1.0, abs=1e-5)
    assert s.metrics["background"] == pytest.approx(1.0, abs=1e-5)


def test_swapped_character_lowers_c_cons_not_e_cons(dino):
    spec = [(["A"], "P1"), (["A"], "P1"), (["A"], "P1")]
    good = run(spec, dino)
    swapped = run(spec, dino, render=[["A"], ["B"], ["A"]])     # shot 2 shows the wrong person
    assert swapped.metrics["c_cons"] < good.metrics["c_cons"] - 1e-3
    assert swapped.metrics["e_cons"] == pytest.approx(good.metrics["e_cons"], abs=1e-6)


def test_changed_place_lowers_e_cons_not_c_cons(dino):
    spec = [(["A"], "P1"), (["A"], "P1")]
    good = run(spec, dino)
    st = story(spec)
    a, b = shot("P1", ["A"]), shot("P2", ["A"])
    bad = score_story([a[0], b[0]], st, Models(dino=dino), ScoreOptions(region_frames=3, crop=32),
                      person_masks=[a[1], b[1]])
    assert bad.metrics["e_cons"] < good.metrics["e_cons"] - 1e-3
    assert bad.metrics["c_cons"] == pytest.approx(good.metrics["c_cons"], abs=1e-6)


def test_annotation_decides_which_pairs_count(dino):
    # shots 1 and 3 share A in P1; shot 2 is B in P2 and shares nothing
    spec = [(["A"], "P1"), (["B"], "P2"), (["A"], "P1")]
    s = run(spec, dino)
    assert s.matrices["character_pairs"] == [[0, 2]]
    assert s.matrices["place_pairs"] == [[0, 2]]
    assert s.metrics["c_cons"] == pytest.approx(s.matrices["character"][0][2])
    # the same frames annotated as one person throughout compare every pair, and score lower
    relabel = story([(["A"], "P1"), (["A"], "P1"), (["A"], "P1")])
    shots = [shot(p, c) for c, p in spec]
    s2 = score_story([x[0] for x in shots], relabel, Models(dino=dino), ScoreOptions(region_frames=3, crop=32),
                     person_masks=[x[1] for x in shots])
    assert len(s2.matrices["character_pairs"]) == 3
    assert s2.metrics["c_cons"] < s.metrics["c_cons"]
    # nobody recurs and no place recurs: no C-Cons / E-Cons at all
    s3 = run([(["A"], "P1"), (["B"], "P2")], dino)
    assert s3.metrics["c_cons"] is None and s3.metrics["e_cons"] is None


def test_two_shared_characters_are_matched_one_to_one(dino):
    s = run([(["A", "B"], "P1"), (["A", "B"], "P1")], dino)
    assert s.metrics["c_cons"] == pytest.approx(1.0, abs=1e-5)
    # a missing person counts 0 for the character not found
    st = story([(["A", "B"], "P1"), (["A", "B"], "P1")])
    a, b = shot("P1", ["A", "B"]), shot("P1", ["A"])
    half = score_story([a[0], b[0]], st, Models(dino=dino), ScoreOptions(region_frames=2, crop=32),
                       person_masks=[a[1], b[1]])
    assert half.metrics["c_cons"] == pytest.approx(0.5, abs=1e-5)


def test_subject_consistency_formula(dino):
    f, _ = shot("P1", ["A"], t=4, move=3)
    e = torch.nn.functional.normalize(dino(f), dim=-1)
    want = sum((max(0.0, float(e[i] @ e[i - 1])) + max(0.0, float(e[i] @ e[0]))) / 2 for i in range(1, 4)) / 3
    assert intra_shot.consistency(f, dino) == pytest.approx(want, abs=1e-6)
    assert want < 1.0


class GlobalShiftFlow:
    """Phase-correlation flow (one global translation per pair): a real flow estimator for tests."""

    name = "phase-correlation"

    def __call__(self, a, b):
        ga, gb = a.mean(1), b.mean(1)
        r = torch.fft.fft2(gb) * torch.fft.fft2(ga).conj()
        corr = torch.fft.ifft2(r / (r.abs() + 1e-8)).real
        out = []
        for c in corr:
            dy, dx = divmod(int(torch.argmax(c)), c.shape[-1])
            dy = dy - c.shape[0] if dy > c.shape[0] // 2 else dy
            dx = dx - c.shape[1] if dx > c.shape[1] // 2 else dx
            out.append(torch.tensor([float(dx), float(dy)]).view(2, 1, 1).expand(2, *c.shape))
        return torch.stack(out)


def test_dynamic_degree_static_is_zero_moving_is_one():
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    base = torch.stack([((x // 5 + y // 7) % 3).float() / 2] * 3)
    static = base.expand(16, 3, 64, 64).clone()
    moving = torch.stack([torch.roll(base, shifts=3 * i, dims=-1) for i in range(16)])
    flow = GlobalShiftFlow()
    assert intra_shot.dynamic_degree(static, flow, fps=8)[0] == 0.0
    dyn, mags = intra_shot.dynamic_degree(moving, flow, fps=8)
    assert dyn == 1.0 and min(mags) == pytest.approx(3.0)   # 3 px > 6 * 64 / 256 = 1.5 px
    slow = torch.stack([torch.roll(base, shifts=i, dims=-1) for i in range(16)])
    assert intra_shot.dynamic_degree(slow, flow, fps=8)[0] == 0.0   # 1 px < 1.5 px


class BagOfColours:
    """An image-text model whose towers agree by construction: a text names colours."""

    name = "bag-of-colours"
    WORDS = {"red": (1.0, 0, 0), "green": (0, 1.0, 0), "blue": (0, 0, 1.0)}

    def encode_images(self, images):
        return images.mean((-1, -2))

    def encode_texts(self, texts):
        return torch.tensor([[sum(self.WORDS[w][i] for w in t.split() if w in self.WORDS) for i in range(3)]
                             for t in texts])


def test_s_align_follows_the_caption():
    red = torch.zeros(4, 3, 8, 8)
    red[:, 0] = 1
    st = ann.StoryAnnotation("c", (ann.ShotAnnotation("a red room", (), "P"), ann.ShotAnnotation("a blue room", (), "P")))
    s = score_story([red, red], st, Models(text=BagOfColours()))
    assert s.per_shot["s_align"][0] == pytest.approx(1.0) and s.per_shot["s_align"][1] == pytest.approx(0.0)
    assert "image-text" in s.models["s_align"]
    assert s.missing["c_cons"] and s.missing["dynamic_degree"]      # others named, not computed


def test_wrong_shot_count_names_the_story():
    st = story([(["A"], "P1")] * 3, sid="story-7")
    with pytest.raises(ShapeError, match="story-7.*2 shots.*3"):
        score_story([torch.rand(2, 3, 8, 8)] * 2, st, Models())
    with pytest.raises(ShapeError, match="story-7.*shot 2"):
        score_story([torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), torch.rand(2, 3, 8, 8)], st, Models())


def test_malformed_benchmark_errors_name_story_and_shot(tmp_path):
    good = {"format": ann.BENCH_FORMAT, "version": 1, "task": "t2msv",
            "stories": [{"id": "x1", "pattern": "consistency", "characters": {"A": "a man"}, "places": {"P": "a room"},
                         "shots": [{"caption": "a man", "characters": ["A"], "place": "P"}]}]}
    p = tmp_path / "b.json"
    p.write_text(json.dumps(good))
    assert ann.load_benchmark(p).stories[0].id == "x1"
    bad = json.loads(json.dumps(good))
    bad["stories"][0]["shots"].append({"caption": "who", "characters": ["Z"], "place": "P"})
    p.write_text(json.dumps(bad))
    with pytest.raises(FileFormatError, match="'x1', shot 2.*'Z'"):
        ann.load_benchmark(p)
    bad["stories"][0]["shots"][1] = {"caption": "no place", "characters": []}
    p.write_text(json.dumps(bad))
    with pytest.raises(FileFormatError, match="'x1', shot 2: missing 'place'"):
        ann.load_benchmark(p)
    p.write_text(json.dumps({**good, "version": 9}))
    with pytest.raises(FileFormatError, match="version 9"):
        ann.load_benchmark(p)
    p.write_text("{")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        ann.load_benchmark(p)


def test_shot_list_converter():
    text = """story demo-1 insert_recall
character A: a woman in a red raincoat
place H: a rainy harbour
[A @H] Wide shot, a woman in a red raincoat walks along a rainy harbour.
[ @H] The empty harbour.   # a comment
[A @H] Close-up, the same woman looks up.
"""
    (s,) = ann.parse_shot_list(text)
    assert s.id == "demo-1" and s.pattern == "insert_recall" and len(s.shots) == 3
    assert s.character_pairs() == {(0, 2): ("A",)} and s.place_pairs() == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(FileFormatError, match="line 2"):
        ann.parse_shot_list("story a\nnot a shot line\n")


def test_mean_ci_and_refusal_to_mix_models():
    r = stats.mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["ci95"] == pytest.approx(4.303 * 1.0 / 3 ** 0.5)
    a = {"story": "a", "pattern": "p", "metrics": {"s_align": 0.2}, "models": {"s_align": "clip"}}
    b = {"story": "b", "pattern": "p", "metrics": {"s_align": 0.3}, "models": {"s_align": "viclip"}}
    with pytest.raises(ValueError, match="s_align.*story 'b'"):
        stats.aggregate([a, b])


def test_loaders_read_local_folders_and_single_safetensors(tmp_path):
    from safetensors.torch import save_file

    from onestory.metrics import encoders
    torch.manual_seed(1)
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, mlp_ratio=2,
                                    patch_size=14, image_size=56)
    m = transformers.Dinov2Model(cfg)
    m.save_pretrained(tmp_path / "dino")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "dino.safetensors"))
    x = torch.rand(2, 3, 40, 50)
    a = encoders.load_dinov2(tmp_path / "dino", transformers)(x)
    b = encoders.load_dinov2(tmp_path / "dino.safetensors", transformers)(x)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(encoders.MissingModel, match="nowhere.safetensors does not exist; get a DINOv2"):
        encoders.load_dinov2(tmp_path / "nowhere.safetensors", transformers)
    model, why = encoders.optional(encoders.load_image_text, tmp_path / "no-clip", transformers)
    assert model is None and "no-clip does not exist" in why


def test_person_detector_loader_plumbing(tmp_path):
    """A tiny random YOLOS detector from a local folder returns boolean box masks per image."""
    from onestory.metrics import encoders
    cfg = transformers.YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   image_size=[32, 32], patch_size=8, num_detection_tokens=5,
                                   id2label={0: "N/A", 1: "person"}, label2id={"N/A": 0, "person": 1})
    transformers.YolosForObjectDetection(cfg).save_pretrained(tmp_path / "det")
    transformers.YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}).save_pretrained(tmp_path / "det")
    det = encoders.load_person_detector(tmp_path / "det", transformers, threshold=0.0)
    out = det(torch.rand(2, 3, 24, 40))
    assert len(out) == 2 and all(m.dtype == torch.bool and m.shape[-2:] == (24, 40) for m in out)
