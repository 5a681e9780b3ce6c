"""Procedural multi-shot stories with exact ground truth (the proof-of-mechanism world).

A story is fully determined by (seed, pattern, frame_size, pixel_frames). The paper's three
six-shot patterns (arXiv 2512.07802 §5.2):

* ``consistency``     main subject (one character, sometimes a pair) across rooms and actions;
* ``insert_recall``   a new character in a new room is inserted, the story returns to the main
                      subject, and a later shot revisits the inserted character in its room;
* ``composition``     two characters introduced in separate shots later appear together.

Time: the world is rendered at *latent rate*. A shot of T = 4n+1 pixel frames has n+1 states;
pixel frame 0 shows state 0 and pixel frames 4i-3..4i show state i (Wan's causal VAE layout).
Frames inside a group are identical by construction, which is what makes the temporal half of
the codec in `latent.py` exact (it averages a group; see that file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import grammar
from .render import (CHAR_COLOURS, ENV_COLOURS, LAYOUTS, TEXTURES, Character, Environment, Placement,
                     framing_size, render_frame)
from .spec import DEFAULT_WORLD, WorldSpec, world_spec

PATTERN_NAMES: tuple[str, ...] = ("consistency", "insert_recall", "composition")
WORLD_KEYS: tuple[str, ...] = ("v1", "v2")   # rng key of a world version (never reorder)
NUM_SHOTS = 6
STEP_PX_AT_32 = 2  # horizontal drift per latent state at 32 px (scaled with frame size)


@dataclass(frozen=True)
class Shot:
    environment: int                     # index into Story.environments
    cast: tuple[int, ...]                # indices into Story.characters, left to right
    framing: str
    actions: tuple[str, ...]             # per cast member: "left" | "right" | "still"
    states: tuple[tuple[Placement, ...], ...]  # "s": one tuple of placements per latent state


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth of one rendered frame."""

    environment: Environment
    environment_id: int
    characters: tuple[Character, ...]    # same order as placements
    character_ids: tuple[int, ...]
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Story:
    seed: int
    pattern: str
    frame_size: int
    pixel_frames: int
    characters: tuple[Character, ...]
    environments: tuple[Environment, ...]
    shots: tuple[Shot, ...]
    captions: tuple[str, ...] = field(default=())
    world: str = DEFAULT_WORLD           # world version (spec.py): attribute sets and body sizes

    @property
    def latent_frames(self) -> int:
        return latent_states(self.pixel_frames)

    def render_shot(self, shot: int) -> np.ndarray:
        """float32 "t h w 3" pixel frames of one shot."""
        return render_shot(self, self.shots[shot])

    def truth(self, shot: int, state: int) -> FrameTruth:
        """Ground truth of latent state `state` (= every pixel frame of that latent group)."""
        s = self.shots[shot]
        places = s.states[state]
        return FrameTruth(self.environments[s.environment], s.environment,
                          tuple(self.characters[p.character] for p in places),
                          tuple(p.character for p in places), places)

    def pixel_truth(self, shot: int, pixel_frame: int) -> FrameTruth:
        return self.truth(shot, state_of_pixel_frame(pixel_frame))


def latent_states(pixel_frames: int) -> int:
    if pixel_frames < 1 or (pixel_frames - 1) % 4 != 0:
        raise ValueError(f"pixel_frames={pixel_frames} must be 4n+1 (Wan causal layout), e.g. 5 or 9")
    return (pixel_frames - 1) // 4 + 1


def state_of_pixel_frame(t: int) -> int:
    return 0 if t == 0 else (t + 3) // 4


def render_shot(story: Story, shot: Shot) -> np.ndarray:
    states = [render_frame(story.environments[shot.environment], story.characters, places,
                           story.frame_size) for places in shot.states]
    frames = [states[state_of_pixel_frame(t)] for t in range(story.pixel_frames)]
    return np.stack(frames).astype(np.float32)


# ----------------------------------------------------------------------------- generation

def _new_character(rng: np.random.Generator, taken: Sequence[Character], spec: WorldSpec) -> Character:
    """A character differing from every character already in the story in *all* attributes,
    so no appearance word is shared and captions can withhold appearance word by word."""
    shapes = [s for s in spec.shapes if all(c.shape != s for c in taken)]
    colours = [c for c in CHAR_COLOURS if all(t.colour != c for t in taken)]
    patterns = [p for p in spec.patterns if all(c.pattern != p for c in taken)]
    return Character(str(rng.choice(shapes)), str(rng.choice(colours)), str(rng.choice(patterns)))


def _new_environment(rng: np.random.Generator, taken: Sequence[Environment]) -> Environment:
    """A room whose colour differs from every room in the story (rooms must be told apart)."""
    colours = [c for c in ENV_COLOURS if all(e.colour != c for e in taken)]
    return Environment(str(rng.choice(colours)), str(rng.choice(TEXTURES)), str(rng.choice(LAYOUTS)))


def _place(cast: tuple[int, ...], framing: str, wanted: tuple[str, ...],
           frame_size: int, n_states: int, spec: WorldSpec | None = None
           ) -> tuple[tuple[str, ...], tuple[tuple[Placement, ...], ...]]:
    """Slot each character left to right, pick a drift that keeps it inside its slot.

    Positions are a function of (framing, slot, action), not random: the world's randomness is
    kept where memory is tested (who appears, in which room, how they look), and a shot's pixels
    follow from its cast, room, framing and actions. (Random offsets were tried first; removing
    them did not change what the tiny CPU generator learns - docs/training.md.)

    Slots are separated by one background column so characters never touch (the reader
    segments them as connected components). If the wanted drift does not fit, the step is
    reduced and finally the action becomes "still", so captions never lie about motion."""
    spec = spec or world_spec(DEFAULT_WORLD)
    size = framing_size(framing, frame_size, spec.scale(framing))
    half = frame_size // 2
    slots = [(0, frame_size)] if len(cast) == 1 else [(0, half), (half + 1, frame_size)]
    base_step = max(1, round(STEP_PX_AT_32 * frame_size / 32))
    actions: list[str] = []
    tracks: list[list[Placement]] = []
    for c, (lo, hi), act in zip(cast, slots, wanted):
        step = 0
        if act != "still":
            for cand in range(base_step, 0, -1):
                if size + cand * (n_states - 1) <= hi - lo:
                    step = cand
                    break
        act = act if step > 0 else "still"
        dx = {"left": -step, "right": step, "still": 0}[act]
        span = size + abs(dx) * (n_states - 1)
        x_start = lo + (hi - lo - span) // 2           # the track is centred in its slot
        if spec.even_positions:                        # pattern cells on the codec's 2x2 grid
            x_start = x_start if (x_start % 2 == 0 or x_start - 1 < lo) else x_start - 1
        x0 = x_start if dx >= 0 else x_start + abs(dx) * (n_states - 1)
        y0 = (frame_size - size) // 2
        y0 -= y0 % 2 if spec.even_positions else 0
        actions.append(act)
        tracks.append([Placement(c, x0 + dx * i, y0, size) for i in range(n_states)])
    states = tuple(tuple(track[i] for track in tracks) for i in range(n_states))
    return tuple(actions), states


def _framing(rng: np.random.Generator, n_cast: int, spec: WorldSpec | None = None) -> str:
    # Close-ups only for single characters: two 17 px bodies do not fit side by side at 32 px.
    spec = spec or world_spec(DEFAULT_WORLD)
    return str(rng.choice(("wide", "medium", "close-up") if n_cast == 1 else spec.pair_framings))


def _actions(rng: np.random.Generator, n_cast: int) -> tuple[str, ...]:
    if n_cast == 2 and rng.random() < 0.4:
        return ("right", "left")  # "meet"
    return tuple(str(rng.choice(grammar.ACTIONS)) for _ in range(n_cast))


def _plan(pattern: str, rng: np.random.Generator) -> list[tuple[tuple[int, ...], int | None]]:
    """Six (cast, environment) pairs; environment None = a new room."""
    def revisit(envs: Sequence[int]) -> int:
        return int(rng.choice(list(envs)))

    if pattern == "consistency":
        cast = (0, 1) if rng.random() < 0.3 else (0,)
        plan: list[tuple[tuple[int, ...], int | None]] = [(cast, None)]
        n_env = 1
        for k in range(1, NUM_SHOTS):
            # Guarantee at least one change of room and one return over the six shots.
            if k == 1 and rng.random() < 0.5:
                plan.append((cast, 0))
            elif n_env < 3 and (rng.random() < 0.5 or (k == 2 and n_env == 1)):
                plan.append((cast, None))
                n_env += 1
            else:
                plan.append((cast, revisit(range(n_env))))
        return plan
    if pattern == "insert_recall":
        insert = int(rng.choice((2, 3)))
        plan = [((0,), None)]
        envs_a = [0]
        n_env = 1
        for k in range(1, NUM_SHOTS):
            if k == insert:
                plan.append(((1,), None))          # intervening shot: new character, new room
                env_b = n_env
                n_env += 1
            elif k == NUM_SHOTS - 1:
                plan.append(((1,), env_b))         # revisit the inserted character in its room
            elif k == insert + 1:
                plan.append(((0,), revisit(envs_a)))  # the story returns to the main subject
            elif rng.random() < 0.4:
                plan.append(((0,), None))
                envs_a.append(n_env)
                n_env += 1
            else:
                plan.append(((0,), revisit(envs_a)))
        return plan
    if pattern == "composition":
        # Shots 0,1 introduce A and B apart; shot 2 shows one alone; shots 3 and 5 (and maybe 4)
        # show both together, in one of their rooms or a new one.
        plan = [((0,), None), ((1,), None)]
        who = int(rng.integers(0, 2))
        plan.append(((who,), who if rng.random() < 0.7 else None))
        n_env = 3 if plan[-1][1] is None else 2
        for k in (3, 4, 5):
            if k == 4 and rng.random() < 0.5:
                who = int(rng.integers(0, 2))
                plan.append(((who,), who))
                continue
            pair = (0, 1) if rng.random() < 0.5 else (1, 0)
            if rng.random() < 0.4:
                plan.append((pair, None))
                n_env += 1
            else:
                plan.append((pair, revisit(range(n_env))))
        return plan
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERN_NAMES}")


def make_story(seed: int, pattern: str, frame_size: int = 32, pixel_frames: int = 9,
               world: str = DEFAULT_WORLD) -> Story:
    """The six-shot story of `pattern` for `seed` in world version `world` (spec.py; pure
    function of its arguments; v1 stories are the same as before world versions existed)."""
    if pattern not in PATTERN_NAMES:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERN_NAMES}")
    if frame_size < 32:
        raise ValueError(f"frame_size={frame_size} too small; use >= 32 so patterns stay legible")
    spec = world_spec(world)
    key = [seed, PATTERN_NAMES.index(pattern), frame_size, pixel_frames]
    rng = np.random.default_rng(key if world == "v1" else key + [list(WORLD_KEYS).index(world)])
    n_states = latent_states(pixel_frames)
    plan = _plan(pattern, rng)
    n_chars = 1 + max(c for cast, _ in plan for c in cast)
    characters: list[Character] = []
    for _ in range(n_chars):
        characters.append(_new_character(rng, characters, spec))
    environments: list[Environment] = []
    shots: list[Shot] = []
    for cast, env in plan:
        if env is None:
            environments.append(_new_environment(rng, environments))
            env = len(environments) - 1
        framing = _framing(rng, len(cast), spec)
        actions, states = _place(cast, framing, _actions(rng, len(cast)), frame_size, n_states, spec)
        shots.append(Shot(env, cast, framing, actions, states))
    captions = tuple(grammar.caption(characters, environments, shots[:k], shots[k])
                     for k in range(len(shots)))
    return Story(seed, pattern, frame_size, pixel_frames, tuple(characters), tuple(environments),
                 tuple(shots), captions, world)


# ----------------------------------------------------------------------------- relevance

def recurring_entities(memory: Sequence[Shot], target: Shot) -> tuple[set[int], bool]:
    """Entities of `target` that memory shows: (character ids, whether its room is shown).
    These are exactly what the caption withholds, i.e. what only memory can supply."""
    seen_chars = {c for s in memory for c in s.cast}
    seen_envs = {s.environment for s in memory}
    return set(target.cast) & seen_chars, target.environment in seen_envs


def relevance(memory: Sequence[Shot], target: Shot) -> np.ndarray:
    """float32 "f": ground-truth relevance in [0, 1] of every memory latent frame to `target`.

    relevance = (# recurring target characters visible + [target room visible]) / (# recurring
    target entities). All target entities the memory shows count equally; entities new to the
    target are excluded because the caption states them in full (memory cannot help). If the
    target has no recurring entity every frame scores 0. Characters never leave the frame in
    this world, so the label is constant within a shot."""
    chars, env_seen = recurring_entities(memory, target)
    total = len(chars) + int(env_seen)
    out: list[float] = []
    for s in memory:
        for places in s.states:
            if total == 0:
                out.append(0.0)
                continue
            hit = len(chars & {p.character for p in places}) + int(env_seen and s.environment == target.environment)
            out.append(hit / total)
    return np.asarray(out, dtype=np.float32)
