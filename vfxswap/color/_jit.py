"""numba kernels behind `kernels.encode/decode/display`: one fused pass per pixel, all cores.

Top-level functions with module constants, so numba's on-disk cache is reused across runs
(closures are recompiled every process). Each kernel reads (H, W, >=3) float32 pixels, may
write into a strided view, and counts sanitised values per row (no shared counters in prange).
"""

import math

import numpy as np
from numba import njit, prange

from vfxswap.color.constants import (CCT_LIN_CUT, CCT_LIN_OFFSET, CCT_LIN_SLOPE, CCT_LOG_CUT, CCT_MAX,
                                     HALF_MAX, NORM_SCALE)

f32 = np.float32
S_LIN, O_LIN, CUT_LIN, CUT_LOG = f32(CCT_LIN_SLOPE), f32(CCT_LIN_OFFSET), f32(CCT_LIN_CUT), f32(CCT_LOG_CUT)
C_MAX, NORM, HMAX = f32(CCT_MAX), f32(NORM_SCALE), f32(HALF_MAX)
ZERO, ONE = f32(0.0), f32(1.0)
# fastmath without the no-NaN/no-Inf flags: the kernels must still see and count NaN/Inf.
FAST = {"contract", "afn", "reassoc", "arcp"}


@njit(inline="always", cache=True, fastmath=FAST, error_model="numpy")
def clean(v, counts, y):
    """NaN -> 0, -Inf -> 0, +Inf -> half max (see `kernels`), counting each in row `y`."""
    if v != v:
        counts[y, 0] += 1
        return ZERO
    if v > HMAX and math.isinf(v):
        counts[y, 1] += 1
        return HMAX
    if v < -HMAX and math.isinf(v):
        counts[y, 2] += 1
        return ZERO
    return v


@njit(inline="always", cache=True, fastmath=FAST, error_model="numpy")
def encode1(v):
    if v <= CUT_LIN:
        c = S_LIN * v + O_LIN
    else:
        c = (math.log2(v) + f32(9.72)) / f32(17.52)
    return (c - O_LIN) * NORM


@njit(inline="always", cache=True, fastmath=FAST, error_model="numpy")
def decode1(m):
    c = m / NORM + O_LIN
    if c <= CUT_LOG:
        return (c - O_LIN) / S_LIN
    if c >= C_MAX:
        return HMAX
    return math.exp2(c * f32(17.52) - f32(9.72))


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def encode(src, mat, out, counts):
    for y in prange(src.shape[0]):
        for x in range(src.shape[1]):
            r = clean(f32(src[y, x, 0]), counts, y)
            g = clean(f32(src[y, x, 1]), counts, y)
            b = clean(f32(src[y, x, 2]), counts, y)
            e0 = encode1(mat[0, 0] * r + mat[0, 1] * g + mat[0, 2] * b)
            e1 = encode1(mat[1, 0] * r + mat[1, 1] * g + mat[1, 2] * b)
            e2 = encode1(mat[2, 0] * r + mat[2, 1] * g + mat[2, 2] * b)
            out[y, x, 0], out[y, x, 1], out[y, x, 2] = e0, e1, e2


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def decode(src, mat, out, counts):
    for y in prange(src.shape[0]):
        for x in range(src.shape[1]):
            r = decode1(clean(f32(src[y, x, 0]), counts, y))
            g = decode1(clean(f32(src[y, x, 1]), counts, y))
            b = decode1(clean(f32(src[y, x, 2]), counts, y))
            out[y, x, 0] = mat[0, 0] * r + mat[0, 1] * g + mat[0, 2] * b
            out[y, x, 1] = mat[1, 0] * r + mat[1, 1] * g + mat[1, 2] * b
            out[y, x, 2] = mat[2, 0] * r + mat[2, 1] * g + mat[2, 2] * b


@njit(inline="always", cache=True, fastmath=FAST, error_model="numpy")
def _lut_axis(v, n1):
    """Position on a LUT axis of `n1 + 1` points over [0, 1]: (lower index, fraction)."""
    p = min(max(v * n1, ZERO), f32(n1))
    i = min(int(p), n1 - 1)
    return i, p - i


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def display(src, mat, lut, out, counts):
    """Linear plate -> normalised ACEScct -> trilinear 3D LUT (the baked view) -> uint8."""
    n1 = lut.shape[0] - 1
    for y in prange(src.shape[0]):
        for x in range(src.shape[1]):
            r = clean(f32(src[y, x, 0]), counts, y)
            g = clean(f32(src[y, x, 1]), counts, y)
            b = clean(f32(src[y, x, 2]), counts, y)
            i, fr = _lut_axis(encode1(mat[0, 0] * r + mat[0, 1] * g + mat[0, 2] * b), n1)
            j, fg = _lut_axis(encode1(mat[1, 0] * r + mat[1, 1] * g + mat[1, 2] * b), n1)
            k, fb = _lut_axis(encode1(mat[2, 0] * r + mat[2, 1] * g + mat[2, 2] * b), n1)
            for c in range(3):
                c00 = lut[i, j, k, c] * (ONE - fb) + lut[i, j, k + 1, c] * fb
                c01 = lut[i, j + 1, k, c] * (ONE - fb) + lut[i, j + 1, k + 1, c] * fb
                c10 = lut[i + 1, j, k, c] * (ONE - fb) + lut[i + 1, j, k + 1, c] * fb
                c11 = lut[i + 1, j + 1, k, c] * (ONE - fb) + lut[i + 1, j + 1, k + 1, c] * fb
                v = (c00 * (ONE - fg) + c01 * fg) * (ONE - fr) + (c10 * (ONE - fg) + c11 * fg) * fr
                out[y, x, c] = np.uint8(min(max(v, ZERO), ONE) * f32(255.0) + f32(0.5))
