"""Face models: the architectures (registry below; one module each, `df`, `liae`), their
configuration and presets (`config`), shared building blocks and the `FaceModel` base (`nets`),
and the on-disk model folder: its file format (`fileformat`), saving and loading (`store`),
optimizer and RNG state (`checkpoint`), `--init-from` (`transfer`) and `model info` (`info`).

This file is the stage's registry and imports nothing heavy: options list the architectures
without loading torch. `build_model(config)` makes the one a config names.
"""

from __future__ import annotations

from vfxswap.registry import Registry

ARCHITECTURES = Registry("model architecture", {
    "df": "vfxswap.models.df:DF",  # shared encoder + inter, one decoder per identity
    "liae": "vfxswap.models.liae:LIAE",  # shared encoder + decoder, inter_AB and B's own inter_B
    "amp": "vfxswap.models.amp:AMP",  # shared encoder + decoder, inter_A and inter_B, swap dialled by a morph
    "sym": "vfxswap.models.sym:Sym",  # DF with a convolutional code: no dense layer, for 512-1024 px
})
# the architectures whose swap takes a morph factor (`swap(x, "A", morph=t)`; train and render --morph),
# and train --morph's default and range (DeepFaceLab's; see vfxswap.models.amp)
MORPHING_ARCHITECTURES = frozenset({"amp"})
TRAIN_MORPH, TRAIN_MORPH_RANGE = 0.33, (0.1, 0.5)


def build_model(config, *, seed: int | None = None):
    """A new, initialised `FaceModel` of `config.arch` (see `vfxswap.models.nets.FaceModel`); `seed`
    fixes the initial weights without touching the global RNG."""
    config.validate()
    return ARCHITECTURES.get(config.arch)(config, seed=seed)
