"""The benchmark stories: 64 six-shot stories per task, generated from a template grammar.

Grammar (every choice is drawn with a seeded numpy Generator; story i of a task uses
default_rng([seed, i])):

    character   := NOUN CLOTHING [FEATURE]           "a young woman in a yellow raincoat with a ponytail"
    refer(c)    := "the same" NOUN                   (when no other character of the story shares NOUN)
                 | "the" NOUN CLOTHING                (otherwise: clothing tells them apart)
    place       := PREP PLACE_FULL                   first visit: "in a rainy harbour at dusk"
                 | "back" PREP PLACE_SHORT            a return after another place ("back in the harbour")
                 | "still" PREP PLACE_SHORT           the place of the previous shot
    PREP        := "in" | "on"                       (per place: "on a snowy mountain trail")
    shot (one)  := FRAMING "," subject ACTION "," place "."
    shot (two)  := FRAMING "," subject "and" subject PAIR_ACTION "," place "."
    subject     := character (first appearance) | refer(character)

Patterns (the paper's three, arXiv 2512.07802 sec. 5.2), shots 1..6:

    consistency     main character A (a pair A+B in 1 story of 3) in 3 places, at least one return
    insert_recall   A in its places; shot 3 or 4 inserts B in a new place Q; the next shot
                    returns to A; shot 6 revisits B in Q
    composition     A alone in P1, B alone in P2, one of them alone again, then both together
                    in the later shots (in one of their places or a new one)

i2msv stories are the same kind of story with a `reference`: the character whose image
conditions the first shot and a prompt to make that image.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from onestory.metrics.annotation import Benchmark, ShotAnnotation, StoryAnnotation

PATTERNS = ("consistency", "insert_recall", "composition")
STORIES_PER_TASK = 64
SEEDS = {"t2msv": 0, "i2msv": 1}
HERE = Path(__file__).resolve().parent / "benchmarks"
GENERATOR = "onestory_lab.multishot.benchmark v1"

NOUNS = ("man", "woman", "old man", "old woman", "young man", "young woman", "boy", "girl")
CLOTHING = ("in a yellow raincoat", "in a grey suit", "in a red hoodie", "in a denim jacket",
            "in a green sweater", "in a white lab coat", "in a black leather jacket", "in a blue dress",
            "in a striped shirt", "in paint-stained overalls", "in a brown trench coat", "in an orange scarf")
FEATURES = ("", "with curly red hair", "with a grey beard", "with short black hair", "with a ponytail",
            "with round glasses", "with a straw hat", "with a shaved head")
PLACES = (("a rainy harbour at dusk", "the harbour"), ("a sunlit kitchen with copper pans", "the kitchen"),
          ("a crowded night market", "the market"), ("a quiet library with tall shelves", "the library"),
          ("a snowy mountain trail", "the trail", "on"), ("a neon-lit subway platform", "the platform", "on"),
          ("a small bakery at dawn", "the bakery"), ("a rooftop garden above the city", "the rooftop garden"),
          ("a dusty desert road", "the road", "on"), ("a hospital corridor", "the corridor"),
          ("a wooden cabin by a lake", "the cabin"), ("an empty classroom", "the classroom"),
          ("a busy train station hall", "the station"), ("a greenhouse full of ferns", "the greenhouse"))
FRAMINGS = ("Wide shot", "Medium shot", "Close-up", "Tracking shot", "Over-the-shoulder shot", "Low-angle shot")
ACTIONS = ("walks toward the camera", "sits down and reads a letter", "looks around slowly", "laughs quietly",
           "turns and looks back", "pours a cup of tea", "checks a phone", "waves at someone off screen",
           "stops and takes a deep breath", "picks up a small box", "writes in a notebook", "hurries past")
PAIR_ACTIONS = ("talk to each other", "shake hands", "walk side by side", "share a laugh",
                "sit across from each other", "look at a map together")


def _characters(rng: np.random.Generator, n: int) -> dict[str, tuple[str, str, str]]:
    """id -> (noun, clothing, feature), clothing distinct (it disambiguates shared nouns)."""
    clothing = rng.choice(len(CLOTHING), n, replace=False)
    return {chr(ord("A") + i): (str(rng.choice(NOUNS)), CLOTHING[int(clothing[i])], str(rng.choice(FEATURES)))
            for i in range(n)}


def _full(c: tuple[str, str, str]) -> str:
    noun, cloth, feat = c
    art = "an" if noun[0] in "aeiou" else "a"
    return " ".join(w for w in (art, noun, cloth, feat) if w)


def _refer(cid: str, chars: dict) -> str:
    noun, cloth, _ = chars[cid]
    if sum(1 for c in chars.values() if c[0] == noun) > 1:
        return f"the {noun} {cloth}"
    return f"the same {noun}"


def _plan(pattern: str, rng: np.random.Generator) -> list[tuple[tuple[str, ...], int]]:
    """Six (cast, place index); place indices are story-local, numbered by first use."""
    if pattern == "consistency":
        cast = ("A", "B") if rng.random() < 1 / 3 else ("A",)
        places = [0, int(rng.choice([0, 1]))]
        while len(places) < 6:
            used = max(places) + 1
            if used < 3 and (rng.random() < 0.5 or len(places) >= 4):
                places.append(used)
            else:
                places.append(int(rng.choice([p for p in range(used) if p != places[-1]] or [0])))
        if max(places) == 0:
            places[2] = 1
        return [(cast, p) for p in places]
    if pattern == "insert_recall":
        insert = int(rng.choice([2, 3]))
        plan: list[tuple[tuple[str, ...], int]] = [(("A",), 0)]
        a_places, n = [0], 1
        q = None
        for k in range(1, 6):
            if k == insert:
                q = n
                n += 1
                plan.append((("B",), q))
            elif k == 5:
                plan.append((("B",), q))
            elif k == insert + 1:
                plan.append((("A",), int(rng.choice(a_places))))
            elif rng.random() < 0.4:
                a_places.append(n)
                plan.append((("A",), n))
                n += 1
            else:
                plan.append((("A",), int(rng.choice(a_places))))
        return plan
    if pattern == "composition":
        plan = [(("A",), 0), (("B",), 1)]
        who = str(rng.choice(["A", "B"]))
        plan.append(((who,), 0 if who == "A" else 1))
        n = 2
        for k in (3, 4, 5):
            pair = ("A", "B") if rng.random() < 0.5 else ("B", "A")
            if rng.random() < 0.3:
                plan.append((pair, n))
                n += 1
            else:
                plan.append((pair, int(rng.integers(0, n))))
        return plan
    raise ValueError(f"unknown pattern {pattern!r}")


def make_story(task: str, index: int, seed: int) -> StoryAnnotation:
    rng = np.random.default_rng([seed, index])
    pattern = PATTERNS[index % 3]
    plan = _plan(pattern, rng)
    ids = sorted({c for cast, _ in plan for c in cast})
    chars = _characters(rng, len(ids))
    n_places = 1 + max(p for _, p in plan)
    place_idx = rng.choice(len(PLACES), n_places, replace=False)
    places = {f"P{i + 1}": PLACES[int(place_idx[i])] for i in range(n_places)}
    seen: set[str] = set()
    shots = []
    prev: Optional[int] = None
    visited: set[int] = set()
    for cast, p in plan:
        subj = [_refer(c, chars) if c in seen else _full(chars[c]) for c in cast]
        seen |= set(cast)
        full, short, prep = (*places[f"P{p + 1}"], "in")[:3]
        where = f"{prep} {full}" if p not in visited else (f"still {prep} {short}" if p == prev else f"back {prep} {short}")
        visited.add(p)
        prev = p
        framing = str(rng.choice(FRAMINGS if len(cast) == 1 else FRAMINGS[:2] + FRAMINGS[3:4]))
        if len(cast) == 1:
            text = f"{framing}, {subj[0]} {rng.choice(ACTIONS)} {where}."
        else:
            text = f"{framing}, {subj[0]} and {subj[1]} {rng.choice(PAIR_ACTIONS)} {where}."
        shots.append(ShotAnnotation(text, tuple(cast), f"P{p + 1}"))
    reference = None
    if task == "i2msv":
        first = plan[0][0][0]
        reference = {"character": first, "prompt": f"A photograph of {_full(chars[first])}, "
                                                   f"{places['P' + str(plan[0][1] + 1)][0]}, natural light."}
    return StoryAnnotation(id=f"{task}-{pattern}-{index:02d}", shots=tuple(shots), pattern=pattern,
                           characters={c: _full(chars[c]) for c in ids},
                           places={k: v[0] for k, v in places.items()}, reference=reference)


def make_benchmark(task: str, n: int = STORIES_PER_TASK, seed: Optional[int] = None) -> Benchmark:
    seed = SEEDS[task] if seed is None else seed
    return Benchmark(name=f"onestory-{task}-{n}", task=task,
                     stories=tuple(make_story(task, i, seed) for i in range(n)), seed=seed, generator=GENERATOR)


def dumps(b: Benchmark) -> str:
    return json.dumps(b.to_json(), indent=1, ensure_ascii=False) + "\n"


def path(task: str) -> Path:
    return HERE / f"{task}.json"


def write_all() -> list[Path]:
    """Regenerate the committed benchmark files (`python -m onestory_lab.multishot.benchmark`)."""
    out = []
    for task in SEEDS:
        p = path(task)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(dumps(make_benchmark(task)), encoding="utf-8")
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_all():
        print(p)
