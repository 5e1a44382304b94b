"""sym: a symmetric, fully convolutional DF for high resolutions (the `sym-256`, `sym-512` and
`sym-1024` presets).

DF and LIAE squeeze the encoder's flattened map through a dense layer, whose weights grow with the
square of the resolution (at 1024 px, even with "t": 32 x 32 x 8e inputs). sym keeps the code
spatial: the encoder goes down until the map is R/32 (R/64 with variant "t") on a side, and a
narrow convolutional bottleneck there (`ae_dims` channels per position) is the only information
path from the face to a decoder. No layer's weights depend on R; R only sets how many levels
there are, so parameters grow slowly with resolution while activations, the cost at 1024 px,
shrink level by level: each level halves the side and doubles the width (up to `max_dims`), so
near the face a level holds few channels and deep inside few pixels.

It is DF in structure, so everything DF has works unchanged: a shared "encoder" and "inter" (the
bottleneck), one decoder per identity ("decoder_A", "decoder_B"), B->A decodes B's code with A's
decoder, --init-from copies encoder and inter unless told, --freeze takes any part, and the model
store, the trainer and render see an ordinary `FaceModel`.

Shapes (R = resolution, L = config.levels = 5, or 6 with "t"; g = R / 2^L the code grid;
w(base, k) = min(base * 2^k, max_dims), max_dims 0 meaning no cap):
  encoder  (N, 3, R, R) -> L levels, level k = 3x3 stride-2 conv to w(e_dims, k), LeakyReLU(0.1),
           residual block -> (N, w(e_dims, L-1), g, g). Nothing is flattened.
  inter    at g x g: 2 residual blocks -> 1x1 conv to ae_dims channels: the code (N, ae_dims, g, g)
           ["u": pixel-norm over its channels at each position] -> 3x3 conv to C_in, LeakyReLU(0.1)
           -> 2 residual blocks -> (N, C_in, g, g), C_in = w(d_dims, U), U = L ("d": L - 1).
  decoder  U levels, each an upscale (3x3 conv to 4c, LeakyReLU(0.1), pixel_shuffle(2)) and a
           residual block, c = w(d_dims, U-1) ... w(d_dims, 0): the decoder ends at R (with "d" at
           R/2, where a 3x3 conv to 12 channels and one pixel_shuffle(2) make the R x R image, so
           nothing in the decoder runs at full resolution), sigmoid.
           mask: the same upscales with w(d_mask_dims, .) and no residual blocks, then a 1x1 conv
           to 1 (with "d": a 3x3 conv to 4 and a pixel_shuffle(2)), sigmoid.
  Outputs are float32 (N, 3, R, R) and (N, 1, R, R) in [0, 1], also under bf16 autocast.

The presets keep channels x side constant at the outer levels (8192 at the decoder's last level in
each: 16 channels at 512 px in sym-1024, 32 at 256 in sym-512, 64 at 128 in sym-256), so every
uncapped level costs about the same FLOPs, activations shrink by half per level inwards, and the
levels nearest the code, capped at max_dims, hold most of the weights. Their code is 4096 numbers
(8 x 8 x 64, 8 x 8 x 64, 16 x 16 x 16), 8 to 16 times a DF code (ae_dims 256-512): a wider code
keeps more of B's expression and lighting and risks more of B's identity in a swap; --ae-dims is
the knob, and the right value is a quality question (bench/quality.py), not settled here.

Growing (not implemented yet; how a later `--grow 256,512,1024` fits): the encoder's levels are a
list from the face inwards and the decoder's a list from the code outwards, and no weight depends
on R, so the network of a lower stage is a suffix of the one list and a prefix of the other, with
the final model's own weights and state-dict keys. Trained at 256 px, a sym-1024 model runs the
encoder levels whose input is 256 px or less (the same 16 x 16 code) and the decoder up to its
256 px level (128 px with "d"). What a stage adds is a way in and out at its size: a "from-RGB"
stem (a 1x1 conv from 3 channels to the width of the first level it runs) and a to-RGB and
to-mask head per decoder (the final heads' shape, at that level's width). Going to the next stage
adds one outer level on each side and fades it in over some iterations, a from 0 to 1: the
output is (1 - a) * 2x-upsampled(previous head) + a * new head, and the first level it kept sees
(1 - a) * previous stem(2x-downsampled input) + a * new level(input). The stems and heads would
be parts of their own ("stems", "heads_A", "heads_B"), dropped when the last stage is reached, so
a grown model saves, loads, renders and --init-from's like one trained at full size throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfxswap.models.config import ModelConfig
from vfxswap.models.nets import _LRELU, FaceModel, ResBlock, Upscale, _pixel_shuffle, pixel_norm

INTER_BLOCKS = 2  # residual blocks on each side of the code


def widths(base: int, n: int, cap: int) -> list[int]:
    """[w(base, 0), ..., w(base, n-1)]: base doubled per level, capped at `cap` (0: no cap)."""
    return [min(base << k, cap) if cap else base << k for k in range(n)]


def decoder_levels(config: ModelConfig) -> int:
    """U: the decoder's upscales from the code grid, L, or L - 1 with "d" (it ends at R/2)."""
    return config.levels - ("d" in config.variants)


class SymEncoder(nn.Module):
    """(N, 3, R, R) -> (N, w(e_dims, L-1), g, g): strided convs and residual blocks, kept spatial."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        chans = widths(config.e_dims, config.levels, config.max_dims)
        self.downs = nn.ModuleList(nn.Conv2d(i, o, 3, stride=2, padding=1) for i, o in zip([3] + chans[:-1], chans))
        self.res = nn.ModuleList(ResBlock(c) for c in chans)
        self.out_features = chans[-1]  # channels: the map stays (g, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, res in zip(self.downs, self.res):
            x = res(F.leaky_relu(down(x), _LRELU))
        return x


class SymInter(nn.Module):
    """(N, in_ch, g, g) -> (N, out_ch, g, g) through the ae_dims-channel code; see the module docstring."""

    def __init__(self, config: ModelConfig, in_ch: int, out_ch: int):
        super().__init__()
        self.pixel_norm = "u" in config.variants
        self.pre = nn.ModuleList(ResBlock(in_ch) for _ in range(INTER_BLOCKS))
        self.to_code = nn.Conv2d(in_ch, config.ae_dims, 1)
        self.from_code = nn.Conv2d(config.ae_dims, out_ch, 3, padding=1)
        self.post = nn.ModuleList(ResBlock(out_ch) for _ in range(INTER_BLOCKS))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck itself: (N, ae_dims, g, g)."""
        for block in self.pre:
            x = block(x)
        x = self.to_code(x)
        return pixel_norm(x) if self.pixel_norm else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_code(self.code(x)), _LRELU)
        for block in self.post:
            x = block(x)
        return x


class SymDecoder(nn.Module):
    """(N, in_ch, g, g) -> rgb (N, 3, R, R), mask (N, 1, R, R), both sigmoid."""

    def __init__(self, config: ModelConfig, in_ch: int):
        super().__init__()
        self.double = "d" in config.variants
        n = decoder_levels(config)
        chans = widths(config.d_dims, n, config.max_dims)[::-1]  # code outwards
        self.ups = nn.ModuleList(Upscale(i, o) for i, o in zip([in_ch] + chans[:-1], chans))
        self.res = nn.ModuleList(ResBlock(c) for c in chans)
        self.rgb = nn.Conv2d(chans[-1], 12, 3, padding=1) if self.double else nn.Conv2d(chans[-1], 3, 1)
        mchans = widths(config.d_mask_dims, n, config.max_dims)[::-1]
        self.mask_ups = nn.ModuleList(Upscale(i, o) for i, o in zip([in_ch] + mchans[:-1], mchans))
        self.mask = nn.Conv2d(mchans[-1], 4, 3, padding=1) if self.double else nn.Conv2d(mchans[-1], 1, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z
        for up, res in zip(self.ups, self.res):
            x = res(up(x))
        x = self.rgb(x)
        m = z
        for up in self.mask_ups:
            m = up(m)
        m = self.mask(m)
        if self.double:
            x, m = _pixel_shuffle(x), _pixel_shuffle(m)
        return torch.sigmoid(x.float()), torch.sigmoid(m.float())


class Sym(FaceModel):
    """Shared convolutional encoder + inter; `decoder_A` draws A, `decoder_B` draws B (as DF)."""

    arch = "sym"
    PARTS = ("encoder", "inter", "decoder_A", "decoder_B")
    SHARED_PARTS = ("encoder", "inter")
    INTERS_PER_PASS = 1

    @classmethod
    def decoder_in_channels(cls, config: ModelConfig) -> int:
        n = decoder_levels(config)
        return widths(config.d_dims, n + 1, config.max_dims)[n]

    @classmethod
    def code_grid(cls, config: ModelConfig) -> int:
        """g: the side of the convolutional code, R / 2^levels."""
        return config.resolution >> config.levels

    def _build_encoder(self, config: ModelConfig) -> nn.Module:
        return SymEncoder(config)

    def _build_parts(self, config: ModelConfig, in_features: int) -> None:
        self.inter = SymInter(config, in_features, self.decoder_in_channels(config))
        self.decoder_A = SymDecoder(config, self.decoder_in_channels(config))
        self.decoder_B = SymDecoder(config, self.decoder_in_channels(config))

    def _code(self, feats: torch.Tensor, identity: str) -> torch.Tensor:
        return self.inter(feats)  # the same code for both identities

    def _decode(self, z: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.decoder_A if identity == "A" else self.decoder_B)(z)

    @classmethod
    def forward_flops(cls, config: ModelConfig) -> int:
        """`nets.flops_per_sample` for sym: 2 x the multiply-adds of every convolution one "B" pass
        runs (encoder, inter, one decoder with its mask), counted from the layers themselves on
        the meta device (nothing is allocated or computed)."""
        total = 0

        def hook(m: nn.Conv2d, inputs, out: torch.Tensor) -> None:
            nonlocal total
            kh, kw = m.kernel_size
            total += 2 * (out.numel() // out.shape[0]) * (m.in_channels // m.groups) * kh * kw

        r = config.resolution
        with torch.device("meta"):
            model = cls(config)
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.register_forward_hook(hook)
            with torch.no_grad():
                model(torch.empty(1, 3, r, r), "B")
        return total
