"""numba kernels behind `align.warp_exact`: sample an image at exact affine positions, all cores.

Each output pixel (x, y) reads the source at inv @ (x, y, 1), computed in float64 (no 1/32-pixel
rounding as in OpenCV), with cubic B-spline weights on prefiltered coefficients (order 3) or
bilinear weights (order 1); source indices past the edge are clamped (edge pixels repeat).
Top-level functions so numba's on-disk cache is reused across runs.
"""

import math

import numpy as np
from numba import njit, prange


@njit(inline="always", cache=True)
def _bspline3(t, w):
    """Cubic B-spline weights of the 4 taps at offsets -1, 0, 1, 2 for a fraction t in [0, 1)."""
    s = 1.0 - t
    w[0] = s * s * s / 6.0
    w[1] = (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0
    w[2] = (4.0 - 6.0 * s * s + 3.0 * s * s * s) / 6.0
    w[3] = t * t * t / 6.0


@njit(parallel=True, cache=True)
def warp_cubic(coeff, inv, out):
    """coeff (H, W, C) float32 B-spline coefficients; inv (2, 3) float64 out -> source; out (h, w, C)."""
    hs, ws, ch = coeff.shape
    for y in prange(out.shape[0]):
        wx = np.empty(4)
        wy = np.empty(4)
        acc = np.empty(ch)
        for x in range(out.shape[1]):
            sx = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
            sy = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
            fx, fy = math.floor(sx), math.floor(sy)
            _bspline3(sx - fx, wx)
            _bspline3(sy - fy, wy)
            acc[:] = 0.0
            for j in range(4):
                yy = min(max(int(fy) - 1 + j, 0), hs - 1)
                for i in range(4):
                    xx = min(max(int(fx) - 1 + i, 0), ws - 1)
                    w = wy[j] * wx[i]
                    for c in range(ch):
                        acc[c] += w * coeff[yy, xx, c]
            for c in range(ch):
                out[y, x, c] = acc[c]


@njit(parallel=True, cache=True)
def warp_linear(src, inv, out):
    """Bilinear: src (H, W, C) float32; inv (2, 3) float64 out -> source; out (h, w, C)."""
    hs, ws, ch = src.shape
    for y in prange(out.shape[0]):
        for x in range(out.shape[1]):
            sx = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
            sy = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
            fx, fy = math.floor(sx), math.floor(sy)
            tx, ty = sx - fx, sy - fy
            x0, y0 = min(max(int(fx), 0), ws - 1), min(max(int(fy), 0), hs - 1)
            x1, y1 = min(max(int(fx) + 1, 0), ws - 1), min(max(int(fy) + 1, 0), hs - 1)
            for c in range(ch):
                top = src[y0, x0, c] * (1.0 - tx) + src[y0, x1, c] * tx
                bottom = src[y1, x0, c] * (1.0 - tx) + src[y1, x1, c] * tx
                out[y, x, c] = top * (1.0 - ty) + bottom * ty
