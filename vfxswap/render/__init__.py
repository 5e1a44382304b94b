"""Render: a trained model over plates -> premultiplied RGBA EXR face layers (+ comp, preview).

The renderer is `vfxswap.render.render` (`render(RenderOptions)`, `Renderer`). This file is the
stage's colour-match registry and nothing heavier: `--color NAME` picks one. Each method is a
function `(pred, p, r) -> pred'` on model-encoded values (see `color_transfer`).
"""

from __future__ import annotations

from vfxswap.registry import Registry

COLOR_MATCHES = Registry("colour match", {
    "rct": "vfxswap.render.color_transfer:rct",  # per-channel mean and spread (Reinhard)
    "lct": "vfxswap.render.color_transfer:lct",  # 3x3 covariance
    "mkl": "vfxswap.render.color_transfer:mkl",  # least-change covariance (Monge-Kantorovich)
    "idt": "vfxswap.render.color_transfer:idt",  # iterative distribution transfer
    "sot": "vfxswap.render.color_transfer:sot",  # sliced optimal transport
    "none": "vfxswap.render.color_transfer:none",  # the prediction as it is
})
