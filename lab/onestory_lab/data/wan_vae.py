"""Encoder half of the Wan 2.1 VAE (also Wan 2.2 A14B's VAE), loading the original key names.

The file is the one a ComfyUI user has (`models/vae/wan_2.1_vae.safetensors`); latents are the raw
posterior means ("bank space", what ComfyUI's VAEEncode returns), "c t h w" with c = 16,
t = 1 + (frames - 1) // 4, h = height / 8, w = width / 8. Parity with ComfyUI's
comfy/ldm/wan/vae.py is tested in tests/integration/test_data_parity.py.

Every temporal convolution is causal, so encoding chunk by chunk (frame 0, then 4 frames at a
time, as Wan does to bound memory) equals encoding the whole clip at once; each causal layer keeps
the last frames of its input in a per-call `Stream` instead of Wan's index-based cache list.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Stream = dict  # module -> last input frames of the previous chunk ("b c t h w")


class CausalConv3d(nn.Conv3d):
    """3-D convolution padded only towards the past in time (zeros before the first frame)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
        pad = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, pad[1], pad[2]))
        self.past = 2 * pad[0]

    def forward(self, x: Tensor, stream: Stream | None = None) -> Tensor:  # type: ignore[override]
        if self.past:
            prev = stream.get(self) if stream is not None else None
            if prev is None:
                prev = x.new_zeros(x.shape[0], x.shape[1], self.past, *x.shape[3:])
            x = torch.cat([prev, x], 2)
            if stream is not None:
                stream[self] = x[:, :, -self.past:]
        return super().forward(x)


class RMSNorm(nn.Module):
    """Wan's RMS_norm: L2-normalise over channels, times sqrt(dim) * gamma."""

    def __init__(self, dim: int, images: bool) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(RMSNorm(cin, False), nn.SiLU(), CausalConv3d(cin, cout, 3, padding=1),
                                      RMSNorm(cout, False), nn.SiLU(), nn.Dropout(0.0),
                                      CausalConv3d(cout, cout, 3, padding=1))
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, stream: Stream) -> Tensor:
        h = x
        for layer in self.residual:
            h = layer(h, stream) if isinstance(layer, CausalConv3d) else layer(h)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention within each frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, stream: Stream) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        q, k, v = self.to_qkv(y).reshape(b * t, 3 * c, h * w).transpose(1, 2).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        y = self.proj(y.transpose(1, 2).reshape(b * t, c, h, w))
        return x + y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


class Downsample(nn.Module):
    """Spatial stride-2 convolution per frame; with `temporal`, a stride-2 causal time convolution
    that keeps the first frame as is (so 1 + 4n frames become 1 + 2n)."""

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: Tensor, stream: Stream) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        y = y.reshape(b, t, c, *y.shape[-2:]).permute(0, 2, 1, 3, 4)
        if self.time_conv is None:
            return y
        prev = stream.get(self)
        stream[self] = y[:, :, -1:]
        if prev is None:                       # the first chunk (frame 0) passes through
            return y
        return self.time_conv(torch.cat([prev, y], 2))


class WanVAEEncoder(nn.Module):
    """pixels "b 3 t h w" in [-1, 1] -> posterior mean "b z t' h' w'"."""

    def __init__(self, dim: int, z_dim: int, layout: list[tuple[str, int, int]]) -> None:
        super().__init__()
        self.z_dim = z_dim
        blocks: list[nn.Module] = []
        for kind, cin, cout in layout:
            if kind == "res":
                blocks.append(ResidualBlock(cin, cout))
            elif kind == "attn":
                blocks.append(AttentionBlock(cout))
            else:
                blocks.append(Downsample(cout, temporal=kind == "down3d"))
        out = layout[-1][2]
        self.encoder = nn.Module()
        self.encoder.conv1 = CausalConv3d(3, dim, 3, padding=1)
        self.encoder.downsamples = nn.Sequential(*blocks)
        self.encoder.middle = nn.Sequential(ResidualBlock(out, out), AttentionBlock(out), ResidualBlock(out, out))
        self.encoder.head = nn.Sequential(RMSNorm(out, False), nn.SiLU(), CausalConv3d(out, 2 * z_dim, 3, padding=1))
        self.conv1 = CausalConv3d(2 * z_dim, 2 * z_dim, 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(1 for m in self.encoder.downsamples if isinstance(m, Downsample) and m.time_conv is not None)

    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(1 for m in self.encoder.downsamples if isinstance(m, Downsample))

    def _chunk(self, x: Tensor, stream: Stream) -> Tensor:
        enc = self.encoder
        x = enc.conv1(x, stream)
        for layer in enc.downsamples:
            x = layer(x, stream)
        for layer in enc.middle:
            x = layer(x, stream)
        x = enc.head[1](enc.head[0](x))
        return enc.head[2](x, stream)

    @torch.inference_mode()
    def forward(self, x: Tensor) -> Tensor:
        tf = self.temporal_factor
        frames = 1 + (x.shape[2] - 1) // tf * tf   # like Wan and ComfyUI: trailing frames are dropped
        stream: Stream = {}
        chunks = [self._chunk(x[:, :, :1], stream)]
        for i in range(1, frames, tf):
            chunks.append(self._chunk(x[:, :, i:i + tf], stream))
        return self.conv1(torch.cat(chunks, 2))[:, :self.z_dim]


PREFIXES = ("first_stage_model.", "vae.", "model.")


def strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for p in PREFIXES:
        if "encoder.conv1.weight" not in sd and f"{p}encoder.conv1.weight" in sd:
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return sd


def infer_layout(sd: dict[str, Tensor]) -> tuple[int, int, list[tuple[str, int, int]]]:
    """(dim, z_dim, encoder.downsamples layout) from the keys and shapes of a Wan 2.1 VAE."""
    if "encoder.conv1.weight" not in sd or "conv1.weight" not in sd:
        raise ValueError("not a Wan VAE state dict (no encoder.conv1.weight / conv1.weight)")
    if any(".downsamples.0.downsamples." in k for k in sd) or sd["conv1.weight"].shape[0] != 32:
        raise ValueError("this VAE is not the Wan 2.1 VAE (16 latent channels); Wan 2.2 TI2V-5B's 48-channel "
                         "VAE is not supported by the data pipeline")
    dim = sd["encoder.conv1.weight"].shape[0]
    indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.downsamples\.(\d+)\.", k))})
    layout: list[tuple[str, int, int]] = []
    for i in indices:
        p = f"encoder.downsamples.{i}."
        if p + "residual.2.weight" in sd:
            w = sd[p + "residual.2.weight"]
            layout.append(("res", w.shape[1], w.shape[0]))
        elif p + "to_qkv.weight" in sd:
            c = sd[p + "proj.weight"].shape[0]
            layout.append(("attn", c, c))
        elif p + "resample.1.weight" in sd:
            c = sd[p + "resample.1.weight"].shape[0]
            layout.append(("down3d" if p + "time_conv.weight" in sd else "down2d", c, c))
        else:
            raise ValueError(f"unrecognised Wan VAE block {p}*")
    return dim, sd["conv1.weight"].shape[0] // 2, layout


def load_wan_vae_encoder(sd: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> WanVAEEncoder:
    sd = strip_prefix(sd)
    dim, z_dim, layout = infer_layout(sd)
    model = WanVAEEncoder(dim, z_dim, layout)
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise ValueError(f"Wan VAE file lacks {len(missing)} encoder weights, e.g. {missing[:3]}")
    model.load_state_dict({k: sd[k].to(dtype) for k in wanted})
    return model.to(dtype).eval()


def latent_frames(frames: int, temporal_factor: int = 4) -> int:
    return 1 + (frames - 1) // temporal_factor




def wan21_layout(dim: int, dim_mult=(1, 2, 4, 4), num_res_blocks: int = 2,
                 temporal=(False, True, True)) -> list[tuple[str, int, int]]:
    """encoder.downsamples layout of a Wan 2.1 VAE built with these arguments (the released VAE:
    dim 96, the defaults here); used to make random-weight test files."""
    dims = [dim * m for m in (1, *dim_mult)]
    layout: list[tuple[str, int, int]] = []
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(num_res_blocks):
            layout.append(("res", cin, cout))
            cin = cout
        if i != len(dim_mult) - 1:
            layout.append(("down3d" if temporal[i] else "down2d", cout, cout))
    return layout
