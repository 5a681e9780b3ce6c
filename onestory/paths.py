"""File helpers shared by the story file and the adapter file.

* `safe_relative_path` turns a user-typed name into a path under a base directory (ComfyUI's
  output / input / models folders) and refuses anything that could escape it.
* `atomic_write_bytes` writes a whole file so that readers see either the old or the new
  content, never a half-written file (a crash mid-save must not destroy yesterday's story).
* `read_safetensors` reads a safetensors file fully into memory with a validated header, so
  truncated or foreign files become `FileFormatError`s with a clear message and no mmap is
  left open (on Windows an open mmap would block saving over the same file later).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from .errors import FileFormatError, OneStoryError

# safetensors caps the JSON header at 100 MB; a bigger length prefix means garbage.
_MAX_HEADER = 100 * 1024 * 1024


def safe_relative_path(base_dir: str | os.PathLike, name: str, suffix: str = "") -> Path:
    """Resolve `name` (relative, '/'-separated, may contain sub-folders) under `base_dir`.

    Refuses absolute paths (POSIX, Windows drive or UNC), `..` components, empty names and
    names whose resolved location (symlinks followed) is outside `base_dir`. `suffix`
    (e.g. ".safetensors") is appended unless `name` already ends with it (case-insensitive).
    Returns an absolute path; the file itself need not exist.
    """
    if not isinstance(name, str):
        raise OneStoryError(f"file name must be a string, got {type(name).__name__}")
    raw = name.strip()
    if not raw:
        raise OneStoryError("file name is empty; type a relative name such as 'stories/my_story'")
    if "\x00" in raw:
        raise OneStoryError(f"file name {name!r} contains a NUL character; remove it")
    # Check both flavours: a workflow written on Windows may be run on Linux and vice versa.
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute() \
            or PureWindowsPath(raw).drive or raw.startswith(("/", "\\")):
        raise OneStoryError(
            f"file name {name!r} is an absolute path; give a name relative to {os.fspath(base_dir)!r}"
            " such as 'stories/my_story'")
    parts = raw.replace("\\", "/").split("/")
    if any(p == ".." for p in parts):
        raise OneStoryError(f"file name {name!r} contains '..'; names must stay inside "
                            f"{os.fspath(base_dir)!r} (use sub-folders like 'stories/my_story')")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise OneStoryError(f"file name {name!r} names no file; type a name such as 'my_story'")
    if raw.endswith(("/", "\\")):
        raise OneStoryError(f"file name {name!r} ends with a separator (a folder); add a file name")
    if suffix and not parts[-1].lower().endswith(suffix.lower()):
        parts[-1] += suffix
    base = Path(os.path.realpath(base_dir))
    target = Path(os.path.realpath(base.joinpath(*parts)))
    if os.path.commonpath([str(base), str(target)]) != str(base):
        # Only reachable through a symlink inside base_dir pointing elsewhere.
        raise OneStoryError(f"file name {name!r} resolves to {str(target)!r}, outside "
                            f"{str(base)!r} (through a symbolic link); choose another name")
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same directory, fsync, os.replace.

    The same directory is required for os.replace to be an atomic rename (no cross-device
    copy). On any error the temp file is removed and an existing `path` is left untouched.
    Parent directories are created.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # Make the rename itself durable (POSIX only; directories cannot be opened on Windows).
    if hasattr(os, "O_DIRECTORY"):
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read a whole safetensors file -> (metadata, tensors). Never unpickles.

    `what` names the kind of file in error messages ("story file", "adapter file").
    Raises FileFormatError for files that are not complete safetensors files.
    """
    from safetensors.torch import load as st_load

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OneStoryError(f"{what} {path!r} does not exist; check the name and folder")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise FileFormatError(f"{what} {path!r} is truncated ({len(data)} bytes); it is not a "
                              "complete safetensors file — save it again")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise FileFormatError(f"{what} {path!r} is truncated or not a safetensors file "
                              f"(header claims {n} bytes, file has {len(data)}); save it again")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{what} {path!r} has an unreadable safetensors header ({e}); "
                              "it is not a safetensors file") from None
    if not isinstance(header, dict):
        raise FileFormatError(f"{what} {path!r} has a malformed safetensors header")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise FileFormatError(f"{what} {path!r} has malformed safetensors metadata")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own SafetensorError for short buffers
        raise FileFormatError(f"{what} {path!r} is truncated or corrupt ({e}); save it again") from None
    return dict(metadata), tensors


#: metadata key of each OneStory file kind -> how to tell the user they picked the wrong loader.
_KIND_HINTS = {"onestory.story": "a OneStory story; load it with Load Story",
               "onestory.adapter": "a OneStory adapter; load it with the OneStory adapter loader"}


def read_onestory_file(path: str | os.PathLike, what: str, meta_key: str, fmt: str, version: int,
                       fix: str, older: tuple[int, ...] = ()) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a OneStory safetensors file -> (JSON manifest under ``meta_key``, tensors).

    Refuses files of another kind (naming the right loader), unreadable manifests, another
    ``format`` and any version but ``version`` and the ``older`` versions this reader still
    understands (FileFormatError). ``fix`` ends the message for a file that is not of this kind.
    """
    p = os.fspath(path)
    metadata, tensors = read_safetensors(p, what)
    raw = metadata.get(meta_key)
    if raw is None:
        other = next((hint for key, hint in _KIND_HINTS.items() if key != meta_key and key in metadata), None)
        noun = what.removesuffix(" file")
        kind = other or f"a safetensors file without OneStory {noun} metadata (a checkpoint, LoRA or other tensor file?)"
        raise FileFormatError(f"{what} {p!r} is {kind}; {fix}")
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{what} {p!r} has unreadable metadata ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise FileFormatError(f"{what} {p!r} has format {got!r}, expected {fmt!r}")
    readable = sorted({*older, version})
    got = manifest.get("version")
    if isinstance(got, bool) or got not in readable:
        names = f"version {version}" if len(readable) == 1 else \
            "versions " + ", ".join(str(v) for v in readable[:-1]) + f" and {readable[-1]}"
        raise FileFormatError(f"{what} {p!r} has format version {got!r}; this OneStory reads {names} only "
                              "— update OneStory")
    return manifest, tensors


def sha256_of(tensor: torch.Tensor) -> str:
    """"sha256:<hex>" of a tensor's raw bytes (dtype-independent: hashed as uint8)."""
    import hashlib

    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return "sha256:" + hashlib.sha256(data.tobytes()).hexdigest()
