"""AMP: one shared encoder and decoder, a code block per identity, and a morph factor that
dials a swap between the performer's own face and the source identity.

The structure follows DeepFaceLab's AMP model (its design, not its code; built here on the blocks
of `vfxswap.models.nets`):

- one encoder, and one dense bottleneck both identities share (DeepFaceLab ends its encoder with
  it; here it is a part of its own, "bottleneck": the first half of nets' `Inter`, dense to
  ae_dims ["u": pixel-norm]);
- one inter per identity, `inter_A` and `inter_B` (DeepFaceLab's inter_src and inter_dst): the
  second half of an `Inter` (dense to r0 * r0 * ae_dims, reshape, upscale), each reading the same
  bottleneck code and giving an (N, ae_dims, 2 r0, 2 r0) code;
- one decoder for both identities (nets' `Decoder`, C_in = ae_dims): the code alone says who.

Not taken: DeepFaceLab's own encoder and decoder layouts (residual blocks in the encoder, the
inter's upscale moved into the decoder): here they are nets' `Encoder` and `Decoder`, as DF and
LIAE use them, with the same variants; and its optimiser and losses (the trainer's, for every
architecture).

Codes (f = bottleneck output, C = ae_dims, c = a channel of the code, a = inter_A(f), b = inter_B(f)):

  B (training and B->B):  code = b                      B's own code.
  A in training:          code_c = a_c if u_c < p else b_c,  u_c ~ U(0, 1) per sample and channel,
                          p = `vfxswap train --morph` (DeepFaceLab's morph_factor, 0.1-0.5, typically
                          0.33). About a share p of A's code comes from A's own inter, the rest from
                          B's inter reading A's face: the decoder learns to draw B from B's codes and
                          A from codes that hold some of inter_A's channels, so it learns what each
                          channel taken from inter_A moves towards A.
  swap at morph t (render `--morph`, 0..1):
                          code_c = w_c a_c + (1 - w_c) b_c,  w_c = clamp(t C - c, 0, 1),
                          with a and b of the destination (B) face. The first t C channels come from
                          inter_A: DeepFaceLab slices the first int(t C) channels; here the channel at
                          the boundary is blended by the fraction left, so the dial is continuous (and
                          equal to DeepFaceLab's where t C is a whole number). Channels are
                          interchangeable (independent draws in training), so a prefix is as good as
                          any subset of that size.
                          t = 0 is B's own code: exactly B->B, the performer's face reconstructed.
                          t = 1 takes every channel from inter_A: the source identity in full (render's
                          default; DeepFaceLab's merger asks, suggesting 0.75). t = p is the mix
                          training saw most.
  A outside training:     the swap's mix at t = `train_morph` of A's own face (the expected training
                          code, without the draw), for previews of A->A.

Parts, in construction order (state-dict prefixes): "encoder", "bottleneck", "inter_A", "inter_B",
"decoder". A "B" pass runs one inter, so `flops_per_sample` counts it exactly (bottleneck + inter_B
= one nets `Inter`); A's passes and a swap at 0 < t < 1 run both inters (the dense and upscale of
one more inter). --init-from copies encoder, bottleneck and decoder unless told: the inters are the
identities' own (DeepFaceLab keeps those two when it re-initialises the inters after pretraining).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vfxswap.errors import VfxSwapError
from vfxswap.models import MORPHING_ARCHITECTURES, TRAIN_MORPH, TRAIN_MORPH_RANGE
from vfxswap.models.config import ModelConfig
from vfxswap.models.nets import Decoder, FaceModel, Upscale, pixel_norm


class Bottleneck(nn.Module):
    """(N, F) -> (N, ae_dims): the dense layer both identities share ["u": pixel-norm after it]."""

    def __init__(self, config: ModelConfig, in_features: int):
        super().__init__()
        self.pixel_norm = "u" in config.variants
        self.dense = nn.Linear(in_features, config.ae_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense(x)
        return pixel_norm(x) if self.pixel_norm else x


class IdentityInter(nn.Module):
    """(N, ae_dims) -> (N, ae_dims, 2 r0, 2 r0): dense to r0 * r0 * ae_dims, reshape, upscale."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ch, self.res = config.ae_dims, config.code_res
        self.dense = nn.Linear(config.ae_dims, self.res * self.res * self.ch)
        self.up = Upscale(self.ch, self.ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dense(x).reshape(-1, self.ch, self.res, self.res))


def morph_weights(morph: float, channels: int, device=None) -> torch.Tensor:
    """(1, C, 1, 1) float32 share of each code channel taken from inter_A at `morph`:
    clamp(morph * C - c, 0, 1) for channel c."""
    c = torch.arange(channels, device=device, dtype=torch.float32)
    return (float(morph) * channels - c).clamp(0.0, 1.0).view(1, channels, 1, 1)


def check_morph(morph: float, what: str = "morph") -> float:
    """A render morph as a float in 0..1, or VfxSwapError naming it."""
    try:
        value = float(morph)
    except (TypeError, ValueError):
        raise VfxSwapError(f"{what} {morph!r}: not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise VfxSwapError(f"{what} {morph}: must be from 0 (the performer's own face) to 1 (the full swap)")
    return value


class AMP(FaceModel):
    """Shared encoder, bottleneck and decoder; `inter_A` and `inter_B` per identity; `swap(x, "A",
    morph=t)` dials from B's own face (0) to A (1)."""

    arch = "amp"
    PARTS = ("encoder", "bottleneck", "inter_A", "inter_B", "decoder")
    SHARED_PARTS = ("encoder", "bottleneck", "decoder")
    INTERS_PER_PASS = 1
    train_morph: float = TRAIN_MORPH  # p above; the trainer sets it from --morph

    @classmethod
    def decoder_in_channels(cls, config: ModelConfig) -> int:
        return config.ae_dims

    def _build_parts(self, config: ModelConfig, in_features: int) -> None:
        self.bottleneck = Bottleneck(config, in_features)
        self.inter_A = IdentityInter(config)
        self.inter_B = IdentityInter(config)
        self.decoder = Decoder(config, self.decoder_in_channels(config))

    def _code(self, feats: torch.Tensor, identity: str) -> torch.Tensor:
        f = self.bottleneck(feats)
        if identity == "B":
            return self.inter_B(f)
        if not self.training:
            return self.morphed_code(f, self.train_morph)
        a, b = self.inter_A(f), self.inter_B(f)
        take_a = torch.rand(a.shape[0], a.shape[1], 1, 1, device=a.device) < self.train_morph
        return torch.where(take_a, a, b)

    def _decode(self, z: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(z)  # one decoder draws both identities; the code says which

    def morphed_code(self, f: torch.Tensor, morph: float) -> torch.Tensor:
        """Bottleneck output -> the code at `morph` (module docstring): inter_B's alone at 0,
        inter_A's alone at 1 (only the inter used runs), the first morph * C channels from inter_A
        between them."""
        morph = check_morph(morph)
        if morph == 0.0:
            return self.inter_B(f)
        if morph == 1.0:
            return self.inter_A(f)
        a, b = self.inter_A(f), self.inter_B(f)
        w = morph_weights(morph, a.shape[1], a.device).to(a.dtype)
        return w * a + (1.0 - w) * b

    def swap(self, x: torch.Tensor, to: str = "A", morph: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode x (the destination's faces) and decode it towards A by `morph`: 0 gives x's own
        B reconstruction (equal to `model(x, "B")`), 1 the full swap. `to="B"` is B's own
        reconstruction (no morph applies)."""
        if to == "B":
            return self(x, "B")
        feats = self.encode(x)
        return self.decode(self.morphed_code(self.bottleneck(feats), morph), to)


def train_morph(model: nn.Module, asked: float | None, saved: float | None = None) -> float | None:
    """The training morph factor for `model`, set on it: `--morph` when given, else the saved
    run's (on --resume), else TRAIN_MORPH. None for an architecture that does not morph; asking
    one for a morph is refused in one line."""
    arch = model.config.arch
    if arch not in MORPHING_ARCHITECTURES:
        if asked is not None:
            raise VfxSwapError(f"--morph {asked}: only an amp model morphs, and this one is {arch}; "
                               f"drop --morph, or train an amp model (--arch amp) in another folder")
        return None
    value = asked if asked is not None else saved if saved is not None else TRAIN_MORPH
    low, high = TRAIN_MORPH_RANGE
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise VfxSwapError(f"--morph {value}: must be from {low} to {high} (DeepFaceLab's range; 0.33 is typical)")
    model.train_morph = float(value)
    return float(value)
