"""Person crops and person-free backgrounds of frames (the regions C-Cons and E-Cons compare).

* person region: the instance's bounding box, pixels outside the instance mask filled with the
  fill colour, padded to a square with the same colour and resized to `size` x `size`;
* background: the whole frame with every person pixel filled with the fill colour.

The fill colour is ImageNet's mean RGB: after an encoder's ImageNet normalisation it is zero,
the closest thing to "no content" an image encoder sees.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)


def _fill(like: Tensor) -> Tensor:
    return torch.tensor(IMAGENET_MEAN, dtype=like.dtype, device=like.device).view(3, 1, 1)


def person_crop(frame: Tensor, mask: Tensor, size: int = 224) -> Tensor:
    """frame "3 h w", mask bool "h w" (non-empty) -> "3 size size"."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    fill = _fill(frame)
    crop = torch.where(mask[y0:y1, x0:x1], frame[:, y0:y1, x0:x1], fill)
    h, w = crop.shape[-2:]
    side = max(h, w)
    canvas = fill.expand(3, side, side).clone()
    top, left = (side - h) // 2, (side - w) // 2
    canvas[:, top:top + h, left:left + w] = crop
    return F.interpolate(canvas[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=side > size)[0]


def background(frame: Tensor, masks: Tensor) -> Tensor:
    """frame "3 h w", person masks bool "k h w" -> "3 h w" with person pixels filled."""
    if masks.shape[0] == 0:
        return frame
    return torch.where(masks.any(0), _fill(frame), frame)


def check_masks(masks: list[Tensor], frames: Tensor, who: str) -> list[Tensor]:
    if len(masks) != frames.shape[0]:
        raise ValueError(f"{who} returned masks for {len(masks)} images, expected {frames.shape[0]}")
    out = []
    for m in masks:
        if m.ndim != 3 or tuple(m.shape[-2:]) != tuple(frames.shape[-2:]):
            raise ValueError(f"{who} returned a mask of shape {tuple(m.shape)}; expected 'k h w' with "
                             f"h w = {tuple(frames.shape[-2:])}")
        out.append(m.bool())
    return out
