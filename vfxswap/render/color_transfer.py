"""Colour match of a predicted face to the plate's face, inside the face mask.

All methods work in the model encoding (normalised ACEScct: a log space, so a shift is an
exposure change and a scale a contrast change) on float values, never clipped, and map every
pixel of the prediction with what they learn from the masked pixels. Shapes: pred and ref
(R, R, 3) float32, mask (R, R) in 0..1.

- rct: per-channel mean and spread (Reinhard).
- lct: full 3x3 covariance match (linear colour transfer).
- mkl: the Monge-Kantorovich linear map: the covariance match that moves colours least.
- idt: iterative distribution transfer: 1-D histogram matches along random rotations.
- sot: sliced optimal transport: 1-D sorted matches along random directions, averaged.
- none: the prediction as it is.

Each method is a function `(pred, p, r) -> pred'`, where p and r are the masked pixels ((n, 3)
float64) of the prediction and of the plate's face; `vfxswap.render.COLOR_MATCHES` names them, and
`color_transfer` runs the one asked for. A method that learns a contrast is wrapped in
`contrast_safe`: a face with no spread gives nothing to learn one from.
"""

from __future__ import annotations

import functools

import numpy as np

MIN_PIXELS = 16
SAMPLES = 16384  # pixels a frame's colour statistics are taken from at most (a 128 px face's mask has ~8000)
FLAT = 1e-4  # a masked spread below this (in the 0..1 encoding) is a flat face: only its mean is matched


def _sqrtm(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, 1e-10)
    return (v * (w ** (-0.5 if inverse else 0.5))) @ v.T


def _pixels(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return img[mask > 0.5].astype(np.float64)


def _affine(pred, p, r, matrix_fn) -> np.ndarray:
    mp, mr = p.mean(0), r.mean(0)
    cp, cr = np.cov(p, rowvar=False) + np.eye(3) * 1e-8, np.cov(r, rowvar=False) + np.eye(3) * 1e-8
    a = matrix_fn(cp, cr)
    return ((pred.reshape(-1, 3) - mp) @ a.T + mr).reshape(pred.shape)


def _lct(cp, cr):
    return _sqrtm(cr) @ _sqrtm(cp, inverse=True)


def _mkl(cp, cr):
    cp_half, cp_inv_half = _sqrtm(cp), _sqrtm(cp, inverse=True)
    return cp_inv_half @ _sqrtm(cp_half @ cr @ cp_half) @ cp_inv_half


def contrast_safe(method):
    """A masked prediction with (almost) no spread is a flat face: match its mean only (a 1e-6
    spread would scale a 0.01 edge step by 1e5)."""

    @functools.wraps(method)
    def safe(pred, p, r, **kw):
        if p.std(0).max() < FLAT:
            return pred - p.mean(0) + r.mean(0)
        return method(pred, p, r, **kw)

    return safe


@contrast_safe
def rct(pred, p, r) -> np.ndarray:
    """Reinhard: per-channel mean and spread."""
    spread = p.std(0)
    return (pred - p.mean(0)) * np.where(spread < FLAT, 1.0, r.std(0) / np.maximum(spread, FLAT)) + r.mean(0)


@contrast_safe
def lct(pred, p, r) -> np.ndarray:
    """Linear colour transfer: the full 3x3 covariance match."""
    return _affine(pred, p, r, _lct)


@contrast_safe
def mkl(pred, p, r) -> np.ndarray:
    """Monge-Kantorovich: the covariance match that moves colours least."""
    return _affine(pred, p, r, _mkl)


def none(pred, p, r) -> np.ndarray:
    """The prediction as it is."""
    return pred


def _match_1d(values: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map `values` through the quantile function taking `source`'s distribution to `target`'s.
    Past the ends of `source` the end offsets carry on at slope 1 (np.interp alone holds the end
    value: a soft edge's brighter pixels all became one value, or darker than dimmer ones)."""
    qs = np.linspace(0.0, 1.0, 256)
    xs, ys = np.quantile(source, qs), np.quantile(target, qs)
    out = np.interp(values, xs, ys)
    low, high = values < xs[0], values > xs[-1]
    out[low] = values[low] - xs[0] + ys[0]
    out[high] = values[high] - xs[-1] + ys[-1]
    return out


@contrast_safe
def idt(pred, p, r, iterations: int = 12, seed: int = 0) -> np.ndarray:
    """Iterative distribution transfer: 1-D quantile matches along random rotations."""
    rng = np.random.default_rng(seed)
    flat, p = pred.reshape(-1, 3).astype(np.float64), p.copy()
    for _ in range(iterations):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        fp, pp, rr = flat @ q, p @ q, r @ q
        for k in range(3):
            fp[:, k] = _match_1d(fp[:, k], pp[:, k], rr[:, k])
            pp[:, k] = _match_1d(pp[:, k], pp[:, k], rr[:, k])
        flat, p = fp @ q.T, pp @ q.T
    return flat.reshape(pred.shape)


@contrast_safe
def sot(pred, p, r, iterations: int = 24, seed: int = 0) -> np.ndarray:
    """Sliced optimal transport: 1-D sorted matches along random directions, averaged."""
    rng = np.random.default_rng(seed)
    flat, p = pred.reshape(-1, 3).astype(np.float64), p.copy()
    for _ in range(iterations):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        step_all = _match_1d(flat @ d, p @ d, r @ d) - flat @ d
        step_p = _match_1d(p @ d, p @ d, r @ d) - p @ d
        flat, p = flat + np.outer(step_all, d) * 0.5, p + np.outer(step_p, d) * 0.5
    return flat.reshape(pred.shape)


def masked_samples(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, limit: int = SAMPLES,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(p, r): the prediction's and the plate face's pixels inside `mask`, (n, 3) float64 each, at
    most `limit` of them, in a fixed random order (so a prefix of any length is a fair sample)."""
    p, r = _pixels(pred, mask), _pixels(ref, mask)
    order = np.random.default_rng(seed).permutation(len(p))[:limit]
    return p[order], r[order]


def pool_samples(weighted: list[tuple[float, tuple[np.ndarray, np.ndarray]]],
                 total: int = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Several frames' (p, r) samples as one, each frame contributing in proportion to its weight
    (a prefix of its samples): the statistics of a weighted window along a face track."""
    weights = np.array([w for w, _ in weighted], np.float64)
    counts = np.maximum(1, np.round(total * weights / weights.sum())).astype(int)
    p = np.concatenate([s[0][:n] for n, (_, s) in zip(counts, weighted)])
    r = np.concatenate([s[1][:n] for n, (_, s) in zip(counts, weighted)])
    return p, r


def color_transfer(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, method: str = "rct",
                   samples: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """`pred` coloured like `ref` inside `mask` with the method `COLOR_MATCHES` names `method`;
    `samples` (p, r): learn the match from these pixels instead (a track's pooled window)."""
    from vfxswap.render import COLOR_MATCHES

    match = COLOR_MATCHES.get(method)
    p, r = samples if samples is not None else (_pixels(pred, mask), _pixels(ref, mask))
    if len(p) < MIN_PIXELS:
        return pred
    return np.asarray(match(pred, p, r), np.float32)
