"""Training-time colour transfer (`vfxswap train --ct-mode`), DeepFaceLab's ct_mode idea: each
source (A) sample is recoloured like a destination (B) sample of the same step, inside the face
masks, so the model learns A's face under B's light and colour, and a render of B's plate as A
does not carry A's lighting into the shot. Use it when A and B were shot under different light.

Where it runs, and why: in the training step (`Trainer.step`, through `transfer_batch`), on the
device, where A's and B's batches meet; not in the data pipeline (`train.data`).
  - The pipeline has one stream per identity, each a function of its own seeds and position
    alone: that is what gives the same batches with 0 or 8 workers and makes a resume exact.
    A transfer there would have A's workers read B's faces, tying the two streams together
    (and their positions, and their caches) and doubling the reads.
  - In the step both batches are on the device, augmented, with their masks, and each A
    sample's input (warped) and target (unwarped) are side by side to be given the same map.
  - There the transfer is batched on the device: rct, lct and mkl are a few reductions and one
    3x3 matrix per sample, idt and sot a few dozen sorts of the batch's masked pixels.

What it does, per A sample i: B sample j = pairing[i] (a permutation of the step's B samples,
drawn from (seed, iteration, rank), so a run is deterministic and a resume or a roll-back
repeats it); the colour map that takes A's target's pixels inside A's mask (mask > 0.5) to B's
target's inside B's mask, learned by the render's colour match of the same name
(`render.color_transfer`: same statistics, same maths); that one map applied to every pixel of
A's target and of A's input. Colour is per pixel, so the map and the warp commute: the model is
taught no colour shift between its input and its target. The statistics come from the target
(the clean face; the input is the same face warped). B is left as it is.

Values are the model encoding's (normalised ACEScct: a log space, so rct's shift is an exposure
change and its scale a contrast). A statistical map can throw a few values far out (a stray
highlight times a large contrast), so the results are clipped to CT_RANGE, the span the
network's input limit (`models.nets.soft_limit`) maps every value into, and any non-finite
value becomes 0 (a sample whose statistics are not finite, or with under MIN_PIXELS masked
pixels on either side, keeps its colours).

All five run in torch, batched on the batch's device. rct, lct and mkl: statistics in float64, a
covariance's square roots by torch.linalg.eigh with its eigenvalues held above EIG_EPS (on CUDA,
eigh's error check may wait for the device once a step). idt and sot: the
render's 1-D quantile matches along the same random axes (drawn on the host from each sample's
seed as the render's functions draw them), in float32, from every masked pixel; they agree with
the numpy functions to ~1e-4. A colour match the render registers later without a torch twin
runs its numpy function per sample on the host (`_numpy_match`: the batch goes off the device
and back). What each costs a step: README's training section.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from vfxswap.models.nets import INPUT_KNEE
from vfxswap.render.color_transfer import FLAT, MIN_PIXELS, SAMPLES

CT_RANGE = (-INPUT_KNEE, 1.0 + INPUT_KNEE)  # what a transferred pixel is clipped to
COV_EPS = 1e-8  # added to each covariance's diagonal (as render.color_transfer does)
EIG_EPS = 1e-10  # a covariance's eigenvalues are held above this before a square root
_SALT = 0x6374  # "ct": these random numbers apart from any other stream drawn from the same seed
_MASK64 = (1 << 64) - 1


def step_seeds(seed: int, iteration: int, rank: int, count: int) -> np.ndarray:
    """`count` + 1 uint64 words for one step: the pairing's, then one per A sample (idt, sot)."""
    sequence = np.random.SeedSequence([int(v) & _MASK64 for v in (seed, _SALT, iteration, rank)])
    return sequence.generate_state(count + 1, np.uint64)


def pairing(n_a: int, n_b: int, seed: int) -> torch.Tensor:
    """(n_a,) int64: the B sample each A sample is coloured like, on the CPU; a permutation of the
    B samples (each used once) when there are as many, else drawn with replacement."""
    generator = torch.Generator().manual_seed(int(seed))
    if n_a <= n_b:
        return torch.randperm(n_b, generator=generator)[:n_a]
    return torch.randint(n_b, (n_a,), generator=generator)


def _stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean (N, 3), covariance (N, 3, 3) (n - 1, as numpy's cov) and pixel count (N,) of x
    (N, 3, R, R) inside mask (N, 1, R, R) > 0.5, float64 (a non-finite pixel outside the mask
    counts for nothing)."""
    inside = mask > 0.5
    x = torch.where(inside, x.to(torch.float64), 0.0)
    n = inside.sum((1, 2, 3)).to(torch.float64)
    mean = x.sum((2, 3)) / n.clamp_min(1.0)[:, None]
    d = torch.where(inside, x - mean[:, :, None, None], 0.0)
    cov = torch.einsum("nchw,ndhw->ncd", d, d) / (n - 1.0).clamp_min(1.0)[:, None, None]
    return mean, cov, n


def _sqrtm(c: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Batched square root (or inverse square root) of symmetric 3x3 matrices."""
    w, v = torch.linalg.eigh(c)
    w = w.clamp_min(EIG_EPS).pow(-0.5 if inverse else 0.5)
    return (v * w[:, None, :]) @ v.transpose(1, 2)


def _rct(ca: torch.Tensor, cb: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """Reinhard: per-channel spread (numpy's std, n) as a diagonal matrix."""
    sa = (torch.diagonal(ca, dim1=1, dim2=2) * ((na - 1) / na)[:, None]).clamp_min(0).sqrt()
    sb = (torch.diagonal(cb, dim1=1, dim2=2) * ((nb - 1) / nb)[:, None]).clamp_min(0).sqrt()
    return torch.diag_embed(torch.where(sa < FLAT, 1.0, sb / sa.clamp_min(FLAT)))


def _lct(ca: torch.Tensor, cb: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """Linear colour transfer: the full covariance match."""
    return _sqrtm(cb) @ _sqrtm(ca, inverse=True)


def _mkl(ca: torch.Tensor, cb: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """Monge-Kantorovich: the covariance match that moves colours least."""
    half, inverse_half = _sqrtm(ca), _sqrtm(ca, inverse=True)
    middle = half @ cb @ half
    return inverse_half @ _sqrtm(0.5 * (middle + middle.transpose(1, 2))) @ inverse_half


AFFINE = {"rct": _rct, "lct": _lct, "mkl": _mkl}  # a 3x3 matrix and a shift per sample
DISTRIBUTION = ("idt", "sot")  # 1-D quantile matches along random axes (`_distribution`)
TORCH_MATCHES = (*AFFINE, *DISTRIBUTION)  # batched on the device; any other colour match: numpy, per sample
QUANTILES = 256  # points of each 1-D quantile match (as render.color_transfer's)


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def _finish(x: torch.Tensor) -> torch.Tensor:
    low, high = CT_RANGE
    return torch.nan_to_num(x, nan=0.0, posinf=high, neginf=low).clamp_(low, high)


def _torch_match(mode, source, mask, ref, ref_mask, images, seeds):
    ma, ca, na = _stats(source, mask)
    mb, cb, nb = _stats(ref, ref_mask)
    eye = torch.eye(3, dtype=torch.float64, device=source.device).expand_as(ca)
    finite = lambda *ts: torch.stack([t.flatten(1).isfinite().all(1) for t in ts]).all(0)
    ok = (na >= MIN_PIXELS) & (nb >= MIN_PIXELS) & finite(ma, ca, mb, cb)
    # a face with (almost) no spread gives no contrast to learn: its mean alone is matched
    # (render.color_transfer's contrast_safe), and a sample left out keeps its colours
    spread = torch.diagonal(ca, dim1=1, dim2=2).clamp_min(0).sqrt().amax(1)
    learn = ok & (spread >= FLAT)
    keep = learn[:, None, None]
    m = eye
    if mode in AFFINE:
        m = AFFINE[mode](torch.where(keep, ca, eye) + COV_EPS * eye, torch.where(keep, cb, eye) + COV_EPS * eye,
                         torch.where(learn, na, 2.0), torch.where(learn, nb, 2.0))
        m = torch.where(keep & m.flatten(1).isfinite().all(1)[:, None, None], m, eye)
    ok = ok[:, None]
    shift = torch.where(ok, mb, 0.0) - (m @ torch.where(ok, ma, 0.0)[:, :, None])[:, :, 0]
    m32, shift32 = m.to(source.dtype), shift.to(source.dtype)[:, :, None]
    affine = [(torch.bmm(m32, x.flatten(2)) + shift32).view_as(x) for x in images]
    if mode in DISTRIBUTION:  # the samples it learns from; the others keep the mean shift (or nothing)
        moved = _distribution(mode, source, mask, ref, ref_mask, images, seeds)
        affine = [torch.where(learn[:, None, None, None], d, x) for d, x in zip(moved, affine)]
    # empty_like keeps each image's memory format (channels_last on CUDA)
    return [_finish(torch.empty_like(x).copy_(y)) for x, y in zip(images, affine)]


def _quantiles(v: torch.Tensor, valid: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """(B, Q): each row of v (B, P) at quantiles qs (Q,) of its valid entries (numpy's linear
    method); a row with no valid entry gives non-finite values."""
    s = torch.where(valid, v, torch.inf).sort(-1).values
    last = (valid.sum(-1, keepdim=True) - 1).clamp_min(0)
    pos = qs * last
    lo = pos.floor().long()
    a, b = s.gather(-1, lo), s.gather(-1, torch.minimum(lo + 1, last))
    return a + (pos - lo) * (b - a)


def _interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """np.interp of each row of x (B, M) through (xs, ys) (B, Q), carried on at slope 1 past the
    ends (as render.color_transfer's _match_1d)."""
    j = (torch.searchsorted(xs, x.contiguous(), right=True) - 1).clamp(0, xs.shape[-1] - 2)
    x0, x1, y0, y1 = xs.gather(-1, j), xs.gather(-1, j + 1), ys.gather(-1, j), ys.gather(-1, j + 1)
    step = x1 - x0
    out = y0 + torch.where(step > 0, (x - x0) / torch.where(step > 0, step, 1.0), 0.0) * (y1 - y0)
    out = torch.where(x < xs[:, :1], x - xs[:, :1] + ys[:, :1], out)
    return torch.where(x > xs[:, -1:], x - xs[:, -1:] + ys[:, -1:], out)


def _draws(mode: str, seeds, device, dtype) -> torch.Tensor:
    """The random axes of idt ((T, N, 3, 3) rotations) or sot ((T, N, 3) directions), drawn on
    the host per sample exactly as render.color_transfer's idt and sot draw them from a seed."""
    from vfxswap.render.color_transfer import idt, sot

    if mode == "idt":
        out = np.empty((_default(idt, "iterations"), len(seeds), 3, 3))
        for i, seed in enumerate(seeds):
            rng = np.random.default_rng(int(seed))
            for t in range(len(out)):
                out[t, i] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    else:
        out = np.empty((_default(sot, "iterations"), len(seeds), 3))
        for i, seed in enumerate(seeds):
            rng = np.random.default_rng(int(seed))
            for t in range(len(out)):
                d = rng.normal(size=3)
                out[t, i] = d / np.linalg.norm(d)
    return torch.from_numpy(out).to(device=device, dtype=dtype)


def _distribution(mode, source, mask, ref, ref_mask, images, seeds) -> list[torch.Tensor]:
    """idt or sot (render.color_transfer's, batched): each sample's images moved by 1-D quantile
    matches of its masked pixels to its reference's along random axes, every masked pixel used."""
    n, _, h, w = source.shape
    pixels = lambda t: t.flatten(2).transpose(1, 2).float()  # (N, HW, 3)
    flat, p, r = torch.cat([pixels(x) for x in images], 1), pixels(source), pixels(ref)
    valid_p, valid_r = (mask > 0.5).flatten(1), (ref_mask > 0.5).flatten(1)
    qs = torch.linspace(0.0, 1.0, QUANTILES, dtype=flat.dtype, device=flat.device)
    draws = _draws(mode, seeds, flat.device, flat.dtype)
    if mode == "idt":  # along the axes of a random rotation, each iteration
        rows = lambda t: t.transpose(1, 2).reshape(n * 3, -1)  # (N * 3, P): a channel a row
        cols = lambda t: t.reshape(n, 3, -1).transpose(1, 2)
        vp, vr = valid_p.repeat_interleave(3, 0), valid_r.repeat_interleave(3, 0)
        for q in draws:
            pp, rr = p @ q, r @ q
            xs, ys = _quantiles(rows(pp), vp, qs), _quantiles(rows(rr), vr, qs)
            back = q.transpose(1, 2)
            flat, p = cols(_interp(rows(flat @ q), xs, ys)) @ back, cols(_interp(rows(pp), xs, ys)) @ back
    else:  # sot: half a step along a random direction, each iteration
        for d in draws:
            along = lambda t: (t @ d[:, :, None])[..., 0]
            pf, pp = along(flat), along(p)
            xs, ys = _quantiles(pp, valid_p, qs), _quantiles(along(r), valid_r, qs)
            flat = flat + 0.5 * (_interp(pf, xs, ys) - pf)[..., None] * d[:, None, :]
            p = p + 0.5 * (_interp(pp, xs, ys) - pp)[..., None] * d[:, None, :]
    return [part.transpose(1, 2).reshape(n, 3, h, w) for part in flat.split(h * w, 1)]


def _numpy_match(mode, source, mask, ref, ref_mask, images, seeds):
    """The render's numpy colour match per sample, one map for all of a sample's images."""
    from vfxswap.render import COLOR_MATCHES

    match = COLOR_MATCHES.get(mode)
    takes_seed = "seed" in inspect.signature(match).parameters
    host = lambda t: t.detach().to("cpu", torch.float32).numpy()
    stack = np.stack([host(x) for x in images], 1).transpose(0, 1, 3, 4, 2)  # (N, K, R, R, 3)
    src, m, ref_np, ref_m = host(source), host(mask), host(ref), host(ref_mask)
    out = np.empty_like(stack)
    for i in range(len(stack)):
        rng = np.random.default_rng(int(seeds[i]))
        p = src[i].transpose(1, 2, 0)[m[i, 0] > 0.5].astype(np.float64)
        r = ref_np[i].transpose(1, 2, 0)[ref_m[i, 0] > 0.5].astype(np.float64)
        p, r = p[rng.permutation(len(p))[:SAMPLES]], r[rng.permutation(len(r))[:SAMPLES]]
        if min(len(p), len(r)) < MIN_PIXELS or not (np.isfinite(p).all() and np.isfinite(r).all()):
            out[i] = stack[i]
            continue
        kw = {"seed": int(rng.integers(2**63))} if takes_seed else {}
        with np.errstate(all="ignore"):
            out[i] = match(stack[i], p, r, **kw)
    back = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 1, 4, 2, 3)))
    return [_finish(torch.empty_like(x).copy_(back[:, k])) for k, x in enumerate(images)]


def match_colours(mode: str, source: torch.Tensor, mask: torch.Tensor, ref: torch.Tensor, ref_mask: torch.Tensor,
                  *also: torch.Tensor, seeds=None) -> list[torch.Tensor]:
    """[source, *also], each sample through the colour map (colour match `mode`) that takes
    `source`'s pixels inside `mask` to `ref`'s inside `ref_mask`, the same map for all of a
    sample's images, clipped to CT_RANGE. Images (N, 3, R, R), masks (N, 1, R, R) in 0..1, ref
    already paired with source; `seeds` (N,) ints for the methods that draw random numbers
    (idt, sot; default: 0..N-1). mode "none": the images as they are."""
    from vfxswap.render import COLOR_MATCHES

    COLOR_MATCHES.check(mode, "--ct-mode")
    images = [source, *also]
    if mode == "none":
        return images
    seeds = range(len(source)) if seeds is None else seeds
    if mode in TORCH_MATCHES:
        return _torch_match(mode, source, mask, ref, ref_mask, images, seeds)
    return _numpy_match(mode, source, mask, ref, ref_mask, images, seeds)


def transfer_batch(mode: str, a: dict, b: dict, *, seed: int, iteration: int, rank: int = 0) -> dict:
    """A's batch (a dict of "input", "target", "mask" ... as the trainer has it) with its input and
    target recoloured like a random pairing of B's batch's targets, inside the masks; the pairing
    and the random numbers are those of (seed, iteration, rank)."""
    if mode == "none":
        return a
    n = len(a["target"])
    words = step_seeds(seed, iteration, rank, n)
    pair = pairing(n, len(b["target"]), int(words[0])).to(b["target"].device)
    target, inp = match_colours(mode, a["target"], a["mask"], b["target"][pair], b["mask"][pair], a["input"],
                                seeds=words[1:])
    return {**a, "target": target, "input": inp}
