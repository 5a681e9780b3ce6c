"""3-axis rotary position embedding (RoPE) of Wan, for arbitrary float positions.

Positions are "n 3" = (t, h, w) in patch units; they may be fractional or negative (the
OneStory context tokens sit at t < 0 and at block centres in h/w). A head of width d is split
into axes (d - 4*(d//6), 2*(d//6), 2*(d//6)) for (t, h, w), each axis rotating consecutive
channel pairs by pos * theta^(-2j / d_axis).

`freqs` use ComfyUI's layout "1 n 1 (d/2) 2 2" (one 2x2 rotation matrix per channel pair),
so a ComfyUI hook can concatenate `rope_for(...)` with the `pe` that `WanModel._forward`
builds and hand both to stock blocks.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .errors import ShapeError

THETA = 10000.0


def axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head given to the (t, h, w) axes, Wan's split."""
    s = head_dim // 6
    dims = (head_dim - 4 * s, 2 * s, 2 * s)
    if s == 0 or any(d % 2 for d in dims):
        raise ShapeError(f"head_dim={head_dim} cannot be split into Wan's 3 RoPE axes; "
                         "use an even head_dim >= 6 (real Wan models use 128).")
    return dims


def _axis(pos: Tensor, dim: int, theta: float) -> Tensor:
    """"n" -> "n (dim/2) 2 2" rotation matrices [[cos, -sin], [sin, cos]]."""
    # angles in float64 (like ComfyUI's flux rope) so large or fractional positions keep precision;
    # MPS has no float64, so those are computed on the CPU
    device = torch.device("cpu") if pos.device.type == "mps" else pos.device
    omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
    angle = pos.to(device=device, dtype=torch.float32).to(torch.float64)[:, None] * omega[None, :]
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2)).to(torch.float32).to(pos.device)


def rope_for(positions: Tensor, head_dim: int, theta: float = THETA) -> Tensor:
    """Rotations for float positions "n 3" (t, h, w) -> freqs "1 n 1 (head_dim/2) 2 2" float32."""
    if positions.ndim != 2 or positions.shape[-1] != 3:
        raise ShapeError(f"positions must be 'n 3' (t, h, w), got shape {tuple(positions.shape)}.")
    if not torch.is_floating_point(positions):
        positions = positions.float()
    freqs = torch.cat([_axis(positions[:, i], d, theta) for i, d in enumerate(axes_dims(head_dim))], dim=1)
    return freqs[None, :, None]


def grid_positions(t: int, h: int, w: int, *, t_start: float = 0.0, device=None) -> Tensor:
    """Integer (t, h, w) positions of a patch grid in "(t h w)" token order -> "(t h w) 3" float32.

    Matches ComfyUI's `rope_encode` without rope_options: t from t_start, h and w from 0.
    """
    tt = torch.arange(t, dtype=torch.float32, device=device) + t_start
    hh = torch.arange(h, dtype=torch.float32, device=device)
    ww = torch.arange(w, dtype=torch.float32, device=device)
    return torch.stack(torch.meshgrid(tt, hh, ww, indexing="ij"), dim=-1).reshape(-1, 3)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate channel pairs of x "b l heads d" by freqs "1 l 1 (d/2) 2 2"; computed in float32."""
    pairs = x.to(freqs.dtype).unflatten(-1, (-1, 1, 2))          # "b l heads (d/2) 1 2"
    out = freqs[..., 0] * pairs[..., 0] + freqs[..., 1] * pairs[..., 1]  # "b l heads (d/2) 2"
    return out.flatten(-2).type_as(x)
