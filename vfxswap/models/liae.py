"""LIAE: one shared encoder and decoder; the code is split into two halves.

`inter_AB` is seen for both identities, `inter_B` only for B, and the decoder takes their channel
concatenation: A's code is [inter_AB, inter_AB], B's is [inter_AB, inter_B]. A swap builds the
code A's way (inter_AB twice), which follows B's lighting and expression more closely than DF.

Parts, in construction order (state-dict prefixes): "encoder", "inter_AB", "inter_B", "decoder".
The decoder reads C_in = 2 * ae_dims channels. A "B" pass runs both inters ("A" and the swap run
inter_AB once, so `flops_per_sample`, which counts the "B" pass, is ~2% high for them).
--init-from copies every part unless told: all of them serve both identities, as in
DeepFaceLab's pretrained LIAE.
"""

from __future__ import annotations

import torch

from vfxswap.models.config import ModelConfig
from vfxswap.models.nets import Decoder, FaceModel, Inter


class LIAE(FaceModel):
    """Shared encoder and decoder; code = [inter_AB, inter_AB] for A, [inter_AB, inter_B] for B."""

    arch = "liae"
    PARTS = ("encoder", "inter_AB", "inter_B", "decoder")
    SHARED_PARTS = PARTS
    INTERS_PER_PASS = 2

    @classmethod
    def decoder_in_channels(cls, config: ModelConfig) -> int:
        return 2 * config.ae_dims

    def _build_parts(self, config: ModelConfig, in_features: int) -> None:
        self.inter_AB = Inter(config, in_features)
        self.inter_B = Inter(config, in_features)
        self.decoder = Decoder(config, self.decoder_in_channels(config))

    def _code(self, feats: torch.Tensor, identity: str) -> torch.Tensor:
        ab = self.inter_AB(feats)
        return torch.cat([ab, ab if identity == "A" else self.inter_B(feats)], dim=1)

    def _decode(self, z: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(z)  # one decoder draws both identities; the code says which
