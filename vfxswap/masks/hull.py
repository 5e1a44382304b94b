"""Face masks from 68 iBUG landmarks, drawn in whatever pixel space the landmarks are in
(the plate, or an aligned crop).

- `components`: the union of convex hulls of face parts (two cheek halves, nose, mouth and
  chin, the brow and eye band). One hull of the whole outline would fill the background
  between the nose and the far cheek on turned heads; parts keep those concavities open.
- `extended`: one hull of the outline with the brows lifted to cover the forehead, which the
  68 points stop short of. A swapped face needs the forehead, or a seam shows at the brows.

Edges are antialiased by supersampling: the parts are filled as one binary union on a grid
4x finer (2x for faces over 2K pixels across), then area-averaged down. Drawing each part
with antialiased edges instead would leave a faint seam wherever two parts share an edge.
Pixel centres are at integer coordinates, as in OpenCV and dlib. Work is confined to the
face's bounding box, so a mask on a 4K plate costs about what it costs on the crop.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("components", "extended")

# Face parts for `components`, 0-based iBUG indices. Each cheek half runs from the ear along
# the jaw to the chin and back up the midline to the nasion; the brow band closes the glabella
# between the halves; nose and mouth parts cover what sticks out past the midline in profile.
PARTS = (
    tuple(range(0, 9)) + tuple(range(17, 22)) + (27,),        # right cheek half
    tuple(range(8, 17)) + tuple(range(22, 27)) + (27,),       # left cheek half
    tuple(range(17, 27)) + tuple(range(36, 48)) + (27, 28),   # brows, eyes, glabella
    tuple(range(27, 36)),                                     # nose
    tuple(range(31, 36)) + tuple(range(48, 60)) + tuple(range(5, 12)),  # mouth and chin
)

OUTLINE = tuple(range(0, 27))  # jaw + brows

# How far `extended` lifts the brows up the face, as a fraction of the distance from the brow
# centre to the nose base (33). In adult faces the forehead (brows to hairline) is about as
# tall as the brow-to-nose-base span (the "facial thirds"); a little less keeps the hull's
# corners at the outer brows out of the temple hair. 0.9 gave the best IoU against
# FaceSynthetics' skin+features segmentation (0.8 to 1.0 are within 0.005 of it).
FOREHEAD_LIFT = 0.9

_SHIFT = 4  # sub-pixel bits for cv2 polygon filling on the fine grid
_SUPERSAMPLE_LIMIT = 2048  # ROI side (pixels) above which the fine grid is 2x instead of 4x


def _check(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or Inf")
    return pts


def forehead_points(landmarks: np.ndarray, lift: float = FOREHEAD_LIFT) -> np.ndarray:
    """The 10 brow points (17-26) moved up the face to estimate the top of the forehead: (10, 2).

    "Up" is the face's own axis, from the chin (8) to the nasion (27), so tilted heads lift
    along the tilt. The lift is `lift` times the distance from the brow centre to the nose base.
    """
    pts = _check(landmarks)
    up = pts[27] - pts[8]
    norm = float(np.hypot(*up))
    if norm < 1e-6:
        return pts[17:27].copy()
    dist = float(np.hypot(*(pts[17:27].mean(0) - pts[33])))
    return pts[17:27] + (lift * dist / norm) * up


def hull_polygons(landmarks: np.ndarray, kind: str = "components") -> list[np.ndarray]:
    """The convex polygons whose union is the mask, each (k, 2) float64 in pixel coordinates."""
    pts = _check(landmarks)
    if kind == "components":
        return [cv2.convexHull(pts[list(p)].astype(np.float32))[:, 0].astype(np.float64) for p in PARTS]
    if kind == "extended":
        outline = np.concatenate([pts[list(OUTLINE)], forehead_points(pts)])
        return [cv2.convexHull(outline.astype(np.float32))[:, 0].astype(np.float64)]
    raise ValueError(f"unknown hull kind {kind!r}; expected one of {', '.join(KINDS)}")


def _raster_inset(poly: np.ndarray) -> np.ndarray | None:
    """`poly` (fine-grid pixels, convex, ordered) with every edge moved inward by half a pixel.

    cv2's polygon fill rounds span ends to the nearest pixel and includes both, which covers
    about half a pixel more than the polygon on each side; the inset cancels that, so areas
    and edge positions come out unbiased (to ~0.01 pixel after downsampling). None when the
    polygon is too thin to survive.
    """
    keep = np.ones(len(poly), bool)
    keep[1:] = np.hypot(*np.diff(poly, axis=0).T) > 1e-9
    p = poly[keep]
    if len(p) > 1 and np.hypot(*(p[0] - p[-1])) <= 1e-9:
        p = p[:-1]
    if len(p) < 3:
        return None
    e = np.roll(p, -1, axis=0) - p
    area2 = float(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]))
    if abs(area2) < 1e-9:
        return None
    n = np.sign(area2) * np.stack([e[:, 1], -e[:, 0]], 1) / np.hypot(e[:, 0], e[:, 1])[:, None]
    c = np.einsum("ij,ij->i", n, p) - 0.5
    out = np.empty_like(p)
    for i in range(len(p)):
        a = np.stack([n[i - 1], n[i]])
        det = np.linalg.det(a)
        if abs(det) < 1e-9:  # collinear neighbours: slide the vertex along the normal
            out[i] = p[i] - n[i] * (np.dot(n[i], p[i]) - c[i])
        else:
            out[i] = np.linalg.solve(a, [c[i - 1], c[i]])
    new2 = float(np.sum(out[:, 0] * np.roll(out[:, 1], -1) - np.roll(out[:, 0], -1) * out[:, 1]))
    return out if new2 * area2 > 0 else None


def hull_mask(landmarks: np.ndarray, shape: tuple[int, int], kind: str = "components", *,
              feather: float = 0.0) -> np.ndarray:
    """A soft face mask: float32 (h, w) in 0..1, 1 inside the face.

    `landmarks`: (68, 2) pixel coordinates in the same space as `shape` = (h, w) (extra
    trailing entries of `shape`, e.g. a channel count, are ignored). `kind`: "components" or
    "extended" (see the module docstring). `feather`: the sigma, in pixels, of a Gaussian
    blur of the edge (0 = only the antialiased edge); the 10-90% ramp is about 2.6 sigma wide.
    """
    h, w = int(shape[0]), int(shape[1])
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    polys = hull_polygons(landmarks, kind)
    out = np.zeros((h, w), np.float32)
    allpts = np.concatenate(polys)
    pad = int(np.ceil(4 * feather)) + 2
    x0 = max(0, int(np.floor(allpts[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(allpts[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(allpts[:, 0].max())) + pad + 1)
    y1 = min(h, int(np.ceil(allpts[:, 1].max())) + pad + 1)
    if x1 <= x0 or y1 <= y0:
        return out  # the face is entirely outside the frame
    rw, rh = x1 - x0, y1 - y0
    ss = 4 if max(rw, rh) <= _SUPERSAMPLE_LIMIT else 2
    fine = np.zeros((rh * ss, rw * ss), np.uint8)
    for poly in polys:
        # fine-grid pixel centres sit at (i + 0.5) / ss - 0.5 in the coarse grid
        inset = _raster_inset((poly - (x0, y0)) * ss + (ss - 1) / 2)
        if inset is None:
            continue
        fixed = np.round(inset * (1 << _SHIFT)).astype(np.int32)
        cv2.fillConvexPoly(fine, fixed, 255, lineType=cv2.LINE_8, shift=_SHIFT)
    roi = cv2.resize(fine, (rw, rh), interpolation=cv2.INTER_AREA).astype(np.float32) / np.float32(255)
    if feather > 0:
        # replicate: where the face runs off the frame the mask should not fade at the frame edge
        roi = cv2.GaussianBlur(roi, (0, 0), sigmaX=feather, sigmaY=feather, borderType=cv2.BORDER_REPLICATE)
    out[y0:y1, x0:x1] = roi
    return out


def hull_masker(face) -> np.ndarray:
    """Masker (`--mask hull`): the `extended` hull of the face's landmarks in its aligned square."""
    return hull_mask(face.points, face.learned.shape[:2], "extended")
