"""Plain records shared by the stages, and the JSONL helpers that keep them resumable."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class Shot:
    """One shot of a source video: frames [start, end) (end exclusive), never a re-encoded copy."""

    video: str
    index: int
    start: int
    end: int
    fps: float

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Clip:
    """The frames of a shot that a sample uses: source frames start, start+stride, ... < end."""

    video: str
    shot: int
    start: int
    end: int
    stride: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every complete line; a torn last line (crash mid-write) is ignored."""
    p = Path(path)
    if not p.exists():
        return
    with p.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):   # the line a crash cut short: rewritten on resume
                return
            yield n, json.loads(line)


def append_jsonl(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Append one line and flush it to disk, so a finished item survives a crash of the next one."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_torn_tail(path: str | os.PathLike) -> None:
    """Drop a last line without its newline (left by a crash) before appending after it."""
    p = Path(path)
    if not p.exists():
        return
    data = p.read_bytes()
    if data and not data.endswith(b"\n"):
        p.write_bytes(data[: data.rfind(b"\n") + 1])


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync, rename: readers see old or new."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
