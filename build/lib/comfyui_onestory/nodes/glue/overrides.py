"""The `memory_overrides` widget: per-node pin / exclude choices saved in the workflow JSON.

The memory strip (js/memory_strip.js) writes it when an artist clicks a thumbnail; it can also be
typed by hand. Format (JSON object, both keys optional, "" = no overrides):

    {"pin": [[0, 3], [2, 0]], "exclude": [[1, 1]]}

Each entry is a frame identity ``[shot, latent frame]`` (0-based, as shown on the strip), which
stays valid when later shots change. A bare integer is read as a memory index (position in the
story's memory), which shifts when an earlier shot is added or dropped: prefer pairs.

Overrides apply to a *copy* of the story used for this node's selection only (banks are
immutable); the story a Next Shot outputs keeps the input story's own pins and excludes, so a
choice made on one shot's strip does not silently carry over to later shots.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Union

WIDGET = "memory_overrides"
TOOLTIP = ('Pin / exclude memory frames for this node only, as JSON {"pin": [[shot, frame], ...], '
           '"exclude": [[shot, frame], ...]}. Written by clicking thumbnails on the memory strip (pin → '
           'exclude → neutral); saved with the workflow. Empty = use the story as is.')
EXAMPLE = '{"pin": [[0, 3]], "exclude": [[1, 0]]}'

Ref = Union[int, tuple]   # memory index, or (shot, frame)


def _error(msg: str) -> ValueError:
    return ValueError(f"{WIDGET}: {msg}. Expected e.g. {EXAMPLE} ([shot, latent frame] pairs, 0-based), "
                      "or clear the widget.")


@dataclass(frozen=True)
class Overrides:
    pin: tuple = ()
    exclude: tuple = ()

    @property
    def empty(self) -> bool:
        return not self.pin and not self.exclude


def _ref(value, key: str) -> Ref:
    if isinstance(value, bool):
        raise _error(f'"{key}" holds {value!r}, not a frame')
    if isinstance(value, int):
        if value < 0:
            raise _error(f'"{key}" holds the memory index {value}, which is negative')
        return value
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        if min(value) < 0:
            raise _error(f'"{key}" holds {value}: shot and frame must be >= 0')
        return (value[0], value[1])
    raise _error(f'"{key}" holds {json.dumps(value)}, which is neither a [shot, frame] pair nor a memory index')


def parse(text) -> Overrides:
    """Syntax check only (no story needed); raises ValueError naming the widget."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return Overrides()
    if not isinstance(text, str):
        raise _error(f"got a {type(text).__name__}, not a JSON string")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _error(f"not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(data, dict):
        raise _error(f"the JSON is a {type(data).__name__}, not an object")
    unknown = sorted(set(data) - {"pin", "exclude"})
    if unknown:
        raise _error(f"unknown key(s) {unknown}; only \"pin\" and \"exclude\" are read")
    lists = {}
    for key in ("pin", "exclude"):
        value = data.get(key, [])
        if not isinstance(value, list):
            raise _error(f'"{key}" must be a list')
        refs = []
        for v in value:
            r = _ref(v, key)
            if r not in refs:
                refs.append(r)
        lists[key] = tuple(refs)
    both = set(lists["pin"]) & set(lists["exclude"])
    if both:
        raise _error(f"{sorted(both, key=str)[0]} is both pinned and excluded; choose one")
    return Overrides(lists["pin"], lists["exclude"])


def check(text) -> Union[bool, str]:
    """For a node's validate_inputs: True, or the error message (shown at queue time)."""
    try:
        parse(text)
    except ValueError as e:
        return str(e)
    return True


def _index(bank, ref: Ref) -> int:
    n = bank.num_frames
    if isinstance(ref, int):
        if ref >= n:
            raise _error(f"memory index {ref} is out of range: this story's memory has frames 0..{n - 1}")
        return ref
    shot, frame = ref
    if shot >= bank.num_shots:
        raise _error(f"frame [{shot}, {frame}] names shot {shot}, but this story has shots 0..{bank.num_shots - 1} "
                     "(an earlier shot may have been dropped)")
    for i, r in enumerate(bank.records):
        if r.shot == shot and r.frame == frame:
            return i
    count = sum(1 for r in bank.records if r.shot == shot)
    raise _error(f"shot {shot} has latent frames 0..{count - 1}; frame {frame} does not exist")


def resolve(bank, ov: Overrides) -> tuple[list[int], list[int]]:
    """(pinned, excluded) memory indices; raises ValueError naming the widget when out of range."""
    pin = [_index(bank, r) for r in ov.pin]
    exclude = [_index(bank, r) for r in ov.exclude]
    both = set(pin) & set(exclude)
    if both:
        raise _error(f"memory index {min(both)} is both pinned and excluded (given once by index, once by pair)")
    return pin, exclude


def apply(bank, text):
    """The story as this node's selection sees it: a new bank with the overrides' flags.

    Returns (bank, Overrides). An empty override returns the same bank object (no copy)."""
    ov = parse(text)
    if ov.empty:
        return bank, ov
    if bank.num_frames == 0:
        raise _error("the story has no memory frames yet, so there is nothing to pin or exclude")
    pin, exclude = resolve(bank, ov)
    out = bank
    if pin:
        out = out.set_pinned(pin, pinned=True)       # clears a story-level exclude
    if exclude:
        out = out.set_excluded(exclude, excluded=True)  # clears a story-level pin
    return out, ov


def restore_flags(original, grown):
    """`grown` (= `overridden.add_shot(...)`) with the first frames' flags set back to `original`'s.

    Next Shot selects on the overridden copy; the story it outputs must carry the input story's
    own pins/excludes, not this node's overrides."""
    pin, exclude, neutral = [], [], []
    for i, (a, b) in enumerate(zip(original.records, grown.records)):
        if (a.pinned, a.excluded) == (b.pinned, b.excluded):
            continue
        (pin if a.pinned else exclude if a.excluded else neutral).append(i)
    out = grown
    if pin:
        out = out.set_pinned(pin, pinned=True)
    if exclude:
        out = out.set_excluded(exclude, excluded=True)
    if neutral:
        out = out.set_pinned(neutral, pinned=False).set_excluded(neutral, excluded=False)
    return out


def state_of(ov: Overrides, bank, index: int):
    """"pin" / "exclude" / None: this node's override for memory index `index` (for the payload)."""
    rec = bank.records[index]
    for key, refs in (("pin", ov.pin), ("exclude", ov.exclude)):
        if index in refs or (rec.shot, rec.frame) in refs:
            return key
    return None
