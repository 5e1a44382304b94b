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

import numpy as np

# Shared with the numba kernels in `_jit` through `constants` (still importable from here).
from vfxswap.color.constants import (CCT_LIN_CUT, CCT_LIN_OFFSET, CCT_LIN_SLOPE, CCT_LOG_CUT, CCT_MAX, HALF_MAX,
                                     NORM_SCALE)


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


def _jit():
    """The numba kernels, imported on first use so importing vfxswap stays fast."""
    from vfxswap.color import _jit

    return _jit


def use_threads(count: int | None) -> int:
    """Set how many threads the kernels use when called from *this* thread (numba's setting is
    per thread); returns the previous count. Work that already runs one frame per core (the
    extractor's reader and cutter threads) sets 1, so kernels do not fight over the cores."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(count or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)))
    return before


def _prepare(src: np.ndarray) -> np.ndarray:
    if src.ndim != 3 or src.shape[2] < 3:
        raise ValueError(f"expected (H, W, >=3) pixels, got {src.shape}")
    return src if src.dtype == np.float32 else src.astype(np.float32)


def _out(src: np.ndarray, out: np.ndarray | None, dtype) -> np.ndarray:
    if out is None:
        return np.empty(src.shape[:2] + (3,), dtype)
    if out.shape != src.shape[:2] + (3,) or out.dtype != dtype:
        raise ValueError(f"out must be {src.shape[:2] + (3,)} {np.dtype(dtype).name}, got {out.shape} {out.dtype}")
    return out


def encode(src: np.ndarray, matrix: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, >=3) linear plate RGB -> (H, W, 3) normalised ACEScct, and NaN/+Inf/-Inf counts.

    `out` may be a strided view (e.g. the RGB of an RGBA buffer) to avoid a new allocation.
    """
    src = _prepare(src)
    out = _out(src, out, np.float32)
    counts = np.zeros((src.shape[0], 3), np.int64)
    _jit().encode(src, np.ascontiguousarray(matrix, np.float32), out, counts)
    return out, counts.sum(0)


def decode(src: np.ndarray, matrix: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) normalised ACEScct -> (H, W, 3) linear plate RGB, and non-finite counts.

    `out` may alias `src` (decode in place) or be the RGB view of an RGBA plate buffer.
    """
    src = _prepare(src)
    out = _out(src, out, np.float32)
    counts = np.zeros((src.shape[0], 3), np.int64)
    _jit().decode(src, np.ascontiguousarray(matrix, np.float32), out, counts)
    return out, counts.sum(0)


def display(src: np.ndarray, matrix: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, >=3) linear plate RGB -> (H, W, 3) uint8 through a LUT baked on the model encoding."""
    src = _prepare(src)
    out = _out(src, None, np.uint8)
    counts = np.zeros((src.shape[0], 3), np.int64)
    _jit().display(src, np.ascontiguousarray(matrix, np.float32), lut, out, counts)
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
