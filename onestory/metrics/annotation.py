"""Story annotation and the benchmark file format (`onestory-multishot-bench`, version 1).

A benchmark file is JSON:

    {"format": "onestory-multishot-bench", "version": 1,
     "name": "...", "task": "t2msv" | "i2msv", "seed": 0, "generator": "...",
     "stories": [
       {"id": "t2msv-consistency-00", "pattern": "consistency" | "insert_recall" | "composition",
        "characters": {"A": "a woman in a red raincoat", ...},     # id -> full description
        "places": {"P1": "a rainy harbour at dusk", ...},          # id -> full description
        "reference": {"character": "A", "prompt": "..."} | null,   # i2msv: the conditioning image
        "shots": [{"caption": "...", "characters": ["A"], "place": "P1"}, ...]}]}

Captions are referential (the paper's style): a character or place is described in full the
first time and referred back to afterwards ("the same woman", "back in the harbour"). The
annotation (`characters`, `place` per shot) is what the metrics read: C-Cons compares the shot
pairs that share a character, E-Cons the pairs that share a place.

The plain shot-list text format (`parse_shot_list`) converts to the same structure:

    story t2msv-demo-00 consistency
    character A: a woman in a red raincoat
    place P1: a rainy harbour at dusk
    [A @P1] Wide shot, a woman in a red raincoat walks along a rainy harbour at dusk.
    [A @P1] Close-up, the same woman looks up at the sky.

Stories are separated by a `story ID [PATTERN]` line; `#` starts a comment.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..errors import FileFormatError, OneStoryError

BENCH_FORMAT = "onestory-multishot-bench"
BENCH_VERSION = 1
PATTERNS: tuple[str, ...] = ("consistency", "insert_recall", "composition")
TASKS: tuple[str, ...] = ("t2msv", "i2msv")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ShotAnnotation:
    caption: str
    characters: tuple[str, ...]     # character ids visible in the shot
    place: str                      # place id

    def to_json(self) -> dict:
        return {"caption": self.caption, "characters": list(self.characters), "place": self.place}


@dataclass(frozen=True)
class StoryAnnotation:
    id: str
    shots: tuple[ShotAnnotation, ...]
    pattern: Optional[str] = None
    characters: Mapping[str, str] = field(default_factory=dict)
    places: Mapping[str, str] = field(default_factory=dict)
    reference: Optional[Mapping[str, str]] = None

    def __post_init__(self) -> None:
        validate_story(self)

    @property
    def captions(self) -> tuple[str, ...]:
        return tuple(s.caption for s in self.shots)

    def character_pairs(self) -> dict[tuple[int, int], tuple[str, ...]]:
        """(s, t) with s < t -> the character ids both shots show (only pairs sharing one)."""
        out = {}
        for s, t in combinations(range(len(self.shots)), 2):
            shared = tuple(c for c in self.shots[s].characters if c in self.shots[t].characters)
            if shared:
                out[(s, t)] = shared
        return out

    def place_pairs(self) -> list[tuple[int, int]]:
        """(s, t) with s < t whose shots are annotated with the same place."""
        return [(s, t) for s, t in combinations(range(len(self.shots)), 2)
                if self.shots[s].place == self.shots[t].place]

    def to_json(self) -> dict:
        return {"id": self.id, "pattern": self.pattern, "characters": dict(self.characters),
                "places": dict(self.places),
                "reference": None if self.reference is None else dict(self.reference),
                "shots": [s.to_json() for s in self.shots]}


def validate_story(story: StoryAnnotation) -> None:
    where = f"story {story.id!r}"
    if not isinstance(story.id, str) or not _ID.match(story.id):
        raise OneStoryError(f"story id {story.id!r} must be letters, digits, '_', '-' or '.' "
                            "(it names the story's folder)")
    if not story.shots:
        raise OneStoryError(f"{where} has no shots")
    if story.pattern is not None and story.pattern not in PATTERNS:
        raise OneStoryError(f"{where}: pattern {story.pattern!r} is unknown; use one of {PATTERNS}")
    for i, shot in enumerate(story.shots):
        at = f"{where}, shot {i + 1}"
        if not isinstance(shot.caption, str) or not shot.caption.strip():
            raise OneStoryError(f"{at}: the caption is empty")
        if not isinstance(shot.place, str) or not shot.place:
            raise OneStoryError(f"{at}: no place id (every shot is annotated with where it happens)")
        if len(set(shot.characters)) != len(shot.characters):
            raise OneStoryError(f"{at}: a character id is listed twice in {list(shot.characters)}")
        for c in shot.characters:
            if story.characters and c not in story.characters:
                raise OneStoryError(f"{at}: character {c!r} is not declared in the story's characters "
                                    f"{sorted(story.characters)}")
        if story.places and shot.place not in story.places:
            raise OneStoryError(f"{at}: place {shot.place!r} is not declared in the story's places "
                                f"{sorted(story.places)}")


def _story_from_json(d: Any, index: int) -> StoryAnnotation:
    if not isinstance(d, Mapping):
        raise FileFormatError(f"stories[{index}] must be an object, got {type(d).__name__}")
    sid = d.get("id", f"#{index}")
    try:
        shots_raw = d["shots"]
        if not isinstance(shots_raw, list):
            raise FileFormatError(f"story {sid!r}: 'shots' must be a list")
        shots = []
        for i, s in enumerate(shots_raw):
            if not isinstance(s, Mapping):
                raise FileFormatError(f"story {sid!r}, shot {i + 1}: must be an object with caption, "
                                      "characters, place")
            for key in ("caption", "characters", "place"):
                if key not in s:
                    raise FileFormatError(f"story {sid!r}, shot {i + 1}: missing {key!r}")
            if not isinstance(s["characters"], list):
                raise FileFormatError(f"story {sid!r}, shot {i + 1}: 'characters' must be a list of ids")
            shots.append(ShotAnnotation(s["caption"], tuple(s["characters"]), s["place"]))
        return StoryAnnotation(id=d["id"], shots=tuple(shots), pattern=d.get("pattern"),
                               characters=dict(d.get("characters") or {}), places=dict(d.get("places") or {}),
                               reference=d.get("reference"))
    except KeyError as e:
        raise FileFormatError(f"story {sid!r}: missing {e.args[0]!r}") from None


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str
    stories: tuple[StoryAnnotation, ...]
    seed: Optional[int] = None
    generator: str = ""

    def to_json(self) -> dict:
        return {"format": BENCH_FORMAT, "version": BENCH_VERSION, "name": self.name, "task": self.task,
                "seed": self.seed, "generator": self.generator,
                "stories": [s.to_json() for s in self.stories]}


def benchmark_from_json(data: Any, source: str = "benchmark") -> Benchmark:
    if not isinstance(data, Mapping) or data.get("format") != BENCH_FORMAT:
        raise FileFormatError(f"{source}: not a {BENCH_FORMAT} file (its 'format' field must be "
                              f"{BENCH_FORMAT!r}; convert a shot list with `python -m onestory_lab "
                              "stories-from-text`)")
    if data.get("version") != BENCH_VERSION:
        raise FileFormatError(f"{source}: version {data.get('version')!r} is not supported "
                              f"(this code reads version {BENCH_VERSION})")
    task = data.get("task")
    if task not in TASKS:
        raise FileFormatError(f"{source}: task {task!r} is unknown; use one of {TASKS}")
    raw = data.get("stories")
    if not isinstance(raw, list) or not raw:
        raise FileFormatError(f"{source}: 'stories' must be a non-empty list")
    try:
        stories = tuple(_story_from_json(d, i) for i, d in enumerate(raw))
    except OneStoryError as e:
        raise FileFormatError(f"{source}: {e}") from None
    ids = [s.id for s in stories]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise FileFormatError(f"{source}: story ids must be unique; repeated: {dup}")
    return Benchmark(str(data.get("name", "")), task, stories, data.get("seed"), str(data.get("generator", "")))


def load_benchmark(path: str | Path) -> Benchmark:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"benchmark file {p} does not exist") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{p}: not valid JSON ({e})") from None
    return benchmark_from_json(data, str(p))


_SHOT = re.compile(r"^\[\s*([^\]@]*?)\s*@\s*([^\]\s]+)\s*\]\s*(.+)$")


def parse_shot_list(text: str, source: str = "shot list") -> list[StoryAnnotation]:
    """The plain text format (module docstring) -> stories. Errors name the line."""
    stories: list[StoryAnnotation] = []
    cur: Optional[dict] = None

    def close() -> None:
        if cur is not None:
            if not cur["shots"]:
                raise FileFormatError(f"{source}: story {cur['id']!r} has no shot lines")
            try:
                stories.append(StoryAnnotation(id=cur["id"], shots=tuple(cur["shots"]), pattern=cur["pattern"],
                                               characters=cur["characters"], places=cur["places"]))
            except OneStoryError as e:
                raise FileFormatError(f"{source}: {e}") from None

    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("[") else raw.strip()
        if not line:
            continue
        low = line.lower()
        if low.startswith("story "):
            close()
            parts = line.split()
            cur = {"id": parts[1] if len(parts) > 1 else f"story{len(stories)}",
                   "pattern": parts[2] if len(parts) > 2 else None,
                   "characters": {}, "places": {}, "shots": []}
            continue
        if cur is None:   # a shot list without a header is one story
            cur = {"id": "story0", "pattern": None, "characters": {}, "places": {}, "shots": []}
        m = re.match(r"^(character|place)\s+([^:\s]+)\s*:\s*(.+)$", line, re.I)
        if m:
            cur["characters" if m.group(1).lower() == "character" else "places"][m.group(2)] = m.group(3).strip()
            continue
        m = _SHOT.match(line)
        if not m:
            raise FileFormatError(f"{source}, line {n}: expected '[A,B @PLACE] caption', 'character ID: ...', "
                                  f"'place ID: ...' or 'story ID [PATTERN]'; got {raw.strip()!r}")
        chars = tuple(c.strip() for c in m.group(1).split(",") if c.strip())
        cur["shots"].append(ShotAnnotation(m.group(3).strip(), chars, m.group(2)))
    close()
    if not stories:
        raise FileFormatError(f"{source}: no shots found")
    return stories
