"""Frame encoders and decoders for 64x64 images, with skip connections (as in SVG).

Each encoder maps (N, C, 64, 64) to h (N, g_dim) and four skip feature maps, finest first. The matching decoder
maps (N, g_dim) plus those skips back to (N, C, 64, 64) in [0, 1].

- ``vgg``: the lab backbone. Blocks of conv3x3 + BatchNorm + LeakyReLU(0.2), widths 64,64 | 128,128 | 256x3 |
  512x3 (times ``width``), max-pool between blocks, conv4x4 to g_dim + BatchNorm + tanh. Skips at 64, 32, 16, 8.
- ``dcgan``: 4x4 stride-2 convolutions, one per scale, widths 64, 128, 256, 512 (times ``width``); much cheaper.
  Skips at 64 (the input frame itself), 32, 16 and 8; the decoder ends with a conv3x3 over its own 64x64
  features and the skip frame, so unchanged background can pass through at full resolution.
"""

from __future__ import annotations

import torch
from torch import nn

BACKBONES = ("vgg", "dcgan")


def _widths(width: float) -> list[int]:
    return [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]


def _conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def _deconv_bn_act(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def _vgg_block(widths: list[int]) -> nn.Sequential:
    """widths = [c_in, c_1, ..., c_k]: k conv3x3 layers."""
    return nn.Sequential(*[_conv_bn_act(a, b) for a, b in zip(widths[:-1], widths[1:])])


class VGGEncoder(nn.Module):
    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self.blocks = nn.ModuleList([
            _vgg_block([channels, c1, c1]),   # 64x64
            _vgg_block([c1, c2, c2]),         # 32x32
            _vgg_block([c2, c3, c3, c3]),     # 16x16
            _vgg_block([c3, c4, c4, c4]),     # 8x8
        ])
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Sequential(nn.Conv2d(c4, g_dim, 4, 1, 0, bias=False), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        h = self.out(self.pool(x))  # (N, g_dim, 1, 1)
        return h.flatten(1), skips


class VGGDecoder(nn.Module):
    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0, out_channels: int | None = None):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self.inp = nn.Sequential(nn.ConvTranspose2d(g_dim, c4, 4, 1, 0, bias=False), nn.BatchNorm2d(c4),
                                 nn.LeakyReLU(0.2, inplace=True))  # 1x1 -> 4x4
        self.blocks = nn.ModuleList([
            _vgg_block([c4 * 2, c4, c4, c3]),  # 8x8, after concat with the 8x8 skip
            _vgg_block([c3 * 2, c3, c3, c2]),  # 16x16
            _vgg_block([c2 * 2, c2, c1]),      # 32x32
        ])
        self.last = nn.Sequential(_conv_bn_act(c1 * 2, c1), nn.ConvTranspose2d(c1, out_channels or channels, 3, 1, 1),
                                  nn.Sigmoid())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.inp(h[:, :, None, None])
        for block, skip in zip(self.blocks, reversed(skips[1:])):
            x = block(torch.cat([self.up(x), skip], 1))
        return self.last(torch.cat([self.up(x), skips[0]], 1))


class DCGANEncoder(nn.Module):
    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, c1, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)),  # 32x32
            _conv_bn_act(c1, c2, 4, 2, 1),  # 16x16
            _conv_bn_act(c2, c3, 4, 2, 1),  # 8x8
            _conv_bn_act(c3, c4, 4, 2, 1),  # 4x4
        ])
        self.out = nn.Sequential(nn.Conv2d(c4, g_dim, 4, 1, 0, bias=False), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = [x]  # the frame itself is the full-resolution skip: strided convolutions keep no 64x64 map
        for block in self.blocks[:-1]:
            x = block(x)
            skips.append(x)
        return self.out(self.blocks[-1](x)).flatten(1), skips


class DCGANDecoder(nn.Module):
    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0, out_channels: int | None = None):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self.inp = nn.Sequential(nn.ConvTranspose2d(g_dim, c4, 4, 1, 0, bias=False), nn.BatchNorm2d(c4),
                                 nn.LeakyReLU(0.2, inplace=True))  # 4x4
        self.blocks = nn.ModuleList([
            _deconv_bn_act(c4, c3),      # 8x8
            _deconv_bn_act(c3 * 2, c2),  # 16x16, after concat with the 8x8 skip
            _deconv_bn_act(c2 * 2, c1),  # 32x32
            _deconv_bn_act(c1 * 2, c1),  # 64x64
        ])
        self.last = nn.Sequential(nn.Conv2d(c1 + channels, out_channels or channels, 3, 1, 1), nn.Sigmoid())

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.blocks[0](self.inp(h[:, :, None, None]))
        for block, skip in zip(self.blocks[1:], reversed(skips[1:])):
            x = block(torch.cat([x, skip], 1))
        return self.last(torch.cat([x, skips[0]], 1))


def build_backbone(name: str, g_dim: int, channels: int = 3, width: float = 1.0, out_channels: int | None = None
                   ) -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder; the decoder emits ``out_channels`` (default ``channels``) maps through a sigmoid."""
    if name == "vgg":
        return VGGEncoder(g_dim, channels, width), VGGDecoder(g_dim, channels, width, out_channels)
    if name == "dcgan":
        return DCGANEncoder(g_dim, channels, width), DCGANDecoder(g_dim, channels, width, out_channels)
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
