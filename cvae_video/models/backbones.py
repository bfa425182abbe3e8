"""Frame encoders and decoders for 64x64 images, with skip connections (as in SVG).

Each encoder maps (N, C, 64, 64) to h (N, g_dim) and four skip feature maps, finest first. The matching decoder
maps (N, g_dim) plus those skips back to (N, C, 64, 64) in [0, 1].

Every place where the decoder concatenates a skip map with its own features is followed by a convolution, and a
convolution over a concatenation is the sum of the convolutions over its parts. The decoders compute the skip part
apart (:meth:`skip_terms`), so that a skip map shared by many decoded frames (every predicted step of a sequence,
every sample of a prediction) goes through that convolution once (:meth:`decode`); ``forward`` is both in one
call. The parameters are those of the convolutions over the concatenation, and :meth:`forward_concat` computes
the decoder the plain way, for reference.

With ``cond_channels`` K > 0 the decoder also takes, per decoded frame, a vector c of K numbers (the condition) and
sees it spatially: every convolution that takes skips also takes 2 + K more input channels, the pixel coordinates
(x and y in [-1, 1]) and c broadcast over the map (as in CoordConv, Liu et al. 2018). A fixed position in the
condition can then become a fixed place in the picture through one convolution, which is hard to learn from a
1x1 vector through transposed convolutions. Both are constant per frame, so their part of the convolution is
computed without building the maps (:func:`_broadcast_part`); :meth:`forward_concat` builds them, for reference.

The vgg decoder's other part, a conv3x3 over a nearest-neighbour 2x upsampling, is computed as the equivalent
transposed convolution (stride 2, 4x4 kernel) of the map before upsampling (:func:`_upsampled_conv`): each output
pixel then takes 4 taps of the small map instead of 9 of the large one, 4/9 of the multiply-adds, same result.

- ``vgg``: the lab backbone. Blocks of conv3x3 + BatchNorm + LeakyReLU(0.2), widths 64,64 | 128,128 | 256x3 |
  512x3 (times ``width``), max-pool between blocks, conv4x4 to g_dim + BatchNorm + tanh. Skips at 64, 32, 16, 8.
- ``dcgan``: 4x4 stride-2 convolutions, one per scale, widths 64, 128, 256, 512 (times ``width``); much cheaper.
  Skips at 64 (the input frame itself), 32, 16 and 8; the decoder ends with a conv3x3 over its own 64x64
  features and the skip frame, so unchanged background can pass through at full resolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("vgg", "dcgan")


def _widths(width: float) -> list[int]:
    return [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]


class ConvBNAct(nn.Sequential):
    """A convolution (or transposed convolution), BatchNorm and an activation, applied in that order, with the
    parts by name. A Sequential underneath, so its parameters keep the names (``0.weight``, ``1.running_mean``)
    that checkpoints hold."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, norm: nn.BatchNorm2d, act: nn.Module):
        super().__init__(conv, norm, act)

    @property
    def conv(self) -> nn.Conv2d | nn.ConvTranspose2d:
        return self[0]

    @property
    def norm(self) -> nn.BatchNorm2d:
        return self[1]

    @property
    def act(self) -> nn.Module:
        return self[2]

    def after_conv(self, y: torch.Tensor) -> torch.Tensor:
        """The norm and the activation, for a convolution's output computed elsewhere."""
        return self.act(self.norm(y))


def _conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> ConvBNAct:
    return ConvBNAct(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout),
                     nn.LeakyReLU(0.2, inplace=True))


def _deconv_bn_act(cin: int, cout: int, k: int = 4, stride: int = 2, pad: int = 1) -> ConvBNAct:
    return ConvBNAct(nn.ConvTranspose2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout),
                     nn.LeakyReLU(0.2, inplace=True))


def _conv_part(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, lo: int, hi: int | None,
               bias: bool) -> torch.Tensor:
    """``conv`` applied to input channels ``lo:hi`` of its weight (x holds just those), with its bias if ``bias``."""
    b = conv.bias if bias else None
    if isinstance(conv, nn.ConvTranspose2d):   # weight (in, out, k, k)
        return F.conv_transpose2d(x, conv.weight[lo:hi], b, conv.stride, conv.padding, conv.output_padding,
                                  conv.groups, conv.dilation)
    return F.conv2d(x, conv.weight[:, lo:hi], b, conv.stride, conv.padding, conv.dilation, conv.groups)


def coordinate_maps(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """(n, 2, size, size): the x (column) and y (row) coordinate of every pixel centre, in [-1, 1]."""
    r = torch.linspace(-1.0, 1.0, size, device=like.device, dtype=like.dtype)
    return torch.stack(torch.broadcast_tensors(r[None, :], r[:, None]))[None].expand(n, 2, size, size)


def _apply(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``conv``'s operation (stride, padding; no bias) on x with weight w."""
    if isinstance(conv, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, w, None, conv.stride, conv.padding, conv.output_padding, 1, conv.dilation)
    return F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation)


def _broadcast_part(conv: nn.Conv2d | nn.ConvTranspose2d, c: torch.Tensor, lo: int, size: int) -> torch.Tensor:
    """``conv`` applied to input channels ``lo:`` of its weight when they hold the two coordinate maps and then the
    vector c (N, K) broadcast over a ``size`` x ``size`` map -> (N, out, h, w), without building the maps.

    The coordinates give the same (1, out, h, w) for every row. A constant map per channel gives, through the
    convolution, that channel's response to a map of ones (which differs from a constant only at the borders,
    where the padding is): c times those K responses."""
    weight = conv.weight
    transposed = isinstance(conv, nn.ConvTranspose2d)   # weight (in, out, k, k), else (out, in, k, k)
    w_xy = weight[lo:lo + 2] if transposed else weight[:, lo:lo + 2]
    K = c.shape[1]
    w_c = weight[lo + 2:lo + 2 + K] if transposed else weight[:, lo + 2:lo + 2 + K]
    ones = c.new_ones(1, 1, size, size)
    xy = _apply(conv, coordinate_maps(1, size, c), w_xy)[0]                                # (out, h, w)
    if transposed:   # one input channel, K * out output channels
        out = w_c.shape[1]
        resp = _apply(conv, ones, w_c.reshape(1, K * out, *w_c.shape[2:]))[0].unflatten(0, (K, out))
    else:            # K * out filters of one input channel each
        out = w_c.shape[0]
        resp = _apply(conv, ones, w_c.reshape(out * K, 1, *w_c.shape[2:]))[0].unflatten(0, (out, K))
        resp = resp.transpose(0, 1)
    h, w = resp.shape[-2:]
    # one matrix product, laid out (N, h, w, out): the channels-last layout of the decoder's maps
    flat = torch.addmm(xy.permute(1, 2, 0).reshape(1, -1), c.to(resp.dtype), resp.permute(0, 2, 3, 1).reshape(K, -1))
    return flat.view(-1, h, w, out).permute(0, 3, 1, 2)                                      # (N, out, h, w)


class SeparableMaps(NamedTuple):
    """Maps that are outer products of two profiles, as Gaussian blobs are: map k is gy[:, k, :, None] * gx[:, k,
    None, :], for gy (N, K, H) along the rows and gx (N, K, W) along the columns."""

    gy: torch.Tensor
    gx: torch.Tensor

    def dense(self) -> torch.Tensor:
        """The maps themselves, (N, K, H, W)."""
        return self.gy[..., :, None] * self.gx[..., None, :]

    def to(self, dtype: torch.dtype) -> SeparableMaps:
        return SeparableMaps(self.gy.to(dtype), self.gx.to(dtype))


def _tap_profiles(conv: nn.Conv2d, g: torch.Tensor, dim: int) -> torch.Tensor:
    """Profiles g (N, K, S) along spatial dimension ``dim`` (0: rows, 1: columns) of ``conv``'s input -> (N, K, k,
    S_out): entry [.., j, o] is the input value that kernel tap j meets at output position o (zero in the padding),
    from the 1-D form of the convolution with one-hot kernels."""
    k = conv.kernel_size[dim]
    N, K, S = g.shape
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    taps = F.conv1d(g.reshape(N * K, 1, S), eye[:, None], stride=conv.stride[dim], padding=conv.padding[dim],
                    dilation=conv.dilation[dim])
    return taps.view(N, K, k, -1)


def _separable_part(conv: nn.Conv2d, maps: SeparableMaps, lo: int, hi: int) -> torch.Tensor:
    """``conv`` (not transposed, one group) applied to input channels ``lo:hi`` of its weight when they hold
    separable maps, without building them -> (N, out, h, w), channels-last. A map gy gx^T through a kernel w is
    sum_i (tap-i rows of gy) (w[i] * tap columns of gx)^T: one batched matrix product whose inner size is K times
    the kernel height, in place of a convolution over K full maps."""
    w = conv.weight[:, lo:hi]                                                            # (out, K, kh, kw)
    rows, cols = _tap_profiles(conv, maps.gy, 0), _tap_profiles(conv, maps.gx, 1)       # (N, K, kh, h), (N, K, kw, w)
    N, K, kh, h = rows.shape
    out, width = w.shape[0], cols.shape[-1]
    right = torch.einsum("okyx,nkxw->nkywo", w, cols).reshape(N, K * kh, width * out)
    flat = torch.bmm(rows.reshape(N, K * kh, h).transpose(1, 2), right)                   # (N, h, w * out)
    return flat.view(N, h, width, out).permute(0, 3, 1, 2)


def _maps_part(conv: nn.Conv2d | nn.ConvTranspose2d, maps: torch.Tensor | SeparableMaps, lo: int, hi: int
               ) -> torch.Tensor:
    """``conv`` applied to input channels ``lo:hi`` of its weight, which hold ``maps`` (no bias). Separable maps
    go through :func:`_separable_part` where the convolution is not transposed: there it is several times faster
    on CPUs than a convolution over the few full maps; a strided transposed convolution reads a map a quarter of
    its output's size, which a convolution over the built maps handles faster."""
    if isinstance(maps, SeparableMaps):
        if not isinstance(conv, nn.ConvTranspose2d) and conv.groups == 1:
            return _separable_part(conv, maps, lo, hi)
        maps = maps.dense().contiguous(memory_format=torch.channels_last)
    return _conv_part(conv, maps, lo, hi, bias=False)


def _dense(maps: torch.Tensor | SeparableMaps) -> torch.Tensor:
    return maps.dense() if isinstance(maps, SeparableMaps) else maps


def _four_taps(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The 3 taps of a conv along ``dim`` -> the 4 taps of the stride-2 transposed conv that applies them after
    a nearest 2x upsampling: output 2i takes w0 x[i-1] + (w1 + w2) x[i], output 2i+1 takes (w0 + w1) x[i] +
    w2 x[i+1]."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)


def _upsampled_conv(conv: nn.Conv2d, x: torch.Tensor, hi: int) -> torch.Tensor:
    """conv3x3 (padding 1, input channels ``:hi`` of ``conv``) of the nearest 2x upsampling of x, without upsampling."""
    w = _four_taps(_four_taps(conv.weight[:, :hi], 2), 3).transpose(0, 1)   # (in, out, 4, 4)
    return F.conv_transpose2d(x, w, stride=2, padding=1)


def _add_term(y: torch.Tensor, term: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
    """y (N, ...) + term (M, ...) where M divides N: term row i serves the N // M consecutive rows of y that start
    at row i * (N // M); plus ``own`` (N, ...), one row per row of y, if given."""
    if own is not None:   # in y's memory layout: adding across layouts is several times slower
        y = y + (own if own.is_contiguous(memory_format=torch.channels_last) or not y.is_contiguous() else
                 own.contiguous())
    if term.shape[0] == y.shape[0]:
        return y + term
    if y.shape[0] % term.shape[0]:
        raise ValueError(f"{y.shape[0]} decoded frames cannot share {term.shape[0]} skip terms")
    return (y.unflatten(0, (term.shape[0], -1)) + term[:, None]).flatten(0, 1)


class _SkipDecoder(nn.Module):
    """A decoder whose skip maps enter through convolutions over concatenations: see the module notes.

    Subclasses list ``_skip_convs()``, the (conv, x channels) of each such convolution in the order the skips are
    consumed, set ``_skip_channels`` (the skips' channels, finest first), ``cond_channels`` and ``map_channels``,
    and implement ``decode``. Each such convolution's input is [x, skip, coordinates (2), condition
    (cond_channels), maps (map_channels)], the last three only when ``cond_channels`` > 0: the maps are per-frame
    pictures made from the condition (see ``CVAE``), built at each stage's size by a function given with it.
    """

    SKIP_SIZES = (8, 16, 32, 64)   # map size at each skip convolution's input, coarsest first (64x64 frames)
    cond_channels = 0
    map_channels = 0

    def _skip_convs(self) -> list[tuple[nn.Module, int]]:
        raise NotImplementedError

    def _extra(self) -> int:
        return 2 + self.cond_channels + self.map_channels if self.cond_channels else 0

    def skip_terms(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Skip maps (M rows each, finest first) -> the skip parts of the decoder's convolutions (M rows each)."""
        return [_conv_part(conv, s, cx, cx + s.shape[1], bias=False)
                for (conv, cx), s in zip(self._skip_convs(), reversed(skips))]   # consumed coarsest first

    def cond_terms(self, c: torch.Tensor | None, maps=None) -> list[torch.Tensor | None]:
        """The condition's, the coordinates' and the maps' parts of the skip convolutions, (N, out, h, w) each,
        for the per-frame condition c (N, cond_channels) and ``maps(size)`` -> (N, map_channels, size, size), or
        :class:`SeparableMaps` of that many maps; Nones without a spatial condition."""
        if not self.cond_channels:
            return [None] * len(self.SKIP_SIZES)
        if c is None or c.shape[-1] != self.cond_channels:
            raise ValueError(f"this decoder takes a condition of {self.cond_channels} numbers per frame, got "
                             f"{None if c is None else tuple(c.shape)}")
        if self.map_channels and maps is None:
            raise ValueError(f"this decoder takes {self.map_channels} condition maps per frame, got none")
        lo = [cx + cs for (_, cx), cs in zip(self._skip_convs(), reversed(self._skip_channels))]
        terms = []
        for (conv, _), at, size in zip(self._skip_convs(), lo, self.SKIP_SIZES):
            term = _broadcast_part(conv, c, at, size)
            if self.map_channels:
                m = at + 2 + self.cond_channels
                with torch.autocast(c.device.type, enabled=False):   # few channels: faster in fp32 on CPUs
                    part = _maps_part(conv, maps(size).to(conv.weight.dtype), m, m + self.map_channels)
                term = term + part.to(term.dtype)
            terms.append(term)
        return terms

    def _cond_maps(self, c: torch.Tensor | None, size: int, maps=None) -> list[torch.Tensor]:
        """The extra input maps of ``forward_concat`` at one stage: coordinates, c broadcast, the maps."""
        if not self.cond_channels:
            return []
        return [coordinate_maps(c.shape[0], size, c), c[:, :, None, None].expand(-1, -1, size, size),
                *([_dense(maps(size))] if self.map_channels else [])]

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], c: torch.Tensor | None = None,
                maps=None) -> torch.Tensor:
        return self.decode(h, self.skip_terms(skips), self.cond_terms(c, maps))


def _vgg_block(widths: list[int]) -> nn.Sequential:
    """widths = [c_in, c_1, ..., c_k]: k conv3x3 layers."""
    return nn.Sequential(*[_conv_bn_act(a, b) for a, b in zip(widths[:-1], widths[1:])])


class VGGEncoder(nn.Module):
    point_skip = 1   # skip map that image points are found in (32x32)

    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self.point_channels = c2
        self.blocks = nn.ModuleList([
            _vgg_block([channels, c1, c1]),   # 64x64
            _vgg_block([c1, c2, c2]),         # 32x32
            _vgg_block([c2, c3, c3, c3]),     # 16x16
            _vgg_block([c3, c4, c4, c4]),     # 8x8
        ])
        self.pool = nn.MaxPool2d(2)
        self.out = ConvBNAct(nn.Conv2d(c4, g_dim, 4, 1, 0, bias=False), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        h = self.out(self.pool(x))  # (N, g_dim, 1, 1)
        return h.flatten(1), skips


class VGGDecoder(_SkipDecoder):
    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0, out_channels: int | None = None,
                 cond_channels: int = 0, map_channels: int = 0):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self._x_channels = (c4, c3, c2, c1)
        self._skip_channels = (c1, c2, c3, c4)
        self.cond_channels, self.map_channels = cond_channels, map_channels
        e = self._extra()
        self.inp = _deconv_bn_act(g_dim, c4, 4, 1, 0)  # 1x1 -> 4x4
        self.blocks = nn.ModuleList([
            _vgg_block([c4 * 2 + e, c4, c4, c3]),  # 8x8, after concat with the 8x8 skip
            _vgg_block([c3 * 2 + e, c3, c3, c2]),  # 16x16
            _vgg_block([c2 * 2 + e, c2, c1]),      # 32x32
        ])
        self.last = nn.Sequential(_conv_bn_act(c1 * 2 + e, c1),
                                  nn.ConvTranspose2d(c1, out_channels or channels, 3, 1, 1), nn.Sigmoid())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def _skip_convs(self) -> list[tuple[nn.Module, int]]:
        firsts = [block[0] for block in self.blocks] + [self.last[0]]   # each a ConvBNAct
        return [(first.conv, cx) for first, cx in zip(firsts, self._x_channels)]

    def decode(self, h: torch.Tensor, terms: list[torch.Tensor], cond_terms: list | None = None) -> torch.Tensor:
        """h (N, g_dim), ``skip_terms`` of M rows (M divides N) and ``cond_terms`` of N rows -> frames (N, C, H, W)."""
        x = self.inp(h[:, :, None, None])
        stages = [(block[0], block[1:]) for block in self.blocks] + [(self.last[0], self.last[1:])]
        own = cond_terms or [None] * len(stages)
        for (first, rest), cx, term, c in zip(stages, self._x_channels, terms, own):   # first: a ConvBNAct
            y = _add_term(_upsampled_conv(first.conv, x, cx), term, c)
            x = rest(first.after_conv(y))
        return x

    def forward_concat(self, h: torch.Tensor, skips: list[torch.Tensor], c: torch.Tensor | None = None,
                       maps=None) -> torch.Tensor:
        x = self.inp(h[:, :, None, None])
        for block, skip in zip(self.blocks, reversed(skips[1:])):
            x = block(torch.cat([self.up(x), skip, *self._cond_maps(c, skip.shape[-1], maps)], 1))
        return self.last(torch.cat([self.up(x), skips[0], *self._cond_maps(c, skips[0].shape[-1], maps)], 1))


class DCGANEncoder(nn.Module):
    point_skip = 1   # skip map that image points are found in (32x32)

    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self.point_channels = c1
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, c1, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)),  # 32x32
            _conv_bn_act(c1, c2, 4, 2, 1),  # 16x16
            _conv_bn_act(c2, c3, 4, 2, 1),  # 8x8
            _conv_bn_act(c3, c4, 4, 2, 1),  # 4x4
        ])
        self.out = ConvBNAct(nn.Conv2d(c4, g_dim, 4, 1, 0, bias=False), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = [x]  # the frame itself is the full-resolution skip: strided convolutions keep no 64x64 map
        for block in self.blocks[:-1]:
            x = block(x)
            skips.append(x)
        return self.out(self.blocks[-1](x)).flatten(1), skips


class DCGANDecoder(_SkipDecoder):
    def __init__(self, g_dim: int, channels: int = 3, width: float = 1.0, out_channels: int | None = None,
                 cond_channels: int = 0, map_channels: int = 0):
        super().__init__()
        c1, c2, c3, c4 = _widths(width)
        self._x_channels = (c3, c2, c1, c1)
        self._skip_channels = (channels, c1, c2, c3)
        self.cond_channels, self.map_channels = cond_channels, map_channels
        e = self._extra()
        self.inp = _deconv_bn_act(g_dim, c4, 4, 1, 0)  # 4x4
        self.blocks = nn.ModuleList([
            _deconv_bn_act(c4, c3),          # 8x8
            _deconv_bn_act(c3 * 2 + e, c2),  # 16x16, after concat with the 8x8 skip
            _deconv_bn_act(c2 * 2 + e, c1),  # 32x32
            _deconv_bn_act(c1 * 2 + e, c1),  # 64x64
        ])
        self.last = nn.Sequential(nn.Conv2d(c1 + channels + e, out_channels or channels, 3, 1, 1), nn.Sigmoid())

    def _skip_convs(self) -> list[tuple[nn.Module, int]]:
        convs = [block.conv for block in self.blocks[1:]] + [self.last[0]]
        return list(zip(convs, self._x_channels))

    def decode(self, h: torch.Tensor, terms: list[torch.Tensor], cond_terms: list | None = None) -> torch.Tensor:
        """h (N, g_dim), ``skip_terms`` of M rows (M divides N) and ``cond_terms`` of N rows -> frames (N, C, H, W)."""
        x = self.blocks[0](self.inp(h[:, :, None, None]))
        stages = [block.after_conv for block in self.blocks[1:]] + [self.last[1:]]
        own = cond_terms or [None] * len(stages)
        for rest, (conv, cx), term, c in zip(stages, self._skip_convs(), terms, own):
            x = rest(_add_term(_conv_part(conv, x, 0, cx, bias=True), term, c))
        return x

    def forward_concat(self, h: torch.Tensor, skips: list[torch.Tensor], c: torch.Tensor | None = None,
                       maps=None) -> torch.Tensor:
        x = self.blocks[0](self.inp(h[:, :, None, None]))
        for block, skip in zip(self.blocks[1:], reversed(skips[1:])):
            x = block(torch.cat([x, skip, *self._cond_maps(c, skip.shape[-1], maps)], 1))
        return self.last(torch.cat([x, skips[0], *self._cond_maps(c, skips[0].shape[-1], maps)], 1))


def build_backbone(name: str, *, g_dim: int, channels: int = 3, width: float = 1.0, out_channels: int | None = None,
                   cond_channels: int = 0, map_channels: int = 0) -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder; the decoder emits ``out_channels`` (default ``channels``) maps through a sigmoid and,
    with ``cond_channels`` > 0, takes a condition of that many numbers per frame spatially (see the module notes)."""
    if name == "vgg":
        return VGGEncoder(g_dim, channels, width), VGGDecoder(g_dim, channels, width, out_channels, cond_channels,
                                                                  map_channels)
    if name == "dcgan":
        return (DCGANEncoder(g_dim, channels, width),
                DCGANDecoder(g_dim, channels, width, out_channels, cond_channels, map_channels))
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
