"""Video decoding with PyAV (its wheels bundle FFmpeg, so no system FFmpeg is needed).

Frames are addressed by their decode order (0, 1, 2, ...), the same index the shot detectors
report, so a (video, start, end) record names exact frames without any timestamp arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from . import deps


class VideoError(Exception):
    """The video cannot be opened or decoded (the pipeline skips it and logs the reason)."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def _open(path: str):
    av = deps.av()
    try:
        container = av.open(str(path))
    except Exception as e:  # FFmpeg raises many error types; any of them means "unreadable"
        raise VideoError(f"cannot open {path}: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def read_small(path: str, width: int = 48, height: int = 27) -> tuple[np.ndarray, VideoInfo]:
    """Every frame scaled to width x height ("t h w 3" uint8) for shot detection, and the video's info."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        w, h = stream.codec_context.width, stream.codec_context.height
        frames = [f.to_ndarray(width=width, height=height, format="rgb24") for f in container.decode(stream)]
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(f"cannot decode {path}: {e}") from e
    finally:
        container.close()
    if not frames:
        raise VideoError(f"{path} has no decodable frames")
    return np.stack(frames), VideoInfo(len(frames), fps, w, h)


def cover_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """Smallest size with the source's aspect ratio that covers width x height."""
    scale = max(width / src_w, height / src_h)
    return max(width, round(src_w * scale)), max(height, round(src_h * scale))


def center_crop(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """'h w 3' -> 'height width 3', centred (the paper centre-crops to 480x832)."""
    top = (frame.shape[0] - height) // 2
    left = (frame.shape[1] - width) // 2
    return frame[top:top + height, left:left + width]


def read_frames(path: str, indices: Iterable[int], width: int, height: int) -> dict[int, np.ndarray]:
    """The frames at `indices` (decode order), resized to cover width x height and centre-cropped,
    each 'height width 3' uint8; one sequential pass over the video. Missing indices raise VideoError."""
    wanted = sorted(set(int(i) for i in indices))
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    container = _open(path)
    try:
        stream = container.streams.video[0]
        cw, ch = cover_size(stream.codec_context.width, stream.codec_context.height, width, height)
        k = 0
        for i, frame in enumerate(container.decode(stream)):
            if i == wanted[k]:
                rgb = frame.to_ndarray(width=cw, height=ch, format="rgb24")
                out[i] = np.ascontiguousarray(center_crop(rgb, width, height))
                k += 1
                if k == len(wanted):
                    break
    except Exception as e:
        raise VideoError(f"cannot decode {path}: {e}") from e
    finally:
        container.close()
    if len(out) != len(wanted):
        raise VideoError(f"{path} ended before frame {wanted[len(out)]}")
    return out
