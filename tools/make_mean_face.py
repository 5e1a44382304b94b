"""Regenerate `MEAN_FACE_68` in vfxswap/faces/align.py from real faces; prints the literal.

Run:  python tools/make_mean_face.py [--data ../shared/data]

Only permissively licensed faces of shared/data are used: the 8 SFHQ synthetic people (MIT),
the GRID frames of speakers s1 and brbk7n (CC BY 4.0) and the NASA astronaut portrait (public
domain). dlib's frontal detector finds the largest face in each image and its 68-point
predictor places the landmarks. Steps:
1. Generalised Procrustes: every shape is similarity-aligned (Umeyama) to the current mean,
   the mean is recomputed and renormalised, until it stops moving. Each identity weighs the
   same (a GRID speaker's 90 frames count as much as one SFHQ face), so the two video speakers
   do not make the template their own.
2. Made exactly symmetric: turned so the eye centres are level, then averaged with its mirror
   image (x flipped about the eyes' midpoint, indices swapped by `MIRROR_68`).
3. Normalised (68-point bounding box centred on 0, longer side 1) and rounded to 4 decimals.
Not run by the tests; paste its output over the constant when the recipe changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import cv2
import dlib
import numpy as np

from vfxswap.faces.align import MIRROR_68, umeyama

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# (group name, glob under the data folder): one group per identity, except SFHQ where each
# tile is a different person and becomes its own group.
SOURCES = [
    ("sfhq", "synthetic/sfhq_dev/*.jpg"),
    ("grid_s1", "identities/A_grid_s1/*.jpg"),
    ("grid_brbk7n", "identities/B_grid_brbk7n/*.jpg"),
    ("astronaut", "images/astronaut_nasa_pd.png"),
]


def predictor_path() -> Path:
    # Through the import system: the package's __init__ imports pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("face_recognition_models is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"


def detect(path: Path, detector, predictor) -> np.ndarray | None:
    """The largest face's (68, 2) landmarks in an image, or None when no face is found."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    boxes = detector(rgb, 1)
    if not boxes:
        return None
    box = max(boxes, key=lambda r: r.width() * r.height())
    shape = predictor(rgb, box)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def normalise(shape: np.ndarray) -> np.ndarray:
    """Centred on its centroid with unit RMS radius."""
    c = shape - shape.mean(0)
    return c / np.sqrt((c**2).sum(1).mean())


def procrustes_mean(shapes: np.ndarray, weights: np.ndarray, iterations: int = 100) -> np.ndarray:
    reference = normalise(shapes[0])  # fixes the frame's orientation; the mean's angle is free
    mean = reference
    for _ in range(iterations):
        aligned = np.stack([s @ m[:, :2].T + m[:, 2] for s in shapes for m in [umeyama(s, mean)]])
        new = (aligned * weights[:, None, None]).sum(0) / weights.sum()
        m = umeyama(new, reference)
        new = normalise(new @ m[:, :2].T)
        moved = np.abs(new - mean).max()
        mean = new
        if moved < 1e-12:
            break
    return mean


def symmetrise(shape: np.ndarray) -> np.ndarray:
    right_eye, left_eye = shape[36:42].mean(0), shape[42:48].mean(0)
    dx, dy = left_eye - right_eye
    a = -np.arctan2(dy, dx)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    s = shape @ rot.T
    cx = 0.5 * (s[36:42].mean(0)[0] + s[42:48].mean(0)[0])
    mirror = s[MIRROR_68].copy()
    mirror[:, 0] = 2 * cx - mirror[:, 0]
    return 0.5 * (s + mirror)


def unit_span(shape: np.ndarray) -> np.ndarray:
    lo, hi = shape.min(0), shape.max(0)
    s = (shape - 0.5 * (lo + hi)) / (hi - lo).max()
    # Symmetric about x = 0 up to rounding error: make it exact before rounding to 4 decimals.
    return np.stack([0.5 * (s[:, 0] - s[MIRROR_68, 0]), 0.5 * (s[:, 1] + s[MIRROR_68, 1])], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))

    shapes, groups = [], []
    for group, pattern in SOURCES:
        paths = sorted(args.data.glob(pattern))
        found = 0
        for path in paths:
            pts = detect(path, detector, predictor)
            if pts is None:
                continue
            shapes.append(pts)
            groups.append(f"{group}:{path.stem}" if group == "sfhq" else group)
            found += 1
        print(f"# {group}: {found} faces in {len(paths)} images", file=sys.stderr)
    if not shapes:
        sys.exit(f"no faces found under {args.data}")
    names, counts = np.unique(groups, return_counts=True)
    per_group = dict(zip(names, counts))
    weights = np.array([1.0 / per_group[g] for g in groups])
    print(f"# {len(shapes)} shapes, {len(names)} identities", file=sys.stderr)

    mean = procrustes_mean(np.stack(shapes), weights)
    mean = np.round(unit_span(symmetrise(mean)), 4) + 0.0  # + 0.0: no negative zeros

    print("MEAN_FACE_68 = np.array([")
    for i in range(0, 68, 4):
        row = ", ".join(f"[{x:7.4f}, {y:7.4f}]" for x, y in mean[i:i + 4])
        print(f"    {row},")
    print("], np.float64)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
