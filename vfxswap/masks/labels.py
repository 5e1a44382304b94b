"""Mask labels: what a person or a compositor's matte says the face is, as a float matte.

A label is stored per face in the faceset (`Faceset.labels`): include and exclude polygons in
aligned-crop pixels, in drawing order, over an optional imported matte. It becomes a matte so:

    start: the imported matte when there is one; else, when the label has no include polygon
           (an artist only cut a hand out), the landmark hull; else nothing (0)
    then each polygon in drawing order: include paints 1, exclude paints 0

so an exclude drawn after an include cuts into it, and an include drawn later takes a part back,
as in DeepFaceLab's XSeg editor. Polygons are filled antialiased (a 4x finer grid, area-averaged),
with pixel centres at integer coordinates like every other crop-space coordinate here.

Mattes on disk (`read_matte`, `write_matte`): one-channel half EXRs (`Y`) at the faceset's size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vfxswap.errors import VfxSwapError

MODES = ("include", "exclude")
_SS = 4  # supersampling of polygon fills
_SHIFT = 4  # sub-pixel bits for cv2 polygon filling


def polygon(mode: str, points) -> dict:
    """One label polygon as stored: {"mode": include|exclude, "points": [[x, y], ...]}."""
    if mode not in MODES:
        raise VfxSwapError(f"polygon mode {mode!r}: include or exclude")
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.isfinite(pts).all():
        raise VfxSwapError("a label polygon needs at least 3 finite points")
    return {"mode": mode, "points": pts.tolist()}


def fill_polygons(polygons: list[dict], size: int, base: np.ndarray | None = None) -> np.ndarray:
    """Paint `polygons` over `base` (zeros when None): (size, size) float32 in 0..1, antialiased."""
    out = np.zeros((size, size), np.float32) if base is None else np.array(base, np.float32, copy=True)
    for poly in polygons:
        pts = np.asarray(poly["points"], np.float64).reshape(-1, 2)
        if len(pts) < 3:
            continue
        fine = np.zeros((size * _SS, size * _SS), np.uint8)
        # fine-grid pixel centres sit at (i + 0.5) / ss - 0.5 in crop pixels
        fixed = np.round((pts * _SS + (_SS - 1) / 2) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(fine, [fixed], 255, lineType=cv2.LINE_8, shift=_SHIFT)
        cover = cv2.resize(fine, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        value = 1.0 if poly["mode"] == "include" else 0.0
        out += cover * (value - out)
    return np.clip(out, 0.0, 1.0)


def label_matte(label: dict, size: int, *, folder: str | Path, hull: np.ndarray | None = None) -> np.ndarray:
    """A stored label (see the module docstring) as a (size, size) float32 matte. `folder`: the
    faceset's (an imported matte's path is relative to it); `hull`: the face's landmark hull, the
    start of a label made only of exclusions."""
    polygons = label.get("polygons") or []
    base = None
    if label.get("matte"):
        base = read_matte(Path(folder) / label["matte"], size)
    elif not any(p["mode"] == "include" for p in polygons) and hull is not None:
        base = hull
    return fill_polygons(polygons, size, base)


def read_matte(path: str | Path, size: int | None = None) -> np.ndarray:
    """A matte file written by `write_matte`: (S, S) float32 0..1, S checked against `size`."""
    from vfxswap.plates.image import read_image

    image = read_image(path)
    if "Y" not in image.channels:
        raise VfxSwapError(f"{path}: not a vfxswap matte (no channel Y)")
    matte = np.ascontiguousarray(image.on_display_window()[:, :, image.channels.index("Y")], np.float32)
    if size is not None and matte.shape != (size, size):
        raise VfxSwapError(f"{path}: {matte.shape[1]}x{matte.shape[0]} pixels, the faceset's faces are {size}")
    return np.clip(np.nan_to_num(matte), 0.0, 1.0)


def write_matte(path: str | Path, matte: np.ndarray, **attributes) -> None:
    """Write a (S, S) matte as a one-channel half EXR, atomically; `attributes` go in its header."""
    from vfxswap.plates.image import Image, write_image

    image = Image.from_array(np.clip(np.asarray(matte, np.float32), 0.0, 1.0)[..., None], ("Y",))
    for key, value in attributes.items():
        image.set_attribute(f"vfxswap:{key}", value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_image(path, image, dtype="half")
