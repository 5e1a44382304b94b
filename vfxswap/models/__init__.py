"""Face models: network definitions (`nets`) and the on-disk model folder (`store`).

Import the networks from here: `from vfxswap.models import ModelConfig, PRESETS, FaceModel`.
"""

from vfxswap.models.nets import PRESETS, FaceModel, ModelConfig, PatchDiscriminator

__all__ = ["PRESETS", "FaceModel", "ModelConfig", "PatchDiscriminator"]
