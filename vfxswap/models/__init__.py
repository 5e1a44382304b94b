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
})


def build_model(config, *, seed: int | None = None):
    """A new, initialised `FaceModel` of `config.arch` (see `vfxswap.models.nets.FaceModel`); `seed`
    fixes the initial weights without touching the global RNG."""
    config.validate()
    return ARCHITECTURES.get(config.arch)(config, seed=seed)
