"""Fast exact kernels for the analytic model encoding, on CPU (numba) and on torch tensors.

The model sees ACEScct, normalised so scene 0 -> 0.0 and ACEScct 1.0 (scene ~222) -> 1.0:
  18% grey -> 0.367, scene 1.0 -> 0.519, scene 16 -> 0.766.
ACEScct is defined on AP1 primaries, so for any linear plate space the encoding is a 3x3
matrix (read from OCIO) followed by this per-channel curve. Fusing matrix, curve, NaN/Inf
sanitising and normalisation into one pass is what makes full-frame work cheap next to EXR
I/O; tests hold the result to OCIO's own lossless processor.

Sanitising rule (shared by every path): NaN -> 0, -Inf -> 0, +Inf -> +65504 (half max): an
undefined value becomes black, an infinitely bright one the brightest a half can hold.
"""

from __future__ import annotations

import math

import numpy as np

CCT_LIN_SLOPE = 10.5402377416545
CCT_LIN_OFFSET = 0.0729055341958355
CCT_LIN_CUT = 0.0078125  # linear input below this is on the toe segment
CCT_LOG_CUT = 0.155251141552511  # the same point in ACEScct
CCT_MAX = (math.log2(65504.0) + 9.72) / 17.52
NORM_SCALE = 1.0 / (1.0 - CCT_LIN_OFFSET)
HALF_MAX = 65504.0


def cct_encode_np(lin: np.ndarray) -> np.ndarray:
    """Reference (float64-friendly) linear AP1 -> normalised ACEScct, for tests and LUT bakes."""
    lin = np.asarray(lin, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log = (np.log2(np.maximum(lin, 1e-30)) + 9.72) / 17.52
    cct = np.where(lin <= CCT_LIN_CUT, CCT_LIN_SLOPE * lin + CCT_LIN_OFFSET, log)
    return (cct - CCT_LIN_OFFSET) * NORM_SCALE


def cct_decode_np(model: np.ndarray) -> np.ndarray:
    cct = np.asarray(model, dtype=np.float64) / NORM_SCALE + CCT_LIN_OFFSET
    lin = np.where(cct <= CCT_LOG_CUT, (cct - CCT_LIN_OFFSET) / CCT_LIN_SLOPE,
                   np.exp2(np.minimum(cct, CCT_MAX) * 17.52 - 9.72))
    return np.where(cct >= CCT_MAX, HALF_MAX, lin)


_compiled = None


def _numba_kernels():
    """Compile on first use (cached on disk by numba), so importing vfxswap stays fast."""
    global _compiled
    if _compiled is not None:
        return _compiled
    from numba import njit, prange

    f32 = np.float32
    s_lin, o_lin, cut_lin, cut_log = f32(CCT_LIN_SLOPE), f32(CCT_LIN_OFFSET), f32(CCT_LIN_CUT), f32(CCT_LOG_CUT)
    cct_max, norm, hmax = f32(CCT_MAX), f32(NORM_SCALE), f32(HALF_MAX)

    @njit(inline="always")
    def clean(v, counts, y):
        if v != v:
            counts[y, 0] += 1
            return f32(0.0)
        if v > hmax:
            if math.isinf(v):
                counts[y, 1] += 1
                return hmax
        elif v < -hmax:
            if math.isinf(v):
                counts[y, 2] += 1
                return f32(0.0)
        return v

    @njit(inline="always")
    def encode1(v):
        if v <= cut_lin:
            c = s_lin * v + o_lin
        else:
            c = (math.log2(v) + f32(9.72)) / f32(17.52)
        return (c - o_lin) * norm

    @njit(inline="always")
    def decode1(m):
        c = m / norm + o_lin
        if c <= cut_log:
            return (c - o_lin) / s_lin
        if c >= cct_max:
            return hmax
        return math.exp2(c * f32(17.52) - f32(9.72))

    @njit(parallel=True, cache=True)
    def encode(src, mat, out, counts):
        for y in prange(src.shape[0]):
            for x in range(src.shape[1]):
                r = clean(f32(src[y, x, 0]), counts, y)
                g = clean(f32(src[y, x, 1]), counts, y)
                b = clean(f32(src[y, x, 2]), counts, y)
                for c in range(3):
                    out[y, x, c] = encode1(mat[c, 0] * r + mat[c, 1] * g + mat[c, 2] * b)

    @njit(parallel=True, cache=True)
    def decode(src, mat, out, counts):
        for y in prange(src.shape[0]):
            for x in range(src.shape[1]):
                r = decode1(clean(f32(src[y, x, 0]), counts, y))
                g = decode1(clean(f32(src[y, x, 1]), counts, y))
                b = decode1(clean(f32(src[y, x, 2]), counts, y))
                for c in range(3):
                    out[y, x, c] = mat[c, 0] * r + mat[c, 1] * g + mat[c, 2] * b

    @njit(parallel=True, cache=True)
    def display(src, mat, lut, out, counts):
        """Linear plate -> normalised ACEScct -> trilinear 3D LUT (baked view) -> uint8."""
        n1 = lut.shape[0] - 1
        for y in prange(src.shape[0]):
            for x in range(src.shape[1]):
                r = clean(f32(src[y, x, 0]), counts, y)
                g = clean(f32(src[y, x, 1]), counts, y)
                b = clean(f32(src[y, x, 2]), counts, y)
                pos = np.empty(3, np.float32)
                for c in range(3):
                    p = encode1(mat[c, 0] * r + mat[c, 1] * g + mat[c, 2] * b) * n1
                    pos[c] = min(max(p, f32(0.0)), f32(n1))
                i0 = min(int(pos[0]), n1 - 1)
                j0 = min(int(pos[1]), n1 - 1)
                k0 = min(int(pos[2]), n1 - 1)
                fr, fg, fb = pos[0] - i0, pos[1] - j0, pos[2] - k0
                for c in range(3):
                    c00 = lut[i0, j0, k0, c] * (1 - fb) + lut[i0, j0, k0 + 1, c] * fb
                    c01 = lut[i0, j0 + 1, k0, c] * (1 - fb) + lut[i0, j0 + 1, k0 + 1, c] * fb
                    c10 = lut[i0 + 1, j0, k0, c] * (1 - fb) + lut[i0 + 1, j0, k0 + 1, c] * fb
                    c11 = lut[i0 + 1, j0 + 1, k0, c] * (1 - fb) + lut[i0 + 1, j0 + 1, k0 + 1, c] * fb
                    v = (c00 * (1 - fg) + c01 * fg) * (1 - fr) + (c10 * (1 - fg) + c11 * fg) * fr
                    out[y, x, c] = np.uint8(min(max(v, f32(0.0)), f32(1.0)) * f32(255.0) + f32(0.5))

    _compiled = (encode, decode, display)
    return _compiled


def _prepare(src: np.ndarray) -> np.ndarray:
    if src.ndim != 3 or src.shape[2] < 3:
        raise ValueError(f"expected (H, W, >=3) pixels, got {src.shape}")
    return src if src.dtype == np.float32 else src.astype(np.float32)


def encode(src: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, >=3) linear plate RGB -> (H, W, 3) normalised ACEScct, and NaN/+Inf/-Inf counts."""
    src = _prepare(src)
    out = np.empty(src.shape[:2] + (3,), np.float32)
    counts = np.zeros((src.shape[0], 3), np.int64)
    _numba_kernels()[0](src, np.ascontiguousarray(matrix, np.float32), out, counts)
    return out, counts.sum(0)


def decode(src: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) normalised ACEScct -> (H, W, 3) linear plate RGB, and non-finite counts."""
    src = _prepare(src)
    out = np.empty(src.shape[:2] + (3,), np.float32)
    counts = np.zeros((src.shape[0], 3), np.int64)
    _numba_kernels()[1](src, np.ascontiguousarray(matrix, np.float32), out, counts)
    return out, counts.sum(0)


def display(src: np.ndarray, matrix: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, >=3) linear plate RGB -> (H, W, 3) uint8 through a LUT baked on the model encoding."""
    src = _prepare(src)
    out = np.empty(src.shape[:2] + (3,), np.uint8)
    counts = np.zeros((src.shape[0], 3), np.int64)
    _numba_kernels()[2](src, np.ascontiguousarray(matrix, np.float32), lut, out, counts)
    return out, counts.sum(0)


# --- torch: the same maths on (..., 3, H, W) tensors, for GPU batches -------------------------

def _torch_clean(t):
    import torch

    return torch.nan_to_num(t, nan=0.0, posinf=HALF_MAX, neginf=0.0)


def _mix(t, matrix):
    import torch

    m = torch.as_tensor(matrix, dtype=t.dtype, device=t.device)
    return torch.einsum("ij,...jhw->...ihw", m, t)


def encode_torch(t, matrix):
    """(..., 3, H, W) linear plate RGB -> normalised ACEScct (same numbers as `encode`)."""
    import torch

    lin = _mix(_torch_clean(t.float()), matrix)
    log = (torch.log2(lin.clamp_min(1e-30)) + 9.72) / 17.52
    cct = torch.where(lin <= CCT_LIN_CUT, CCT_LIN_SLOPE * lin + CCT_LIN_OFFSET, log)
    return (cct - CCT_LIN_OFFSET) * NORM_SCALE


def decode_torch(t, matrix):
    """(..., 3, H, W) normalised ACEScct -> linear plate RGB (same numbers as `decode`)."""
    import torch

    cct = _torch_clean(t.float()) / NORM_SCALE + CCT_LIN_OFFSET
    lin = torch.where(cct <= CCT_LOG_CUT, (cct - CCT_LIN_OFFSET) / CCT_LIN_SLOPE,
                      torch.exp2(cct.clamp_max(CCT_MAX) * 17.52 - 9.72))
    lin = torch.where(cct >= CCT_MAX, torch.full_like(lin, HALF_MAX), lin)
    return _mix(lin, matrix)


def apply_lut_torch(t, lut: np.ndarray, lo: float, hi: float):
    """(N, 3, H, W) values in [lo, hi] through a (S, S, S, 3) LUT indexed [r, g, b], trilinear.

    The LUT path for plate spaces that are not linear (e.g. camera log): values outside the
    baked domain are clamped, so it is exact only inside [lo, hi].
    """
    import torch
    import torch.nn.functional as F

    squeeze = t.dim() == 3
    x = t.unsqueeze(0) if squeeze else t
    n, _, h, w = x.shape
    grid = ((x.float() - lo) / (hi - lo)).clamp(0, 1) * 2 - 1  # grid_sample wants [-1, 1]
    # grid_sample's last grid coordinate indexes the input's first spatial axis (D).
    grid = grid.permute(0, 2, 3, 1).flip(-1).unsqueeze(1)  # (N, 1, H, W, 3) as (b, g, r)
    vol = torch.as_tensor(lut, dtype=torch.float32, device=t.device).permute(3, 0, 1, 2).unsqueeze(0)
    out = F.grid_sample(vol.expand(n, -1, -1, -1, -1), grid, mode="bilinear", align_corners=True)
    out = out[:, :, 0]
    return out[0] if squeeze else out
