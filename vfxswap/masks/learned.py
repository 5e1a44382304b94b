"""Maskers built on the model's learned mask (the decoder's mask branch)."""

from __future__ import annotations

import numpy as np

from vfxswap.masks.hull import hull_masker


def learned_masker(face) -> np.ndarray:
    """`--mask learned`: the model's mask as it is."""
    return np.asarray(face.learned, np.float32)


def product_masker(face) -> np.ndarray:
    """`--mask product` (the default): the learned mask inside the landmark hull, so a model that
    spills onto hair or background is cut at the face, and one that learned an occluder keeps it out."""
    return (np.asarray(face.learned, np.float32) * hull_masker(face)).astype(np.float32)
