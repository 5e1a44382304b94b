"""Render: a trained model over plates -> premultiplied RGBA EXR face layers (+ previews)."""

from vfxswap.render.render import RenderOptions, RenderReport, render

__all__ = ["RenderOptions", "RenderReport", "render"]
