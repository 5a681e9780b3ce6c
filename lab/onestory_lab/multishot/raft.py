"""RAFT-Large optical flow in plain PyTorch: the flow model of VBench's dynamic degree.

Ported from torchvision (pytorch/vision): `torchvision/models/optical_flow/raft.py` and `_utils.py`
(`raft_large`, the RAFT of Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow",
ECCV 2020), with `torchvision.ops.Conv2dNormActivation` re-expressed as `ConvNormAct`. Module and
attribute names are torchvision's, so a `raft_large` state dict (e.g. `Raft_Large_Weights.C_T_V1`
converted to safetensors) loads strictly. It needs torch only: no torchvision, no compiled ops.

    image1, image2 "n 3 h w" in [-1, 1]  (h, w multiples of 8, at least 128)
    feature_encoder  "2n 3 h w" -> "2n 256 h/8 w/8"       (instance norm)
    context_encoder  "n 3 h w" -> "n 256 h/8 w/8" -> hidden "n 128 ..." (tanh) + context "n 128 ..." (relu)
    correlation      all pairs "n (h/8 w/8) (h/8 w/8)", pooled to 4 levels, read 9 x 9 around each
                     current match -> "n 324 h/8 w/8"
    update_block     ConvGRU (1x5 then 5x1) -> delta flow "n 2 h/8 w/8"; repeated num_flow_updates times
    mask_predictor   convex 8x upsampling weights "n (9 8 8) h/8 w/8" -> flow "n 2 h w" in pixels

Eval path of `raft_large` only (raft_small's bottleneck blocks and the weight download are not ported).
Weights must be loaded: the module initialises with torch's defaults, not torchvision's kaiming init.

Origin licence (torchvision, BSD-3-Clause):

    Copyright (c) Soumith Chintala 2016,
    All rights reserved.

    Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions are met:

    * Redistributions of source code must retain the above copyright notice, this
      list of conditions and the following disclaimer.

    * Redistributions in binary form must reproduce the above copyright notice,
      this list of conditions and the following disclaimer in the documentation
      and/or other materials provided with the distribution.

    * Neither the name of the copyright holder nor the names of its
      contributors may be used to endorse or promote products derived from
      this software without specific prior written permission.

    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
    AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
    IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
    DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
    FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
    DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
    SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
    CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
    OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
    OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DOWNSAMPLE = 8        # both encoders reduce h and w by 8
LEVELS = 4            # correlation pyramid levels
RADIUS = 4            # lookup window: (2 * RADIUS + 1) ** 2 cells per level
HIDDEN = 128          # GRU hidden state (the first 128 context channels)
# each pyramid level halves the correlation map; the last one must keep 2 cells per side so that the
# bilinear lookup's (size - 1) normalisation is defined (torchvision refuses smaller inputs the same way)
MIN_SIZE = DOWNSAMPLE * 2 * 2 ** (LEVELS - 1)


class ConvNormAct(nn.Sequential):
    """Conv2d [-> norm] [-> ReLU], numbered 0, 1, 2 like torchvision's Conv2dNormActivation, whose
    state-dict keys (`*.0.weight`, `*.1.running_mean`) the released weights use.

    "b c h w" -> "b o h/stride w/stride" ("same" padding for odd kernels)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1,
                 norm: Optional[Callable[[int], nn.Module]] = None, act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, bias=True)]
        if norm is not None:
            layers.append(norm(cout))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-relu with a (strided 1x1 projection) shortcut; "b c h w" -> "b o h/s w/s".
    The convs keep their biases despite the norm, because the released weights have them."""

    def __init__(self, cin: int, cout: int, norm: Callable[[int], nn.Module], stride: int = 1):
        super().__init__()
        self.convnormrelu1 = ConvNormAct(cin, cout, 3, stride, norm)
        self.convnormrelu2 = ConvNormAct(cout, cout, 3, 1, norm)
        self.downsample: nn.Module = (nn.Identity() if stride == 1
                                      else ConvNormAct(cin, cout, 1, stride, norm, act=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.convnormrelu2(self.convnormrelu1(x))
        return self.relu(self.downsample(x) + y)


class FeatureEncoder(nn.Module):
    """"b 3 h w" -> "b 256 h/8 w/8": 7x7 stride-2 stem, three pairs of residual blocks (strides 1, 2, 2)."""

    def __init__(self, norm: Callable[[int], nn.Module], layers: tuple[int, ...] = (64, 64, 96, 128, 256)):
        super().__init__()
        self.convnormrelu = ConvNormAct(3, layers[0], 7, 2, norm)
        self.layer1 = self._pair(layers[0], layers[1], norm, 1)
        self.layer2 = self._pair(layers[1], layers[2], norm, 2)
        self.layer3 = self._pair(layers[2], layers[3], norm, 2)
        self.conv = nn.Conv2d(layers[3], layers[4], kernel_size=1)

    @staticmethod
    def _pair(cin: int, cout: int, norm: Callable[[int], nn.Module], stride: int) -> nn.Sequential:
        return nn.Sequential(ResidualBlock(cin, cout, norm, stride), ResidualBlock(cout, cout, norm, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
    """(flow "b 2 h w", correlation "b 324 h w") -> motion features "b 128 h w" (126 encoded + the flow)."""

    def __init__(self, corr_channels: int = LEVELS * (2 * RADIUS + 1) ** 2):
        super().__init__()
        self.convcorr1 = ConvNormAct(corr_channels, 256, 1)
        self.convcorr2 = ConvNormAct(256, 192, 3)
        self.convflow1 = ConvNormAct(2, 128, 7)
        self.convflow2 = ConvNormAct(128, 64, 3)
        self.conv = ConvNormAct(192 + 64, 128 - 2, 3)   # 2 channels left for the raw flow

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = self.convcorr2(self.convcorr1(corr))
        f = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([c, f], dim=1)), flow], dim=1)


class ConvGRU(nn.Module):
    """GRU whose gates are convolutions: (h "b 128 h w", x "b 256 h w") -> h "b 128 h w"."""

    def __init__(self, input_size: int, hidden_size: int, kernel_size: tuple[int, int], padding: tuple[int, int]):
        super().__init__()
        cin = hidden_size + input_size
        self.convz = nn.Conv2d(cin, hidden_size, kernel_size=kernel_size, padding=padding)
        self.convr = nn.Conv2d(cin, hidden_size, kernel_size=kernel_size, padding=padding)
        self.convq = nn.Conv2d(cin, hidden_size, kernel_size=kernel_size, padding=padding)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    """A horizontal (1x5) then a vertical (5x1) ConvGRU: a 5x5 receptive field at a third of the cost."""

    def __init__(self, input_size: int, hidden_size: int = HIDDEN):
        super().__init__()
        self.convgru1 = ConvGRU(input_size, hidden_size, (1, 5), (0, 2))
        self.convgru2 = ConvGRU(input_size, hidden_size, (5, 1), (2, 0))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return self.convgru2(self.convgru1(h, x), x)


class FlowHead(nn.Module):
    """hidden "b 128 h w" -> delta flow "b 2 h w"."""

    def __init__(self, in_channels: int = HIDDEN, hidden_size: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """(hidden, context, correlation, flow) at 1/8 resolution -> (new hidden, delta flow)."""

    def __init__(self, context_channels: int = 256 - HIDDEN):
        super().__init__()
        self.motion_encoder = MotionEncoder()
        self.recurrent_block = RecurrentBlock(input_size=128 + context_channels)
        self.flow_head = FlowHead()

    def forward(self, hidden: Tensor, context: Tensor, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([context, self.motion_encoder(flow, corr)], dim=1)
        hidden = self.recurrent_block(hidden, x)
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    """hidden "b 128 h w" -> upsampling logits "b (9 8 8) h w": for each of the 8x8 output pixels of a
    cell, weights over its 3x3 coarse neighbours."""

    def __init__(self, in_channels: int = HIDDEN, hidden_size: int = 256):
        super().__init__()
        self.convrelu = ConvNormAct(in_channels, hidden_size, 3)
        self.conv = nn.Conv2d(hidden_size, DOWNSAMPLE * DOWNSAMPLE * 9, 1, padding=0)
        # RAFT scales the mask by 0.25 (it damps that branch's gradients in training); kept for identical logits
        self.multiplier = 0.25

    def forward(self, x: Tensor) -> Tensor:
        return self.multiplier * self.conv(self.convrelu(x))


def coords_grid(batch: int, h: int, w: int, device: torch.device) -> Tensor:
    """Pixel coordinates "b 2 h w", channel 0 = x (column), 1 = y (row)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(batch, 1, 1, 1)


def correlation_pyramid(fmap1: Tensor, fmap2: Tensor, levels: int = LEVELS) -> list[Tensor]:
    """All-pairs correlation, pooled over the second image's positions.

    fmap1, fmap2 "b c h w" -> levels tensors "(b h w) 1 h/2^l w/2^l": for every pixel of image 1, its
    dot products with all pixels of image 2 divided by sqrt(c)."""
    b, c, h, w = fmap1.shape
    corr = torch.matmul(fmap1.reshape(b, c, h * w).transpose(1, 2), fmap2.reshape(b, c, h * w))
    corr = (corr / torch.sqrt(torch.tensor(float(c)))).reshape(b * h * w, 1, h, w)
    pyramid = [corr]
    for _ in range(levels - 1):
        corr = F.avg_pool2d(corr, kernel_size=2, stride=2)
        pyramid.append(corr)
    return pyramid


def lookup(pyramid: list[Tensor], coords: Tensor, radius: int = RADIUS) -> Tensor:
    """Bilinear reads of each level in a (2r+1)^2 window around the current matches.

    coords "b 2 h w" (pixels in image 2 at 1/8 resolution) -> "b (levels i j) h w". The window offset
    (i, j) is read as (dx, dy) = (i - r, j - r), i.e. x varies along the first window axis: RAFT's own
    channel order, which the released motion-encoder weights expect."""
    b, _, h, w = coords.shape
    side = 2 * radius + 1
    d = torch.linspace(-radius, radius, side, device=coords.device)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, side, side, 2)
    centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    out = []
    for corr in pyramid:
        out.append(_sample_pixels(corr, centres + delta).view(b, h, w, -1))
        centres = centres / 2      # the next level is half the size
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def _sample_pixels(img: Tensor, xy: Tensor) -> Tensor:
    """grid_sample at absolute pixel positions: img "n c h w", xy "n i j 2" -> "n c i j" (zeros outside)."""
    h, w = img.shape[-2:]
    x, y = xy.split([1, 1], dim=-1)
    x = 2 * x / (w - 1) - 1
    y = 2 * y / (h - 1) - 1
    return F.grid_sample(img, torch.cat([x, y], dim=-1), mode="bilinear", align_corners=True)


def upsample_flow(flow: Tensor, mask: Tensor) -> Tensor:
    """Convex 8x upsampling: flow "b 2 h w" (1/8-resolution pixels), mask logits "b (9 8 8) h w" ->
    flow "b 2 (h 8) (w 8)" in full-resolution pixels; each output pixel is a softmax-weighted mean of
    its coarse cell's 3x3 neighbourhood."""
    b, c, h, w = flow.shape
    f = DOWNSAMPLE
    weights = torch.softmax(mask.view(b, 1, 9, f, f, h, w), dim=2)
    neighbours = F.unfold(f * flow, kernel_size=3, padding=1).view(b, c, 9, 1, 1, h, w)
    up = torch.sum(weights * neighbours, dim=2)                     # "b c fy fx h w"
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * f, w * f)  # -> "b c (h fy) (w fx)"


class RAFT(nn.Module):
    """RAFT-Large with torchvision's `raft_large` architecture and state-dict keys."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_encoder = FeatureEncoder(nn.InstanceNorm2d)   # no affine, no running stats: no keys
        self.context_encoder = FeatureEncoder(nn.BatchNorm2d)      # eval() uses the stored statistics
        self.update_block = UpdateBlock()
        self.mask_predictor = MaskPredictor()

    def forward(self, image1: Tensor, image2: Tensor, num_flow_updates: int = 12) -> list[Tensor]:
        """image1, image2 "n 3 h w" in [-1, 1] -> num_flow_updates flows "n 2 h w" (pixels, x then y;
        image1 + flow lands on image2), each refining the previous one; the last is the estimate."""
        _check(image1, image2)
        n, _, h, w = image1.shape
        fmap1, fmap2 = torch.chunk(self.feature_encoder(torch.cat([image1, image2], dim=0)), chunks=2, dim=0)
        pyramid = correlation_pyramid(fmap1, fmap2)
        hidden, context = torch.split(self.context_encoder(image1), [HIDDEN, 256 - HIDDEN], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)
        coords0 = coords_grid(n, h // DOWNSAMPLE, w // DOWNSAMPLE, fmap1.device)
        coords1 = coords0.clone()
        flows = []
        for _ in range(num_flow_updates):
            coords1 = coords1.detach()   # RAFT does not backpropagate through the lookup positions
            corr = lookup(pyramid, coords1)
            hidden, delta = self.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
            flows.append(upsample_flow(coords1 - coords0, self.mask_predictor(hidden)))
        return flows


def _check(image1: Tensor, image2: Tensor) -> None:
    if image1.dim() != 4 or image1.shape[1] != 3:
        raise ValueError(f"image1 must be 'n 3 h w', got {tuple(image1.shape)}")
    if image1.shape != image2.shape:
        raise ValueError(f"image1 {tuple(image1.shape)} and image2 {tuple(image2.shape)} must have one shape")
    h, w = image1.shape[-2:]
    if h % DOWNSAMPLE or w % DOWNSAMPLE:
        raise ValueError(f"image h and w must be multiples of {DOWNSAMPLE}, got {h} x {w}: pad the frames")
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"image h and w must be at least {MIN_SIZE} (RAFT's 4-level correlation pyramid), "
                         f"got {h} x {w}: pad or resize the frames")


def raft_large() -> RAFT:
    """RAFT-Large without weights (load a converted torchvision state dict with strict=True)."""
    return RAFT()


__all__ = ["RAFT", "raft_large", "MIN_SIZE"]
