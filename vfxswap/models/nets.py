"""What every face autoencoder is built from: the layers, the architecture-neutral `FaceModel`,
a patch discriminator for training, and the accounting (`count_params`, `flops_per_sample`).

An architecture (DF in `vfxswap.models.df`, LIAE in `vfxswap.models.liae`, registered in
`vfxswap.models.ARCHITECTURES`) is a `FaceModel` subclass: it names its parts, builds the ones
after the shared encoder, and says how a code is made for an identity and which decoder reads it.
One with an encoder of its own (`vfxswap.models.sym`: convolutional, no dense layer) overrides
`_build_encoder`, and one not counted by the formula below gives `forward_flops(config)`.

Shapes (R = config.resolution, e = e_dims, L = number of down levels, 4, or 5 with variant "t"):
  encoder  (N, 3, R, R) -> strided 5x5 convs e, 2e, 4e, 8e (, 8e) with LeakyReLU(0.1)
           -> (N, 8e, R/2^L, R/2^L) -> flatten (N, F)             ["u": pixel-norm of the flat code]
  inter    (N, F) -> Dense(ae_dims) ["u": pixel-norm] -> Dense(r0 * r0 * ae_dims) -> (N, ae_dims, r0, r0)
           -> upscale -> (N, ae_dims, 2 r0, 2 r0)       r0 = R / 2^L, halved again with variant "d"
  decoder  (N, C_in, 2 r0, 2 r0), C_in = the architecture's `decoder_in_channels(config)`
           rgb:  per level an upscale (3x3 conv to 4c, LeakyReLU(0.1), pixel_shuffle(2)) then a residual
                 block, c = 8d, 4d, 2d (8d first with "t"); then a 1x1 conv to 3, or with "d" a 3x3 conv to
                 12 channels and one more pixel_shuffle(2) (so everything inside runs at R/2), sigmoid.
           mask: the same upscales with d_mask_dims (no residual blocks; one extra level with "d"),
                 a 1x1 conv to 1, sigmoid.
  Outputs are float32 (N, 3, R, R) and (N, 1, R, R) in [0, 1], also under bf16 autocast.

State-dict keys start with the part name ("encoder.", then the architecture's own parts), so the
model store can copy or freeze parts by prefix. No layer is in-place, every shape is static, and
nothing in `forward` depends on data, which keeps channels_last, autocast and torch.compile happy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vfxswap.errors import VfxSwapError
from vfxswap.models import ARCHITECTURES
from vfxswap.models.config import ModelConfig

_LRELU = 0.1
_RES_LRELU = 0.2


# ----------------------------------------------------------------------------------------------
# building blocks


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) along `dim`: keeps the code's scale fixed (variant "u")."""
    return x * torch.rsqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)


class Upscale(nn.Module):
    """(N, C, H, W) -> (N, out, 2H, 2W): 3x3 conv to 4*out, LeakyReLU(0.1), pixel_shuffle(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pixel_shuffle(F.leaky_relu(self.conv(x), _LRELU))


def _pixel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """pixel_shuffle(2) that keeps channels_last: CUDA has no kernel of its own for it, and the
    generic one returns NCHW, so every next conv would transpose it back (forward and backward)."""
    out = F.pixel_shuffle(x, 2)
    return out.contiguous(memory_format=torch.channels_last) \
        if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else out


class ResBlock(nn.Module):
    """(N, C, H, W) -> same: two 3x3 convs with LeakyReLU(0.2), added to the input."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), _RES_LRELU))
        return F.leaky_relu(x + y, _RES_LRELU)


def _encoder_channels(config: ModelConfig) -> list[int]:
    mult = [1, 2, 4, 8] + ([8] if config.levels == 5 else [])
    return [config.e_dims * m for m in mult]


def _decoder_channels(base: int, config: ModelConfig) -> list[int]:
    mult = ([8] if config.levels == 5 else []) + [8, 4, 2]
    return [base * m for m in mult]


class Encoder(nn.Module):
    """(N, 3, R, R) -> (N, F) flat features, F = 8 e_dims * (R / 2^levels)^2."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pixel_norm = "u" in config.variants
        chans = _encoder_channels(config)
        self.downs = nn.ModuleList(nn.Conv2d(i, o, 5, stride=2, padding=2) for i, o in zip([3] + chans[:-1], chans))
        self.out_features = chans[-1] * (config.resolution // 2 ** config.levels) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.downs:
            x = F.leaky_relu(conv(x), _LRELU)
        x = torch.flatten(x, 1)
        return pixel_norm(x) if self.pixel_norm else x


class Inter(nn.Module):
    """(N, F) -> (N, ae_dims, 2 r0, 2 r0): two dense layers, reshape to r0 x r0, one upscale."""

    def __init__(self, config: ModelConfig, in_features: int):
        super().__init__()
        self.pixel_norm = "u" in config.variants
        self.ch, self.res = config.ae_dims, config.code_res
        self.dense1 = nn.Linear(in_features, config.ae_dims)
        self.dense2 = nn.Linear(config.ae_dims, self.res * self.res * self.ch)
        self.up = Upscale(self.ch, self.ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense1(x)
        if self.pixel_norm:
            x = pixel_norm(x)
        x = self.dense2(x).reshape(-1, self.ch, self.res, self.res)
        return self.up(x)


class Decoder(nn.Module):
    """(N, in_ch, 2 r0, 2 r0) -> rgb (N, 3, R, R), mask (N, 1, R, R), both sigmoid."""

    def __init__(self, config: ModelConfig, in_ch: int):
        super().__init__()
        self.double = "d" in config.variants
        chans = _decoder_channels(config.d_dims, config)
        self.ups = nn.ModuleList(Upscale(i, o) for i, o in zip([in_ch] + chans[:-1], chans))
        self.res = nn.ModuleList(ResBlock(c) for c in chans)
        self.rgb = nn.Conv2d(chans[-1], 12, 3, padding=1) if self.double else nn.Conv2d(chans[-1], 3, 1)
        mchans = _decoder_channels(config.d_mask_dims, config) + ([config.d_mask_dims] if self.double else [])
        self.mask_ups = nn.ModuleList(Upscale(i, o) for i, o in zip([in_ch] + mchans[:-1], mchans))
        self.mask = nn.Conv2d(mchans[-1], 1, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z
        for up, res in zip(self.ups, self.res):
            x = res(up(x))
        x = self.rgb(x)
        if self.double:
            x = _pixel_shuffle(x)
        m = z
        for up in self.mask_ups:
            m = up(m)
        m = self.mask(m)
        return torch.sigmoid(x.float()), torch.sigmoid(m.float())


# ----------------------------------------------------------------------------------------------
# the model


def _init_weights(module: nn.Module, generator: torch.Generator | None) -> None:
    """He-uniform for hidden layers (LeakyReLU 0.1), Xavier for output convs, zero biases.

    Drawn in module order from `generator` (or torch's global RNG), so a seed fixes the model.
    """
    for name, m in module.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or m.weight.is_meta:
            continue
        with torch.no_grad():
            if name.endswith(("rgb", "mask")) and isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, generator=generator)
            else:
                nn.init.kaiming_uniform_(m.weight, a=_LRELU, nonlinearity="leaky_relu", generator=generator)
            if m.bias is not None:
                m.bias.zero_()


class FaceModel(nn.Module):
    """A face autoencoder, whatever its architecture. `model(x, "A")` reconstructs x as identity A;
    `swap(x)` is B->A. Build one with `vfxswap.models.build_model(config, seed=...)`.

    An architecture subclasses this and sets `arch` (its `config.arch` name), `PARTS` (its direct
    submodules in construction order, "encoder" first: they are the state-dict prefixes),
    `SHARED_PARTS`, `INTERS_PER_PASS` and `decoder_in_channels`, and implements `_build_parts`,
    `_code` and `_decode`. `seed` makes the initial weights reproducible without touching torch's
    global RNG; without it the global RNG is used.
    """

    arch: ClassVar[str]  # the config.arch this class builds, as registered in ARCHITECTURES
    PARTS: ClassVar[tuple[str, ...]]  # every part, in construction (and initialisation) order
    SHARED_PARTS: ClassVar[tuple[str, ...]]  # the parts no one identity owns: what --init-from copies unless told
    INTERS_PER_PASS: ClassVar[int]  # inter networks one "B" pass runs (for `flops_per_sample`)

    @classmethod
    def decoder_in_channels(cls, config: ModelConfig) -> int:
        """Channels of the code a decoder reads (C_in in the module docstring)."""
        raise NotImplementedError

    def __init__(self, config: ModelConfig, *, seed: int | None = None):
        super().__init__()
        config.validate()
        if config.arch != self.arch:
            raise VfxSwapError(f"model option arch: {config.arch!r}, but {type(self).__name__} builds {self.arch!r}")
        self.config = dataclasses.replace(config)
        # with a seed, torch's default layer init must not consume the global RNG either
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.encoder = self._build_encoder(config)
            self._build_parts(config, self.encoder.out_features)
        if tuple(self._modules) != self.PARTS:
            raise TypeError(f"{type(self).__name__} built parts {tuple(self._modules)}, its PARTS say {self.PARTS}")
        _init_weights(self, None if seed is None else torch.Generator().manual_seed(int(seed)))

    # what an architecture defines
    def _build_encoder(self, config: ModelConfig) -> nn.Module:
        """The shared encoder; its `out_features` is passed to `_build_parts`. DF and LIAE use
        `Encoder` (flat features); an architecture with a spatial code (sym) builds its own."""
        return Encoder(config)

    def _build_parts(self, config: ModelConfig, in_features: int) -> None:
        """Create the parts after the encoder (whose flat output has `in_features`), in PARTS order."""
        raise NotImplementedError

    def _code(self, feats: torch.Tensor, identity: str) -> torch.Tensor:
        """(N, F) -> the decoder's input for `identity` (checked to be "A" or "B")."""
        raise NotImplementedError

    def _decode(self, z: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Code -> (rgb, mask) with the decoder that draws `identity`."""
        raise NotImplementedError

    # parts
    def part_names(self) -> list[str]:
        return list(self.PARTS)

    def shared_part_names(self) -> list[str]:
        """What --init-from copies unless told: the parts no one identity owns."""
        return list(self.SHARED_PARTS)

    @property
    def parts(self) -> dict[str, nn.Module]:
        """{part name: submodule}; a part's state-dict keys are prefixed with "<name>."."""
        return {name: getattr(self, name) for name in self.part_names()}

    # the three stages, public so a trainer can batch A and B through the shared encoder
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) -> (N, F) flat encoder features (sym keeps them spatial: (N, C, g, g))."""
        r = self.config.resolution
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, r, r):
            raise VfxSwapError(f"model input must be (N, 3, {r}, {r}) for resolution {r}, got {tuple(x.shape)}")
        return self.encoder(soft_limit(x))

    def code(self, feats: torch.Tensor, identity: str) -> torch.Tensor:
        """(N, F) -> the decoder's input for `identity`: (N, C_in, 2 r0, 2 r0)."""
        _check_identity(identity)
        return self._code(feats, identity)

    def decode(self, z: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Code -> (rgb (N, 3, R, R), mask (N, 1, R, R)) with the decoder that draws `identity`."""
        _check_identity(identity)
        return self._decode(z, identity)

    def forward(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct x (N, 3, R, R) as `identity` -> rgb (N, 3, R, R), mask (N, 1, R, R) in [0, 1]."""
        return self.decode(self.code(self.encode(x), identity), identity)

    def swap(self, x: torch.Tensor, to: str = "A") -> tuple[torch.Tensor, torch.Tensor]:
        """Encode x and decode it as identity `to` (the architecture decides how that code is built)."""
        return self(x, to)


INPUT_KNEE = 0.25  # how far past 0..1 the network's input may go (asymptotically)


def soft_limit(x: torch.Tensor) -> torch.Tensor:
    """Model-encoded pixels -> the range the network learned from: 0..1 (nearly all of a face) is
    passed unchanged; beyond it values roll off smoothly (tanh, slope 1 at the joins) towards
    -INPUT_KNEE and 1 + INPUT_KNEE. Why: a saturated out-of-gamut colour on an ACES2065-1 plate
    encodes near -85, which no training face came near; fed raw it drives the encoder anywhere.
    Highlights and negatives stay ordered, and the delivered plate is never touched by this."""
    k = INPUT_KNEE
    over, under = (x - 1.0).clamp_min(0.0), (-x).clamp_min(0.0)
    return x - over + k * torch.tanh(over / k) + under - k * torch.tanh(under / k)


def _check_identity(identity: str) -> None:
    if identity not in ("A", "B"):
        raise VfxSwapError(f"identity must be 'A' or 'B', got {identity!r}")


class PatchDiscriminator(nn.Module):
    """(N, 3, R, R) -> (N, 1, R / 2^layers, R / 2^layers) real/fake logits, one per patch.

    `layers` strided 4x4 convs (dims, 2 dims, 4 dims ...; LeakyReLU 0.2) then a 3x3 conv to one
    channel: each logit sees a patch about 2^(layers+2) px wide, so the GAN term sharpens texture
    without judging the whole face. Works at any R divisible by 2^layers.
    """

    def __init__(self, dims: int = 32, layers: int = 3, in_ch: int = 3, *, seed: int | None = None):
        super().__init__()
        chans = [dims * 2 ** min(i, 3) for i in range(layers)]
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.convs = nn.ModuleList(nn.Conv2d(i, o, 4, stride=2, padding=1)
                                       for i, o in zip([in_ch] + chans[:-1], chans))
            self.out = nn.Conv2d(chans[-1], 1, 3, padding=1)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=0.2, nonlinearity="leaky_relu", generator=gen)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.out(x).float()


# ----------------------------------------------------------------------------------------------
# accounting


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (each shared tensor once)."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def flops_per_sample(config: ModelConfig) -> int:
    """Forward FLOPs (2 x multiply-adds) of one sample: encoder + inter(s) + ONE decoder (rgb and mask).

    Counts convolutions and dense layers only (activations, pixel-norm, pixel_shuffle, sigmoid and
    biases are left out: a few percent at most). The architecture says how many inter networks a
    "B" pass runs (`INTERS_PER_PASS`) and how wide the decoder's input is (`decoder_in_channels`).
    A training step costs about 3x this per sample and per decoder pass; benchmarks divide by it to
    report achieved TFLOP/s.
    """
    config.validate()
    c = config
    arch = ARCHITECTURES.get(c.arch)
    if hasattr(arch, "forward_flops"):  # an architecture that counts its own (sym)
        return arch.forward_flops(config)
    macs = 0

    def conv(in_ch: int, out_ch: int, k: int, out_res: int) -> int:
        return in_ch * out_ch * k * k * out_res * out_res

    # encoder
    res, ch = c.resolution, 3
    for oc in _encoder_channels(c):
        res //= 2
        macs += conv(ch, oc, 5, res)
        ch = oc
    feats = ch * res * res
    # inter(s)
    r0 = c.code_res
    inter = feats * c.ae_dims + c.ae_dims * r0 * r0 * c.ae_dims + conv(c.ae_dims, 4 * c.ae_dims, 3, r0)
    macs += arch.INTERS_PER_PASS * inter
    in_ch = arch.decoder_in_channels(c)
    # decoder rgb
    res, ch = 2 * r0, in_ch
    for oc in _decoder_channels(c.d_dims, c):
        macs += conv(ch, 4 * oc, 3, res)  # upscale conv runs at the input resolution
        res *= 2
        macs += 2 * conv(oc, oc, 3, res)  # residual block
        ch = oc
    macs += conv(ch, 12, 3, res) if "d" in c.variants else conv(ch, 3, 1, res)
    # decoder mask
    res, ch = 2 * r0, in_ch
    mchans = _decoder_channels(c.d_mask_dims, c) + ([c.d_mask_dims] if "d" in c.variants else [])
    for oc in mchans:
        macs += conv(ch, 4 * oc, 3, res)
        res *= 2
        ch = oc
    macs += conv(ch, 1, 1, res)
    assert res == c.resolution and math.isfinite(macs)
    return 2 * macs
