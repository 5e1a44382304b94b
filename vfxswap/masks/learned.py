"""Maskers built on the model's learned mask (the decoder's mask branch) and the segmentation matte."""

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


def seg_masker(face) -> np.ndarray:
    """`--mask seg`: the segmentation masker's matte (`masks.seg`), which keeps occluders out."""
    if face.seg is None:
        raise ValueError("--mask seg needs the segmentation masker's matte")
    return np.asarray(face.seg, np.float32)


def seg_learned_masker(face) -> np.ndarray:
    """`--mask seg*learned`: the segmentation matte times the model's learned mask (each cuts what it knows)."""
    return (seg_masker(face) * np.asarray(face.learned, np.float32)).astype(np.float32)
