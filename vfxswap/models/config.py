"""What fixes a face model's shape (`ModelConfig`) and the presets; light, so job options and
`vfxswap model info` read it without torch. The networks themselves are in the architecture
modules the `ARCHITECTURES` registry names (`vfxswap.models`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vfxswap.errors import VfxSwapError
from vfxswap.faces import FACE_TYPES

VARIANT_LETTERS = "udt"


@dataclass
class ModelConfig:
    """Everything that fixes a model's shape; stored in the model manifest as `to_dict()`."""

    arch: str = "df"  # "df", "liae", "amp" or "sym"
    resolution: int = 96  # face crop side in pixels
    ae_dims: int = 128  # bottleneck width (code channels)
    e_dims: int = 32  # encoder base channels (doubled per level)
    d_dims: int = 32  # decoder base channels
    d_mask_dims: int = 16  # mask-branch base channels
    variants: str = ""  # letters from "udt", see module docstring
    face_type: str = "whole_face"
    max_dims: int = 0  # sym: the widest layer (widths double per level towards the code up to it); 0: no cap

    @property
    def levels(self) -> int:
        """Encoder down levels (and decoder up levels): 4, or 5 with variant "t"; sym goes one
        deeper (5 or 6: its convolutional code is R/32 or R/64 wide)."""
        return (5 if "t" in self.variants else 4) + (self.arch == "sym")

    @property
    def multiple(self) -> int:
        """The resolution must be a multiple of this: 2^levels, doubled with "d"."""
        return 2 ** self.levels * (2 if "d" in self.variants else 1)

    @property
    def code_res(self) -> int:
        """Side of the dense code grid r0 (inter's reshape), before inter's upscale."""
        return self.resolution // self.multiple

    @property
    def internal_res(self) -> int:
        """Resolution the decoder runs at before its output stage: R, or R/2 with "d"."""
        return self.resolution // 2 if "d" in self.variants else self.resolution

    def validate(self) -> None:
        """Raise VfxSwapError (one line naming the option) if any value is unusable."""
        from vfxswap.models import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise VfxSwapError(f"model option arch: {self.arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if not isinstance(self.variants, str) or any(c not in VARIANT_LETTERS for c in self.variants) \
                or len(set(self.variants)) != len(self.variants):
            raise VfxSwapError(f"model option variants: {self.variants!r} must be distinct letters from "
                               f"{VARIANT_LETTERS!r} (u: pixel-norm, d: double resolution, t: deeper)")
        for name in ("resolution", "ae_dims", "e_dims", "d_dims", "d_mask_dims"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise VfxSwapError(f"model option {name}: {value!r} must be a positive integer")
        if isinstance(self.max_dims, bool) or not isinstance(self.max_dims, int) or self.max_dims < 0:
            raise VfxSwapError(f"model option max_dims: {self.max_dims!r} must be 0 (no cap) or a positive integer")
        if self.max_dims and self.arch != "sym":
            raise VfxSwapError(f"model option max_dims: {self.max_dims} caps sym's widths; {self.arch} takes 0")
        if self.resolution % self.multiple:
            raise VfxSwapError(f"model option resolution: {self.resolution} must be a multiple of {self.multiple} "
                               f"for variants {self.variants!r} (16, x2 with 'd', x2 with 't'; sym 32)")
        if self.face_type not in FACE_TYPES:
            raise VfxSwapError(f"model option face_type: {self.face_type!r} is not one of {', '.join(FACE_TYPES)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error (a manifest from a newer vfxswap)."""
        if not isinstance(d, dict):
            raise VfxSwapError(f"model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VfxSwapError(f"model config: unknown option(s) {', '.join(unknown)}")
        config = cls(**d)
        config.validate()
        return config

    @property
    def name(self) -> str:
        """Short label such as "df-ud 256"."""
        return f"{self.arch}{'-' + self.variants if self.variants else ''} {self.resolution}"


# Presets (params for DF; LIAE in brackets). "quick" (13.4M [11.9M], 2.3 GFLOP/sample) is sized for
# CPU: forward+backward of a batch of 8 takes ~0.25 s fp32 on 2 Xeon cores; without "d" it is ~0.9 s.
# "sae-256" 83M [110M], 61 GFLOP. "sae-512" 246M [312M], 419 GFLOP; it adds "t": with "ud" alone the
# encoder's flat output at 512 px is 32*32*640 wide and inter's first dense layer would hold 335M weights.
PRESETS: dict[str, ModelConfig] = {
    "quick": ModelConfig("df", 96, ae_dims=128, e_dims=32, d_dims=32, d_mask_dims=16, variants="ud"),
    "sae-256": ModelConfig("df", 256, ae_dims=256, e_dims=64, d_dims=64, d_mask_dims=22, variants="ud"),
    "sae-512": ModelConfig("df", 512, ae_dims=512, e_dims=80, d_dims=80, d_mask_dims=26, variants="udt"),
    # sym (vfxswap.models.sym: no dense layer; a convolutional code of 4096 numbers), by bench/models.py: sym-256
    # 83M params, 34 GFLOP/sample; sym-512 84M, 42 GFLOP; sym-1024 45M, 54 GFLOP (sae-512: 246M, 419 GFLOP). The
    # CPU fp32 training step at batch 1 peaks at 1.6, 2.0 and 2.6 GiB (sae-256: 1.6); at 1024 px a third is the loss
    "sym-256": ModelConfig("sym", 256, ae_dims=64, e_dims=64, d_dims=64, d_mask_dims=16, variants="ud", max_dims=512),
    "sym-512": ModelConfig("sym", 512, ae_dims=64, e_dims=32, d_dims=32, d_mask_dims=8, variants="udt", max_dims=512),
    "sym-1024": ModelConfig("sym", 1024, ae_dims=16, e_dims=16, d_dims=16, d_mask_dims=4, variants="udt", max_dims=512),
    # DeepFaceLab's AMP defaults (224 px whole face, ae 256, e 64, d 64, mask 22): 60.4M params, DF with the same
    # dims 74.0M (AMP: one decoder, not two; the 25.7M bottleneck shared, 5.6M per inter); 47 GFLOP a B pass
    "amp-224": ModelConfig("amp", 224, ae_dims=256, e_dims=64, d_dims=64, d_mask_dims=22, variants="ud"),
}
