"""Block reshapes shared by the Frame Selector's φ_V and the conditioner's patchifiers."""
from __future__ import annotations

from torch import Tensor


def patch_blocks(x: Tensor, kh: int, kw: int) -> Tensor:
    """"m c (hh kh) (ww kw)" -> "m (hh ww) (c kh kw)": every kh x kw block as one vector, in the
    order of a Conv weight's flattened "c kh kw" (so a kernel == stride conv is a linear map)."""
    m, c, h, w = x.shape
    hh, ww = h // kh, w // kw
    return x.reshape(m, c, hh, kh, ww, kw).permute(0, 2, 4, 1, 3, 5).reshape(m, hh * ww, c * kh * kw)
