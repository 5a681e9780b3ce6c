"""Caption grammar of the story world.

A caption is computed from the sequence of *visible real* shots (memory shots + target), never
from the story as a whole, so slices and inflated triplets get captions that are correct for
what the model can actually see (an entity not visible in memory is "new" and fully described).

    caption   := framing "," subject env "."
    framing   := "wide shot" | "medium shot" | "close-up"
    subject   := ref action | ref "and" ref "meet" | ref action "and" ref action
    ref       := ("a" | "an") COLOUR PATTERN SHAPE   (new character: every attribute stated)
               | "the" ORDINAL "figure"              (recurring: appearance withheld)
    action    := "walks left" | "walks right" | "stands still"
    env       := "in a" ENVCOLOUR TEXTURE "room with" layout      (new environment)
               | ["back"] "in the" ORDINAL "room"               (recurring; "back" if it differs
                                                                 from the previous visible shot)
    layout    := "a door on the left" | "a door on the right" | "a window"

Ordinals count first appearances in the visible sequence (characters and rooms separately).
Character and environment colour words are disjoint sets, so "no appearance word of a
recurring entity" is checkable word by word.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from .render import (CHAR_COLOURS, ENV_COLOURS, EXTRA_PATTERNS, PATTERNS, SHAPES, TEXTURES, Character,
                     Environment)

ORDINALS: tuple[str, ...] = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh",
                             "eighth")
ACTIONS: tuple[str, ...] = ("left", "right", "still")
ACTION_PHRASE: dict[str, str] = {"left": "walks left", "right": "walks right", "still": "stands still"}
FRAMING_PHRASE: dict[str, str] = {"wide": "wide shot", "medium": "medium shot", "close-up": "close-up"}
LAYOUT_PHRASE: dict[str, str] = {"door-left": "a door on the left", "door-right": "a door on the right",
                                 "window": "a window"}
PUNCTUATION: tuple[str, ...] = (",", ".")


class ShotLike(Protocol):
    environment: int
    cast: tuple[int, ...]
    framing: str
    actions: tuple[str, ...]


def vocabulary() -> tuple[str, ...]:
    """Every word the grammar can emit, in a fixed order (the tokenizer's vocab after specials)."""
    words: list[str] = []
    fixed = ["a", "an", "the", "and", "in", "room", "with", "back", "figure", "meet", "door", "on",
             "window", "shot", "wide", "medium", "close-up", "walks", "stands", "left", "right",
             "still"]
    for group in (fixed, list(PUNCTUATION), list(ORDINALS), list(SHAPES), list(PATTERNS),
                  list(CHAR_COLOURS), list(ENV_COLOURS), list(TEXTURES),
                  list(EXTRA_PATTERNS)):   # later worlds' words last: earlier token ids never move
        for w in group:
            if w not in words:
                words.append(w)
    return tuple(words)


def _split(text: str) -> list[str]:
    return text.replace(",", " , ").replace(".", " . ").split()


def caption_words(caption: str) -> list[str]:
    """Whitespace/punctuation split used by tests and the tokenizer."""
    return _split(caption.lower())


def character_phrase(ch: Character) -> str:
    article = "an" if ch.colour[0] in "aeiou" else "a"
    return f"{article} {ch.colour} {ch.pattern} {ch.shape}"


def environment_phrase(env: Environment) -> str:
    return f"in a {env.colour} {env.texture} room with {LAYOUT_PHRASE[env.layout]}"


def caption(characters: Sequence[Character], environments: Sequence[Environment],
            memory: Sequence[ShotLike], target: ShotLike) -> str:
    """Caption of `target` given the visible real shots before it (oldest first)."""
    char_order: list[int] = []
    env_order: list[int] = []
    for shot in memory:
        for c in shot.cast:
            if c not in char_order:
                char_order.append(c)
        if shot.environment not in env_order:
            env_order.append(shot.environment)

    refs = []
    for c in target.cast:
        if c in char_order:
            refs.append(f"the {ORDINALS[char_order.index(c)]} figure")
        else:
            refs.append(character_phrase(characters[c]))
    if len(target.cast) == 2 and tuple(target.actions) == ("right", "left"):
        subject = f"{refs[0]} and {refs[1]} meet"
    else:
        subject = " and ".join(f"{r} {ACTION_PHRASE[a]}" for r, a in zip(refs, target.actions))

    e = target.environment
    if e in env_order:
        back = "back " if memory and memory[-1].environment != e else ""
        env = f"{back}in the {ORDINALS[env_order.index(e)]} room"
    else:
        env = environment_phrase(environments[e])
    return f"{FRAMING_PHRASE[target.framing]} , {subject} {env} ."
