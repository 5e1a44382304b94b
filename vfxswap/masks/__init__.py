"""Face masks: what part of the aligned face the layer keeps.

This file is the stage's registry and nothing heavier. A masker takes one `MaskInput` (a face in
its aligned square) and returns its (R, R) float32 matte in 0..1; `--mask NAME` picks one. The
landmark hulls themselves (also drawn for facesets and quality checks) are in `hull`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vfxswap.registry import Registry

MASKERS = Registry("mask", {
    "product": "vfxswap.masks.learned:product_masker",  # learned x hull: the model's matte, kept inside the face
    "learned": "vfxswap.masks.learned:learned_masker",  # the model's own mask (follows hair and occluders it learned)
    "hull": "vfxswap.masks.hull:hull_masker",  # the landmarks' extended hull (forehead included)
    "seg": "vfxswap.masks.learned:seg_masker",  # the segmentation masker's matte (occluders kept out)
    "seg*learned": "vfxswap.masks.learned:seg_learned_masker",  # seg x the model's learned mask
})

NEEDS_SEG = ("seg", "seg*learned")  # maskers that need a segmentation masker run on the face


@dataclass
class MaskInput:
    """What a masker sees of one face, everything in its aligned square of side R."""

    image: Any  # (R, R, 3) float32: the plate's face in the model encoding
    points: Any  # (68, 2) float64: its landmarks in crop pixels
    learned: Any  # (R, R) float32: the model's mask for it, 0..1 (ones for passthrough)
    seg: Any = None  # (R, R) float32: the segmentation masker's matte, when the masker needs one
