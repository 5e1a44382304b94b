"""Training losses: structural similarity (DSSIM, multi-scale), masked MSE, mask MSE, GAN hinge terms.

Why these: pixel MSE alone trains blurry faces (the mean of plausible answers); DSSIM compares
local means, contrast and structure, so it keeps pores, lashes and edges. Computed over several
scales it also weighs broad shapes (jaw line, cheek shading), not only 11-px detail. Both terms
are restricted to the face mask, so background the decoder never has to reproduce does not
compete for capacity, and they are weighted by the eye/mouth priority map from `data.py`.

Conventions: images (N, C, H, W) in the model encoding (about 0..1); the reconstruction term
compares them in a display-like encoding (`display_like`, 0..1 for display-range values, so
SSIM's data range is 1);
masks and weight maps (N, 1, H, W), broadcast over channels. Every function works on any device,
computes in float32 even inside a bf16 autocast region (SSIM's variances are differences of
nearly equal means, which bf16's 8-bit mantissa destroys), never writes to its inputs, returns a
float32 tensor and is differentiable.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["display_like", "dssim", "gan_loss_d", "gan_loss_g", "mask_loss", "masked_mse", "ms_dssim", "reconstruction_loss",
           "ssim", "ssim_map", "total_variation"]

K1, K2 = 0.01, 0.03  # SSIM stabilisers: C1 = (K1 * L)^2, C2 = (K2 * L)^2 for data range L
MS_MIN_SIDE = 32  # multi-scale DSSIM halves the image while its shorter side stays >= this
_EPS = 1e-8


@contextlib.contextmanager
def _full_precision(device: torch.device):
    """Switch autocast off for `device` so float32 stays float32 inside (no-op where unsupported)."""
    try:
        ctx = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know (meta, ...): nothing to switch off
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"expected two (N, C, H, W) tensors of the same shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")


@lru_cache(maxsize=32)
def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised (size, size) float32 Gaussian window, odd `size`, on `device` (cached, so no
    host-to-device copy per call; never written to)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g).float().to(device)


def _blur(t: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of every channel of (N, K, H, W) by depthwise conv2d, reflect-padded to keep H, W.

    One 2-D window rather than two 1-D passes: on CPU, PyTorch's depthwise kernel for a square
    window measured faster (1.2x to 4x, backward included) than a (k, 1) pass plus a (1, k) one.
    """
    ch = t.shape[1]
    window = _gaussian_window(size, sigma, t.device)
    pad = size // 2
    if pad:
        t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(t, window.expand(ch, 1, size, size).contiguous(), groups=ch)


def _gate(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`t` with pixels where `mask` is 0 set to 0: they then cannot leak in through the SSIM window."""
    return torch.where(mask > 0, t, torch.zeros((), dtype=t.dtype, device=t.device))


def _weighted_mean(v: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of `v` (N, C, H, W) with `weights` broadcast to it; 0 (not NaN) when all weights are 0."""
    if weights is None:
        return v.mean()
    w = torch.broadcast_to(weights.float(), v.shape)
    return (v * w).sum() / w.sum().clamp_min(_EPS)


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, *,
             data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of (N, C, H, W) images -> (N, C, H, W) float32, 1 where identical.

    Local statistics come from a `window`-tap Gaussian (std `sigma`) with reflect padding; the
    window shrinks on images too small for it (reflect padding needs the pad below the side).
    """
    _check_pair(x, y)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"SSIM window must be a positive odd number, got {window}")
    with _full_precision(x.device):
        x, y = x.float(), y.float()
        c = x.shape[1]
        size = min(window, 2 * min(x.shape[-2:]) - 1)
        stats = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), size, sigma)
        mx, my, xx, yy, xy = stats.split(c, dim=1)
        mx2, my2, mxy = mx * mx, my * my, mx * my
        c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
        num = (2.0 * mxy + c1) * (2.0 * (xy - mxy) + c2)
        den = (mx2 + my2 + c1) * ((xx - mx2) + (yy - my2) + c2)
        return num / den


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, *,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per sample over channels and pixels: (N, C, H, W) pair -> (N,) float32."""
    return ssim_map(x, y, window, sigma, data_range=data_range).mean(dim=(1, 2, 3))


def dssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, *, window: int = 11,
          sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 -> scalar in 0..1 (0 for identical images).

    `mask` (N, 1, H, W) >= 0 weights the per-pixel map (a soft mask, or mask * priority
    weights). Pixels where it is 0 are zeroed in both images first, so the loss does not
    depend on them at all, not even through the window of a neighbour inside the mask.
    """
    _check_pair(x, y)
    if mask is not None:
        x, y = _gate(x, mask), _gate(y, mask)
    d = (1.0 - ssim_map(x, y, window, sigma, data_range=data_range)) * 0.5
    return _weighted_mean(d, mask)


def ms_dssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, *, window: int = 11,
             sigma: float = 1.5, data_range: float = 1.0, min_side: int = MS_MIN_SIDE) -> torch.Tensor:
    """Multi-scale DSSIM: the mean of `dssim` at full size, 1/2, 1/4 ... while the shorter side
    stays >= `min_side` -> scalar. Images and mask are reduced with 2x2 average pooling; images
    are masked at full size before pooling, so pixels outside the mask never reach any scale.
    Equals `dssim` when the image is smaller than 2 * `min_side`.
    """
    _check_pair(x, y)
    with _full_precision(x.device):
        x, y = x.float(), y.float()
        if mask is not None:
            mask = mask.float()
            x, y = _gate(x, mask), _gate(y, mask)
        terms = [dssim(x, y, mask, window=window, sigma=sigma, data_range=data_range)]
        while min(x.shape[-2:]) // 2 >= min_side:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            mask = None if mask is None else F.avg_pool2d(mask, 2)
            terms.append(dssim(x, y, mask, window=window, sigma=sigma, data_range=data_range))
        return torch.stack(terms).mean()


def masked_mse(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared error -> scalar: sum(w * (x - y)^2) / sum(w), `weights` (N, 1, H, W)
    broadcast over channels, so scaling the weights does not scale the loss and an all-ones map
    gives the plain MSE. All-zero weights give 0."""
    _check_pair(x, y)
    with _full_precision(x.device):
        return _weighted_mean((x.float() - y.float()).square(), weights)


_SRGB_SLOPE_PER_STOP = 1.055 / 2.4 * 0.6931471805599453  # the sRGB curve's slope at white, per stop


def display_like(x: torch.Tensor) -> torch.Tensor:
    """Model encoding (normalised ACEScct) -> a display-like encoding, where the losses compare
    faces: the sRGB curve on the linear values up to white (no gamut change), and above white a
    shoulder that goes on at the curve's slope there per stop (a highlight 8 stops over is 3.4).

    Why: ACEScct spends its code values on 16+ stops, so a face's mid-tones are squeezed ~2.5x
    against a display encoding; in it a 3x3 blur of skin costs less than half the DSSIM + MSE a
    viewer would judge (tests/test_losses_preview.py), and faces train soft. The shoulder keeps
    highlights ordered without letting the sRGB power curve, unbounded above white, weigh them
    tens of times over the face. The input is clamped to -1..2 first, so exp2 cannot overflow;
    the sRGB toe keeps a finite slope at 0 and below."""
    from vfxswap.color.constants import CCT_LIN_OFFSET, CCT_LIN_SLOPE, CCT_LOG_CUT, NORM_SCALE

    cct = x.float().clamp(-1.0, 2.0) / NORM_SCALE + CCT_LIN_OFFSET
    lin = torch.where(cct <= CCT_LOG_CUT, (cct - CCT_LIN_OFFSET) / CCT_LIN_SLOPE,
                      torch.exp2(cct.clamp_min(CCT_LOG_CUT) * 17.52 - 9.72))
    srgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(0.0031308, 1.0) ** (1 / 2.4) - 0.055)
    return torch.where(lin > 1.0, 1.0 + _SRGB_SLOPE_PER_STOP * torch.log2(lin.clamp_min(1.0)), srgb)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        weights: torch.Tensor | None = None, *, dssim_weight: float = 10.0,
                        mse_weight: float = 10.0) -> torch.Tensor:
    """The face reconstruction term -> scalar:
    `dssim_weight * ms_dssim(P, T, w) + mse_weight * masked_mse(P, T, w)` on P, T = pred and
    target in the display-like encoding (`display_like`: errors weighed as a viewer sees them),
    with the weight map w = mask * weights (weights: the eye/mouth priority map, 1 elsewhere).

    The mask is used as given (the sample's hull mask after augmentation): outside it the
    loss is exactly independent of both images. DSSIM drives structure and detail; the MSE
    term holds overall colour and brightness, which SSIM is insensitive to.
    """
    w = mask.float() if weights is None else mask.float() * weights.float()
    with _full_precision(pred.device):
        p, t = display_like(pred), display_like(target)
        return dssim_weight * ms_dssim(p, t, w) + mse_weight * masked_mse(p, t, w)


def mask_loss(pred_mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted and the sample's mask, (N, 1, H, W) each -> scalar."""
    _check_pair(pred_mask, target_mask)
    with _full_precision(pred_mask.device):
        return (pred_mask.float() - target_mask.float()).square().mean()


def gan_loss_d(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator on raw logits (any shape, e.g. patch maps) -> scalar:
    mean(relu(1 - d_real)) + mean(relu(1 + d_fake)). Zero once real scores >= 1 and fake <= -1,
    so a confident discriminator stops pushing (steadier than the saturating BCE form)."""
    with _full_precision(d_real.device):
        return F.relu(1.0 - d_real.float()).mean() + F.relu(1.0 + d_fake.float()).mean()


def gan_loss_g(d_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the generator -> scalar: -mean(d_fake) (raise the critic's score of fakes).
    It is negative whenever the critic scores fakes above 0."""
    with _full_precision(d_fake.device):
        return -d_fake.float().mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertical plus horizontal neighbours of (N, C, H, W) -> scalar;
    an optional smoothness regulariser (0 for a constant image)."""
    if x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got {tuple(x.shape)}")
    with _full_precision(x.device):
        x = x.float()
        zero = x.new_zeros(())
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() if x.shape[-2] > 1 else zero
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean() if x.shape[-1] > 1 else zero
        return dy + dx
