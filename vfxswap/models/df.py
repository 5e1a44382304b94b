"""DF ("direct face"): one shared encoder and bottleneck ("inter"), one decoder per identity.

The swap B->A decodes B's code with A's decoder, so it keeps A's likeness strongly.

Parts, in construction order (state-dict prefixes): "encoder", "inter", "decoder_A", "decoder_B".
The decoders read the inter's output as is: C_in = ae_dims. --init-from copies "encoder" and
"inter" unless told: the decoders are A's and B's own.
"""

from __future__ import annotations

import torch

from vfxswap.models.config import ModelConfig
from vfxswap.models.nets import Decoder, FaceModel, Inter


class DF(FaceModel):
    """Shared encoder + inter; `decoder_A` draws A, `decoder_B` draws B."""

    arch = "df"
    PARTS = ("encoder", "inter", "decoder_A", "decoder_B")
    SHARED_PARTS = ("encoder", "inter")
    INTERS_PER_PASS = 1

    @classmethod
    def decoder_in_channels(cls, config: ModelConfig) -> int:
        return config.ae_dims

    def _build_parts(self, config: ModelConfig, in_features: int) -> None:
        self.inter = Inter(config, in_features)
        self.decoder_A = Decoder(config, self.decoder_in_channels(config))
        self.decoder_B = Decoder(config, self.decoder_in_channels(config))

    def _code(self, feats: torch.Tensor, identity: str) -> torch.Tensor:
        return self.inter(feats)  # the same code for both identities

    def _decode(self, z: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.decoder_A if identity == "A" else self.decoder_B)(z)
