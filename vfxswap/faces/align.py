"""Face alignment: a similarity transform from plate pixels to a square, upright face crop.

The network sees every face the same way: upright, same size, same place in the crop. We
get there with one 2x3 similarity matrix per face, fitted by least squares (Umeyama) from
the face's 68 iBUG landmarks to a mean face placed in the crop by the chosen face type.

Conventions:
- Matrices are (2, 3) float64 in `cv2.warpAffine` form and always map plate pixel coordinates
  to aligned crop pixel coordinates: `[x', y'] = M[:, :2] @ [x, y] + M[:, 2]`.
- Pixel centres sit at integer coordinates (cv2's and dlib's convention): pixel (0, 0) covers
  [-0.5, 0.5]^2 and a size-N crop covers [-0.5, N - 0.5]^2, its centre at (N - 1) / 2.
  Landmarks must use the same convention (1-based .pts files need 1 subtracted).
- Pixels stay float32 (scene-linear or model-encoded values, negatives and highlights kept);
  nothing is clipped or quantised here.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faces import FACE_TYPES, FaceType

# fmt: off
# The canonical 68-point iBUG mean face, 0-based iBUG order (jaw 0-16, brows 17-26, nose 27-35,
# eyes 36-47, mouth 48-67), image axes (x right, y down). Normalised: the bounding box of the
# 68 points is centred on (0, 0) and its longer side is 1. Left-right symmetric, eyes level.
# Provenance: output of tools/make_mean_face.py (dlib 20.0.1 frontal detector + 68-point predictor
# on 174 faces of 11 people from shared/data, permissive licences only: 8 SFHQ synthetic faces
# (MIT), 90 + 75 GRID frames of two speakers (CC BY 4.0), the NASA astronaut (public domain);
# similarity Procrustes to the mean, each person weighted equally; averaged with its mirror
# image; rounded to 4 decimals). Derived here; no other project's template is used.
MEAN_FACE_68 = np.array([
    [-0.5000, -0.2907], [-0.4920, -0.1579], [-0.4743, -0.0278], [-0.4488,  0.1009],
    [-0.4077,  0.2226], [-0.3375,  0.3291], [-0.2395,  0.4134], [-0.1268,  0.4776],
    [ 0.0000,  0.4972], [ 0.1268,  0.4776], [ 0.2395,  0.4134], [ 0.3375,  0.3291],
    [ 0.4077,  0.2226], [ 0.4488,  0.1009], [ 0.4743, -0.0278], [ 0.4920, -0.1579],
    [ 0.5000, -0.2907], [-0.4171, -0.4209], [-0.3554, -0.4820], [-0.2669, -0.4972],
    [-0.1773, -0.4807], [-0.0941, -0.4433], [ 0.0941, -0.4433], [ 0.1773, -0.4807],
    [ 0.2669, -0.4972], [ 0.3554, -0.4820], [ 0.4171, -0.4209], [ 0.0000, -0.3301],
    [ 0.0000, -0.2434], [ 0.0000, -0.1565], [ 0.0000, -0.0681], [-0.1027,  0.0049],
    [-0.0526,  0.0185], [ 0.0000,  0.0302], [ 0.0526,  0.0185], [ 0.1027,  0.0049],
    [-0.3210, -0.3123], [-0.2653, -0.3487], [-0.1970, -0.3462], [-0.1372, -0.2970],
    [-0.2016, -0.2870], [-0.2698, -0.2875], [ 0.1372, -0.2970], [ 0.1970, -0.3462],
    [ 0.2653, -0.3487], [ 0.3210, -0.3123], [ 0.2698, -0.2875], [ 0.2016, -0.2870],
    [-0.1986,  0.1742], [-0.1232,  0.1423], [-0.0508,  0.1220], [ 0.0000,  0.1359],
    [ 0.0508,  0.1220], [ 0.1232,  0.1423], [ 0.1986,  0.1742], [ 0.1264,  0.2380],
    [ 0.0551,  0.2675], [ 0.0000,  0.2735], [-0.0551,  0.2675], [-0.1264,  0.2380],
    [-0.1661,  0.1778], [-0.0514,  0.1709], [ 0.0000,  0.1758], [ 0.0514,  0.1709],
    [ 0.1661,  0.1778], [ 0.0518,  0.1964], [ 0.0000,  0.2025], [-0.0518,  0.1964],
], np.float64)
# fmt: on
MEAN_FACE_68.setflags(write=False)

# Index i's mirror image under a left-right flip of the face, in iBUG order.
MIRROR_68 = np.array(
    list(range(16, -1, -1))                                  # jaw 0..16 <-> 16..0
    + list(range(26, 16, -1))                                # brows 17..21 <-> 26..22
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]                   # nose bridge, nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]       # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]       # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],                      # inner lips
    np.intp)

# Points the fit uses: nose (27-35), eyes (36-47) and the two mouth corners (48, 54). The jaw
# line (0-16) is left out: it is the least repeatable contour, it slides along the cheek as the
# head turns, and on a profile the detector guesses half of it. So are the lips, which move with
# every syllable, and the brows, which rise and fall with the voice: measured on a GRID speaker
# (bench/quality.py, "crop vs rigid"), fitting all 51 inner points made the crop drift by 1.0% of
# its side against the skull, lips dropped 0.8%, lips and brows dropped 0.4%. The corners still
# pin the mouth's place in the crop.
ALIGN_POINTS = np.r_[27:49, 54]


def _face_type(name: str) -> FaceType:
    """The `FaceType` called `name`; a one-line error naming the choices when unknown."""
    try:
        return FACE_TYPES[name]
    except KeyError:
        raise VfxSwapError(f"unknown face type {name!r} (choose from {', '.join(FACE_TYPES)})") from None


def template_points(size: int, face_type: str = "full") -> np.ndarray:
    """The mean face placed in a `size` crop: (68, 2) float64 crop pixel coordinates.

    The normalised template is scaled by `span * size` about the crop centre and shifted down by
    `offset * size`, so a face type looks the same at every crop size.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    ft = _face_type(face_type)
    centre = np.array([0.5, 0.5 + ft.offset]) * size - 0.5  # continuous -> pixel-centre coords
    return MEAN_FACE_68 * (ft.span * size) + centre


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking src (N, 2) to dst (N, 2).

    Umeyama (1991): with centred point sets, the rotation comes from the SVD of their
    cross-covariance; the smallest singular direction is flipped when needed so the result is a
    proper rotation (never a mirror image), and the scale follows in closed form.
    Returns the (2, 3) float64 matrix M with dst ~ M[:, :2] @ src + M[:, 2].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError(f"umeyama needs two (N, 2) point sets of the same shape, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / n
    if n < 2 or var_src <= 0:
        raise ValueError("umeyama needs at least two distinct source points")
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best orthogonal fit is a reflection
        d[-1] = -1.0
    rot = (u * d) @ vt
    scale = (s * d).sum() / var_src
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_dst - m[:, :2] @ mu_src
    return m


def alignment_matrix(landmarks: np.ndarray, size: int, face_type: str = "full") -> np.ndarray:
    """(2, 3) float64 matrix taking plate pixels to the `size` aligned crop of `face_type`.

    landmarks: (68, 2) iBUG points in plate pixels (pixel centres at integers). Fitted on the
    nose, eyes and mouth corners (`ALIGN_POINTS`), not the jaw line, the lips or the brows.
    """
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"alignment needs (68, 2) landmarks, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks hold NaN or Inf")
    template = template_points(size, face_type)
    return umeyama(pts[ALIGN_POINTS], template[ALIGN_POINTS])


def invert(matrix: np.ndarray) -> np.ndarray:
    """The (2, 3) inverse of an affine (2, 3) matrix, in float64."""
    m = np.asarray(matrix, np.float64)
    a = np.linalg.inv(m[:, :2])
    out = np.empty((2, 3))
    out[:, :2] = a
    out[:, 2] = -a @ m[:, 2]
    return out


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine that applies `inner`, then `outer`."""
    o, i = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    return np.concatenate([o[:, :2] @ i[:, :2], (o[:, :2] @ i[:, 2] + o[:, 2])[:, None]], 1)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a (2, 3) matrix: (N, 2) float64."""
    p = np.asarray(points, np.float64)
    m = np.asarray(matrix, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def _warp(image: np.ndarray, matrix: np.ndarray, dsize: tuple[int, int], flags: int, border: int,
          border_value: float) -> np.ndarray:
    """cv2.warpAffine on float32 pixels, 4 channels at a time (cv2's limit), shape kept."""
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) pixels, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"alignment warps float pixels only, got {img.dtype}")
    img = img.astype(np.float32, copy=False)  # half plates go up to float32; cv2 has no half
    m = np.asarray(matrix, np.float64)
    if img.ndim == 2 or img.shape[2] == 1:
        out = cv2.warpAffine(img, m, dsize, flags=flags, borderMode=border, borderValue=border_value)
        return out.reshape(dsize[1], dsize[0], *img.shape[2:])
    chunks = []
    for start in range(0, img.shape[2], 4):
        part = np.ascontiguousarray(img[:, :, start:start + 4])
        warped = cv2.warpAffine(part, m, dsize, flags=flags, borderMode=border, borderValue=border_value)
        chunks.append(warped.reshape(dsize[1], dsize[0], -1))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=2)


def warp_to_aligned(image: np.ndarray, matrix: np.ndarray, size: int, *, interpolation: int = cv2.INTER_LANCZOS4,
                    border: int = cv2.BORDER_REPLICATE, border_value: float = 0.0) -> np.ndarray:
    """Plate pixels (H, W, C) float -> the aligned crop (size, size, C) float32.

    Replicated borders by default, so a face near the frame edge does not pull black into
    the network's input.
    """
    return _warp(image, matrix, (size, size), interpolation, border, border_value)


def warp_to_plate(aligned: np.ndarray, matrix: np.ndarray, plate_shape: tuple[int, int], *,
                  interpolation: int = cv2.INTER_LANCZOS4, border: int = cv2.BORDER_CONSTANT,
                  border_value: float = 0.0) -> np.ndarray:
    """An aligned crop (size, size, C) back onto plate geometry: (h, w, C) float32.

    The exact inverse mapping of `warp_to_aligned` with the same `matrix`: each plate pixel is
    sampled from the crop at `matrix @ (x, y)` (WARP_INVERSE_MAP, no matrix inversion). Outside
    the crop is `border_value` (0 by default); blend with a mask warped the same way.
    """
    h, w = int(plate_shape[0]), int(plate_shape[1])
    return _warp(aligned, matrix, (w, h), interpolation | cv2.WARP_INVERSE_MAP, border, border_value)


def scale_of(matrix: np.ndarray) -> float:
    """Crop pixels per plate pixel of a (2, 3) similarity: above 1 the crop magnifies the plate."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def cut_face(image: np.ndarray, matrix: np.ndarray, size: int, *, exact: bool = False) -> np.ndarray:
    """Plate pixels (H, W, C) float -> the aligned crop (size, size, C) float32, as every stage cuts
    it: extraction (at the faceset's size), render (at the model's) and so, through the faceset,
    training. One function, so the network meets at render the kind of pixels it learned from.

    Where the crop minifies the plate (a 2K or 4K face cut to 96-256 px), point sampling would
    alias fine texture into the crop (measured: ~60% more high-frequency energy than a properly
    reduced crop). So the face is resampled at k * size (k the smallest integer that makes that
    at least 1:1) and area-averaged k x k: a box low-pass one crop pixel wide. At 1:1 or
    magnifying, k = 1. `exact`: where k = 1, cubic B-spline at exact positions (`warp_exact`, so
    the render's pass-through check holds to float precision) instead of warpAffine's Lanczos4,
    whose positions are rounded to 1/32 px (fine for a faceset, and many times faster); a
    minified crop is low-passed anyway, so it is always cut the fast way, as extraction cuts it.
    Borders replicate.
    """
    k = max(1, math.ceil(1.0 / scale_of(matrix) - 1e-6))
    m = np.array(matrix, np.float64, copy=True)
    if k > 1:  # the same square at k times the pixels: crop pixel centres at (i + 0.5) * k - 0.5
        m *= k
        m[:, 2] += (k - 1) / 2.0
    big = size * k
    if exact and k == 1:
        out = warp_exact(image, m, (big, big))
    else:
        out = warp_to_aligned(image, m, big)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, *out.shape[2:])
    return np.ascontiguousarray(out, np.float32)


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """An aligned crop (S, S[, C]) at another size (size, size[, C]) float32: area-averaged down
    (a proper low-pass), cubic up. How a faceset's crops reach the model's resolution in training,
    and so how the render's do too."""
    if crop.shape[0] == size:
        return np.ascontiguousarray(crop, np.float32)
    out = cv2.resize(np.asarray(crop, np.float32), (size, size),
                     interpolation=cv2.INTER_AREA if size < crop.shape[0] else cv2.INTER_CUBIC)
    return out.reshape(size, size, *crop.shape[2:])


def face_box(matrix: np.ndarray, size: int, plate_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Plate pixel box (x0, y0, x1, y1), end-exclusive and clipped, holding the whole aligned square.

    Handy to cut a plate region before warping or to limit a paste-back. Empty (x0 == x1 or
    y0 == y1) when the square lies outside the plate.
    """
    h, w = int(plate_shape[0]), int(plate_shape[1])
    lo, hi = -0.5, size - 0.5  # the crop's outer pixel edges
    corners = transform_points(np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]]), invert(matrix))
    # Plate pixel i covers [i - 0.5, i + 0.5]: keep every pixel the square touches.
    x0, y0 = np.floor(corners.min(0) + 0.5).astype(int)
    x1, y1 = np.ceil(corners.max(0) + 0.5).astype(int)
    x0, x1 = int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))
    y0, y1 = int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))
    return x0, y0, max(x0, x1), max(y0, y1)


def shift(matrix: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """The same plate->aligned mapping for a region of the plate whose top-left pixel is (x0, y0)."""
    local = np.array(matrix, np.float64, copy=True)
    local[:, 2] += local[:, :2] @ np.array([x0, y0], np.float64)
    return local


def region_for(matrix: np.ndarray, size: int, plate_shape: tuple[int, int], margin: int = 4) -> tuple[int, int, int, int]:
    """The plate region (x0, y0, x1, y1) an aligned square needs, with a resampling-filter margin:
    only this much of a plate is colour-encoded or composited for one face."""
    h, w = plate_shape
    x0, y0, x1, y1 = face_box(matrix, size, plate_shape)
    return max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)


_SPLINE_PAD = 8  # replicated edge pixels around a source before its B-spline prefilter


def warp_exact(image: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int], *, order: int = 3) -> np.ndarray:
    """(H, W[, C]) float -> (h, w[, C]) with out(p) = image(M^-1 p), sampled at exact positions.

    Cubic B-spline (prefiltered) for `order` 3, bilinear for 1; edge pixels repeat past the
    border. For delivered pixels: OpenCV's warpAffine rounds every sample position to 1/32 pixel,
    which leaves errors of ~1% on steep HDR gradients after a round trip (measured: p99.9 7.6e-3
    relative with Lanczos4 against 8e-5 here). The sampling runs in numba kernels on all cores
    (`_warp_jit`); the prefilter sees the source with its edges replicated `_SPLINE_PAD` px out,
    so the spline repeats the edge as the clamped taps do.
    """
    from scipy import ndimage

    from vfxswap.faces import _warp_jit

    if order not in (1, 3):
        raise ValueError(f"warp_exact samples with order 1 or 3, got {order}")
    img = np.asarray(image, np.float32)
    planes = img[..., None] if img.ndim == 2 else img
    inv = invert(matrix)
    out = np.empty((int(out_shape[0]), int(out_shape[1]), planes.shape[2]), np.float32)
    if order == 1:
        _warp_jit.warp_linear(np.ascontiguousarray(planes), inv, out)
    else:
        p = _SPLINE_PAD
        coeff = np.pad(planes, ((p, p), (p, p), (0, 0)), mode="edge").astype(np.float64)
        for axis in (0, 1):
            coeff = ndimage.spline_filter1d(coeff, 3, axis=axis, mode="mirror")
        inv[:, 2] += p  # source coordinates in the padded array
        _warp_jit.warp_cubic(np.ascontiguousarray(coeff, np.float32), inv, out)
    return out[..., 0] if img.ndim == 2 else out
